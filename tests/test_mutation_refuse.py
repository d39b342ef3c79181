"""Tests written to kill mutants of the matcher that survived run 7 (tools/mutate.py,
docs/MUTATION.md): training-mode fused BNs, decomposed look-alikes whose constants do not
broadcast per channel, batch moments (training) against layer moments, BN chains left in the
graph after folding, the shape of a scalar BN's replacement (a bug: a scalar became [1]), and
an epsilon computed in the graph.  Through :func:`bnconvert.fold` and the public functions of
:mod:`bnconvert.match`; folds are checked against TensorFlow.
"""
from __future__ import annotations

import numpy as np
import pytest

import bnconvert
from bnconvert.errors import UnsupportedError
from bnconvert.graph import Graph
from bnconvert.match import find_bns, match_all
from conftest import run_graph_def
from test_mutation_fold import assert_same

tf = pytest.importorskip("tensorflow")
v1 = tf.compat.v1
C = 4
X = (2, 5, 6, 3)


def _conv(x, rng, c=C, name="conv"):
    w = rng.normal(size=(3, 3, int(x.shape[-1]), c)).astype(np.float32)
    return tf.nn.conv2d(x, tf.constant(w, name=name + "/w"), 1, "SAME", name=name)


def _feeds(rng, shape=X):
    return {"x:0": rng.normal(size=shape).astype(np.float32)}


# ---------------------------------------------------------------------- training-mode fused BNs
@pytest.mark.parametrize("attr", ["true", "absent"])
def test_training_mode_fused_bn_is_refused(attr):
    """``is_training=True`` (or no such attribute: TensorFlow's default is True) normalises
    with the batch's statistics: its mean/variance inputs are not what it uses."""
    rng = np.random.default_rng(50)
    g = tf.Graph()
    with g.as_default():
        x = v1.placeholder(tf.float32, X, name="x")
        params = [tf.constant(v) for v in (np.ones(C, np.float32), np.zeros(C, np.float32),
                                           np.zeros(C, np.float32), np.ones(C, np.float32))]
        y = tf.raw_ops.FusedBatchNormV3(x=_conv(x, rng), scale=params[0], offset=params[1], mean=params[2],
                                        variance=params[3], epsilon=1e-3, is_training=True, name="bn")
        tf.identity(y[0], name="out")
    gd = g.as_graph_def()
    if attr == "absent":
        for n in gd.node:
            if n.name == "bn":
                del n.attr["is_training"]
    matches, refusals = match_all(Graph(gd))
    assert matches == [] and [(r.node, r.op, r.error) for r in refusals] == [("bn", "FusedBatchNormV3", UnsupportedError)]
    assert "training mode" in refusals[0].reason
    with pytest.raises(UnsupportedError, match="training mode"):
        find_bns(Graph(gd))


# ---------------------------------------------------------------------- look-alikes
@pytest.mark.parametrize("b_shape", [(C + 1, 1), (1, 1, 1)])
def test_decomposed_look_alike_whose_constants_are_not_per_channel(b_shape):
    """``x * Rsqrt(var + eps) + b`` where ``b`` has another size than the scale (it broadcasts
    over the width, not the channels), or where the scale has two non-1 axes: no BN; the graph
    is left as it computes and still runs the same."""
    rng = np.random.default_rng(51)
    shape = (2, 5, C + 1, C)
    g = tf.Graph()
    with g.as_default():
        x = v1.placeholder(tf.float32, shape, name="x")
        if b_shape == (1, 1, 1):  # scale [C + 1, C]: two non-1 axes
            var = rng.uniform(0.5, 2.0, (C + 1, C)).astype(np.float32)
        else:
            var = rng.uniform(0.5, 2.0, C).astype(np.float32)
        scale = tf.math.rsqrt(tf.constant(var) + 1e-3, name="look/Rsqrt")
        b = tf.constant(rng.normal(size=b_shape).astype(np.float32), name="look/b")
        tf.nn.relu(tf.add(x * scale, b, name="look/add"), name="out")
    gd = g.as_graph_def()
    assert find_bns(Graph(gd)) == []
    res = bnconvert.fold(gd, inputs=["x:0"], outputs=["out:0"])
    assert res.report.bn["folded"] == 0
    assert_same(gd, res.graph_def, _feeds(rng, shape), ["out:0"])


