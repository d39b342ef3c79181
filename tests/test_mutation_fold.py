"""Tests written to kill mutants that survived the rest of the suite (tools/mutate.py,
docs/MUTATION.md): every layout of producer and bias, requested intermediate outputs, shared
producer outputs, ``Merge`` value indices.

Each graph is built here with ``tf.compat.v1`` ops inside its own ``tf.Graph`` (no global TF
state changes), folded through :func:`bnconvert.fold` only, and the folded graph is run in
TensorFlow against the original graph.
"""
from __future__ import annotations

import numpy as np
import pytest

import bnconvert
from bnconvert.graph import Graph
from conftest import run_graph_def

tf = pytest.importorskip("tensorflow")
v1 = tf.compat.v1

C_IN, C_OUT = 3, 4
#: x shapes: spatial dims differ from each other and from the channels, except "NCHW_w4"
#: whose width equals the channel count (a bias on the wrong axis would still run there)
X_SHAPE = {
    "NHWC": (2, 5, 6, C_IN), "NCHW": (2, C_IN, 5, 6), "NCHW_w4": (2, C_IN, 5, C_OUT),
    "NDHWC": (2, 3, 5, 6, C_IN), "NCDHW": (2, C_IN, 3, 5, 6), "dense": (2, C_IN), "dense_tb": (2, C_IN),
    "depthwise": (2, 5, 6, C_IN),
}
BIASES = ("none", "biasadd", "add_right", "addv2_left")


def _fmt(layout: str) -> str:
    return {"NCHW_w4": "NCHW", "dense": "NC", "dense_tb": "NC", "depthwise": "NHWC"}.get(layout, layout)


def _channel_shape(layout: str, c: int) -> tuple:
    """Broadcast shape of a per-channel constant for this layout."""
    fmt = _fmt(layout)
    return {"NCHW": (c, 1, 1), "NCDHW": (c, 1, 1, 1)}.get(fmt, (c,))


def _producer(layout: str, x, rng):
    fmt = _fmt(layout)
    if layout in ("dense", "dense_tb"):
        tb = layout == "dense_tb"
        w = rng.normal(size=(C_OUT, C_IN) if tb else (C_IN, C_OUT)).astype(np.float32)
        return tf.linalg.matmul(x, tf.constant(w, name="w"), transpose_b=tb, name="prod"), C_OUT
    if layout == "depthwise":
        w = rng.normal(size=(3, 3, C_IN, 2)).astype(np.float32)
        return tf.nn.depthwise_conv2d(x, tf.constant(w, name="w"), [1, 1, 1, 1], "SAME", name="prod"), C_IN * 2
    if fmt in ("NDHWC", "NCDHW"):
        w = rng.normal(size=(2, 3, 3, C_IN, C_OUT)).astype(np.float32)
        return tf.nn.conv3d(x, tf.constant(w, name="w"), [1] * 5, "SAME", data_format=fmt, name="prod"), C_OUT
    w = rng.normal(size=(3, 3, C_IN, C_OUT)).astype(np.float32)
    return tf.nn.conv2d(x, tf.constant(w, name="w"), 1, "SAME", data_format=fmt, name="prod"), C_OUT


def _bias(layout: str, y, kind: str, c: int, rng):
    if kind == "none":
        return y
    b = rng.normal(size=c).astype(np.float32)
    if kind == "biasadd":
        fmt = "NCHW" if _fmt(layout) in ("NCHW", "NCDHW") else "NHWC"
        return tf.nn.bias_add(y, tf.constant(b, name="b"), data_format=fmt, name="bias")
    bc = tf.constant(b.reshape(_channel_shape(layout, c)), name="b")
    if kind == "add_right":
        return tf.raw_ops.Add(x=y, y=bc, name="bias")
    return tf.raw_ops.AddV2(x=bc, y=y, name="bias")


def _bn_params(c: int, rng):
    return (rng.uniform(0.5, 1.5, c).astype(np.float32), rng.normal(size=c).astype(np.float32),
            rng.normal(size=c).astype(np.float32), rng.uniform(0.3, 2.0, c).astype(np.float32))


