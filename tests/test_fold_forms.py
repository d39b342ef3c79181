"""Computed BN parameters (consteval), quantization-aware graphs, pass-through shapes (issue 9).

Numerics are always against TensorFlow running the original graph; the fixtures in
``fixtures/forms/`` go through the real pipeline (``bnconvert.convert``) with the formats whose
converters can take the *original* graph (see tools/fixtures_forms.py).
"""
from __future__ import annotations

import json
import os

import numpy as np
import pytest

import bnconvert
from bnconvert.errors import StatisticsError, UnsupportedError
from bnconvert.graph import Graph

from conftest import FIXTURES, fixture_data, run_graph_def

FORMS = os.path.join(FIXTURES, "forms")
RNG = np.random.default_rng(9)


def _c(tf, v, dtype=None, name=None):
    return tf.constant(np.asarray(v), dtype=dtype, name=name)


# ---------------------------------------------------------------------- consteval against TF
def _ties() -> np.ndarray:
    """Inputs that land exactly halfway between two grid points of FakeQuant(-6, 6), 8 bits, in
    TF's float32 arithmetic: TF rounds them up, numpy's round would go to even."""
    f32 = np.float32
    scale = f32(12.0) / f32(255.0)
    nmin = f32(-128.0) * scale  # zero point 127.5 is nudged to 128
    inv = f32(1.0) / scale
    out = []
    for k in range(255):
        x = f32(nmin + (f32(k) + f32(0.5)) * scale)
        for _ in range(8):
            for cand in (x, np.nextafter(x, f32(9)), np.nextafter(x, f32(-9))):
                if f32((cand - nmin) * inv) == f32(k) + f32(0.5):
                    out.append(cand)
            x = np.nextafter(x, f32(9))
    assert len(out) > 20, len(out)
    return np.asarray(out, f32)


def test_dequantize_and_fake_quant_match_tensorflow():
    """Every Dequantize mode and FakeQuant variant, evaluated by consteval, against TF's kernels."""
    import tensorflow as tf

    g = tf.Graph()
    outs = []
    with g.as_default():
        cases = [(tf.quint8, np.uint8, "MIN_FIRST", False, -1), (tf.quint8, np.uint8, "MIN_COMBINED", False, -1),
                 (tf.qint8, np.int8, "MIN_COMBINED", False, -1), (tf.qint8, np.int8, "SCALED", False, -1),
                 (tf.qint8, np.int8, "SCALED", True, -1), (tf.quint8, np.uint8, "SCALED", False, -1),
                 (tf.qint8, np.int8, "SCALED", False, 1), (tf.qint32, np.int32, "MIN_FIRST", False, -1)]
        for tdt, ndt, mode, narrow, axis in cases:
            info = np.iinfo(ndt)
            q = RNG.integers(max(info.min, -1000), min(info.max, 1000), size=(3, 4), endpoint=True).astype(ndt)
            if axis == 1:
                mn, mx = -RNG.uniform(0.1, 2, 4), RNG.uniform(0.1, 2, 4)
            else:
                mn, mx = -0.731, 1.377
            outs.append(tf.raw_ops.Dequantize(input=_c(tf, q, tdt), min_range=_c(tf, mn, tf.float32),
                                              max_range=_c(tf, mx, tf.float32), mode=mode, narrow_range=narrow,
                                              axis=axis))
        x = RNG.normal(size=4000).astype(np.float32) * 3
        x[:40] = np.arange(40, dtype=np.float32) * np.float32(6 / 255) - 3  # on and near grid points
        x = np.concatenate([x, _ties()])
        xc = _c(tf, x)
        outs.append(tf.quantization.fake_quant_with_min_max_args(xc, -6.0, 6.0))
        outs.append(tf.quantization.fake_quant_with_min_max_vars(xc, _c(tf, -2.3, tf.float32), _c(tf, 3.1, tf.float32),
                                                                 narrow_range=True))
        outs.append(tf.quantization.fake_quant_with_min_max_vars(xc, _c(tf, 0.2, tf.float32), _c(tf, 3.1, tf.float32),
                                                                 num_bits=4))
        outs.append(tf.quantization.fake_quant_with_min_max_vars_per_channel(
            _c(tf, x[:4000].reshape(-1, 4)), _c(tf, [-1.0, -2.0, -0.5, 0.3], tf.float32),
            _c(tf, [1.0, 2.5, 0.7, 4.0], tf.float32)))
        with tf.compat.v1.Session() as s:
            ref = s.run(outs)
    graph = Graph(g.as_graph_def())
    for t, r in zip(outs, ref):
        v = graph.const(t.name, wide=True)
        assert v is not None, t.name
        # within float32 rounding of TF's kernel, never a different grid point
        assert np.abs(v - r).max() <= 4 * np.finfo(np.float32).eps * max(1.0, np.abs(r).max()), t.name


