"""Inference mode: training flags, cond pruning, default inputs/outputs, --set."""
import os

import numpy as np
import pytest

import bnconvert
from bnconvert.errors import InputError, UnsupportedError
from bnconvert.graph import Graph
from bnconvert.inference import find_training_flags, parse_set, to_inference

from conftest import FIXTURES


def _graph(name):
    return Graph(bnconvert.load(os.path.join(FIXTURES, name)).graph_def)


def test_flag_found_and_conds_pruned():
    g = _graph("mlp_moments.pb")
    assert find_training_flags(g) == ["phase"]
    res = to_inference(g)
    assert res.flags == {"phase:0": False}
    assert res.switches_resolved > 0 and res.merges_resolved == 4
    ops = g.op_histogram()
    assert "Switch" not in ops and "Merge" not in ops
    assert g.nodes["phase"].op == "Const"


def test_fold_report_lists_flags_and_drops_training_ops():
    res = bnconvert.fold(os.path.join(FIXTURES, "mlp_moments.pb"))
    ops = Graph(res.graph_def).op_histogram()
    for op in ("Mean", "SquaredDifference", "Switch", "Merge", "Rsqrt", "AssignSub", "Placeholder"):
        assert op not in ops or (op == "Placeholder" and ops[op] == 1), ops
    assert res.report.training_flags == {"phase:0": False}
    assert res.report.inputs == ["x:0"]  # the label placeholder y is not an input


def test_set_true_is_training_mode_and_refused():
    with pytest.raises(UnsupportedError, match="training mode"):
        bnconvert.fold(os.path.join(FIXTURES, "fused_v3_conv.pb"), set_flags=parse_set(["phase=true"]))
    with pytest.raises(UnsupportedError, match="batch"):
        bnconvert.fold(os.path.join(FIXTURES, "mlp_moments.pb"), set_flags={"phase": True})


def test_set_rejects_non_flags():
    # x is the [None, N] float input: only a scalar placeholder can be set to a constant
    with pytest.raises(InputError, match="'x' is not a scalar placeholder"):
        bnconvert.fold(os.path.join(FIXTURES, "mlp_moments.pb"), set_flags={"x": False})
    with pytest.raises(InputError, match="NAME=VALUE"):
        parse_set(["phase"])
    with pytest.raises(InputError, match="true, false or a finite number"):
        parse_set(["phase=maybe"])
    with pytest.raises(InputError, match="true, false or a finite number"):
        parse_set(["keep_prob=nan"])


def test_placeholder_with_default_flag():
    import tensorflow as tf

    tf.compat.v1.disable_v2_behavior()
    g = tf.Graph()
    rng = np.random.default_rng(0)
    with g.as_default():
        x = tf.compat.v1.placeholder(tf.float32, [None, 3], name="x")
        phase = tf.compat.v1.placeholder_with_default(True, [], name="is_training")  # default: training!
        w = tf.constant(rng.normal(size=(3, 4)).astype(np.float32))
        h = tf.matmul(x, w)
        mean = tf.constant(rng.normal(size=4).astype(np.float32))
        var = tf.constant(rng.uniform(0.5, 2, size=4).astype(np.float32))
        bm, bv = tf.nn.moments(h, [0])
        m, v = tf.compat.v1.cond(phase, lambda: (bm, bv), lambda: (mean, var))
        tf.identity(tf.nn.batch_normalization(h, m, v, None, None, 1e-3), name="out")
    res = bnconvert.fold(g.as_graph_def())
    assert res.report.training_flags == {"is_training:0": False}
    assert res.report.outputs == ["out:0"] and res.report.bn["folded"] == 1
    xv = rng.normal(size=(5, 3)).astype(np.float32)
    with tf.compat.v1.Session(graph=g) as s:
        ref = s.run("out:0", {"x:0": xv, "is_training:0": False})
    from conftest import run_graph_def

    got = run_graph_def(res.graph_def, {"x:0": xv}, ["out:0"])["out:0"]
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5 * np.abs(ref).max())


def test_two_sinks_are_two_outputs():
    """Issue 9: an inference graph's sinks are all outputs (this used to be refused as ambiguous)."""
    import tensorflow as tf

    g = tf.Graph()
    with g.as_default():
        x = tf.compat.v1.placeholder(tf.float32, [None, 3], name="x")
        w = tf.constant(np.ones((3, 2), np.float32))
        h = tf.matmul(x, w)
        tf.nn.relu(h, name="a")
        tf.nn.sigmoid(h, name="b")
    res = bnconvert.fold(g.as_graph_def())
    assert res.report.outputs == ["a:0", "b:0"] and not res.report.outputs_guessed
    res = bnconvert.fold(g.as_graph_def(), outputs=["b:0"])
    assert res.report.outputs == ["b:0"]


def test_unknown_output_and_input_names():
    p = os.path.join(FIXTURES, "fused_v3_conv.pb")
    with pytest.raises(InputError, match="output 'nope:0' is not in the graph"):
        bnconvert.fold(p, outputs=["nope:0"])
    with pytest.raises(InputError, match="input 'nada' is not in the graph"):
        bnconvert.fold(p, inputs=["nada"])
