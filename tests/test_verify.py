"""Runners, comparison and input handling against real TF, onnxruntime and TFLite."""
from __future__ import annotations

import json
import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import tensorflow as tf
from onnx import numpy_helper

from bnconvert.errors import InputError
from bnconvert.export import export_onnx, export_tflite
from bnconvert.verify import (DEFAULT_ATOL, DEFAULT_RTOL, compare, format_table, load_npz_inputs,
                              placeholder_dtypes, placeholder_shapes, random_inputs, resolve_shapes, run_onnx,
                              run_tf, run_tflite, save_npz)
from bnconvert.verify.runners import match_names

EPS = 1e-3


def f32(a):
    return tf.constant(np.asarray(a, np.float32))


def bn_params(rng, c):
    return dict(gamma=rng.random(c) + 0.5, beta=rng.standard_normal(c) * 0.1, mean=rng.standard_normal(c) * 0.5,
                var=rng.random(c) * 2 + 0.1)


def make_net(seed=0):
    rng = np.random.default_rng(seed)
    layers = []
    for cin, cout in ((3, 8), (8, 16)):
        layers.append(dict(w=rng.standard_normal((3, 3, cin, cout)) * np.sqrt(2 / (9 * cin)),
                           b=rng.standard_normal(cout) * 0.1, **bn_params(rng, cout)))
    return layers, rng.standard_normal((16, 10)) * 0.25, rng.standard_normal(10) * 0.1


def fold(p, eps=EPS):
    """The reference fold in float64 (what the core's arith does for HWIO conv)."""
    s = p["gamma"] / np.sqrt(p["var"] + eps)
    return p["w"] * s, (p["b"] - p["mean"]) * s + p["beta"]


def build_net(net, folder=None):
    """Conv+BN+Relu x2 → mean → dense logits; BN unfolded unless ``folder`` folds it."""
    layers, wd, bd = net
    g = tf.Graph()
    with g.as_default():
        h = tf.compat.v1.placeholder(tf.float32, [None, 12, 12, 3], name="x")
        for p in layers:
            if folder is None:
                h = tf.nn.bias_add(tf.nn.conv2d(h, f32(p["w"]), 1, "SAME"), f32(p["b"]))
                h = tf.compat.v1.nn.fused_batch_norm(h, f32(p["gamma"]), f32(p["beta"]), mean=f32(p["mean"]),
                                                     variance=f32(p["var"]), epsilon=EPS, is_training=False)[0]
            else:
                w, b = folder(p)
                h = tf.nn.bias_add(tf.nn.conv2d(h, f32(w), 1, "SAME"), f32(b))
            h = tf.nn.relu(h)
        tf.nn.bias_add(tf.matmul(tf.reduce_mean(h, [1, 2]), f32(wd)), f32(bd), name="logits")
    return g.as_graph_def()


@pytest.fixture(scope="module")
def net():
    n = make_net()
    feeds = {"x:0": np.random.default_rng(1).standard_normal((6, 12, 12, 3)).astype(np.float32)}
    original = build_net(n)
    return dict(net=n, original=original, folded=build_net(n, fold), feeds=feeds,
                reference=run_tf(original, feeds, ["logits:0"]))


# ------------------------------------------------------------------------- tolerances on real folds

def test_correct_fold_passes_on_every_runtime(net, tmp_path):
    folded, feeds, ref = net["folded"], net["feeds"], net["reference"]
    onnx_path, tfl_path = str(tmp_path / "f.onnx"), str(tmp_path / "f.tflite")
    export_onnx(folded, ["x:0"], ["logits:0"], onnx_path)
    export_tflite(folded, ["x:0"], ["logits:0"], tfl_path, {"x:0": [6, 12, 12, 3]})
    results = [
        compare(ref, run_tf(folded, feeds, ["logits:0"]), "tf:folded", "folded.pb"),
        compare(ref, run_onnx(onnx_path, feeds, ["logits:0"]), "onnx:CPUExecutionProvider", onnx_path),
        compare(ref, run_tflite(tfl_path, feeds, ["logits:0"]), "tflite", tfl_path),
    ]
    for r in results:
        assert r.ok, r.summary()
        # measured ~2e-7 (TF) and ~5e-7 (ORT CPU, TFLite): the defaults leave a wide margin
        assert r.outputs[0].max_rel < DEFAULT_RTOL / 20
        assert r.outputs[0].argmax_agreement == 1.0
    table = format_table(results)
    assert table.count("PASS") == 3 and "FAIL" not in table and "logits:0" in table


