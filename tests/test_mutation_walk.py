"""Tests written to kill mutants of the fold planner that survived run 7 (tools/mutate.py,
docs/MUTATION.md): following the channel axis through ``ExpandDims`` (positive, zero and
negative axes, a computed axis) and ``Reshape`` (channels moved), a BN on another axis than the
producer's channels, the contrib reshape pair after a conv (a bug: the pair was collapsed into a
rank-4 tensor), the ``replaced_by`` tensor verification compares, and ``fold_all``'s rounds.

Graphs are built with ``tf.compat.v1`` in their own ``tf.Graph``, folded through
:func:`bnconvert.fold`, and run in TensorFlow against the original.
"""
from __future__ import annotations

import numpy as np
import pytest

import bnconvert
from bnconvert.fold import fold_all
from bnconvert.graph import Graph, node_of
from conftest import run_graph_def
from test_mutation_fold import _bn_params, assert_same, conv_bn

tf = pytest.importorskip("tensorflow")
v1 = tf.compat.v1
C = 4


def _fused(y, rng, fmt="NHWC", name="bn/FusedBatchNormV3"):
    gamma, beta, mean, var = _bn_params(C, rng)
    return v1.nn.fused_batch_norm(y, gamma, beta, mean=mean, variance=var, epsilon=1e-3, is_training=False,
                                  data_format=fmt, name=name)[0]


def _decomposed(y, rng, shape):
    gamma, beta, mean, var = _bn_params(C, rng)
    p = [tf.constant(v.reshape(shape)) for v in (mean, var, beta, gamma)]
    return tf.nn.batch_normalization(y, p[0], p[1], p[2], p[3], 1e-3, name="bn/batchnorm")


def _dense(rng, n_in=3):
    x = v1.placeholder(tf.float32, [2, n_in], name="x")
    w = tf.constant(rng.normal(size=(n_in, C)).astype(np.float32), name="w")
    return x, tf.linalg.matmul(x, w, name="prod")


def _layer(res):
    (layer,) = res.report.layers
    return layer


def _check(g, res, feeds, action):
    layer = _layer(res)
    assert layer["action"] == action, layer
    assert_same(g.as_graph_def(), res.graph_def, feeds, ["out:0"])
    return layer


# ---------------------------------------------------------------------- ExpandDims
@pytest.mark.parametrize("axes,fmt", [
    ((1, 1), "NHWC"),  # [N, C] -> [N, 1, C] -> [N, 1, 1, C]
    ((0, -2), "NHWC"),  # [1, N, C] -> [1, N, 1, C]: axis 0 is no negative axis
    ((-3, 0), "NHWC"),  # [1, N, C] -> [1, 1, N, C]
    ((-1, -1), "NCHW"),  # [N, C, 1] -> [N, C, 1, 1]: the channels stay at axis 1
])
def test_expand_dims_between_dense_and_bn(axes, fmt):
    rng = np.random.default_rng(40)
    g = tf.Graph()
    with g.as_default():
        x, y = _dense(rng)
        for i, a in enumerate(axes):
            y = tf.expand_dims(y, a, name=f"expand{i}")
        tf.nn.relu(_fused(y, rng, fmt), name="out")
    res = bnconvert.fold(g.as_graph_def(), inputs=["x:0"], outputs=["out:0"])
    layer = _check(g, res, {"x:0": rng.normal(size=(2, 3)).astype(np.float32)}, "fold")
    assert layer["through"] == ["expand0", "expand1"]


def test_expand_dims_with_a_computed_axis_is_kept_as_scale_shift():
    rng = np.random.default_rng(42)
    g = tf.Graph()
    with g.as_default():
        x, y = _dense(rng)
        y = tf.expand_dims(y, tf.raw_ops.Rank(input=x) - 1, name="expand_computed")  # axis 1, computed from x
        y = tf.expand_dims(y, 1)
        tf.identity(_fused(y, rng), name="out")
    res = bnconvert.fold(g.as_graph_def(), inputs=["x:0"], outputs=["out:0"])
    layer = _check(g, res, {"x:0": rng.normal(size=(2, 3)).astype(np.float32)}, "scale_shift")
    assert "expand_computed" in layer["reason"] and "non-constant axis" in layer["reason"]


