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