# ---------------------------------------------------------------------- computed parameters
def _conv_bn_with(tf, params, x_shape=(2, 5, 5, 3), c=4):
    x = tf.compat.v1.placeholder(tf.float32, list(x_shape), name="x")
    y = tf.nn.conv2d(x, _c(tf, RNG.normal(size=(3, 3, x_shape[-1], c)).astype(np.float32)), 1, "SAME", name="conv")
    y = tf.compat.v1.nn.fused_batch_norm(y, *params, epsilon=1e-3, is_training=False, name="bn")[0]
    return tf.nn.relu(y, name="out")


def _fold_and_compare(gd, x_shape=(2, 5, 5, 3)):
    res = bnconvert.fold(gd, inputs=["x:0"], outputs=["out:0"])
    feeds = {"x:0": RNG.normal(size=x_shape).astype(np.float32)}
    want = run_graph_def(gd, feeds, ["out:0"])["out:0"]
    got = run_graph_def(res.graph_def, feeds, ["out:0"])["out:0"]
    assert np.abs(got - want).max() <= 1e-5 * max(1.0, np.abs(want).max())
    return res


def test_parameters_computed_by_fill_pack_concat_cast_reshape():
    import tensorflow as tf

    g = tf.Graph()
    with g.as_default():
        gamma = tf.fill([4], 1.5)
        beta = tf.concat([tf.stack([_c(tf, 0.5, tf.float32), _c(tf, -1.0, tf.float32)]), _c(tf, [0.25, 2.0], tf.float32)], 0)
        mean = tf.cast(_c(tf, [1, -2, 0, 3], tf.int32), tf.float32) * 0.1
        var = tf.reshape(tf.square(_c(tf, [[1.5, 0.5], [2.0, 0.8]], tf.float32)), [4]) + 0.1
        _conv_bn_with(tf, [gamma, beta, mean, var])
    res = _fold_and_compare(g.as_graph_def())
    assert res.report.bn == {"found": 1, "folded": 1, "scale_shift": 0, "refused": 0}


def test_dequantize_weights_fold_into_float_constants():
    """quantize_weights-style fixture: folded, the weights become float Consts, the report says so."""
    spec = json.load(open(os.path.join(FIXTURES, "quantized_weights_ssd.json")))
    res = bnconvert.fold(os.path.join(FIXTURES, "quantized_weights_ssd.pb"))
    assert res.report.bn["folded"] == 2
    conv1 = next(layer for layer in res.report.layers if layer["name"] == "conv1_bn_h")
    assert "Dequantize 'conv1_h/kernel'" in conv1["weights_computed_from"]
    assert "float constants" in conv1["weights_note"]
    g = Graph(res.graph_def)
    assert "Dequantize" not in g.op_histogram()
    w = g.const(g.inputs(g.nodes["conv1_h/Conv2D"])[1])
    assert w.dtype == np.float32
    feeds, expected = fixture_data(dict(spec, name="quantized_weights_ssd"))
    got = run_graph_def(res.graph_def, feeds, spec["outputs"])
    for name, ref in expected.items():
        assert np.abs(got[name] - ref).max() <= 1e-5 * np.abs(ref).max()


@pytest.mark.parametrize("kind,needle", [
    ("placeholder", "fed by placeholder 'gamma_feed'"),
    ("random", "stateful op RandomUniform 'noise/RandomUniform'"),
    ("unevaluated", "Cumsum 'acc', which bnconvert does not evaluate"),
])
def test_not_a_constant_names_the_node(kind, needle):
    import tensorflow as tf

    g = tf.Graph()
    with g.as_default():
        if kind == "placeholder":
            gamma = tf.compat.v1.placeholder(tf.float32, [4], name="gamma_feed")
        elif kind == "random":
            gamma = tf.random.uniform([4], 0.5, 1.5, name="noise")
        else:
            gamma = tf.math.cumsum(_c(tf, [0.5, 0.25, 0.25, 0.1], tf.float32), name="acc")
        ones = _c(tf, np.ones(4, np.float32))
        _conv_bn_with(tf, [gamma, ones * 0, ones * 0, ones])
    with pytest.raises(UnsupportedError, match=needle):
        bnconvert.fold(g.as_graph_def(), inputs=["x:0"], outputs=["out:0"])


