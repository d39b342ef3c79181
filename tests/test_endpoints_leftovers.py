"""Inputs and outputs the earlier fixes left out: every output of a final multi-output node,
a node's outputs named out of index order, and a ``PlaceholderWithDefault`` named as an input.

Each test runs the real command line (``conftest.cli``: ``bnconvert.cli.main.main`` in this
process) on a small graph built with tf.compat.v1 and fails on the code before its fix.
"""
from __future__ import annotations

import json
import os

import numpy as np
import pytest

RUNTIMES = ("tf:folded", "onnx:CPUExecutionProvider", "tflite")


def _tf():
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    import tensorflow as tf

    return tf


def _dense_bn(tf, x, rs, cin=4, c=6):
    """x @ W → (reshaped to NHWC) fused BN → back to [N, c]: one foldable BN."""
    h = tf.reshape(tf.matmul(x, tf.constant(rs.randn(cin, c).astype("f"))), [-1, 1, 1, c])
    y = tf.compat.v1.nn.fused_batch_norm(
        h, tf.constant(rs.rand(c).astype("f") + .5), tf.constant(rs.randn(c).astype("f") * .1),
        mean=tf.constant(rs.randn(c).astype("f") * .1), variance=tf.constant(rs.rand(c).astype("f") + .5),
        is_training=False, name="bn")[0]
    return tf.reshape(y, [-1, c])


@pytest.fixture(scope="module")
def graphs(tmp_path_factory):
    """name → .pb path of the small graphs below (built once for the module)."""
    tf = _tf()
    folder = tmp_path_factory.mktemp("leftovers")

    def build(name, body):
        rs = np.random.RandomState(0)
        g = tf.Graph()
        with g.as_default():
            body(tf, rs)
        path = folder / f"{name}.pb"
        path.write_bytes(g.as_graph_def().SerializeToString())
        return str(path)

    def x(tf):
        return tf.compat.v1.placeholder(tf.float32, [None, 4], name="x")

    return {
        # the model ends in a split: both pieces are read by nothing
        "split": build("split", lambda tf, rs: tf.split(_dense_bn(tf, x(tf), rs), 2, axis=1, name="split")),
        # ends in top_k: values (float32) and indices (int32) both unread
        "topk": build("topk", lambda tf, rs: tf.nn.top_k(_dense_bn(tf, x(tf), rs), 3, name="topk")),
        # top_k's values read on, its indices read by nothing
        "topk_used": build("topk_used", lambda tf, rs: tf.nn.relu(
            tf.nn.top_k(_dense_bn(tf, x(tf), rs), 3, name="topk")[0], name="out")),
        # the input has a default: x = placeholder_with_default(const) → dense → BN → relu
        "pwd": build("pwd", lambda tf, rs: tf.nn.relu(_dense_bn(
            tf, tf.compat.v1.placeholder_with_default(tf.constant(rs.randn(2, 4).astype("f")), [None, 4], name="x"),
            rs), name="out")),
    }


def _fold(cli, tmp_path, model, *args) -> dict:
    """``bnconvert fold MODEL --json ARGS``: the report; the run must have passed."""
    r = cli("fold", model, "-o", tmp_path / "out", "--force", "--json", *args)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout)


def _verified(report, outputs: list[str]) -> None:
    """Every runtime compared exactly ``outputs`` and passed."""
    ver = report["verification"]
    assert set(RUNTIMES) <= set(ver), list(ver)
    for runtime in RUNTIMES:
        assert ver[runtime]["status"] == "pass", (runtime, ver[runtime])
        assert [o["name"] for o in ver[runtime]["outputs"]] == outputs, runtime
        assert all(o["ok"] for o in ver[runtime]["outputs"]), (runtime, ver[runtime]["outputs"])


# -------------------------------------------------------------- 1. every output of a sink node

def test_default_outputs_are_every_output_of_a_final_split(cli, tmp_path, graphs):
    """Before: only ``split:0`` was an output; ``split:1`` was neither converted nor verified."""
    report = _fold(cli, tmp_path, graphs["split"])
    assert report["outputs"] == ["split:0", "split:1"]
    _verified(report, ["split:0", "split:1"])
    assert [o["name"] for o in report["exports"]["onnx"]["outputs"]] == ["split:0", "split:1"]


