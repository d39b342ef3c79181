"""Tests written to kill mutants of the matcher and the statistics checks that survived the rest
of the suite (tools/mutate.py, docs/MUTATION.md): BN names in the report, refusals of
non-constant statistics with the right cause, parameter shapes, operand orders of the
decomposed form, the reported epsilon.  Everything goes through :func:`bnconvert.fold` (or the
public functions of :mod:`bnconvert.arith`); folds are checked against TensorFlow.
"""
from __future__ import annotations

import os

import numpy as np
import pytest

import bnconvert
from bnconvert import arith
from bnconvert.errors import BNConvertError, StatisticsError, UnsupportedError
from conftest import FIXTURES, run_graph_def
from test_mutation_fold import assert_same

tf = pytest.importorskip("tensorflow")
v1 = tf.compat.v1
C = 4


# ---------------------------------------------------------------------- arith
def test_statistics_problem_epsilon_and_zero_variance():
    ok = dict(mean=np.zeros(3), variance=np.array([0.0, 1.0, 2.0]))
    assert arith.statistics_problem(epsilon=1e-3, **ok) is None  # zero variance, positive epsilon: fine
    assert arith.statistics_problem(epsilon=0.5, mean=np.zeros(2), variance=np.array([0.25, 1.0])) is None
    assert "epsilon" in arith.statistics_problem(epsilon=float("nan"), **ok)
    assert "epsilon" in arith.statistics_problem(epsilon=float("inf"), **ok)
    assert "0" in arith.statistics_problem(epsilon=0.0, **ok)


# ---------------------------------------------------------------------- names
@pytest.mark.parametrize("fixture,names", [
    ("mlp_contrib_fused", ["bn_1", "bn_2"]),  # bn_1/cond/FusedBatchNormV3_1
    ("decomp_contrib_scope", ["BatchNorm"]),  # BatchNorm/batchnorm_1/add_1
    ("fused_v1_conv", ["BatchNorm"]),
])
def test_report_names_are_the_bn_scopes(fixture, names):
    rep = bnconvert.fold(os.path.join(FIXTURES, fixture + ".pb")).report
    assert [layer["name"] for layer in rep.layers] == names


def _conv(x, rng, name="conv"):
    w = rng.normal(size=(3, 3, int(x.shape[-1]), C)).astype(np.float32)
    return tf.nn.conv2d(x, tf.constant(w, name=name + "/w"), 1, "SAME", name=name)


def _stats(rng):
    return (rng.uniform(0.5, 1.5, C).astype(np.float32), rng.normal(size=C).astype(np.float32),
            rng.normal(size=C).astype(np.float32), rng.uniform(0.3, 2.0, C).astype(np.float32))


@pytest.mark.parametrize("bn_name,expected", [
    ("FusedBatchNormV3", "FusedBatchNormV3"),  # no scope: the node name itself
    ("a/b/FusedBatchNormV3", "a/b"),
    ("blk/cond_3/FusedBatchNormV3_1", "blk"),
    ("blk/cond/FusedBatchNormV3_1", "blk"),
    ("blk/condition/FusedBatchNormV3", "blk/condition"),
    ("cond/FusedBatchNormV3", "cond/FusedBatchNormV3"),
    ("x1/not_a_bn", "x1/not_a_bn"),
])
def test_fused_names(bn_name, expected):
    rng = np.random.default_rng(0)
    g = tf.Graph()
    with g.as_default():
        x = v1.placeholder(tf.float32, [1, 5, 6, 3], name="x")
        gamma, beta, mean, var = _stats(rng)
        y = v1.nn.fused_batch_norm(_conv(x, rng), gamma, beta, mean=mean, variance=var, is_training=False)[0]
        tf.identity(y, name="out")
    gd = g.as_graph_def()
    old = y.op.name
    for n in gd.node:
        n.name = bn_name if n.name == old else n.name
        for i, s in enumerate(n.input):
            if s.split(":")[0] == old:
                n.input[i] = s.replace(old, bn_name, 1)
    rep = bnconvert.fold(gd, inputs=["x:0"], outputs=["out:0"]).report
    assert [layer["name"] for layer in rep.layers] == [expected]