@pytest.mark.parametrize("name,wrong", [
    ("epsilon dropped", lambda p: fold(p, eps=0.0)),
    ("mean not subtracted", lambda p: (fold(p)[0], p["b"] * p["gamma"] / np.sqrt(p["var"] + EPS) + p["beta"])),
    ("gamma missing", lambda p: fold(dict(p, gamma=np.ones_like(p["gamma"])))),
    ("variance used as std", lambda p: fold(dict(p, var=(p["var"] + EPS) ** 2), eps=0.0)),
])
def test_wrong_fold_fails_defaults(net, name, wrong):
    result = compare(net["reference"], run_tf(build_net(net["net"], wrong), net["feeds"], ["logits:0"]),
                     "tf:folded", name)
    assert not result.ok, f"{name}: {result.summary()}"
    assert result.outputs[0].max_rel > 10 * DEFAULT_RTOL  # fails by a wide margin, not by luck


def test_corrupted_onnx_weight_is_caught(net, tmp_path):
    path = str(tmp_path / "f.onnx")
    export_onnx(net["folded"], ["x:0"], ["logits:0"], path)
    model = onnx.load(path)
    init = max(model.graph.initializer, key=lambda t: numpy_helper.to_array(t).size)  # a conv kernel
    arr = numpy_helper.to_array(init).copy()
    arr.flat[0] += 0.5
    init.CopyFrom(numpy_helper.from_array(arr, init.name))
    bad = str(tmp_path / "bad.onnx")
    onnx.save(model, bad)
    result = compare(net["reference"], run_onnx(bad, net["feeds"], ["logits:0"]), "onnx:CPUExecutionProvider", bad)
    assert not result
    stats = result.outputs[0]
    assert stats.shape_ok and stats.max_abs > DEFAULT_ATOL and stats.max_rel > DEFAULT_RTOL
    assert "FAIL" in format_table([result]) and "bad.onnx" in result.summary()
    assert f"{stats.max_abs:.3e}" in result.summary()
    json.dumps(result.to_dict())


# ------------------------------------------------------------------------- compare()

def test_compare_rule_and_stats():
    ref = {"a": np.array([[1.0, -4.0], [2.0, 3.0]], np.float32)}
    assert compare(ref, ref, "same", "f").ok
    scale = 4.0
    limit = DEFAULT_ATOL + DEFAULT_RTOL * scale
    inside = {"a": ref["a"] + np.float32(0.9 * limit)}
    outside = {"a": ref["a"] + np.float32(1.1 * limit)}
    good, bad = compare(ref, inside, "r", "f"), compare(ref, outside, "r", "f")
    assert good and not bad
    s = bad.outputs[0]
    assert s.max_abs == pytest.approx(1.1 * limit, rel=1e-3)
    assert s.max_rel == pytest.approx(s.max_abs / scale)
    assert s.mean_abs == pytest.approx(1.1 * limit, rel=1e-3)
    assert s.argmax_agreement == 1.0
    assert compare(ref, outside, "r", "f", atol=1.0).ok  # tolerances are parameters


def test_compare_shape_nan_missing_and_argmax():
    ref = {"p": np.array([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7]]), "v": np.ones(3)}
    flipped = {"p": np.array([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7]]), "v": np.ones(3)}
    r = compare(ref, flipped, "r", "f")
    assert not r.ok and r.outputs[0].argmax_agreement == pytest.approx(2 / 3)
    assert r.outputs[1].argmax_agreement is None and r.outputs[1].ok

    r = compare(ref, {"p": ref["p"], "v": np.ones(4)}, "r", "f")
    assert not r.ok and not r.outputs[1].shape_ok and "shape" in r.outputs[1].reason

    nan = {"p": ref["p"], "v": np.array([1.0, np.nan, 1.0])}
    r = compare(ref, nan, "r", "f")
    assert not r.ok and "NaN" in r.outputs[1].reason
    assert compare(nan, nan, "r", "f").ok  # NaN where the reference has NaN is agreement

    r = compare(ref, {"p": ref["p"]}, "r", "f")
    assert not r.ok and r.outputs[1].reason.startswith("missing")
    assert "FAIL (missing" in format_table([r])
    d = r.to_dict()
    assert json.loads(json.dumps(d))["outputs"][1]["ok"] is False