def _bn(layout: str, y, c: int, form: str, rng):
    gamma, beta, mean, var = _bn_params(c, rng)
    fmt = _fmt(layout)
    if form == "fused":
        if fmt == "NC":  # contrib's rank-2 path: [N, C] -> [N, 1, 1, C] around the fused op
            y4 = tf.reshape(y, [-1, 1, 1, c], name="bn/Reshape")
            z = v1.nn.fused_batch_norm(y4, gamma, beta, mean=mean, variance=var, epsilon=1e-3,
                                       is_training=False, name="bn/FusedBatchNormV3")[0]
            return tf.reshape(z, tf.shape(y), name="bn/Reshape_1")
        return v1.nn.fused_batch_norm(y, gamma, beta, mean=mean, variance=var, epsilon=1e-3,
                                      is_training=False, data_format=fmt, name="bn/FusedBatchNormV3")[0]
    shape = _channel_shape(layout, c)
    p = [tf.constant(v.reshape(shape)) for v in (mean, var, beta, gamma)]
    return tf.nn.batch_normalization(y, p[0], p[1], p[2], p[3], 1e-3, name="bn/batchnorm")


def conv_bn(layout: str, bias: str = "none", form: str = "fused", seed: int = 0, side: str | None = None):
    """x → producer → bias → BN → Relu ``out``; ``side``: "prod" or "bias" also feeds ``side``
    (a Sigmoid: a second, non-shape consumer).  Returns (GraphDef, feeds)."""
    rng = np.random.default_rng(seed)
    g = tf.Graph()
    with g.as_default():
        x = v1.placeholder(tf.float32, X_SHAPE[layout], name="x")
        y, c = _producer(layout, x, rng)
        yb = _bias(layout, y, bias, c, rng)
        if side:
            tf.math.sigmoid(y if side == "prod" else yb, name="side")
        tf.nn.relu(_bn(layout, yb, c, form, rng), name="out")
    return g.as_graph_def(), {"x:0": rng.normal(size=X_SHAPE[layout]).astype(np.float32)}


def assert_same(gd, folded_gd, feeds, outputs, flags=None, tol=1e-5):
    ref = run_graph_def(gd, feeds, outputs, flags)
    got = run_graph_def(folded_gd, feeds, outputs)
    for t in outputs:
        assert got[t].shape == ref[t].shape, (t, got[t].shape, ref[t].shape)
        mag = max(float(np.abs(ref[t]).max()), 1e-6)
        err = float(np.abs(got[t].astype(np.float64) - ref[t]).max())
        assert err <= tol * mag, (t, err, mag)


def ops(gd) -> dict:
    return Graph(gd).op_histogram()


LAYOUTS = ("NHWC", "NCHW", "NCHW_w4", "NDHWC", "NCDHW", "dense", "dense_tb")


@pytest.mark.parametrize("bias", BIASES)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_fold_every_layout_and_bias(layout, bias):
    """Every producer layout with no bias, BiasAdd, Add(y, c) and AddV2(c, y): folded (no BN,
    no Mul left) and numerically the original."""
    gd, feeds = conv_bn(layout, bias)
    res = bnconvert.fold(gd, inputs=["x:0"], outputs=["out:0"])
    assert res.report.bn["folded"] == 1, res.report.layer_table()
    layer = res.report.layers[0]
    assert layer["producer"] == "prod"
    assert layer.get("bias") == (None if bias == "none" else "bias")
    h = ops(res.graph_def)
    assert not {"FusedBatchNormV3", "Mul", "Rsqrt"} & set(h), h
    assert res.report.inference == {"switches_resolved": 0, "merges_resolved": 0, "dead_nodes_removed": 0,
                                    "control_deps_dropped": 0}
    assert_same(gd, res.graph_def, feeds, ["out:0"])


@pytest.mark.parametrize("layout,bias", [("NHWC", "biasadd"), ("NCHW", "none"), ("NCHW", "add_right"),
                                         ("NCDHW", "none"), ("NCDHW", "biasadd"), ("dense", "none"),
                                         ("depthwise", "none")])
def test_fold_decomposed(layout, bias):
    gd, feeds = conv_bn(layout, bias, form="decomposed", seed=1)
    res = bnconvert.fold(gd, inputs=["x:0"], outputs=["out:0"])
    assert res.report.bn["folded"] == 1, res.report.layer_table()
    assert "Rsqrt" not in ops(res.graph_def)
    assert_same(gd, res.graph_def, feeds, ["out:0"])


