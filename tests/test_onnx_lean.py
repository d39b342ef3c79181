"""bnconvert's leaner run of tf2onnx (bnconvert.export.onnx._tf2onnx: no freeze session, one
rollback copy instead of one per optimizer pass, constants' protobufs not rebuilt after each pass)
must give the model stock tf2onnx gives, also when an optimizer fails, and must leave tf2onnx as
it found it."""
import os

import numpy as np
import pytest

tf2onnx = pytest.importorskip("tf2onnx")

import bnconvert  # noqa: E402
from bnconvert.export import onnx as E  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def folded():
    f = bnconvert.fold(os.path.join(ROOT, "fixtures", "resnet_like.pb"))
    return f.graph_def, f.report.inputs, f.report.outputs


def _stock(gd, inputs, outputs):
    return tf2onnx.convert.from_graph_def(gd, input_names=inputs, output_names=outputs, opset=17)[0]


def _canonical(m):
    """The model's nodes and initializers with tensor and node names replaced by their order of
    first appearance (tf2onnx numbers the names it makes with a process-wide counter)."""
    from onnx import numpy_helper

    names: dict[str, str] = {}

    def n(x):
        return names.setdefault(x, f"t{len(names)}") if x else x

    for i in m.graph.input:
        n(i.name)
    nodes = []
    for node in m.graph.node:
        attrs = sorted((a.name, a.SerializeToString()) for a in node.attribute)
        nodes.append((node.op_type, node.domain, [n(x) for x in node.input], [n(x) for x in node.output], attrs))
    inits = {n(i.name): numpy_helper.to_array(i) for i in m.graph.initializer}
    return nodes, inits, [n(o.name) for o in m.graph.output]


def _same_model(a, b):
    na, ia, oa = _canonical(a)
    nb, ib, ob = _canonical(b)
    assert na == nb and oa == ob
    assert ia.keys() == ib.keys()
    for k in ia:
        np.testing.assert_array_equal(ia[k], ib[k], err_msg=k)


def test_lean_run_gives_stock_tf2onnx_model(folded):
    gd, inputs, outputs = folded
    from tf2onnx.graph import Node
    from tf2onnx import optimizer

    update_proto, table, copy_mod = Node.update_proto, dict(optimizer._optimizers), optimizer.copy
    lean = E._tf2onnx(gd, inputs, outputs, 17, None)
    _same_model(lean, _stock(gd, inputs, outputs))
    # tf2onnx is left as it was
    assert Node.update_proto is update_proto and dict(optimizer._optimizers) == table and optimizer.copy is copy_mod


class _Failing:
    """An optimizer that fails after it changed the graph (renames a node's output): the rollback
    must undo that change, as tf2onnx's own per-pass copies would."""

    graph_been_opt = False

    def optimize(self, graph, iteration):
        node = next(n for n in graph.get_nodes() if n.type == "Conv")
        node.name = "half-done-edit"
        raise RuntimeError("this optimizer fails")


def test_a_failing_optimizer_is_skipped_as_stock_tf2onnx_skips_it(folded):
    gd, inputs, outputs = folded
    from tf2onnx import optimizer

    table = optimizer._optimizers
    saved = dict(table)
    try:
        table["failing"] = _Failing
        lean = E._tf2onnx(gd, inputs, outputs, 17, None)
        stock = _stock(gd, inputs, outputs)
    finally:
        table.clear()
        table.update(saved)
    assert not any(n.name == "half-done-edit" for n in lean.graph.node)
    _same_model(lean, stock)