# ------------------------------------------------------------------------- runners

def test_run_tf_feeds_training_flags():
    g = tf.Graph()
    with g.as_default():
        x = tf.compat.v1.placeholder(tf.float32, [None, 3], name="x")
        flag = tf.compat.v1.placeholder_with_default(False, [], name="is_training")
        tf.identity(tf.where(flag, x * 2.0, x), name="y")
    gd = g.as_graph_def()
    feeds = {"x:0": np.ones((2, 3), np.float32)}
    assert run_tf(gd, feeds, ["y:0"])["y:0"].sum() == 6
    assert run_tf(gd, feeds, ["y:0"], flags={"is_training": True})["y:0"].sum() == 12
    assert run_tf(gd, feeds, ["y:0"], flags={"is_training:0": False})["y:0"].sum() == 6
    with pytest.raises(InputError, match="'nope:0' is not in the graph"):
        run_tf(gd, feeds, ["nope:0"])
    with pytest.raises(InputError, match="TensorFlow could not run"):
        run_tf(gd, {"x:0": np.ones((2, 4), np.float32)}, ["y:0"])


def test_run_onnx_name_mapping_and_cuda_availability(net, tmp_path):
    path = str(tmp_path / "f.onnx")
    export_onnx(net["folded"], ["x:0"], ["logits:0"], path)
    feeds64 = {"x": net["feeds"]["x:0"].astype(np.float64)}  # ":0" added, float64 cast to the model's type
    out = run_onnx(path, feeds64, ["logits"])
    assert compare({"logits": net["reference"]["logits:0"]}, out, "onnx", path).ok
    with open(path, "rb") as f:
        assert run_onnx(f.read(), net["feeds"], ["logits:0"])["logits:0"].shape == (6, 10)
    with pytest.raises(InputError, match="unknown ONNX provider"):
        run_onnx(path, net["feeds"], ["logits:0"], provider="tpu")
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        with pytest.raises(InputError, match="CUDA execution provider is not available"):
            run_onnx(path, net["feeds"], ["logits:0"], provider="cuda")


def test_match_names_by_name_then_order():
    m, how = match_names(["x:0", "y:0"], ["serving_default_x:0", "y"], "model")
    assert m == {"x:0": "serving_default_x:0", "y:0": "y"} and how == "name"
    m, how = match_names(["logits:0", "probs:0"], ["Identity", "Identity_1"], "model")
    assert m == {"logits:0": "Identity", "probs:0": "Identity_1"} and how == "order"
    with pytest.raises(InputError, match="has no tensor 'z:0'"):
        match_names(["z:0"], ["a", "b"], "the model")


def test_run_tflite_records_mapping(net, tmp_path):
    path = str(tmp_path / "f.tflite")
    export_tflite(net["folded"], ["x:0"], ["logits:0"], path, {"x:0": [6, 12, 12, 3]})
    mapping = {}
    out = run_tflite(path, net["feeds"], ["logits:0"], mapping=mapping)
    assert mapping == {"inputs": {"x:0": "x"}, "outputs": {"logits:0": "logits"}, "matched_by": "name"}
    assert compare(net["reference"], out, "tflite", path).ok
    with pytest.raises(InputError, match="no such TFLite model"):
        run_tflite(str(tmp_path / "missing.tflite"), net["feeds"], ["logits:0"])


# ------------------------------------------------------------------------- inputs.py

def shapes_graph():
    g = tf.Graph()
    with g.as_default():
        tf.compat.v1.placeholder(tf.float32, [None, 4, None], name="a")
        tf.compat.v1.placeholder(tf.int32, [2, 3], name="b")
        tf.compat.v1.placeholder(tf.float32, None, name="c")
        tf.compat.v1.placeholder(tf.bool, [None], name="d")
    return g.as_graph_def()


def test_placeholder_shapes_and_dtypes():
    gd = shapes_graph()
    assert placeholder_shapes(gd, ["a:0", "b:0"]) == {"a:0": [None, 4, None], "b:0": [2, 3]}
    with pytest.raises(InputError, match="'c:0' has unknown rank.*--input-shape"):
        placeholder_shapes(gd, ["c:0"])
    with pytest.raises(InputError, match="'zz:0' is not in the graph"):
        placeholder_shapes(gd, ["zz:0"])
    assert placeholder_dtypes(gd, ["a:0", "b:0", "d:0"]) == {"a:0": np.float32, "b:0": np.int32, "d:0": np.bool_}


