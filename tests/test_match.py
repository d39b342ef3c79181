"""BN recognition: statistics checks, forms, never-edit matching."""
import numpy as np
import pytest

import bnconvert
from bnconvert.errors import StatisticsError, UnsupportedError
from bnconvert.graph import Graph
from bnconvert.match import find_bns


def _conv_fused(var, mean=None, fused_op="FusedBatchNormV3"):
    import tensorflow as tf

    rng = np.random.default_rng(0)
    g = tf.Graph()
    with g.as_default():
        x = tf.compat.v1.placeholder(tf.float32, [None, 4, 4, 2], name="x")
        w = tf.constant(rng.normal(size=(1, 1, 2, 3)).astype(np.float32))
        h = tf.nn.conv2d(x, w, 1, "SAME")
        c = lambda v: tf.constant(np.asarray(v, np.float32))  # noqa: E731
        mean = [0.0, 0.0, 0.0] if mean is None else mean
        y, *_ = tf.compat.v1.nn.fused_batch_norm(h, c([1, 1, 1]), c([0, 0, 0]), c(mean), c(var), is_training=False,
                                                   name="bn")
        tf.identity(y, name="out")
    return g.as_graph_def()


@pytest.mark.parametrize("var,mean,needle", [
    ([1.0, np.nan, 1.0], None, "variance holds NaN"),
    ([1.0, -0.5, 1.0], None, "variance is negative"),
    ([1.0, 1.0, 1.0], [0.0, np.inf, 0.0], "mean holds NaN or inf"),
])
def test_bad_statistics_name_the_node(var, mean, needle):
    with pytest.raises(StatisticsError, match=needle) as e:
        bnconvert.fold(_conv_fused(var, mean))
    assert "'bn" in str(e.value)
    rep = bnconvert.inspect(_conv_fused(var, mean))
    assert rep.bn["refused"] == 1 and needle.split()[0] in rep.layers[0]["reason"]


def test_decomposed_zero_variance_plus_epsilon():
    import tensorflow as tf

    g = tf.Graph()
    with g.as_default():
        x = tf.compat.v1.placeholder(tf.float32, [None, 3], name="x")
        h = tf.matmul(x, tf.constant(np.eye(3, dtype=np.float32)))
        y = tf.nn.batch_normalization(h, tf.zeros([3]), tf.constant([1.0, 0.0, 1.0]), None, None, 0.0)
        tf.identity(y, name="out")
    with pytest.raises(StatisticsError, match="variance \\+ epsilon"):
        bnconvert.fold(g.as_graph_def())


def test_placeholder_statistics_are_refused():
    import tensorflow as tf

    g = tf.Graph()
    with g.as_default():
        x = tf.compat.v1.placeholder(tf.float32, [None, 3], name="x")
        v = tf.compat.v1.placeholder(tf.float32, [3], name="var_in")
        h = tf.matmul(x, tf.constant(np.eye(3, dtype=np.float32)))
        tf.identity(tf.nn.batch_normalization(h, tf.zeros([3]), v, None, None, 1e-3), name="out")
    with pytest.raises(UnsupportedError, match="placeholder 'var_in'"):
        bnconvert.fold(g.as_graph_def(), inputs=["x:0"], outputs=["out:0"])


def test_matching_never_edits():
    gd = _conv_fused([1.0, 2.0, 3.0])
    g = Graph(gd)
    before = g.to_graph_def().SerializeToString(deterministic=True)
    (m,) = find_bns(g)
    assert m.form == "FusedBatchNormV3" and m.channels == 3 and m.axis == -1
    assert g.to_graph_def().SerializeToString(deterministic=True) == before
    with pytest.raises(Exception):
        m.scale = None  # frozen


def test_layer_norm_and_l2_normalize_are_not_batch_norms():
    import tensorflow as tf

    g = tf.Graph()
    with g.as_default():
        x = tf.compat.v1.placeholder(tf.float32, [None, 6], name="x")
        h = tf.matmul(x, tf.constant(np.ones((6, 6), np.float32)))
        m, v = tf.nn.moments(h, [1], keepdims=True)  # layer norm: moments over features
        ln = tf.nn.batch_normalization(h, m, v, None, None, 1e-3)
        tf.identity(tf.nn.l2_normalize(ln, 1), name="out")
    res = bnconvert.fold(g.as_graph_def())
    assert res.report.bn["found"] == 0