# ---------------------------------------------------------------------- moments
@pytest.mark.parametrize("axes,training", [([0, 1, 2], True), ([1, 2, 3], False)])
def test_moments_over_the_batch_are_training_mode(axes, training):
    """``tf.nn.moments`` over the batch axis feeding ``batch_normalization`` is a training-mode BN
    (refused, naming the Mean); over the other axes it is a layer norm, no BN (left alone)."""
    rng = np.random.default_rng(52)
    g = tf.Graph()
    with g.as_default():
        x = v1.placeholder(tf.float32, X, name="x")
        h = _conv(x, rng)
        mean, var = tf.nn.moments(h, axes, keepdims=not training, name="moments")
        tf.identity(tf.nn.batch_normalization(h, mean, var, None, None, 1e-3, name="bn"), name="out")
    gd = g.as_graph_def()
    if training:
        with pytest.raises(UnsupportedError, match="computed from the batch by 'moments/variance'"):
            bnconvert.fold(gd, inputs=["x:0"], outputs=["out:0"])
    else:
        res = bnconvert.fold(gd, inputs=["x:0"], outputs=["out:0"])
        assert res.report.bn["found"] == 0
        assert_same(gd, res.graph_def, _feeds(rng), ["out:0"])


def test_batch_norm_reading_an_unfrozen_variable_is_refused():
    """``batch_normalization`` whose variance is read from a variable (a graph that was never
    frozen): the statistics are not constant, and the message says to freeze first."""
    rng = np.random.default_rng(55)
    g = tf.Graph()
    with g.as_default():
        x = v1.placeholder(tf.float32, X, name="x")
        var = v1.Variable(np.ones(C, np.float32), name="bn/moving_variance", use_resource=False)
        y = tf.nn.batch_normalization(_conv(x, rng), np.zeros(C, np.float32), var.value(), None, None, 1e-3,
                                      name="bn/batchnorm")
        tf.identity(y, name="out")
    with pytest.raises(UnsupportedError, match="unfrozen variable 'bn/moving_variance'; freeze the graph first"):
        bnconvert.fold(g.as_graph_def(), inputs=["x:0"], outputs=["out:0"])


def test_fed_variance_reshaped_before_the_epsilon_is_refused():
    """The walk back from ``variance + eps`` follows a Reshape's data input (not its shape) to the
    placeholder that feeds it."""
    rng = np.random.default_rng(56)
    g = tf.Graph()
    with g.as_default():
        x = v1.placeholder(tf.float32, X, name="x")
        var = tf.reshape(v1.placeholder(tf.float32, [1, C], name="var_feed"), [C], name="bn/var_vector")
        y = tf.nn.batch_normalization(_conv(x, rng), np.zeros(C, np.float32), var, None, None, 1e-3, name="bn/batchnorm")
        tf.identity(y, name="out")
    with pytest.raises(UnsupportedError, match="fed by placeholder 'var_feed'"):
        bnconvert.fold(g.as_graph_def(), inputs=["x:0", "var_feed:0"], outputs=["out:0"])


def test_variance_chosen_by_a_computed_flag_is_refused():
    """A cond on a computed predicate (``mode == 1``, no bool placeholder to set) choosing the
    batch's variance or the moving one: which one runs is decided at run time."""
    rng = np.random.default_rng(57)
    g = tf.Graph()
    with g.as_default():
        x = v1.placeholder(tf.float32, X, name="x")
        mode = v1.placeholder(tf.int32, [], name="mode")
        h = _conv(x, rng)
        _, batch_var = tf.nn.moments(h, [0, 1, 2], name="moments")
        moving = tf.constant(np.ones(C, np.float32), name="moving_variance")
        pred = tf.equal(mode, 1)
        off, on = tf.raw_ops.Switch(data=batch_var, pred=pred, name="cond/Switch")
        off_m, on_m = tf.raw_ops.Switch(data=moving, pred=pred, name="cond/Switch_1")
        var, _ = tf.raw_ops.Merge(inputs=[off_m, on], name="cond/Merge")
        tf.identity(tf.nn.batch_normalization(h, np.zeros(C, np.float32), var, None, None, 1e-3, name="bn/batchnorm"),
                    name="out")
    with pytest.raises(UnsupportedError, match="chosen at run time by Merge 'cond/Merge'"):
        bnconvert.fold(g.as_graph_def(), inputs=["x:0", "mode:0"], outputs=["out:0"])