def test_resolve_shapes_batch_overrides_and_conflicts():
    gd = shapes_graph()
    assert resolve_shapes(gd, ["b:0", "d:0"], batch=5) == {"b:0": [2, 3], "d:0": [5]}
    with pytest.raises(InputError, match="input 'a:0' has unknown dim 2"):
        resolve_shapes(gd, ["a:0"])
    assert resolve_shapes(gd, ["a:0"], {"a": [3, 4, 7]}) == {"a:0": [3, 4, 7]}
    assert resolve_shapes(gd, ["c:0"], {"c:0": [1, 2]}) == {"c:0": [1, 2]}  # unknown rank, given
    with pytest.raises(InputError, match="'a:0'.*conflicts.*dim 1"):
        resolve_shapes(gd, ["a:0"], {"a:0": [3, 5, 7]})
    with pytest.raises(InputError, match="'b:0' has rank 3"):
        resolve_shapes(gd, ["b:0"], {"b:0": [2, 3, 1]})
    with pytest.raises(InputError, match="'c:0' has unknown rank"):
        resolve_shapes(gd, ["c:0"])
    with pytest.raises(InputError, match="names q:0, which is not a model input"):
        resolve_shapes(gd, ["b:0"], {"q": [1]})


def test_random_inputs_are_deterministic_and_typed():
    shapes = {"f:0": [2, 3], "i:0": [4], "b:0": [2]}
    dtypes = {"f:0": np.float32, "i:0": np.int64, "b:0": np.bool_}
    a, b = random_inputs(shapes, dtypes, seed=3), random_inputs(shapes, dtypes, seed=3)
    assert all(np.array_equal(a[k], b[k]) for k in shapes)
    assert a["f:0"].dtype == np.float32 and a["f:0"].shape == (2, 3) and a["f:0"].std() > 0
    assert a["i:0"].dtype == np.int64 and a["i:0"].min() >= 0 and a["i:0"].max() < 4
    assert a["b:0"].dtype == np.bool_ and not a["b:0"].any()
    assert not np.array_equal(random_inputs(shapes, dtypes, seed=4)["f:0"], a["f:0"])


def test_npz_keys_tf_names_bare_names_and_positions(tmp_path):
    x, z = np.arange(6.0).reshape(2, 3), np.ones(2)
    p = tmp_path / "in.npz"
    save_npz(p, {"scope/x:0": x, "z:0": z})
    got = load_npz_inputs(str(p), ["scope/x:0", "z:0"])
    assert np.array_equal(got["scope/x:0"], x) and np.array_equal(got["z:0"], z)
    np.savez(tmp_path / "bare.npz", x=x, input_1=z)
    got = load_npz_inputs(str(tmp_path / "bare.npz"), ["x:0", "z:0"])
    assert np.array_equal(got["x:0"], x) and np.array_equal(got["z:0"], z)
    with pytest.raises(InputError, match="no array for 'w:0'"):
        load_npz_inputs(str(p), ["z:0", "w:0"])
    with pytest.raises(InputError, match="no such file"):
        load_npz_inputs(str(tmp_path / "nope.npz"), ["x:0"])


def test_run_onnx_never_matches_by_position(net, tmp_path):
    path = str(tmp_path / "f.onnx")
    export_onnx(net["folded"], ["x:0"], ["logits:0"], path)
    with pytest.raises(InputError, match="has no tensor 'wrong:0'"):
        run_onnx(path, {"wrong:0": net["feeds"]["x:0"]}, ["logits:0"])


def test_exports_leave_the_graph_def_untouched(net, tmp_path):
    before = net["folded"].SerializeToString(deterministic=True)
    export_onnx(net["folded"], ["x:0"], ["logits:0"], str(tmp_path / "f.onnx"), input_shapes={"x:0": [2, 12, 12, 3]})
    export_tflite(net["folded"], ["x:0"], ["logits:0"], str(tmp_path / "f.tflite"), {"x:0": [2, 12, 12, 3]})
    assert net["folded"].SerializeToString(deterministic=True) == before