@pytest.mark.parametrize("scope,expected", [("net/bn", "net/bn"), ("", "batchnorm/add_1")])
def test_decomposed_names_and_epsilon(scope, expected):
    import contextlib

    rng = np.random.default_rng(1)
    g = tf.Graph()
    with g.as_default():
        x = v1.placeholder(tf.float32, [2, 5, 6, 3], name="x")
        gamma, beta, mean, var = (tf.constant(v) for v in _stats(rng))
        with tf.name_scope(scope) if scope else contextlib.nullcontext():
            y = tf.nn.batch_normalization(_conv(x, rng), mean, var, beta, gamma, 2e-3)
        tf.identity(y, name="out")
    gd = g.as_graph_def()
    res = bnconvert.fold(gd, inputs=["x:0"], outputs=["out:0"])
    (layer,) = res.report.layers
    assert layer["name"] == expected and layer["action"] == "fold"
    assert layer["epsilon"] == pytest.approx(2e-3)
    assert_same(gd, res.graph_def, {"x:0": rng.normal(size=(2, 5, 6, 3)).astype(np.float32)}, ["out:0"])


# ---------------------------------------------------------------------- decomposed operand orders
@pytest.mark.parametrize("add_first,mul_first", [(False, False), (True, False), (False, True), (True, True)])
def test_decomposed_operand_orders(add_first, mul_first):
    """``Add(Mul(x, A), B)`` with the operands of both ops in either order folds, and right."""
    rng = np.random.default_rng(2)
    g = tf.Graph()
    with g.as_default():
        x = v1.placeholder(tf.float32, [2, 5, 6, 3], name="x")
        h = _conv(x, rng)
        gamma, beta, mean, var = (tf.constant(v) for v in _stats(rng))
        inv = tf.math.rsqrt(var + 1e-3) * gamma
        shift = beta - mean * inv
        mul = tf.multiply(inv, h, name="bn/mul") if mul_first else tf.multiply(h, inv, name="bn/mul")
        y = tf.add(shift, mul, name="bn/add") if add_first else tf.add(mul, shift, name="bn/add")
        tf.nn.relu(y, name="out")
    gd = g.as_graph_def()
    res = bnconvert.fold(gd, inputs=["x:0"], outputs=["out:0"])
    assert res.report.bn["folded"] == 1, res.report.layer_table()
    assert res.report.layers[0]["producer"] == "conv"
    assert res.report.layers[0]["name"] == "bn"
    assert_same(gd, res.graph_def, {"x:0": rng.normal(size=(2, 5, 6, 3)).astype(np.float32)}, ["out:0"])


def test_decomposed_scalar_variance_and_single_channel():
    """A scalar variance with per-channel mean/beta, and a one-channel BN with [1,1,1,1] params."""
    rng = np.random.default_rng(5)
    g = tf.Graph()
    with g.as_default():
        x = v1.placeholder(tf.float32, [2, 5, 6, 3], name="x")
        gamma, beta, mean, var = _stats(rng)
        y = tf.nn.batch_normalization(_conv(x, rng), tf.constant(mean), tf.constant(1.7), tf.constant(beta), None,
                                      1e-3, name="bn")
        w1 = rng.normal(size=(3, 3, 3, 1)).astype(np.float32)
        h1 = tf.nn.conv2d(x, tf.constant(w1), 1, "SAME", name="conv1")
        p = [tf.constant(np.full((1, 1, 1, 1), v, np.float32)) for v in (0.3, 0.8, -0.2, 1.4)]
        y1 = tf.nn.batch_normalization(h1, p[0], p[1], p[2], p[3], 1e-3, name="bn1")
        tf.identity(y, name="out")
        tf.identity(y1, name="out1")
    gd = g.as_graph_def()
    res = bnconvert.fold(gd, inputs=["x:0"], outputs=["out:0", "out1:0"])
    assert res.report.bn["folded"] == 2, res.report.layer_table()
    assert_same(gd, res.graph_def, {"x:0": rng.normal(size=(2, 5, 6, 3)).astype(np.float32)}, ["out:0", "out1:0"])


def test_decomposed_precomputed_zero_variance_plus_epsilon():
    """numpy statistics: ``variance + epsilon`` is one Const holding a 0, feeding the Rsqrt."""
    rng = np.random.default_rng(6)
    g = tf.Graph()
    with g.as_default():
        x = v1.placeholder(tf.float32, [2, 5, 6, 3], name="x")
        var = np.array([1.0, 0.0, 2.0, 1.0], np.float32)
        tf.identity(tf.nn.batch_normalization(_conv(x, rng), np.zeros(C, np.float32), var, None, None, 0.0),
                    name="out")
    with pytest.raises(StatisticsError, match="not positive"):
        bnconvert.fold(g.as_graph_def(), inputs=["x:0"], outputs=["out:0"])


