"""The two ways the TFLite export hands a graph to the converter (bnconvert.export.tflite._convert):
the GraphDef itself (the default: half the time and memory on ResNet-50) and the session path
(int8, outputs other than a node's first, and whatever the first cannot take).  Both must give
a model that computes what TensorFlow computes, and the caller's GraphDef must come back as it was."""
import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from bnconvert.export import tflite as T  # noqa: E402
from bnconvert.verify.runners import run_tf_here, tflite_interpreter  # noqa: E402


@pytest.fixture(scope="module")
def graph():
    """x (a PlaceholderWithDefault, batch unknown) → conv → relu → split: two outputs."""
    g = tf.Graph()
    rng = np.random.RandomState(0)
    with g.as_default():
        x = tf.compat.v1.placeholder_with_default(np.zeros((1, 6, 6, 3), np.float32), [None, 6, 6, 3], name="x")
        w = tf.constant(rng.randn(3, 3, 3, 4).astype(np.float32))
        y = tf.nn.relu(tf.nn.conv2d(x, w, [1, 1, 1, 1], "SAME") + tf.constant(rng.randn(4).astype(np.float32)))
        a, b = tf.split(y, 2, axis=3, name="split")
        tf.identity(a, name="first")
        tf.identity(b, name="second")
    return g.as_graph_def()


def _run_tflite(flat: bytes, x: np.ndarray) -> list[np.ndarray]:
    it = tflite_interpreter(flat)
    d = it.get_input_details()[0]
    it.resize_tensor_input(d["index"], list(x.shape))
    it.allocate_tensors()
    it.set_tensor(d["index"], x)
    it.invoke()
    return [it.get_tensor(o["index"]) for o in it.get_output_details()]


def test_graph_def_path_and_session_path_compute_the_same(graph):
    x = np.random.RandomState(1).randn(2, 6, 6, 3).astype(np.float32)
    ref = run_tf_here(graph, {"x:0": x}, ["first:0", "second:0"])
    shapes = {"x:0": [None, 6, 6, 3]}
    before = graph.SerializeToString()
    flats = {"graph_def": T._convert_graph_def, "session": lambda tf_, gd, i, o, s: T._convert_session(tf_, gd, i, o)}
    for how, fn in flats.items():
        gd = tf.compat.v1.GraphDef()
        gd.CopyFrom(graph)
        node = next(n for n in gd.node if n.name == "x")
        node.op = "Placeholder"  # what _convert does to a fed PlaceholderWithDefault
        del node.input[:]
        flat = fn(tf, gd, ["x:0"], ["first:0", "second:0"], shapes)
        got = _run_tflite(flat, x)
        np.testing.assert_allclose(got[0], ref["first:0"], rtol=1e-5, atol=1e-5, err_msg=how)
        np.testing.assert_allclose(got[1], ref["second:0"], rtol=1e-5, atol=1e-5, err_msg=how)
    assert graph.SerializeToString() == before


def test_convert_restores_the_placeholders_it_changed(graph):
    gd = tf.compat.v1.GraphDef()
    gd.CopyFrom(graph)
    before = gd.SerializeToString()
    flat = T._convert(tf, gd, ["x:0"], ["first:0"], {"x:0": [None, 6, 6, 3]})
    assert flat[4:8] == b"TFL3"
    assert gd.SerializeToString() == before  # the default and the declared shape are back


def test_an_output_that_is_not_a_nodes_first_goes_the_session_way(graph, tmp_path):
    """'split:1' cannot be named to the GraphDef path (it takes node names): the export must still
    give the second half, not the first."""
    x = np.random.RandomState(2).randn(1, 6, 6, 3).astype(np.float32)
    ref = run_tf_here(graph, {"x:0": x}, ["split:1"])
    rec = T.export_tflite(graph, ["x:0"], ["split:1"], str(tmp_path / "m.tflite"), {"x:0": [1, 6, 6, 3]})
    got = _run_tflite((tmp_path / "m.tflite").read_bytes(), x)
    assert len(got) == 1 and rec["outputs"][0]["shape"][-1] == 2
    np.testing.assert_allclose(got[0], ref["split:1"], rtol=1e-5, atol=1e-5)
