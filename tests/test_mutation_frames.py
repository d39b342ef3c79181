"""Tests written to kill mutants of the inference-mode pass that survived run 7 (tools/mutate.py,
docs/MUTATION.md): which control edges are kept (inside a while frame, or from a node that may
still be dead: nested conds on computed predicates) and which are dropped (after the loop), a
resolved Merge that a control edge still uses (it becomes an Identity with its type), a loop
whose next iteration exists only in training mode, a predicate read through an ``Enter``, and
the count of loop invariants ``place_constants_in_frames`` adds.

The loop graph is ``fixtures/realtf1/rnn_bn_cell.pb`` (``dynamic_rnn`` whose cell has a BN on an
``is_training`` flag that enters the frame); the others are built here with raw ops or as
GraphDefs.  What runs is checked against TensorFlow.
"""
from __future__ import annotations

import os

import numpy as np
import pytest

import bnconvert
from bnconvert.errors import UnsupportedError
from bnconvert.fold import fold_all
from bnconvert.graph import Graph
from bnconvert.inference import place_constants_in_frames, predicate_value, to_inference
from conftest import FIXTURES, run_graph_def

tf = pytest.importorskip("tensorflow")
v1 = tf.compat.v1
F32, BOOL = 1, 10
RNN = os.path.join(FIXTURES, "realtf1", "rnn_bn_cell.pb")


@pytest.fixture(scope="module")
def rnn_gd():
    return bnconvert.load(RNN).graph_def


def _node(gd, name, op, inputs=(), **attrs):
    n = gd.node.add()
    n.name, n.op = name, op
    n.input.extend(inputs)
    for k, v in attrs.items():
        if k in ("T", "dtype"):
            n.attr[k].type = v
        elif k == "frame_name":
            n.attr[k].s = v.encode()
        elif k == "is_constant":
            n.attr[k].b = v
        elif k == "value":
            n.attr[k].tensor.CopyFrom(tf.make_tensor_proto(v))
        else:
            n.attr[k].i = v
    return n


# ---------------------------------------------------------------------- control edges in a loop
def test_control_edges_inside_the_frame_stay_and_after_it_go(rnn_gd):
    """Body constants keep ``^rnn/while/Identity`` and a loop-condition constant ``^rnn/while/Merge``
    (they place them in the frame; the Merge is no Switch output, only its frame keeps the edge);
    an edge from the loop's Exit (root frame again) only orders execution and is dropped, as is
    one from the input."""
    gd = type(rnn_gd)()
    gd.CopyFrom(rnn_gd)
    _node(gd, "rnn/while/in_cond", "Const", ["^rnn/while/Merge"], dtype=F32, value=np.float32(3.0))
    _node(gd, "after_exit", "Const", ["^rnn/while/Exit_2"], dtype=F32, value=np.float32(1.0))
    _node(gd, "after_x", "Const", ["^x"], dtype=F32, value=np.float32(2.0))
    g = Graph(gd)
    res = to_inference(g)
    assert res.flags == {"is_training:0": False}
    assert g.control_inputs(g.nodes["rnn/while/add/y"]) == ["rnn/while/Identity"]
    assert g.control_inputs(g.nodes["rnn/while/bncell/bn/batchnorm/add/y"]) == ["rnn/while/Identity"]
    assert g.control_inputs(g.nodes["rnn/while/in_cond"]) == ["rnn/while/Merge"]
    assert g.control_inputs(g.nodes["after_exit"]) == [] and g.control_inputs(g.nodes["after_x"]) == []


def test_place_constants_in_frames_counts_the_enters_it_adds(rnn_gd):
    g = Graph(rnn_gd)
    to_inference(g)
    fold_all(g, ["out:0"])
    enters = sum(n.op == "Enter" for n in g.nodes.values())
    added = place_constants_in_frames(g)
    assert added >= 1 and sum(n.op == "Enter" for n in g.nodes.values()) == enters + added
    assert place_constants_in_frames(g) == 0  # every frame constant has its Enter now


# ---------------------------------------------------------------------- conds on computed predicates
def _nested_conds():
    """An outer and an inner cond on computed predicates (both stay); the constant ``c_t`` lives
    in the outer true branch only through its control edge from the inner Merge."""
    g = tf.Graph()
    with g.as_default():
        x = v1.placeholder(tf.float32, [3], name="x")
        o_f, o_t = tf.raw_ops.Switch(data=x, pred=tf.reduce_sum(x) > 0.0, name="outer")
        i_f, i_t = tf.raw_ops.Switch(data=o_t, pred=tf.reduce_max(x) > 1.0, name="inner")
        inner, _ = tf.raw_ops.Merge(inputs=[i_f * 2.0, i_t * 3.0], name="inner_merge")
        with g.control_dependencies([inner]):
            c = tf.constant([5.0, 6.0, 7.0], name="c_t")
        outer, _ = tf.raw_ops.Merge(inputs=[o_f * -1.0, c], name="outer_merge")
        tf.identity(outer, name="out")
    return g.as_graph_def()


def test_edge_from_a_merge_that_may_be_dead_is_kept():
    """The inner Merge is dead whenever the outer cond takes its false branch: the edge keeps
    ``c_t`` dead there too, so the outer Merge gets one live input (dropping it: two)."""
    gd = _nested_conds()
    res = bnconvert.fold(gd, inputs=["x:0"], outputs=["out:0"])
    nodes = {n.name: n for n in res.graph_def.node}
    assert list(nodes["c_t"].input) == ["^inner_merge"]
    for xv in ([1.0, 2.0, 3.0], [-1.0, -2.0, 0.5], [0.2, 0.3, 0.1]):
        feeds = {"x:0": np.array(xv, np.float32)}
        np.testing.assert_array_equal(run_graph_def(res.graph_def, feeds, ["out:0"])["out:0"],
                                      run_graph_def(gd, feeds, ["out:0"])["out:0"])


