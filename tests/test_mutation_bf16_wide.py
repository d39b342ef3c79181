"""Wide evaluation of BN parameters (Graph.const(wide=True)) widens every float, a *computed*
bfloat16 (a Cast to it) included: before, a Cast to bfloat16 stayed narrow, so Mul(float64,
bfloat16) took its dtype from the operand order and the folded weights depended on it (found by
the mutation review: consteval's ``astype(vals[0].dtype)`` mutant was not equivalent)."""
import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

import bnconvert  # noqa: E402
from bnconvert.tfproto import make_ndarray  # noqa: E402

GAMMA = np.array([1.0078125, 1.0234375, 1.1015625, 0.9921875], np.float32)
MEAN = np.array([100., -37., 55., 9.], np.float32)
VAR = np.array([0.7, 1.3, 2.9, 0.5], np.float32)
BETA = np.array([0.1, 0.2, -0.3, 0.4], np.float32)
W = np.random.default_rng(0).normal(size=(3, 4)).astype(np.float32)


def _graph(gamma_first: bool):
    """x bf16 → MatMul → BN chain written by hand: inv = rsqrt(var + eps) * Cast(gamma) (or the
    operands swapped), y * inv + (beta - mean * inv)."""
    g = tf.Graph()
    with g.as_default():
        x = tf.compat.v1.placeholder(tf.bfloat16, [2, 3], name="x")
        y = tf.linalg.matmul(x, tf.constant(W, dtype=tf.bfloat16), name="prod")
        gamma = tf.cast(tf.constant(GAMMA), tf.bfloat16)
        rs = tf.math.rsqrt(tf.constant(VAR, dtype=tf.bfloat16) + tf.constant(1e-3, dtype=tf.bfloat16))
        inv = gamma * rs if gamma_first else rs * gamma
        shift = tf.constant(BETA, dtype=tf.bfloat16) - tf.constant(MEAN, dtype=tf.bfloat16) * inv
        tf.identity(y * inv + shift, name="out")
    return g.as_graph_def()


def _weights(gd):
    f = bnconvert.fold(gd, inputs=["x:0"], outputs=["out:0"])
    assert [ly["action"] for ly in f.report.layers] == ["fold"]
    consts = {n.name: make_ndarray(n.attr["value"].tensor).astype(np.float32)
              for n in f.graph_def.node if n.op == "Const"}
    return sorted((k, v.ravel().tolist()) for k, v in consts.items() if v.size > 1)


def test_folded_weights_do_not_depend_on_the_operand_order():
    a, b = _weights(_graph(True)), _weights(_graph(False))
    assert [v for _, v in a] == [v for _, v in b]


def test_folded_weights_are_the_float64_fold_of_the_bfloat16_values():
    """W * gamma / sqrt(var + eps), each input rounded to bfloat16 first, computed in float64 and
    rounded to bfloat16 once (what wide evaluation promises)."""
    import ml_dtypes

    bf = ml_dtypes.bfloat16
    q = lambda v: np.asarray(v, np.float32).astype(bf).astype(np.float64)  # noqa: E731
    scale = q(GAMMA) / np.sqrt(q(VAR) + q(1e-3))
    want = (q(W) * scale).astype(bf).astype(np.float32).ravel().tolist()
    got = [v for _, v in _weights(_graph(False))]
    assert want in got, got