# ---------------------------------------------------------------------- the channel axis
def test_reshape_that_moves_the_channels_is_not_folded():
    """NCHW conv [N, 4, 2, 2] reshaped to [N, 1, 4, 4]: the last axis now holds H*W, not the
    conv's channels, although both are 4.  Folding would scale the wrong values."""
    rng = np.random.default_rng(43)
    g = tf.Graph()
    with g.as_default():
        x = v1.placeholder(tf.float32, [2, 3, 2, 2], name="x")
        w = tf.constant(rng.normal(size=(3, 3, 3, C)).astype(np.float32))
        y = tf.nn.conv2d(x, w, 1, "SAME", data_format="NCHW", name="prod")
        y = tf.reshape(y, [2, 1, 4, C], name="to_rows")
        tf.identity(_fused(y, rng), name="out")
    res = bnconvert.fold(g.as_graph_def(), inputs=["x:0"], outputs=["out:0"])
    layer = _check(g, res, {"x:0": rng.normal(size=(2, 3, 2, 2)).astype(np.float32)}, "scale_shift")
    assert "to_rows" in layer["reason"]


def test_bn_on_another_axis_than_the_conv_channels_is_not_folded():
    """An NHWC conv with H == C, then a BN whose parameters have shape [C, 1, 1]: it scales the
    rows, not the conv's output channels."""
    rng = np.random.default_rng(44)
    g = tf.Graph()
    with g.as_default():
        x = v1.placeholder(tf.float32, [2, C, 5, 3], name="x")
        y = tf.nn.conv2d(x, tf.constant(rng.normal(size=(3, 3, 3, C)).astype(np.float32)), 1, "SAME", name="prod")
        tf.identity(_decomposed(y, rng, (C, 1, 1)), name="out")
    res = bnconvert.fold(g.as_graph_def(), inputs=["x:0"], outputs=["out:0"])
    layer = _check(g, res, {"x:0": rng.normal(size=(2, C, 5, 3)).astype(np.float32)}, "scale_shift")
    assert "channel axis" in layer["reason"]


# ---------------------------------------------------------------------- reshape pairs
def _reshape_pair_graph(between: str):
    """conv [2, 3, 5, C] (-> Identity) -> Reshape [-1, 1, 1, C] -> BN -> Reshape [-1, C] -> Relu."""
    rng = np.random.default_rng(45)
    g = tf.Graph()
    with g.as_default():
        x = v1.placeholder(tf.float32, [2, 3, 5, 3], name="x")
        y = tf.nn.conv2d(x, tf.constant(rng.normal(size=(3, 3, 3, C)).astype(np.float32)), 1, "SAME", name="prod")
        if between == "bias":
            y = tf.nn.bias_add(y, tf.constant(rng.normal(size=C).astype(np.float32)), name="bias")
        elif between == "identity":
            y = tf.identity(y, name="ident")
        z = _fused(tf.reshape(y, [-1, 1, 1, C], name="bn/Reshape"), rng)
        tf.nn.relu(tf.reshape(z, [-1, C], name="bn/Reshape_1"), name="out")
    return g, {"x:0": rng.normal(size=(2, 3, 5, 3)).astype(np.float32)}


@pytest.mark.parametrize("between", ["none", "bias", "identity"])
def test_reshape_pair_after_a_conv_keeps_its_shape(between):
    """Only a dense layer's output is already [N, C]: after a conv the pair must stay (bnconvert
    collapsed it, and the Relu then read the rank-4 conv output: shape [2, 3, 5, 4], not [30, 4])."""
    g, feeds = _reshape_pair_graph(between)
    res = bnconvert.fold(g.as_graph_def(), inputs=["x:0"], outputs=["out:0"])
    _check(g, res, feeds, "fold")
    assert run_graph_def(res.graph_def, feeds, ["out:0"])["out:0"].shape == (30, C)


def _contrib_dense(back: str):
    """contrib's rank-2 BN: dense [N, C] (N unknown) -> BiasAdd -> Reshape [-1, 1, 1, C] -> fused BN ->
    Reshape back (to ``Shape`` of the BN's input, to [-1, C], or to ``Shape`` of the MatMul), or not."""
    rng = np.random.default_rng(49)
    g = tf.Graph()
    with g.as_default():
        x = v1.placeholder(tf.float32, [None, 3], name="x")
        y = tf.linalg.matmul(x, tf.constant(rng.normal(size=(3, C)).astype(np.float32)), name="prod")
        yb = tf.nn.bias_add(y, tf.constant(rng.normal(size=C).astype(np.float32)), name="bias")
        z = _fused(tf.reshape(yb, [-1, 1, 1, C], name="bn/Reshape"), rng)
        if back == "none":  # the BN's [N, 1, 1, C] output is used as it is
            tf.nn.relu(z, name="out")
        else:
            shape = {"input": tf.shape(yb), "minus_one": [-1, C], "matmul": tf.shape(y)}[back]
            tf.nn.relu(tf.reshape(z, shape, name="bn/Reshape_1"), name="out")
    return g, {"x:0": rng.normal(size=(2, 3)).astype(np.float32)}


