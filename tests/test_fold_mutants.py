"""Tests that kill the bugs a mutation experiment planted in fold.py and match.py (issue 15).

Each test folds a small TF1 graph through :func:`bnconvert.fold` and checks the folded graph
against the original run in TensorFlow; each fails when its guard or fix is removed (checked by
reverting each one by hand, see the docstrings).
"""
from __future__ import annotations

import numpy as np
import pytest

import bnconvert
from bnconvert.graph import Graph

from conftest import run_graph_def

RNG = np.random.default_rng(15)


def _const(tf, v, name=None):
    return tf.constant(np.asarray(v, np.float32), name=name)


def _bn(tf, y, c, fmt="NHWC", name="bn"):
    """FusedBatchNormV3 in inference mode with random statistics (as a frozen graph holds them)."""
    p = [_const(tf, RNG.uniform(0.5, 1.5, c)), _const(tf, RNG.normal(size=c)),
         _const(tf, RNG.normal(size=c) * 0.5), _const(tf, RNG.uniform(0.3, 2.0, c))]
    return tf.compat.v1.nn.fused_batch_norm(y, *p, epsilon=1e-3, is_training=False, data_format=fmt, name=name)[0]


def _check(gd, feeds, outputs, folded=1, scale_shift=0):
    res = bnconvert.fold(gd, inputs=list(feeds), outputs=outputs)
    assert res.report.bn["folded"] == folded, res.report.layer_table()
    assert res.report.bn["scale_shift"] == scale_shift, res.report.layer_table()
    want = run_graph_def(gd, feeds, outputs)
    got = run_graph_def(res.graph_def, feeds, outputs)
    for o in outputs:
        ref = want[o].astype(np.float64)
        err = np.abs(got[o].astype(np.float64) - ref).max()
        assert err <= 1e-5 * max(1.0, np.abs(ref).max()), (o, err)
    return res


# ---------------------------------------------------------------------- (a) Add bias operand
@pytest.mark.parametrize("const_first", [False, True], ids=["add_conv_const", "add_const_conv"])
def test_add_bias_between_conv_and_bn(const_first):
    """Conv -> Add(const) -> BN, operands either way.  Killed mutant: plan recording the other
    operand of the Add as the bias (the conv output is then read as a constant and the fold
    crashes or folds the wrong tensor)."""
    import tensorflow as tf

    g = tf.Graph()
    with g.as_default():
        x = tf.compat.v1.placeholder(tf.float32, [2, 5, 4, 3], name="x")
        y = tf.nn.conv2d(x, _const(tf, RNG.normal(size=(3, 3, 3, 4))), 1, "SAME", name="conv")
        b = _const(tf, RNG.normal(size=4), name="bias")
        y = tf.add(b, y, name="add") if const_first else tf.add(y, b, name="add")
        tf.nn.relu(_bn(tf, y, 4), name="out")
    res = _check(g.as_graph_def(), {"x:0": RNG.normal(size=(2, 5, 4, 3)).astype(np.float32)}, ["out:0"])
    assert res.report.layers[0]["bias"] == "add"


# ---------------------------------------------------------------------- (b) NCHW / NCDHW bias
def _conv_nc(tf, rank, bias, cout):
    """NCHW Conv2D or NCDHW Conv3D with width == channels (an NHWC bias would broadcast silently)."""
    if rank == 4:
        shape = [2, 3, 5, cout]  # N, C, H, W with W == cout
        x = tf.compat.v1.placeholder(tf.float32, shape, name="x")
        y = tf.nn.conv2d(x, _const(tf, RNG.normal(size=(3, 3, 3, cout))), [1, 1, 1, 1], "SAME", data_format="NCHW",
                         name="conv")
        fmt = "NCHW"
    else:
        shape = [2, 3, 3, 5, cout]  # N, C, D, H, W with W == cout
        x = tf.compat.v1.placeholder(tf.float32, shape, name="x")
        y = tf.nn.conv3d(x, _const(tf, RNG.normal(size=(2, 2, 2, 3, cout))), [1] * 5, "SAME", data_format="NCDHW",
                         name="conv")
        fmt = "NCDHW"
    if bias:
        y = tf.nn.bias_add(y, _const(tf, RNG.normal(size=cout)), data_format=fmt, name="bias_add")
    return x, y, fmt, shape


@pytest.mark.parametrize("rank", [4, 5], ids=["NCHW", "NCDHW"])
@pytest.mark.parametrize("bias", [False, True], ids=["nobias", "bias"])
def test_channels_first_producer(rank, bias):
    """NCHW Conv2D / NCDHW Conv3D (+ optional bias) -> BN of the same layout, width == channels.

    Killed mutants: ``_insert_bias`` giving an NCHW producer an NHWC BiasAdd (wrong values: the
    width equals the channels, so it even runs); the NCDHW channel axis in ``match`` or
    ``_producer_axis`` (the BN is then not folded, or folded along the wrong axis)."""
    import tensorflow as tf

    g = tf.Graph()
    with g.as_default():
        x, y, fmt, shape = _conv_nc(tf, rank, bias, 4)
        tf.nn.relu(_bn(tf, y, 4, fmt), name="out")
    gd = g.as_graph_def()
    res = _check(gd, {"x:0": RNG.normal(size=shape).astype(np.float32)}, ["out:0"])
    layer = res.report.layers[0]
    assert layer["producer"] == "conv" and layer["data_format"] == fmt
    added = [n for n in Graph(res.graph_def).nodes.values() if "bn_folded" in n.name and n.op in ("BiasAdd", "AddV2")]
    if not bias:
        assert len(added) == 1
        if added[0].op == "BiasAdd":
            assert added[0].attr["data_format"].s.decode() == "NCHW"