def test_default_outputs_of_a_final_top_k_and_of_a_partly_read_one(graphs):
    """A final top_k gives values and indices, in index order.  A top_k whose values are read
    on and whose indices are not gives no indices (find_outputs' docstring: a node's unread
    output is no output when its other outputs are read); a final BN gives its ``:0`` only."""
    import bnconvert

    assert bnconvert.inspect(graphs["topk"]).outputs == ["topk:0", "topk:1"]
    assert bnconvert.inspect(graphs["topk_used"]).outputs == ["out:0"]

    from bnconvert import endpoints
    from bnconvert.graph import Graph

    tf = _tf()
    g = tf.Graph()
    with g.as_default():
        x = tf.compat.v1.placeholder(tf.float32, [None, 1, 1, 3], name="x")
        tf.compat.v1.nn.fused_batch_norm(tf.nn.conv2d(x, tf.ones([1, 1, 3, 3]), [1, 1, 1, 1], "SAME"),
                                         tf.ones([3]), tf.zeros([3]), mean=tf.zeros([3]), variance=tf.ones([3]),
                                         is_training=False, name="bn")
    assert endpoints.default_outputs(Graph(g.as_graph_def()), ["x:0"]) == ["bn:0"]


def test_a_final_op_with_by_product_outputs_gives_its_result_only():
    """A pooling's argmax, a quantizer's range: outputs of a final node that are not results
    (endpoints._RESULT_OUTPUTS) are not made default outputs."""
    from bnconvert import endpoints
    from bnconvert.graph import Graph

    tf = _tf()
    g = tf.Graph()
    with g.as_default():
        x = tf.compat.v1.placeholder(tf.float32, [None, 4, 4, 3], name="x")
        h = tf.nn.conv2d(x, tf.ones([1, 1, 3, 3]), [1, 1, 1, 1], "SAME")
        tf.nn.max_pool_with_argmax(h, 2, 2, "SAME", name="pool")
        tf.quantization.quantize(tf.nn.relu(h), 0.0, 6.0, tf.quint8, name="q")
    outs = endpoints.default_outputs(Graph(g.as_graph_def()), ["x:0"])
    assert outs == ["pool:0", "q:0"], outs


# -------------------------------------------------------------- 2. a node's outputs in any order

@pytest.mark.parametrize("outputs", [["topk:1", "topk:0"], ["topk:0", "topk:1"], ["topk:1"]])
def test_outputs_of_one_node_in_any_order_verify(cli, tmp_path, graphs, outputs):
    """Before: with the int32 ``topk:1`` first, the ONNX copy for the layer checks declared
    every added layer tensor int32 (the type of the model's first output) and onnxruntime
    refused to load it (exit 2)."""
    report = _fold(cli, tmp_path, graphs["topk"], "--outputs", ",".join(outputs))
    assert report["outputs"] == outputs
    _verified(report, outputs)
    onnx_layers = report["verification"]["onnx:CPUExecutionProvider"]["layers"]
    assert [ly["name"] for ly in onnx_layers] == ["bn"] and onnx_layers[0]["ok"]


# -------------------------------------------------------------- 3. PlaceholderWithDefault input

def test_placeholder_with_default_named_as_input_verifies(cli, tmp_path, graphs):
    """Before: tf2onnx made ``x:0`` an input that is also an initializer (holding the default),
    which onnxruntime does not list among the inputs: "the ONNX model's inputs has no tensor
    'x:0' (it has: )".  A fed input is a plain input of the ONNX model now."""
    report = _fold(cli, tmp_path, graphs["pwd"], "--inputs", "x")
    assert report["inputs"] == ["x:0"]
    _verified(report, ["out:0"])
    assert [i["name"] for i in report["exports"]["onnx"]["inputs"]] == ["x:0"]
    onnx_layers = report["verification"]["onnx:CPUExecutionProvider"]["layers"]
    assert [ly["name"] for ly in onnx_layers] == ["bn"] and onnx_layers[0]["ok"]

    import onnx

    model = onnx.load(os.path.join(tmp_path, "out", "pwd.onnx"))
    assert "x:0" not in {i.name for i in model.graph.initializer}
    # the input graph is left as it was: x still has its default
    tf = _tf()
    gd = tf.compat.v1.GraphDef()
    with open(os.path.join(tmp_path, "out", "pwd.folded.pb"), "rb") as f:
        gd.ParseFromString(f.read())
    assert next(n.op for n in gd.node if n.name == "x") == "PlaceholderWithDefault"