@pytest.mark.parametrize("back", ["input", "minus_one", "matmul", "none"])
def test_contrib_dense_reshape_pair(back):
    """The pair around the BN collapses when the second Reshape restores the BN input's shape
    (``Shape`` of it, or [-1, C]); ``replaced_by`` is then the bias output, which the folded graph
    still has.  Back to another tensor's computed shape, or not back at all: left as it is."""
    g, feeds = _contrib_dense(back)
    gd = g.as_graph_def()
    res = bnconvert.fold(gd, inputs=["x:0"], outputs=["out:0"])
    layer = _check(g, res, feeds, "fold")
    ops_after = [n.op for n in res.graph_def.node]
    assert ops_after.count("Reshape") == {"matmul": 2, "none": 1}.get(back, 0)
    assert layer["replaced_by"] == "bias:0"
    ref = run_graph_def(gd, feeds, [layer["bn_output"]])[layer["bn_output"]]
    got = run_graph_def(res.graph_def, feeds, ["bias:0"])["bias:0"]
    np.testing.assert_allclose(got.reshape(ref.shape), ref, rtol=1e-5, atol=1e-5 * np.abs(ref).max())


# ---------------------------------------------------------------------- what verification compares
@pytest.mark.parametrize("layout,bias,form", [
    ("NHWC", "biasadd", "fused"),
    ("NHWC", "none", "decomposed"),
    ("dense", "biasadd", "fused"),  # contrib's rank-2 path: Reshape -> FusedBatchNorm -> Reshape
    ("dense", "none", "fused"),
])
def test_replaced_by_names_a_tensor_of_the_folded_graph_with_the_bn_values(layout, bias, form):
    """Layer verification runs ``bn_output`` in the original and ``replaced_by`` in the folded
    graph: the latter must exist there and hold the BN's values."""
    gd, feeds = conv_bn(layout, bias, form, seed=46)
    res = bnconvert.fold(gd, inputs=["x:0"], outputs=["out:0"])
    layer = _layer(res)
    assert layer["action"] == "fold"
    assert node_of(layer["replaced_by"]) in {n.name for n in res.graph_def.node}
    assert layer["replaced_by"] != layer["bn_output"]
    ref = run_graph_def(gd, feeds, [layer["bn_output"]])[layer["bn_output"]]
    got = run_graph_def(res.graph_def, feeds, [layer["replaced_by"]])[layer["replaced_by"]]
    np.testing.assert_allclose(got.reshape(ref.shape), ref, rtol=1e-5, atol=1e-5 * np.abs(ref).max())


def test_replaced_by_of_a_bn_that_is_an_output_is_the_output():
    gd, feeds = conv_bn("NHWC", "biasadd", "fused", seed=47)
    res = bnconvert.fold(gd, inputs=["x:0"], outputs=["out:0", "bn/FusedBatchNormV3:0"])
    layer = _layer(res)
    assert layer["replaced_by"] == layer["bn_output"] == "bn/FusedBatchNormV3:0"
    assert_same(gd, res.graph_def, feeds, ["out:0", "bn/FusedBatchNormV3:0"])


# ---------------------------------------------------------------------- rounds
def test_fold_all_counts_its_rounds():
    """conv -> BN -> BN: the second BN waits for the first (one round each), then a round finds
    none."""
    rng = np.random.default_rng(48)
    g = tf.Graph()
    with g.as_default():
        x = v1.placeholder(tf.float32, [2, 5, 6, 3], name="x")
        y = tf.nn.conv2d(x, tf.constant(rng.normal(size=(3, 3, 3, C)).astype(np.float32)), 1, "SAME", name="prod")
        y = _fused(_fused(y, rng, name="bn1/FusedBatchNormV3"), rng, name="bn2/FusedBatchNormV3")
        tf.identity(y, name="out")
    res = fold_all(Graph(g.as_graph_def()), ["out:0"])
    assert res.rounds == 2 and [layer.action for layer in res.layers] == ["fold", "fold"]