# ---------------------------------------------------------------------- (c) requested output
def test_requested_intermediate_output_is_unchanged():
    """``--outputs out:0,conv/BiasAdd:0``: the producer's output is asked for, so the BN must not
    be folded into it.  Killed mutant: deleting the "is a graph output" guard (the BiasAdd then
    comes out scaled by the BN: relative error ~0.4)."""
    import tensorflow as tf

    g = tf.Graph()
    with g.as_default():
        x = tf.compat.v1.placeholder(tf.float32, [2, 6, 6, 3], name="x")
        y = tf.nn.conv2d(x, _const(tf, RNG.normal(size=(3, 3, 3, 4))), 1, "SAME", name="conv/Conv2D")
        y = tf.nn.bias_add(y, _const(tf, RNG.normal(size=4)), name="conv/BiasAdd")
        tf.nn.relu(_bn(tf, y, 4), name="out")
    res = _check(g.as_graph_def(), {"x:0": RNG.normal(size=(2, 6, 6, 3)).astype(np.float32)},
                 ["out:0", "conv/BiasAdd:0"], folded=0, scale_shift=1)
    assert "graph output" in res.report.layers[0]["reason"]


# ---------------------------------------------------------------------- pass-through shapes
@pytest.mark.parametrize("fmt", ["NWC", "NCW"])
def test_conv1d_squeeze_between_conv_and_bn(fmt):
    """Conv1D = ExpandDims -> Conv2D -> Squeeze, then a fused BN on the re-expanded 4-D tensor
    in either layout: folds through the shape ops with the channel axis followed."""
    import tensorflow as tf

    g = tf.Graph()
    with g.as_default():
        shape = [2, 7, 3] if fmt == "NWC" else [2, 3, 7]
        x = tf.compat.v1.placeholder(tf.float32, shape, name="x")
        y = tf.nn.conv1d(x, _const(tf, RNG.normal(size=(3, 3, 5))), 1, "SAME", data_format=fmt, name="conv1d")
        y = tf.expand_dims(y, 2 if fmt == "NWC" else 3)  # [N, W, 1, C] / [N, C, W, 1]
        tf.nn.relu(_bn(tf, y, 5, "NHWC" if fmt == "NWC" else "NCHW"), name="out")
    res = _check(g.as_graph_def(), {"x:0": RNG.normal(size=shape).astype(np.float32)}, ["out:0"])
    assert res.report.layers[0]["through"]


def test_squeeze_of_the_channel_axis_is_not_followed():
    """A Reshape that moves the channels (NCHW conv output flattened) is refused, not folded."""
    import tensorflow as tf

    g = tf.Graph()
    with g.as_default():
        x = tf.compat.v1.placeholder(tf.float32, [2, 3, 4, 4], name="x")
        y = tf.nn.conv2d(x, _const(tf, RNG.normal(size=(1, 1, 3, 4))), [1, 1, 1, 1], "SAME", data_format="NCHW")
        y = tf.reshape(y, [2, 4, 4, 4])  # NCHW bytes read as NHWC: channels scrambled
        tf.nn.relu(_bn(tf, y, 4), name="out")
    res = _check(g.as_graph_def(), {"x:0": RNG.normal(size=(2, 3, 4, 4)).astype(np.float32)}, ["out:0"],
                 folded=0, scale_shift=1)
    assert "moves the channel axis" in res.report.layers[0]["reason"]


def test_squeeze_of_the_channel_axis_is_named():
    """Conv with one output channel, Squeeze of that axis, BN over another axis: refused with
    the reason (the final axis check alone would refuse it too, with a vaguer message)."""
    import tensorflow as tf

    g = tf.Graph()
    with g.as_default():
        x = tf.compat.v1.placeholder(tf.float32, [2, 4, 1, 3], name="x")
        y = tf.nn.conv2d(x, _const(tf, RNG.normal(size=(1, 1, 3, 1))), 1, "SAME")
        y = tf.squeeze(y, [2, 3])  # [2, 4]
        c = lambda v: _const(tf, v)  # noqa: E731
        y = tf.nn.batch_normalization(y, c(RNG.normal(size=4)), c(RNG.uniform(0.5, 2, 4)), c(RNG.normal(size=4)),
                                      c(RNG.uniform(0.5, 1.5, 4)), 1e-3)
        tf.identity(y, name="out")
    res = _check(g.as_graph_def(), {"x:0": RNG.normal(size=(2, 4, 1, 3)).astype(np.float32)}, ["out:0"],
                 folded=0, scale_shift=1)
    assert "removes the channel axis" in res.report.layers[0]["reason"]