def test_fold_depthwise_fused():
    gd, feeds = conv_bn("depthwise", "biasadd", seed=2)
    res = bnconvert.fold(gd, inputs=["x:0"], outputs=["out:0"])
    assert res.report.bn["folded"] == 1
    assert_same(gd, res.graph_def, feeds, ["out:0"])


@pytest.mark.parametrize("layout,bias,inner", [
    ("NHWC", "none", "prod:0"), ("NHWC", "biasadd", "prod:0"), ("NHWC", "biasadd", "bias:0"),
    ("NCHW", "add_right", "bias:0"), ("dense", "none", "prod:0"),
])
def test_requested_intermediate_output_is_kept(layout, bias, inner):
    """A requested output between the producer and the BN: folding would change it, so the BN
    stays as a scale-shift and both outputs are the original's."""
    gd, feeds = conv_bn(layout, bias, seed=3)
    res = bnconvert.fold(gd, inputs=["x:0"], outputs=["out:0", inner])
    assert res.report.bn["folded"] == 0 and res.report.bn["scale_shift"] == 1, res.report.layer_table()
    assert "graph output" in res.report.layers[0]["reason"]
    assert_same(gd, res.graph_def, feeds, ["out:0", inner])


@pytest.mark.parametrize("side", ["prod", "bias"])
def test_producer_output_used_elsewhere_is_kept(side):
    gd, feeds = conv_bn("NHWC", "biasadd", seed=4, side=side)
    res = bnconvert.fold(gd, inputs=["x:0"], outputs=["out:0", "side:0"])
    assert res.report.bn["scale_shift"] == 1, res.report.layer_table()
    assert "also feeds" in res.report.layers[0]["reason"]
    assert_same(gd, res.graph_def, feeds, ["out:0", "side:0"])


def test_bn_output_that_is_a_graph_output_keeps_its_name():
    gd, feeds = conv_bn("NHWC", "biasadd", seed=5)
    res = bnconvert.fold(gd, inputs=["x:0"], outputs=["out:0", "bn/FusedBatchNormV3:0"])
    assert res.report.bn["folded"] == 1
    assert_same(gd, res.graph_def, feeds, ["out:0", "bn/FusedBatchNormV3:0"])


def test_scale_shift_mode_every_layout():
    for layout in ("NHWC", "NCHW_w4", "NCDHW", "dense"):
        gd, feeds = conv_bn(layout, "biasadd", seed=6)
        res = bnconvert.fold(gd, inputs=["x:0"], outputs=["out:0"], mode="scale_shift")
        assert res.report.bn["scale_shift"] == 1
        assert_same(gd, res.graph_def, feeds, ["out:0"])


def test_bn_chain_folds_into_one_conv():
    """conv → BN → BN: the second round folds the second BN into the already-folded conv."""
    rng = np.random.default_rng(7)
    g = tf.Graph()
    with g.as_default():
        x = v1.placeholder(tf.float32, X_SHAPE["NHWC"], name="x")
        y, c = _producer("NHWC", x, rng)
        z = _bn("NHWC", y, c, "fused", rng)
        gamma, beta, mean, var = _bn_params(c, rng)
        z = v1.nn.fused_batch_norm(z, gamma, beta, mean=mean, variance=var, epsilon=1e-3, is_training=False,
                                   name="bn2/FusedBatchNormV3")[0]
        tf.identity(z, name="out")
    gd = g.as_graph_def()
    res = bnconvert.fold(gd, inputs=["x:0"], outputs=["out:0"])
    assert res.report.bn["folded"] == 2, res.report.layer_table()
    assert not {"FusedBatchNormV3", "Mul"} & set(ops(res.graph_def))
    assert_same(gd, res.graph_def, {"x:0": rng.normal(size=X_SHAPE["NHWC"]).astype(np.float32)}, ["out:0"])


def _fold_and_compare(gd, feeds, outputs, **kw):
    res = bnconvert.fold(gd, inputs=sorted(feeds), outputs=outputs, **kw)
    assert_same(gd, res.graph_def, feeds, outputs)
    return res


