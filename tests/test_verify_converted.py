"""``bnconvert verify ORIGINAL CONVERTED`` on files bnconvert did not make, and the verdicts a
user sees: tf2onnx's own export (training flag kept as an input, static batch), a graph whose
output is dead on random inputs (inconclusive), failures that print their tables."""
import os

import numpy as np
import pytest

import bnconvert
from bnconvert.errors import InputError, VerificationError
from conftest import FIXTURES

MLP = os.path.join(FIXTURES, "mnist_mlp_contrib_fused.pb")


@pytest.fixture
def _cli(cli):
    """The command, in this process (conftest.cli)."""
    return lambda *args, timeout=None: cli(*args)


@pytest.fixture(scope="module")
def tf2onnx_exports(tmp_path_factory):
    """Plain tf2onnx exports of the unfolded MLP: the phase placeholder kept as an input, once
    with a free batch and once with a static batch of 4."""
    import tf2onnx

    from bnconvert.load import load

    gd = load(MLP).graph_def
    out = tmp_path_factory.mktemp("tf2onnx")
    paths = {}
    for name, shapes in (("plain", None), ("static4", {"x:0": [4, 784], "phase:0": []})):
        paths[name] = str(out / f"{name}.onnx")
        tf2onnx.convert.from_graph_def(gd, input_names=["x:0", "phase:0"], output_names=["logits/BiasAdd:0"],
                                       opset=17, shape_override=shapes, output_path=paths[name])
    return paths


def test_tf2onnx_export_with_the_flag_as_input_verifies(tf2onnx_exports):
    res = bnconvert.compare(MLP, tf2onnx_exports["plain"])
    v = res["onnx:CPUExecutionProvider"]
    assert v["ok"] and v["status"] == "pass"
    assert "phase:0=false" in v["note"]
    assert v["inputs"]["samples"] == 8


def test_static_batch_onnx_gets_runs_of_its_batch(_cli, tf2onnx_exports, tmp_path):
    res = bnconvert.compare(MLP, tf2onnx_exports["static4"], save_io=str(tmp_path / "io"))
    v = res["onnx:CPUExecutionProvider"]
    assert v["ok"], v
    assert v["inputs"]["batch"] == 4 and v["inputs"]["runs"] == 2
    saved = np.load(tmp_path / "io" / "inputs.npz")
    assert saved["x:0"].shape == (4, 784) and "phase:0" in saved.files
    # the .npz files are what verify-onnx takes (no TensorFlow needed there)
    p = _cli("verify-onnx", tf2onnx_exports["static4"], "--inputs", str(tmp_path / "io" / "inputs.npz"),
             "--expected", str(tmp_path / "io" / "expected.npz"))
    assert p.returncode == 0, p.stderr


def test_runtime_errors_keep_their_decisive_part(tf2onnx_exports):
    from bnconvert.verify.runners import run_onnx

    feeds = {"x:0": np.zeros((1, 784), np.float32), "phase:0": np.array(False)}
    with pytest.raises(InputError, match="Expected: 4"):
        run_onnx(tf2onnx_exports["static4"], feeds, ["logits/BiasAdd:0"])


def test_missing_input_is_named(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    g = helper.make_graph([helper.make_node("Identity", ["other"], ["logits/BiasAdd:0"])], "g",
                          [helper.make_tensor_value_info("other", TensorProto.FLOAT, [None, 10])],
                          [helper.make_tensor_value_info("logits/BiasAdd:0", TensorProto.FLOAT, [None, 10])])
    path = str(tmp_path / "wrong.onnx")
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), path)
    with pytest.raises(InputError, match="no input for 'x:0'.*its inputs: other"):
        bnconvert.compare(MLP, path)


def _dead_relu_pb(path):
    """conv -> BN (inference) -> Relu -> mean -> dense -> Relu with a bias of -100: zero everywhere."""
    import tensorflow as tf

    rng = np.random.default_rng(0)
    c = lambda a: tf.constant(np.asarray(a, np.float32))  # noqa: E731
    g = tf.Graph()
    with g.as_default():
        x = tf.compat.v1.placeholder(tf.float32, [None, 6, 6, 3], name="x")
        y = tf.nn.conv2d(x, c(rng.standard_normal((3, 3, 3, 4))), 1, "SAME")
        y = tf.compat.v1.nn.fused_batch_norm(y, c(rng.random(4) + 0.5), c(rng.standard_normal(4)),
                                             mean=c(rng.standard_normal(4)), variance=c(rng.random(4) + 0.5),
                                             epsilon=1e-3, is_training=False)[0]
        h = tf.reduce_mean(tf.nn.relu(y), axis=[1, 2])
        tf.nn.relu(tf.matmul(h, c(rng.standard_normal((4, 5)))) - 100.0, name="out")
    with open(path, "wb") as f:
        f.write(g.as_graph_def().SerializeToString())


def test_dead_relu_output_is_inconclusive_never_pass(_cli, tmp_path):
    import json

    pb = str(tmp_path / "dead.pb")
    _dead_relu_pb(pb)
    # the CLI prints the same tables as for a pass, then the error line; exit 1
    p = _cli("fold", pb, "-o", str(tmp_path / "cli"), "--to", "pb")
    assert p.returncode == 1, p.stderr
    assert "INCONCLUSIVE (all zeros)" in p.stdout and "max|ref|" in p.stdout
    assert p.stderr.strip().startswith("bnconvert: error: verification inconclusive")
    assert "all zeros" in p.stderr and "--data" in p.stderr
    with open(tmp_path / "cli" / "dead.report.json") as f:
        rep = json.load(f)
    assert rep["ok"] is False
    v = rep["verification"]["tf:folded"]
    assert v["status"] == "inconclusive" and v["outputs"][0]["constant"] == "all zeros"
    assert v["outputs"][0]["ref_max"] == 0 and rep["verification_inputs"]["samples"] == 8


def test_failed_verify_prints_tables_then_the_error(_cli, tf2onnx_exports, tmp_path):
    import onnx
    from onnx import numpy_helper

    m = onnx.load(tf2onnx_exports["plain"])
    init = next(i for i in m.graph.initializer if i.name.startswith("dense2/"))
    w = numpy_helper.to_array(init).copy()
    assert w.ndim == 2
    w[:, 0] *= 1.01
    init.CopyFrom(numpy_helper.from_array(w, init.name))
    bad = str(tmp_path / "bad.onnx")
    onnx.save(m, bad)
    res = bnconvert.compare(MLP, bad, raise_on_failure=False)["onnx:CPUExecutionProvider"]
    assert res["status"] == "fail" and [o["ok"] for o in res["layers"]] == [True, False]  # bn2 is first
    with pytest.raises(VerificationError) as e:
        bnconvert.compare(MLP, bad)
    assert "layer bn2" in str(e.value) and e.value.report.verification
    p = _cli("verify", MLP, bad)
    assert p.returncode == 1
    assert "runtime" in p.stdout and "FAIL" in p.stdout and "inputs:" in p.stdout
    assert "verification failed" in p.stderr and "layer bn2" in p.stderr


def test_unusable_cuda_provider_is_refused_before_any_work(_cli, tmp_path):
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("CUDA is available here")
    p = _cli("fold", MLP, "-o", str(tmp_path / "o"), "--providers", "cuda", timeout=120)
    assert p.returncode == 2 and "--providers cuda" in p.stderr and len(p.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()