def test_nan_from_evaluation_names_the_node():
    import tensorflow as tf

    g = tf.Graph()
    with g.as_default():
        var = tf.math.log(_c(tf, [1.5, -1.0, 2.0, 3.0], tf.float32), name="bad_log")  # log(-1) = NaN
        ones = _c(tf, np.ones(4, np.float32))
        _conv_bn_with(tf, [ones, ones * 0, ones * 0, var])
    with pytest.raises(StatisticsError, match="variance holds NaN or inf \\(node 'bad_log'\\)"):
        bnconvert.fold(g.as_graph_def(), inputs=["x:0"], outputs=["out:0"])


def test_nan_from_evaluation_names_the_node_decomposed():
    import tensorflow as tf

    g = tf.Graph()
    with g.as_default():
        x = tf.compat.v1.placeholder(tf.float32, [2, 3], name="x")
        h = tf.matmul(x, _c(tf, RNG.normal(size=(3, 3)).astype(np.float32)))
        var = tf.sqrt(_c(tf, [1.0, -2.0, 0.5], tf.float32), name="bad_sqrt")
        tf.identity(tf.nn.batch_normalization(h, _c(tf, np.zeros(3, np.float32)), var, None, None, 1e-3), name="out")
    with pytest.raises(StatisticsError, match="NaN or inf \\(node 'bad_sqrt'\\)"):
        bnconvert.fold(g.as_graph_def(), inputs=["x:0"], outputs=["out:0"])


# ---------------------------------------------------------------------- leftovers
def test_unrecognised_chain_is_reported_never_zero_found():
    """``x * rsqrt(var + eps) * gamma`` (no Add: not a form bnconvert folds) is left as computed
    and reported — never "0 found" while a BN chain is in the graph."""
    import tensorflow as tf

    g = tf.Graph()
    with g.as_default():
        x = tf.compat.v1.placeholder(tf.float32, [2, 4], name="x")
        h = tf.matmul(x, _c(tf, RNG.normal(size=(4, 3)).astype(np.float32)))
        inv = tf.math.rsqrt(_c(tf, [1.0, 2.0, 0.5], tf.float32) + 1e-3)
        tf.identity(h * inv * _c(tf, [1.5, 0.5, 1.0], tf.float32), name="out")
    res = bnconvert.fold(g.as_graph_def(), inputs=["x:0"], outputs=["out:0"])
    assert res.report.bn["found"] == 1 and res.report.bn["scale_shift"] == 1
    assert "left as computed" in res.report.layers[0]["reason"]


# ---------------------------------------------------------------------- fixtures/forms through convert
def _convert(name, tmp_path, to):
    path = os.path.join(FORMS, name + ".pb")
    report = bnconvert.convert(path, str(tmp_path), to=to, providers=("cpu",))
    assert report.ok, report.verification
    return report


def test_contrib_quantize_eval_graph_is_reported_as_prefolded(tmp_path):
    report = _convert("contrib_quantize_eval", tmp_path, ("pb", "onnx", "tflite"))
    assert report.bn == {"found": 1, "folded": 1, "scale_shift": 0, "refused": 0}
    layer = report.layers[0]
    assert layer["form"] == "prefolded" and layer["producer"] == "Conv/Conv2D_Fold"
    assert "already folded" in layer["reason"]


def test_qat_graph_folds_around_fake_quant(tmp_path):
    """FakeQuant on the weights: folded exactly (weights evaluated); FakeQuant between the conv and
    its BN: kept as scale-shift with the reason.  ONNX is not asked for: tf2onnx's FakeQuant
    already differs from TensorFlow's by a quantization step on the original graph."""
    report = _convert("qat_dense_conv", tmp_path, ("pb", "tflite"))
    assert report.bn == {"found": 3, "folded": 2, "scale_shift": 1, "refused": 0}
    by = {layer["name"]: layer for layer in report.layers}
    assert "FakeQuantWithMinMaxVars" in by["conv1/bn"]["weights_computed_from"]
    assert "rounding step" in by["conv2/bn"]["reason"]


def test_conv1d_nchw_folds_through_squeeze(tmp_path):
    """Conv1D channels-first; TFLite is not asked for: its converter fails on the original."""
    report = _convert("conv1d_bn_nchw", tmp_path, ("pb", "onnx"))
    assert report.bn["folded"] == 1 and report.layers[0]["through"]