@pytest.mark.parametrize("shape", [(), (C_OUT, 1)])
def test_add_of_a_constant_that_is_not_per_channel(shape):
    """Conv → Add(scalar) → BN, and Conv → Add(c[C, 1]) → BN with width == channels (the
    constant runs along the width): neither constant is a per-channel bias."""
    rng = np.random.default_rng(8)
    g = tf.Graph()
    with g.as_default():
        x = v1.placeholder(tf.float32, (2, 5, C_OUT, C_IN), name="x")
        y, c = _producer("NHWC", x, rng)
        yb = tf.raw_ops.AddV2(x=y, y=tf.constant(rng.normal(size=shape).astype(np.float32)), name="add")
        tf.nn.relu(_bn("NHWC", yb, c, "fused", rng), name="out")
    _fold_and_compare(g.as_graph_def(), {"x:0": rng.normal(size=(2, 5, C_OUT, C_IN)).astype(np.float32)}, ["out:0"])


def test_bias_add_layout_differs_from_the_bn():
    """NCHW conv → BiasAdd NHWC (adds along the width, width == channels) → BN NCHW."""
    rng = np.random.default_rng(9)
    g = tf.Graph()
    with g.as_default():
        x = v1.placeholder(tf.float32, X_SHAPE["NCHW_w4"], name="x")
        y, c = _producer("NCHW_w4", x, rng)
        yb = tf.nn.bias_add(y, tf.constant(rng.normal(size=c).astype(np.float32)), data_format="NHWC", name="bias")
        tf.nn.relu(_bn("NCHW_w4", yb, c, "fused", rng), name="out")
    res = _fold_and_compare(g.as_graph_def(), {"x:0": rng.normal(size=X_SHAPE["NCHW_w4"]).astype(np.float32)},
                            ["out:0"])
    assert res.report.bn["scale_shift"] == 1


@pytest.mark.parametrize("what", ["weights", "bias"])
def test_non_constant_weights_or_bias_are_not_folded(what):
    rng = np.random.default_rng(10)
    g = tf.Graph()
    with g.as_default():
        x = v1.placeholder(tf.float32, X_SHAPE["NHWC"], name="x")
        if what == "weights":
            w = v1.placeholder(tf.float32, (3, 3, C_IN, C_OUT), name="w_feed")
            y = tf.nn.conv2d(x, w, 1, "SAME", name="prod")
            yb = tf.nn.bias_add(y, tf.constant(rng.normal(size=C_OUT).astype(np.float32)), name="bias")
        else:
            y, _ = _producer("NHWC", x, rng)
            yb = tf.nn.bias_add(y, v1.placeholder(tf.float32, (C_OUT,), name="b_feed"), name="bias")
        tf.nn.relu(_bn("NHWC", yb, C_OUT, "fused", rng), name="out")
    feeds = {"x:0": rng.normal(size=X_SHAPE["NHWC"]).astype(np.float32)}
    if what == "weights":
        feeds["w_feed:0"] = rng.normal(size=(3, 3, C_IN, C_OUT)).astype(np.float32)
    else:
        feeds["b_feed:0"] = rng.normal(size=C_OUT).astype(np.float32)
    res = _fold_and_compare(g.as_graph_def(), feeds, ["out:0"])
    assert res.report.bn["scale_shift"] == 1 and "not constant" in res.report.layers[0]["reason"]


def test_dense_reshaped_to_a_vector_before_the_bn():
    """MatMul [1, C] → Reshape [C] → decomposed BN: the reshape keeps the channels last."""
    rng = np.random.default_rng(11)
    g = tf.Graph()
    with g.as_default():
        x = v1.placeholder(tf.float32, (1, C_IN), name="x")
        y, c = _producer("dense", x, rng)
        r = tf.reshape(y, [c], name="flat")
        tf.nn.relu(_bn("dense", r, c, "decomposed", rng), name="out")
    res = _fold_and_compare(g.as_graph_def(), {"x:0": rng.normal(size=(1, C_IN)).astype(np.float32)}, ["out:0"])
    assert res.report.bn["folded"] == 1, res.report.layer_table()


