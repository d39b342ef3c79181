"""Tests written to kill mutants of the graph index that survived run 7 (tools/mutate.py,
docs/MUTATION.md): a cycle met while evaluating a constant, one evaluation per tensor, dangling
inputs, the node a cycle error names, and control inputs that are really dropped.  Through
:class:`bnconvert.graph.Graph`'s methods on hand-built GraphDefs.
"""
from __future__ import annotations

import signal

import numpy as np
import pytest

from bnconvert import consteval
from bnconvert.errors import GraphError
from bnconvert.graph import Graph

tf = pytest.importorskip("tensorflow")
F32 = 1


def _node(gd, name, op, inputs=(), value=None):
    n = gd.node.add()
    n.name, n.op = name, op
    n.input.extend(inputs)
    if value is not None:
        n.attr["dtype"].type = F32
        n.attr["value"].tensor.CopyFrom(tf.make_tensor_proto(np.asarray(value, np.float32)))
    else:
        n.attr["T"].type = F32
    return n


@pytest.fixture
def deadline():
    """Fail (instead of hanging) if the code under test loops for more than 5 s."""
    def _expired(*_):
        raise TimeoutError("no answer within 5 s")

    old = signal.signal(signal.SIGALRM, _expired)
    signal.alarm(5)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)


def test_const_through_a_cycle_raises(deadline):
    gd = tf.compat.v1.GraphDef()
    _node(gd, "c", "Const", value=1.0)
    _node(gd, "a", "AddV2", ["c", "b"])
    _node(gd, "b", "Identity", ["a"])
    _node(gd, "out", "Mul", ["b", "c"])
    with pytest.raises(GraphError, match="cycle through node"):
        Graph(gd).const("out:0")


def test_each_tensor_is_evaluated_once(monkeypatch):
    """``x1 = x0 * x0``, ``x2 = x1 * x1`` ...: every Mul reads one tensor twice, and each is
    evaluated once (the value is cached per tensor, not recomputed per reader)."""
    calls = []
    mul = consteval.CONST_OPS["Mul"]

    def counting(node, g, *vals):
        calls.append(node.name)
        return mul(node, g, *vals)

    monkeypatch.setitem(consteval.CONST_OPS, "Mul", counting)
    gd = tf.compat.v1.GraphDef()
    _node(gd, "x0", "Const", value=[1.01, -1.0])
    for i in range(1, 9):
        _node(gd, f"x{i}", "Mul", [f"x{i - 1}", f"x{i - 1}"])
    g = Graph(gd)
    expected = np.float32([1.01, -1.0])
    for _ in range(8):
        expected = expected * expected
    np.testing.assert_array_equal(g.const("x8:0"), expected)
    assert sorted(calls) == [f"x{i}" for i in range(1, 9)]
    g.const("x8:0", wide=True)
    assert len(calls) == 16  # the float64 values are their own cache


def test_check_inputs_exist_names_the_dangling_input():
    gd = tf.compat.v1.GraphDef()
    _node(gd, "c", "Const", value=1.0)
    _node(gd, "a", "Identity", ["c"])
    g = Graph(gd)
    g.check_inputs_exist()
    _node(gd, "b", "AddV2", ["a", "ghost:1"])
    with pytest.raises(GraphError, match="node 'b' names input 'ghost:1'"):
        Graph(gd).check_inputs_exist()


def test_cycle_error_names_a_node_that_is_stuck():
    """The nodes before the cycle were ordered: the error names one on (or after) the cycle,
    never one that was placed (here ``a_before`` sorts first)."""
    gd = tf.compat.v1.GraphDef()
    _node(gd, "a_before", "Const", value=1.0)
    _node(gd, "m", "AddV2", ["a_before", "n"])
    _node(gd, "n", "Identity", ["m"])
    with pytest.raises(GraphError, match="cycle through node 'm'"):
        Graph(gd).topo_order()


def test_drop_control_inputs_removes_them_from_the_node_and_the_index():
    gd = tf.compat.v1.GraphDef()
    _node(gd, "c", "Const", value=1.0)
    _node(gd, "order", "Const", value=2.0)
    _node(gd, "keep", "Const", value=3.0)
    _node(gd, "a", "Identity", ["c", "^order", "^keep"])
    g = Graph(gd)
    assert g.drop_control_inputs("a", keep=lambda src: src == "keep") == 1
    assert list(g.nodes["a"].input) == ["c", "^keep"]
    assert g.control_consumers("order") == [] and g.control_consumers("keep") == ["a"]
    assert g.consumers("c:0") == [("a", 0)]
    assert g.drop_control_inputs("a") == 1 and list(g.nodes["a"].input) == ["c"]
    assert g.drop_control_inputs("a") == 0 and list(g.to_graph_def().node[-1].input) == ["c"]
