"""Attack review of the child-process load/fold, layer budget and power-check changes.

Each test reproduces one confirmed bug and fails on the reviewed code (real TF runs, no mocks).
The command lines run as ``bnconvert.cli.main.main(argv)`` in this process (conftest.cli: fds 1
and 2 captured, the session's forkserver), not as a process of their own each.
"""
from __future__ import annotations

import os

import numpy as np
import pytest


def _tf():
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    import tensorflow as tf

    tf.compat.v1.disable_v2_behavior()
    return tf


def _save(graph, path):
    with open(path, "wb") as f:
        f.write(graph.as_graph_def().SerializeToString())
    return str(path)


def _scalar_and_batched_graph(path):
    """Inputs a[N,6,6,3] (conv + fused BN) and a scalar s; out = mean(relu(bn(conv(a)))) * s."""
    tf = _tf()
    rs = np.random.RandomState(0)
    g = tf.Graph()
    with g.as_default():
        a = tf.compat.v1.placeholder(tf.float32, [None, 6, 6, 3], name="a")
        s = tf.compat.v1.placeholder(tf.float32, [], name="s")
        h = tf.nn.conv2d(a, tf.constant(rs.randn(3, 3, 3, 4).astype("f")), [1, 1, 1, 1], "SAME")
        h = tf.compat.v1.nn.fused_batch_norm(
            h, tf.constant(rs.rand(4).astype("f") + .5), tf.constant(rs.randn(4).astype("f")),
            mean=tf.constant(rs.randn(4).astype("f")), variance=tf.constant(rs.rand(4).astype("f") + .5),
            is_training=False, name="bn1")[0]
        tf.identity(tf.reduce_mean(tf.nn.relu(h), [1, 2]) * s, name="out")
    return _save(g, path)


def _bn_in_while_loop_graph(path):
    """x[N,5,6] → while_loop over time: h = tanh(batch_normalization(matmul(x_t + h, W))) → out."""
    tf = _tf()
    rs = np.random.RandomState(0)
    g = tf.Graph()
    with g.as_default():
        x = tf.compat.v1.placeholder(tf.float32, [None, 5, 6], name="x")
        w = tf.constant(rs.randn(6, 6).astype("f") * .4)
        sc, of = tf.constant(rs.rand(6).astype("f") + .5), tf.constant(rs.randn(6).astype("f"))
        mu, var = tf.constant(rs.randn(6).astype("f")), tf.constant(rs.rand(6).astype("f") + .5)
        xt = tf.transpose(x, [1, 0, 2])

        def body(i, h):
            z = tf.matmul(xt[i] + h, w)
            return i + 1, tf.tanh(tf.nn.batch_normalization(z, mu, var, of, sc, 1e-3))

        _, h = tf.compat.v1.while_loop(lambda i, h: i < 5, body, [tf.constant(0), tf.zeros_like(xt[0])])
        tf.identity(h, name="out")
    return _save(g, path)


def _saved_model_logits_and_probs(folder):
    """A SavedModel whose signature names two outputs, one the ancestor of the other
    (logits and softmax(logits), the usual serving signature)."""
    tf = _tf()
    g = tf.Graph()
    with g.as_default():
        x = tf.compat.v1.placeholder(tf.float32, [None, 4], name="x")
        w = tf.compat.v1.get_variable("w", initializer=np.random.RandomState(0).randn(4, 3).astype("float32"))
        h = tf.compat.v1.layers.batch_normalization(tf.matmul(x, w), training=False, name="bn")
        logits = tf.identity(h, name="logits")
        probs = tf.nn.softmax(logits, name="probs")
        with tf.compat.v1.Session() as s:
            s.run(tf.compat.v1.global_variables_initializer())
            b = tf.compat.v1.saved_model.Builder(str(folder))
            sig = tf.compat.v1.saved_model.predict_signature_def({"x": x}, {"logits": logits, "probs": probs})
            b.add_meta_graph_and_variables(s, ["serve"], signature_def_map={"serving_default": sig})
            b.save()
    return str(folder)


# ---------------------------------------------------------------------------------------------- bugs
def test_library_convert_of_loaded_savedmodel_keeps_signature_outputs(tmp_path):
    """bnconvert.convert(bnconvert.load(savedmodel)) must convert the signature's outputs, as
    `bnconvert fold SAVEDMODEL` does.  The Model is staged as source.pb for the child, which drops
    Model.inputs/outputs, so the endpoint heuristic replaces the signature: 'logits:0' is lost."""
    import bnconvert

    sm = _saved_model_logits_and_probs(tmp_path / "sm")
    model = bnconvert.load(sm)
    assert model.outputs == ["logits:0", "probs:0"]
    assert bnconvert.fold(model).report.outputs == ["logits:0", "probs:0"]  # in-process: right
    report = bnconvert.convert(model, str(tmp_path / "out"), to="pb", verify=False)
    assert report.outputs == ["logits:0", "probs:0"]  # actual: ['probs:0']


def test_scalar_input_beside_batched_input_verifies(cli, tmp_path):
    """A graph with a batched input and a scalar input (a temperature, a keep-prob) folds and
    verifies.  Actual: exit 2, 'Cannot feed value of shape (1,) for Tensor s:0, which has shape ()'
    (sample_runs gives the scalar a batch dimension when the batch is not free)."""
    pb = _scalar_and_batched_graph(tmp_path / "scalar.pb")
    r = cli("fold", pb, "-o", str(tmp_path / "out"), "--to", "pb", "-q")
    assert r.returncode == 0, r.stderr
    assert os.path.isfile(tmp_path / "out" / "scalar.folded.pb")
    import json

    rep = json.load(open(tmp_path / "out" / "scalar.report.json"))
    assert rep["verification"]["tf:folded"]["ok"] and rep["verification_inputs"]["samples"] >= 2


def test_bn_inside_while_loop_verifies(cli, tmp_path):
    """README 'Loops and frames': a BN inside a loop body folds like any other.  The fold and the
    tf:folded comparison are fine, but the power check feeds the folded weight tensor, which lies
    inside the while frame ('... has inputs from different frames'), so the run fails with exit 2
    and a message naming the user's file as if the model could not run."""
    pb = _bn_in_while_loop_graph(tmp_path / "loop.pb")
    r = cli("fold", pb, "-o", str(tmp_path / "out"), "--to", "pb", "-q")
    assert r.returncode == 0, r.stderr
    assert os.path.isfile(tmp_path / "out" / "loop.folded.pb")
    # the power check reaches the weights inside the loop (it feeds the constant outside the frame)
    import json

    rep = json.load(open(tmp_path / "out" / "loop.report.json"))
    power = rep["verification_power"]
    assert "error" not in power and power["layers"] and power["caught_1pct"] is True, power
