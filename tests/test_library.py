"""Issue 11, the library for pipelines: paths, Models and GraphDefs; bytes in memory; argument
checks; errors that are all BNConvertError with an exit code; TF logging quiet; TFLite batch."""
from __future__ import annotations

import logging
import os

import numpy as np
import pytest

import bnconvert
from bnconvert.errors import (BNConvertError, InputError, InternalError, MissingDependencyError,
                              VerificationError)
from conftest import FIXTURES, run_graph_def

MLP = os.path.join(FIXTURES, "mnist_mlp_contrib_fused.pb")  # contrib: Reshape(Shape(input)) around the BN


@pytest.fixture(scope="module")
def graph_def():
    from bnconvert.tfproto import new_graph_def

    gd = new_graph_def()
    with open(MLP, "rb") as f:
        gd.ParseFromString(f.read())
    return gd


@pytest.fixture(scope="module")
def in_memory(graph_def, tmp_path_factory):
    """convert_bytes on a GraphDef, run from an empty folder to see that nothing is written."""
    cwd = tmp_path_factory.mktemp("cwd")
    before = graph_def.SerializeToString()
    old = os.getcwd()
    os.chdir(cwd)
    try:
        files, report = bnconvert.convert_bytes(graph_def, to=("onnx", "tflite"), input_shapes={"x": [3, 784]})
    finally:
        os.chdir(old)
    return files, report, cwd, before


def test_convert_bytes_from_a_graph_def(in_memory, graph_def):
    files, report, cwd, before = in_memory
    assert set(files) == {"onnx", "tflite"} and all(isinstance(b, bytes) and b for b in files.values())
    assert report.ok and set(report.verification) == {"onnx:CPUExecutionProvider", "tflite"}
    assert report.files == {} and os.listdir(cwd) == []
    assert graph_def.SerializeToString() == before  # the input is never modified
    from bnconvert.verify.runners import run_onnx

    x = np.random.default_rng(0).random((3, 784), dtype=np.float32)  # ONNX keeps input_shapes
    ref = run_graph_def(graph_def, {"x:0": x}, report.outputs, flags={"phase:0": False})
    got = run_onnx(files["onnx"], {"x:0": x}, report.outputs)
    np.testing.assert_allclose(got[report.outputs[0]], ref[report.outputs[0]], rtol=1e-4, atol=1e-5)


def test_tflite_batch_is_dynamic_and_runs_through_litert(in_memory, graph_def):
    """Exported at batch 3 (input_shapes), resized at run time to 4: XNNPACK accepts it."""
    files, report, _, _ = in_memory
    info = report.exports["tflite"]
    assert info["batch"] == "dynamic", info.get("batch_note")
    from bnconvert.verify.runners import run_tflite, tflite_interpreter

    try:
        import ai_edge_litert  # noqa: F401

        assert info["interpreter"] == "ai_edge_litert"
        assert type(tflite_interpreter(files["tflite"])).__module__.startswith("ai_edge_litert")
    except ImportError:
        assert info["interpreter"] == "tensorflow"
    x = np.random.default_rng(1).random((4, 784), dtype=np.float32)
    ref = run_graph_def(graph_def, {"x:0": x}, report.outputs, flags={"phase:0": False})
    got = run_tflite(files["tflite"], {"x:0": x}, report.outputs)
    out = report.outputs[0]
    assert got[out].shape == (4, 10)
    np.testing.assert_allclose(got[out], ref[out], rtol=1e-4, atol=1e-4)


def test_tflite_batch_fixed_by_the_graph_is_reported(tmp_path):
    from bnconvert.export.tflite import export_tflite
    from bnconvert.tfproto import tf

    tf = tf()
    g = tf.Graph()
    with g.as_default():
        x = tf.compat.v1.placeholder(tf.float32, [2, 3], name="x")
        tf.identity(tf.matmul(x, tf.constant(np.ones((3, 2), np.float32))), name="y")
    info = export_tflite(g.as_graph_def(), ["x:0"], ["y:0"], str(tmp_path / "f.tflite"), {"x:0": [2, 3]})
    assert info["batch"] == "fixed" and "fixes the batch" in info["batch_note"]


def test_convert_and_fold_take_path_model_or_graph_def(graph_def, tmp_path):
    by_path = bnconvert.fold(MLP).report.bn
    assert bnconvert.fold(graph_def).report.bn == by_path == bnconvert.fold(bnconvert.load(MLP)).report.bn
    report = bnconvert.convert(graph_def, str(tmp_path), to="pb", verify=False, name="mlp")
    assert sorted(os.listdir(tmp_path)) == ["mlp.folded.pb", "mlp.report.json"]
    with pytest.raises(InputError, match="outdir"):
        bnconvert.convert(graph_def, to="pb")
    assert report.files["pb"].endswith("mlp.folded.pb")


def test_a_graph_def_where_a_path_is_needed_is_an_input_error(graph_def):
    with pytest.raises(InputError, match="expected a file path, got GraphDef"):
        bnconvert.compare(MLP, graph_def)
    with pytest.raises(InputError, match="expected a path, a Model or a GraphDef, got bytes"):
        bnconvert.fold(b"not a model")