def test_resolved_merge_used_by_a_control_edge_becomes_a_typed_identity():
    """A Merge decided by the training flag that a control edge still reads (from inside a cond
    on a computed predicate, so the edge is kept) is replaced by an Identity of its live input,
    with the Merge's type; TensorFlow runs the result."""
    g = tf.Graph()
    with g.as_default():
        x = v1.placeholder(tf.float32, [3], name="x")
        flag = v1.placeholder_with_default(False, [], name="is_training")
        off, on = tf.raw_ops.Switch(data=x, pred=tf.reduce_sum(x) > 0.0, name="outer")
        a_off, a_on = tf.raw_ops.Switch(data=on, pred=flag, name="flag_switch")
        m1, _ = tf.raw_ops.Merge(inputs=[a_on * 2.0, a_off], name="m1")
        tripled = on * 3.0
        with g.control_dependencies([m1]):
            z = tf.identity(tripled, name="z")
        fin, _ = tf.raw_ops.Merge(inputs=[off, z], name="fin")
        tf.identity(fin, name="out")
    gd = g.as_graph_def()
    res = bnconvert.fold(gd, inputs=["x:0"], outputs=["out:0"])
    assert res.report.inference["merges_resolved"] == 1
    nodes = {n.name: n for n in res.graph_def.node}
    assert nodes["m1"].op == "Identity" and nodes["m1"].attr["T"].type == F32
    assert list(nodes["m1"].input) == ["outer:1"] and "^m1" in nodes["z"].input
    for sign in (1.0, -1.0):
        feeds = {"x:0": sign * np.array([1.0, 2.0, 3.0], np.float32)}
        np.testing.assert_array_equal(run_graph_def(res.graph_def, feeds, ["out:0"])["out:0"],
                                      run_graph_def(gd, feeds, ["out:0"], {"is_training:0": False})["out:0"])


# ---------------------------------------------------------------------- hand-built loops
def _loop(next_from_dead_branch: bool):
    """while (v < 3) v = v + 1, where the increment reads Switch(body, is_training):1 (live only
    in training) or the body itself."""
    gd = tf.compat.v1.GraphDef()
    _node(gd, "x", "Placeholder", dtype=F32)
    _node(gd, "is_training", "Placeholder", dtype=BOOL)
    _node(gd, "lim", "Const", dtype=F32, value=np.float32(3.0))
    _node(gd, "one", "Const", dtype=F32, value=np.float32(1.0))
    _node(gd, "w/Enter", "Enter", ["x"], T=F32, frame_name="w", is_constant=False)
    _node(gd, "w/Merge", "Merge", ["w/Enter", "w/NextIteration"], T=F32, N=2)
    _node(gd, "w/lim", "Enter", ["lim"], T=F32, frame_name="w", is_constant=True)
    _node(gd, "w/Less", "Less", ["w/Merge", "w/lim"], T=F32)
    _node(gd, "w/LoopCond", "LoopCond", ["w/Less"])
    _node(gd, "w/Switch", "Switch", ["w/Merge", "w/LoopCond"], T=F32)
    _node(gd, "w/Exit", "Exit", ["w/Switch"], T=F32)
    _node(gd, "w/Identity", "Identity", ["w/Switch:1"], T=F32)
    _node(gd, "w/flag", "Enter", ["is_training"], T=BOOL, frame_name="w", is_constant=True)
    _node(gd, "w/train", "Switch", ["w/Identity", "w/flag"], T=F32)
    _node(gd, "w/one", "Enter", ["one"], T=F32, frame_name="w", is_constant=True)
    _node(gd, "w/add", "AddV2", ["w/train:1" if next_from_dead_branch else "w/Identity", "w/one"], T=F32)
    _node(gd, "w/NextIteration", "NextIteration", ["w/add"], T=F32)
    _node(gd, "out", "Identity", ["w/Exit"], T=F32)
    return gd


def test_loop_whose_next_iteration_exists_only_in_training_is_refused():
    with pytest.raises(UnsupportedError, match="'w/Merge' needs 'w/NextIteration', which exists only in training"):
        to_inference(Graph(_loop(True)))


def test_loop_with_a_dead_side_branch_is_kept():
    gd = _loop(False)
    g = Graph(gd)
    res = to_inference(g)
    assert res.flags == {"is_training:0": False} and res.switches_resolved == 1
    assert {"w/Merge", "w/NextIteration", "w/Exit"} <= set(g.nodes) and "w/train" not in g.nodes
    got = run_graph_def(g.to_graph_def(), {"x:0": np.float32(0.5)}, ["out:0"])["out:0"]
    assert got == run_graph_def(gd, {"x:0": np.float32(0.5), "is_training:0": False}, ["out:0"])["out:0"] == 3.5


def test_predicate_read_through_enter_and_identity():
    """The value of a predicate that enters a frame (an ``Enter`` of a constant, loop invariant
    or not) read through an Identity."""
    gd = tf.compat.v1.GraphDef()
    _node(gd, "t", "Const", dtype=BOOL, value=np.bool_(True))
    _node(gd, "e", "Enter", ["t"], T=BOOL, frame_name="f", is_constant=False)
    _node(gd, "i", "Identity", ["e"], T=BOOL)
    _node(gd, "ic", "Enter", ["t"], T=BOOL, frame_name="f", is_constant=True)
    g = Graph(gd)
    assert predicate_value(g, "i:0") is True and predicate_value(g, "e:0") is True
    assert predicate_value(g, "ic:0") is True and predicate_value(g, "t:0") is True