# ---------------------------------------------------------------------- chains left after folding
def _prefolded(extra: str):
    """The BN ``tf.contrib.quantize`` already folded: ``conv(x, W * inv) + (beta - mean * inv)``
    with ``inv = Rsqrt(var + eps)``; ``extra="other"``: ``inv`` also scales another tensor;
    ``extra="identity"``: the bias is added to an Identity of the conv."""
    rng = np.random.default_rng(53)
    g = tf.Graph()
    with g.as_default():
        x = v1.placeholder(tf.float32, X, name="x")
        var = tf.constant(rng.uniform(0.5, 2.0, C).astype(np.float32), name="bn/var")
        inv = tf.math.rsqrt(tf.add(var, tf.constant(1e-3), name="bn/add"), name="bn/Rsqrt")
        w = tf.constant(rng.normal(size=(3, 3, 3, C)).astype(np.float32))
        y = tf.nn.conv2d(x, w * inv, 1, "SAME", name="conv")
        b = tf.constant(rng.normal(size=C).astype(np.float32)) - tf.constant(rng.normal(size=C).astype(np.float32)) * inv
        tf.identity(tf.add(tf.identity(y) if extra == "identity" else y, b), name="out")
        outputs = ["out:0"]
        if extra == "other":
            tf.multiply(tf.nn.relu(y), inv, name="other")
            outputs.append("other:0")
    return g.as_graph_def(), outputs, _feeds(rng)


@pytest.mark.parametrize("extra", ["none", "identity", "other"])
def test_prefolded_chain_is_reported_as_folded_only_when_it_feeds_only_the_layer(extra):
    gd, outputs, feeds = _prefolded(extra)
    res = bnconvert.fold(gd, inputs=["x:0"], outputs=outputs)
    (layer,) = res.report.layers
    assert layer["name"] == "bn" and layer["chain"] == "bn/Rsqrt"
    if extra != "other":
        assert (layer["form"], layer["action"], layer["producer"]) == ("prefolded", "fold", "conv")
    else:
        assert (layer["form"], layer["action"], layer["producer"]) == ("decomposed", "scale_shift", None)
        assert "feeds Mul 'other'" in layer["reason"]
    assert_same(gd, res.graph_def, feeds, outputs)


@pytest.mark.parametrize("eps", ["scalar", "vector"])
def test_leftover_rsqrt_of_a_scalar_plus_epsilon(eps):
    """``x * Rsqrt(2 + 1e-3)``: a constant chain of ``variance + epsilon`` with one value each is
    reported (left as computed); ``Rsqrt(v + w)`` of two vectors has no epsilon: no BN chain."""
    g = tf.Graph()
    with g.as_default():
        x = v1.placeholder(tf.float32, [2, 3], name="x")
        if eps == "scalar":
            s = tf.math.rsqrt(tf.add(tf.constant(2.0), tf.constant(1e-3)), name="n/Rsqrt")
        else:
            s = tf.math.rsqrt(tf.add(tf.constant([2.0, 1.0, 3.0]), tf.constant([1e-3, 1.0, 0.5])), name="n/Rsqrt")
        tf.multiply(x, s, name="scaled")
    gd = g.as_graph_def()
    res = bnconvert.fold(gd, inputs=["x:0"], outputs=["scaled:0"])
    if eps == "scalar":
        (layer,) = res.report.layers
        assert (layer["name"], layer["form"], layer["action"], layer["chain"]) == ("n", "decomposed", "scale_shift",
                                                                                  "n/Rsqrt")
        assert "feeds Mul 'scaled'" in layer["reason"]
    else:
        assert res.report.layers == []