@pytest.mark.parametrize("kwargs, message", [
    ({"set_flags": {"phase": "false"}}, r"set_flags\['phase'\]: expected True, False or a finite number, got 'false'"),
    ({"set_flags": ["phase"]}, "set_flags: expected a dict"),
    ({"to": 5}, "to: expected a string or a sequence of strings"),
    ({"to": None}, "to: give at least one format"),
    ({"to": ["onnx", 3]}, "to: expected a string or a sequence"),
    ({"to": "onnx,keras"}, "unknown format 'keras'"),
    ({"verify": "yes"}, "verify: expected True or False"),
    ({"opset": True}, "opset: expected an integer"),
    ({"atol": "1e-3"}, "atol: expected a non-negative number"),
    ({"input_shapes": {"x": "1,784"}}, r"input_shapes\['x'\]: expected a sequence of integers"),
    ({"providers": "tpu"}, "unknown provider 'tpu'"),
    ({"frobnicate": 1}, "unknown option 'frobnicate'"),
])
def test_arguments_are_type_checked(kwargs, message, tmp_path):
    with pytest.raises(InputError, match=message):
        bnconvert.convert(MLP, str(tmp_path), **kwargs)
    assert os.listdir(tmp_path) == []


def test_to_as_one_string_and_flags_with_or_without_port(tmp_path):
    files, report = bnconvert.convert_bytes(MLP, to="pb", set_flags={"phase:0": False}, verify=False,
                                            inputs="x", outputs="logits/BiasAdd")
    assert list(files) == ["pb"] and report.training_flags == {"phase:0": False}
    assert report.inputs == ["x:0"] and report.outputs == ["logits/BiasAdd:0"]


def test_only_takes_exact_names_and_globs():
    layers = {r["name"]: r["action"] for r in bnconvert.fold(MLP, only=["bn1"]).report.layers}
    assert layers == {"bn1": "fold", "bn2": "scale_shift"}
    assert {r["action"] for r in bnconvert.fold(MLP, only="bn*").report.layers} == {"fold"}
    with pytest.raises(InputError, match="--only 'bn' matches no batch norm .*bn1, bn2"):
        bnconvert.fold(MLP, only=["bn"])  # no substring matching
    resnet = os.path.join(FIXTURES, "resnet_like.pb")  # bn1 … stage1/block3/bn10 … bn53
    actions = {r["name"]: r["action"] for r in bnconvert.fold(resnet, only="bn1").report.layers}
    assert [n for n, a in actions.items() if a == "fold"] == ["bn1"]  # not bn10..bn19
    actions = {r["name"]: r["action"] for r in bnconvert.fold(resnet, only="*/bn1?").report.layers}
    assert sorted(n for n, a in actions.items() if a == "fold") == [f"stage{s}/block{b}/bn{i}" for s, b, i in
                                                                   ((1, 3, 10), (1, 3, 11), (2, 1, 12), (2, 1, 13),
                                                                    (2, 1, 14), (2, 1, 15), (2, 2, 16), (2, 2, 17),
                                                                    (2, 2, 18), (2, 3, 19))]


def test_every_error_is_a_bnconvert_error_with_its_exit_code(monkeypatch, tmp_path):
    assert InputError("x").exit_code == 2 and MissingDependencyError("x").exit_code == 2
    assert VerificationError("x").exit_code == 1 and InternalError("x").exit_code == 3
    from bnconvert import pipeline

    def boom(*a, **k):
        raise ZeroDivisionError("a bug")

    # loading and folding run in a child process (bnconvert.prepare); the export step runs here
    monkeypatch.setattr(pipeline, "_export_all", boom)
    with pytest.raises(InternalError, match="internal error: ZeroDivisionError: a bug") as info:
        bnconvert.convert(MLP, str(tmp_path), to="pb", verify=False)
    assert isinstance(info.value, BNConvertError) and isinstance(info.value.__cause__, ZeroDivisionError)
    assert os.listdir(tmp_path) == []


def test_tensorflow_logging_quiet_during_a_call_and_restored(caplog, capfd):
    tf_logger = logging.getLogger("tensorflow")
    tf_logger.setLevel(logging.DEBUG)
    seen = {}

    from bnconvert import pipeline

    real = pipeline._export_all  # runs in this process, between the child stages

    def spy(*a, **k):
        seen["level"] = tf_logger.level
        return real(*a, **k)

    try:
        pipeline._export_all = spy
        with caplog.at_level(logging.INFO, logger="bnconvert"):
            bnconvert.convert_bytes(MLP, to="tflite", verify=False)
    finally:
        pipeline._export_all = real
    assert seen["level"] >= logging.ERROR  # silenced while running
    assert tf_logger.level == logging.DEBUG  # restored afterwards
    tf_logger.setLevel(logging.NOTSET)
    messages = [r.getMessage() for r in caplog.records if r.name.startswith("bnconvert")]
    assert any("fold bn1" in m for m in messages) and any(m.startswith("export tflite:") for m in messages)
    from bnconvert.logs import NOISE

    err = capfd.readouterr().err
    assert not [ln for ln in err.splitlines() if NOISE.match(ln)], err