@pytest.mark.parametrize("target", ["const", "shape_of_input"])
def test_rank2_reshape_pair_is_collapsed(target):
    """MatMul → BiasAdd → Reshape [-1,1,1,C] → fused BN → Reshape back (to [-1, C] or, as contrib
    does, to Shape(input)): after folding no Reshape is left."""
    rng = np.random.default_rng(12)
    g = tf.Graph()
    with g.as_default():
        x = v1.placeholder(tf.float32, (None, C_IN), name="x")  # unknown batch: tf.shape is an op
        y, c = _producer("dense", x, rng)
        yb = _bias("dense", y, "biasadd", c, rng)
        gamma, beta, mean, var = _bn_params(c, rng)
        y4 = tf.reshape(yb, [-1, 1, 1, c], name="bn/Reshape")
        z = v1.nn.fused_batch_norm(y4, gamma, beta, mean=mean, variance=var, is_training=False,
                                   name="bn/FusedBatchNormV3")[0]
        back = tf.constant([-1, c]) if target == "const" else tf.shape(yb)
        tf.nn.relu(tf.reshape(z, back, name="bn/Reshape_1"), name="out")
        tf.identity(tf.reshape(z, [1, -1]), name="flat")  # another 2-D reshape, not the way back: stays
    outputs = ["out:0", "flat:0"]
    res = _fold_and_compare(g.as_graph_def(), {"x:0": rng.normal(size=(2, C_IN)).astype(np.float32)}, outputs)
    assert res.report.bn["folded"] == 1
    assert "bn/Reshape_1" not in Graph(res.graph_def).nodes, ops(res.graph_def)


@pytest.mark.parametrize("port", [1, 2, 3, 5])
def test_fused_side_outputs(port):
    """Outputs 1/2 (batch mean/variance = the moving ones in inference) may be used; a used
    reserve-space output (3-5) stops the fold with a clear error."""
    from bnconvert.errors import UnsupportedError

    rng = np.random.default_rng(13)
    g = tf.Graph()
    with g.as_default():
        x = v1.placeholder(tf.float32, X_SHAPE["NHWC"], name="x")
        y, c = _producer("NHWC", x, rng)
        gamma, beta, mean, var = _bn_params(c, rng)
        outs = v1.nn.fused_batch_norm(y, gamma, beta, mean=mean, variance=var, is_training=False,
                                      name="bn/FusedBatchNormV3")
        tf.nn.relu(outs[0], name="out")
        bn = outs[0].op
        tf.identity(bn.outputs[port], name="side")
    gd = g.as_graph_def()
    feeds = {"x:0": rng.normal(size=X_SHAPE["NHWC"]).astype(np.float32)}
    if port >= 3:
        with pytest.raises(UnsupportedError, match=f"reserve-space output {port}"):
            bnconvert.fold(gd, inputs=["x:0"], outputs=["out:0", "side:0"])
    else:
        res = _fold_and_compare(gd, feeds, ["out:0", "side:0"])
        assert res.report.bn["folded"] == 1


def test_only_folds_the_selected_bns():
    rng = np.random.default_rng(14)
    g = tf.Graph()
    with g.as_default():
        x = v1.placeholder(tf.float32, X_SHAPE["NHWC"], name="x")
        h = x
        for name in ("blockA", "blockB"):
            w = rng.normal(size=(3, 3, int(h.shape[-1]), C_OUT)).astype(np.float32)
            y = tf.nn.conv2d(h, tf.constant(w), 1, "SAME", name=f"{name}/conv")
            gamma, beta, mean, var = _bn_params(C_OUT, rng)
            h = tf.nn.relu(v1.nn.fused_batch_norm(y, gamma, beta, mean=mean, variance=var, is_training=False,
                                                  name=f"{name}/bn/FusedBatchNormV3")[0])
        tf.identity(h, name="out")
    gd = g.as_graph_def()
    feeds = {"x:0": rng.normal(size=X_SHAPE["NHWC"]).astype(np.float32)}
    res = _fold_and_compare(gd, feeds, ["out:0"], only=["blockB/*"])
    actions = {layer["name"]: layer["action"] for layer in res.report.layers}
    assert actions == {"blockA/bn": "scale_shift", "blockB/bn": "fold"}, actions