def test_leftover_chain_that_is_itself_an_output_feeds_nothing():
    g = tf.Graph()
    with g.as_default():
        x = v1.placeholder(tf.float32, [2, 3], name="x")
        tf.math.rsqrt(tf.add(tf.constant([2.0, 1.0, 3.0]), tf.constant(1e-3)), name="n/Rsqrt")
        tf.identity(x, name="out")
    res = bnconvert.fold(g.as_graph_def(), inputs=["x:0"], outputs=["out:0", "n/Rsqrt:0"])
    (layer,) = res.report.layers
    assert layer["action"] == "scale_shift" and layer["producer"] is None
    assert "feeds nothing" in layer["reason"]


# ---------------------------------------------------------------------- scalar BNs
@pytest.mark.parametrize("wide", [None, "offset", "variance"])
def test_scalar_bn_keeps_the_shape_of_its_output(wide):
    """``batch_normalization`` of a scalar with scalar parameters is a scalar; with one parameter
    of shape [1, 1] it is [1, 1].  The Mul+Add replacement must broadcast to the same shape
    (bnconvert made the scalar a [1])."""
    g = tf.Graph()
    with g.as_default():
        x = v1.placeholder(tf.float32, [], name="x")
        p = {k: np.float32(v) for k, v in (("mean", 0.5), ("variance", 2.0), ("offset", 0.1), ("scale", 1.5))}
        if wide:
            p[wide] = np.full((1, 1), p[wide], np.float32)
        y = tf.nn.batch_normalization(x * 2.0, *(tf.constant(p[k]) for k in ("mean", "variance", "offset", "scale")),
                                      1e-3, name="bn")
        tf.identity(y, name="out")
    gd = g.as_graph_def()
    res = bnconvert.fold(gd, inputs=["x:0"], outputs=["out:0"])
    assert res.report.bn["scale_shift"] == 1
    feeds = {"x:0": np.float32(1.25)}
    ref = run_graph_def(gd, feeds, ["out:0"])["out:0"]
    got = run_graph_def(res.graph_def, feeds, ["out:0"])["out:0"]
    assert np.shape(got) == np.shape(ref) == ((1, 1) if wide else ())
    np.testing.assert_allclose(got, ref, rtol=1e-6)


# ---------------------------------------------------------------------- epsilon
def test_computed_epsilon_is_evaluated_in_float64():
    """Parameters are evaluated in float64: an epsilon computed as ``0.1 * 0.01`` (float32
    constants) is reported as their float64 product, not a float32-rounded one."""
    rng = np.random.default_rng(54)
    g = tf.Graph()
    with g.as_default():
        x = v1.placeholder(tf.float32, X, name="x")
        h = _conv(x, rng)
        var = tf.constant(rng.uniform(0.5, 2.0, C).astype(np.float32))
        eps = tf.multiply(tf.constant(0.1), tf.constant(0.01), name="bn/eps")
        inv = tf.math.rsqrt(tf.add(var, eps, name="bn/batchnorm/add"), name="bn/batchnorm/Rsqrt")
        shift = tf.constant(rng.normal(size=C).astype(np.float32)) * inv
        tf.identity(tf.add(h * inv, shift, name="bn/batchnorm/add_1"), name="out")
    gd = g.as_graph_def()
    (m,) = find_bns(Graph(gd))
    expected = float(np.float64(np.float32(0.1)) * np.float64(np.float32(0.01)))
    assert expected != float(np.float32(0.1) * np.float32(0.01))
    assert m.epsilon == expected
    res = bnconvert.fold(gd, inputs=["x:0"], outputs=["out:0"])
    assert res.report.layers[0]["epsilon"] == expected and res.report.bn["folded"] == 1
    assert_same(gd, res.graph_def, _feeds(rng), ["out:0"])