def test_decomposed_nan_shift_names_its_constant():
    rng = np.random.default_rng(7)
    g = tf.Graph()
    with g.as_default():
        x = v1.placeholder(tf.float32, [2, 5, 6, 3], name="x")
        gamma, beta, mean, var = _stats(rng)
        beta[2] = np.nan
        y = tf.nn.batch_normalization(_conv(x, rng), tf.constant(mean), tf.constant(var),
                                      tf.constant(beta, name="bn_beta"), tf.constant(gamma), 1e-3)
        tf.identity(y, name="out")
    with pytest.raises(StatisticsError, match="node 'bn_beta'"):
        bnconvert.fold(g.as_graph_def(), inputs=["x:0"], outputs=["out:0"])


@pytest.mark.parametrize("eps_first,read", [(True, False), (False, True), (True, True)])
def test_training_mode_decomposed_bn_is_refused(eps_first, read):
    """``Rsqrt(eps + var)`` / ``Rsqrt(Identity(var) + eps)`` with a fed variance: not constant."""
    rng = np.random.default_rng(8)
    g = tf.Graph()
    with g.as_default():
        x = v1.placeholder(tf.float32, [2, 5, 6, 3], name="x")
        var = v1.placeholder(tf.float32, [C], name="var_feed")
        if read:
            var = tf.identity(var, name="bn/variance/read")
        eps = tf.constant(1e-3)
        inv = tf.math.rsqrt(tf.add(eps, var) if eps_first else tf.add(var, eps), name="bn/Rsqrt")
        tf.identity(_conv(x, rng) * inv, name="out")
    with pytest.raises(UnsupportedError, match="placeholder 'var_feed'"):
        bnconvert.fold(g.as_graph_def(), inputs=["x:0"], outputs=["out:0"])


@pytest.mark.parametrize("expr", ["sum", "scaled"])
def test_rsqrt_of_fed_values_is_no_batch_norm(expr):
    """``Rsqrt(p + q)`` (no constant epsilon) and ``Rsqrt(p * 2)`` (no Add) are left alone."""
    g = tf.Graph()
    with g.as_default():
        p = v1.placeholder(tf.float32, [3], name="p")
        q = v1.placeholder(tf.float32, [3], name="q")
        tf.identity(tf.math.rsqrt(p + q if expr == "sum" else p * 2.0), name="out")
    gd = g.as_graph_def()
    feeds = {"p:0": np.array([1.0, 2.0, 3.0], np.float32), "q:0": np.array([0.5, 0.5, 1.0], np.float32)}
    if expr != "sum":
        del feeds["q:0"]
    res = bnconvert.fold(gd, inputs=sorted(feeds), outputs=["out:0"])
    assert res.report.bn["found"] == 0
    assert_same(gd, res.graph_def, feeds, ["out:0"])


# ---------------------------------------------------------------------- non-constant statistics
def _fused_with_mean(kind: str):
    """conv → FusedBatchNormV3(is_training=False) whose mean is not a constant."""
    rng = np.random.default_rng(3)
    g = tf.Graph()
    with g.as_default():
        x = v1.placeholder(tf.float32, [2, 5, 6, 3], name="x")
        h = _conv(x, rng)
        gamma, beta, mean, var = _stats(rng)
        if kind == "placeholder":
            m = tf.identity(v1.placeholder(tf.float32, [C], name="mean_feed"), name="bn/mean/read")
        elif kind == "batch":  # a Mean over the batch that is not in a "moments" scope
            m = tf.reduce_mean(h, axis=[0, 1, 2], name="batch_mean")
        else:
            m = tf.identity(v1.Variable(mean, name="bn/moving_mean", use_resource=False), name="bn/read")
        y = v1.nn.fused_batch_norm(h, gamma, beta, mean=m, variance=var, is_training=False,
                                   name="bn/FusedBatchNormV3")[0]
        tf.identity(y, name="out")
    return g.as_graph_def()


@pytest.mark.parametrize("kind,needle", [
    ("placeholder", "fed by placeholder 'mean_feed'"),
    ("batch", "computed from the batch by 'batch_mean'"),
    ("variable", "unfrozen variable 'bn/moving_mean'"),
])
def test_non_constant_fused_statistics_are_refused(kind, needle):
    gd = _fused_with_mean(kind)
    with pytest.raises(UnsupportedError, match=needle) as e:
        bnconvert.fold(gd, inputs=["x:0"], outputs=["out:0"])
    assert "mean is not a constant" in str(e.value)
    rep = bnconvert.fold(gd, inputs=["x:0"], outputs=["out:0"], keep_going=True).report
    assert rep.bn["refused"] == 1 and needle in rep.layers[0]["reason"]
    assert rep.layers[0]["action"] == "refuse" and rep.layers[0]["channels"] == 0  # unknown


# ---------------------------------------------------------------------- parameter shapes
# Non-vector BN parameters ([C, 1], empty): TensorFlow's shape functions refuse such a graph in
# the loader, so the matcher's own guard was unreachable through fold() and was removed (issue 15).


