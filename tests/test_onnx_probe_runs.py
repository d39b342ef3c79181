"""How the ONNX runtime's verification child runs a model (bnconvert.verify.runners.run_onnx_probes_here).

The outputs come from the model file as written — the verdict is on the model that ships, with
onnxruntime's fusions as they apply to it, not on the copy that exposes intermediate tensors — and
the layer tensors from that copy, on the first ``layer_rows`` rows of each run where the model's
batch is free (the whole batch, then cut, where it is fixed).  Real onnxruntime runs throughout.
"""
import os

import numpy as np
import onnx
import pytest

import bnconvert
from bnconvert.verify import runners
from conftest import FIXTURES

CONV = os.path.join(FIXTURES, "mnist_conv.pb")


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    rep = bnconvert.convert(CONV, str(tmp_path_factory.mktemp("probe")), to=("onnx",), verify=False)
    path = rep.files["onnx"]
    m = onnx.load(path)
    outputs = list(rep.outputs)
    graph_outs = {o.name for o in m.graph.output}
    probes = [o for n in m.graph.node if n.op_type in ("Relu", "Conv", "MaxPool") for o in n.output
              if o not in graph_outs][:6]
    assert len(probes) >= 3, [n.op_type for n in m.graph.node]
    x = np.random.default_rng(0).normal(size=[4] + rep.input_shapes[rep.inputs[0]][1:]).astype(np.float32)
    return {"path": path, "outputs": outputs, "probes": probes, "runs": [{rep.inputs[0]: x}]}


def test_outputs_come_from_the_file_as_written(model, monkeypatch):
    made = []
    real = runners.onnx_session

    def spy(path_or_bytes, provider="cpu"):
        made.append(path_or_bytes)
        return real(path_or_bytes, provider)

    monkeypatch.setattr(runners, "onnx_session", spy)
    results, found = runners.run_onnx_probes_here(model["path"], model["runs"], model["outputs"], model["probes"])
    assert made[0] == model["path"], "the outputs' session must be the shipped file, not the exposing copy"
    assert len(made) == 2 and isinstance(made[1], bytes)
    plain = runners.run_onnx_here(model["path"], model["runs"][0], model["outputs"])
    for o in model["outputs"]:
        np.testing.assert_array_equal(results[0][o], plain[o])
    assert set(found) == set(model["probes"])


def test_layers_on_the_first_rows_equal_the_whole_batch_cut(model):
    whole, _ = runners.run_onnx_probes_here(model["path"], model["runs"], model["outputs"], model["probes"])
    cut, _ = runners.run_onnx_probes_here(model["path"], model["runs"], model["outputs"], model["probes"],
                                          layer_rows=1)
    for p in model["probes"]:
        assert whole[0][p].shape[0] == 4 and cut[0][p].shape[0] == 1, p
        np.testing.assert_allclose(cut[0][p], whole[0][p][:1], rtol=1e-5, atol=1e-6)
    for o in model["outputs"]:  # the outputs are never cut
        assert cut[0][o].shape[0] == 4
        np.testing.assert_array_equal(cut[0][o], whole[0][o])


def test_a_fixed_batch_runs_whole_then_cuts(model, tmp_path):
    m = onnx.load(model["path"])
    for inp in m.graph.input:
        dims = inp.type.tensor_type.shape.dim
        if len(dims):
            dims[0].Clear()
            dims[0].dim_value = 4
    fixed = str(tmp_path / "fixed.onnx")
    onnx.save(m, fixed)
    sess = runners.onnx_session(fixed)
    assert not runners._onnx_free_batch(sess, model["runs"][0])
    assert runners._onnx_free_batch(runners.onnx_session(model["path"]), model["runs"][0])
    got, _ = runners.run_onnx_probes_here(fixed, model["runs"], model["outputs"], model["probes"], layer_rows=1)
    whole, _ = runners.run_onnx_probes_here(model["path"], model["runs"], model["outputs"], model["probes"])
    for p in model["probes"]:
        assert got[0][p].shape[0] == 1
        np.testing.assert_allclose(got[0][p], whole[0][p][:1], rtol=1e-5, atol=1e-6)


def test_no_probes_found_runs_the_file_once(model):
    results, found = runners.run_onnx_probes_here(model["path"], model["runs"], model["outputs"], ["no/such:0"])
    assert found == [] and set(results[0]) == set(model["outputs"])


def test_compare_feeds_a_placeholder_with_default_that_tf2onnx_made_an_initializer(tmp_path):
    """Stock tf2onnx writes a ``PlaceholderWithDefault`` named as an input as a graph input that is
    also an initializer (the default); onnxruntime lists it among the overridable initializers
    only.  ``bnconvert.compare`` on such a file (made by anything) must still feed it."""
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    import tensorflow as tf
    import tf2onnx

    rs = np.random.RandomState(0)
    g = tf.Graph()
    with g.as_default():
        x = tf.compat.v1.placeholder_with_default(tf.constant(rs.randn(2, 4).astype("f")), [None, 4], name="x")
        h = tf.reshape(tf.matmul(x, tf.constant(rs.randn(4, 6).astype("f"))), [-1, 1, 1, 6])
        y = tf.compat.v1.nn.fused_batch_norm(
            h, tf.constant(rs.rand(6).astype("f") + .5), tf.constant(rs.randn(6).astype("f") * .1),
            mean=tf.constant(rs.randn(6).astype("f") * .1), variance=tf.constant(rs.rand(6).astype("f") + .5),
            is_training=False, name="bn")[0]
        tf.nn.relu(tf.reshape(y, [-1, 6]), name="out")
    pb = tmp_path / "pwd.pb"
    pb.write_bytes(g.as_graph_def().SerializeToString())
    model, _ = tf2onnx.convert.from_graph_def(g.as_graph_def(), input_names=["x:0"], output_names=["out:0"])
    path = tmp_path / "stock.onnx"
    path.write_bytes(model.SerializeToString())
    sess = runners.onnx_session(str(path))
    assert "x:0" not in [i.name for i in sess.get_inputs()]  # the shape of the problem
    assert "x:0" in [i.name for i in sess.get_overridable_initializers()]
    result = bnconvert.compare(str(pb), str(path), inputs=["x:0"], outputs=["out:0"], batch=3)
    v = result["onnx:CPUExecutionProvider"]
    assert v["ok"] and v["outputs"][0]["reference_shape"][-1] == 6, v
