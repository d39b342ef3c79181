"""Tests written to kill mutants of the graph index that survived the rest of the suite
(tools/mutate.py, docs/MUTATION.md), through :class:`bnconvert.graph.Graph`'s public methods
and :func:`bnconvert.fold` (checked against TensorFlow)."""
from __future__ import annotations

import numpy as np
import pytest

import bnconvert
from bnconvert.graph import Graph
from test_mutation_fold import X_SHAPE, _bn, _producer, assert_same

tf = pytest.importorskip("tensorflow")
v1 = tf.compat.v1


def test_digit_only_node_names():
    """TensorFlow allows node names such as ``7``: they are names, not output indices."""
    rng = np.random.default_rng(30)
    g = tf.Graph()
    with g.as_default():
        x = v1.placeholder(tf.float32, X_SHAPE["NHWC"], name="x")
        y, c = _producer("NHWC", x, rng)
        z = tf.identity(y, name="7")
        tf.nn.relu(_bn("NHWC", z, c, "fused", rng), name="42")
    gd = g.as_graph_def()
    res = bnconvert.fold(gd, inputs=["x:0"], outputs=["42:0"])
    assert res.report.bn["folded"] == 1
    assert_same(gd, res.graph_def, {"x:0": rng.normal(size=X_SHAPE["NHWC"]).astype(np.float32)}, ["42:0"])


def test_new_node_keeps_control_inputs():
    g = tf.Graph()
    with g.as_default():
        tf.constant(1.0, name="a")
    graph = Graph(g.as_graph_def())
    graph.new_node("NoOp", "after_a", ["^a"])
    graph.new_node("Identity", "b", ["a:0", "^after_a"], T=tf.compat.v1.AttrValue(type=tf.float32.as_datatype_enum))
    nodes = {n.name: list(n.input) for n in graph.to_graph_def().node}
    assert nodes["after_a"] == ["^a"] and nodes["b"] == ["a", "^after_a"]
    assert graph.control_consumers("a") == ["after_a"]
    assert graph.control_inputs(graph.nodes["b"]) == ["after_a"]


def test_consumers_of_every_output_port():
    g = tf.Graph()
    with g.as_default():
        flag = v1.placeholder(tf.bool, [], name="flag")
        off, on = tf.raw_ops.Switch(data=tf.constant([1.0, 2.0], name="d"), pred=flag, name="sw")
        tf.identity(on, name="uses_1")
        tf.identity(off, name="uses_0")
    graph = Graph(g.as_graph_def())
    assert graph.output_tensors("sw") == ["sw:0", "sw:1"]
    assert graph.all_consumers("sw") == ["uses_0", "uses_1"]
    assert graph.consumers("sw:1") == [("uses_1", 0)]


def test_a_node_without_a_name_is_refused():
    from bnconvert.errors import GraphError

    g = tf.Graph()
    with g.as_default():
        tf.constant(1.0, name="a")
    gd = g.as_graph_def()
    gd.node.add().op = "NoOp"
    with pytest.raises(GraphError, match="no name"):
        Graph(gd)


def test_attr_values():
    g = tf.Graph()
    with g.as_default():
        x = v1.placeholder(tf.float32, [1, 4, 4, 2], name="x")
        tf.nn.conv2d(x, tf.ones([1, 1, 2, 2]), [1, 2, 2, 1], "SAME", name="conv")
        tf.raw_ops.Squeeze(input=tf.ones([1, 3]), axis=[0], name="sq")
        tf.raw_ops.Bucketize(input=tf.ones([3]), boundaries=[0.5, 1.5], name="bucket")
    graph = Graph(g.as_graph_def())
    assert graph.attr(graph.nodes["bucket"], "boundaries") == [0.5, 1.5]
    conv = graph.nodes["conv"]
    assert graph.attr(conv, "strides") == [1, 2, 2, 1]
    assert graph.attr(conv, "data_format") == "NHWC" and graph.attr(conv, "padding") == "SAME"
    assert graph.attr(conv, "use_cudnn_on_gpu") is True
    assert graph.attr(conv, "explicit_paddings") == []
    assert graph.attr(graph.nodes["sq"], "squeeze_dims") == [0]
    assert graph.attr(conv, "no_such_attr", "dflt") == "dflt"


def test_const_of_a_missing_or_computed_tensor():
    g = tf.Graph()
    with g.as_default():
        a = tf.constant([1.0, 4.0], name="a")
        tf.math.rsqrt(tf.identity(a) + 0.0, name="r")
        tf.math.reciprocal(a, name="rec")
        tf.raw_ops.Inv(x=a, name="inv")
        tf.identity(v1.placeholder(tf.float32, [2], name="p"), name="q")
        tf.identity(tf.constant([1, 2], tf.int32), name="i")
    graph = Graph(g.as_graph_def())
    assert graph.const("i:0", wide=True).dtype == np.int32  # wide widens floats only
    assert graph.const("nosuch:0") is None
    assert graph.const("q:0") is None
    np.testing.assert_allclose(graph.const("r:0"), [1.0, 0.5])
    np.testing.assert_allclose(graph.const("rec:0"), [1.0, 0.25])
    np.testing.assert_allclose(graph.const("inv:0"), [1.0, 0.25])
    assert graph.const("r:0", wide=True).dtype == np.float64


def test_cycle_is_named():
    from bnconvert.errors import GraphError

    g = tf.Graph()
    with g.as_default():
        tf.constant(1.0, name="c")
    gd = g.as_graph_def()
    for name, src in (("a", "b"), ("b", "a")):
        n = gd.node.add()
        n.name, n.op = name, "Identity"
        n.input.append(src)
        n.attr["T"].type = tf.float32.as_datatype_enum
    with pytest.raises(GraphError, match="cycle through node 'a'"):
        Graph(gd).topo_order()


def _node(gd, name, op, inputs=(), **types):
    n = gd.node.add()
    n.name, n.op = name, op
    n.input.extend(inputs)
    for k, v in types.items():
        n.attr[k].type = v
    return n


def test_topo_order_skips_loop_back_edges_and_missing_inputs():
    """NextIteration → Merge is a while loop's back edge, not a cycle; an input naming no node
    is no edge (the loader refuses such graphs; Graph itself stays usable)."""
    g = tf.Graph()
    with g.as_default():
        tf.constant(1.0, name="c")
    gd = g.as_graph_def()
    f32 = tf.float32.as_datatype_enum
    _node(gd, "m", "Merge", ["c", "n"], T=f32)
    _node(gd, "n", "NextIteration", ["m"], T=f32)
    _node(gd, "d", "Identity", ["ghost"], T=f32)
    order = Graph(gd).topo_order()
    assert sorted(order) == ["c", "d", "m", "n"]
    assert order.index("c") < order.index("m") < order.index("n")
