"""Every fixture through the whole job: fold → .pb/.onnx/.tflite → verified against the original
graph in TensorFlow, onnxruntime (CPU) and the TFLite interpreter."""
import json
import os
from collections import Counter

import onnx
import pytest

import bnconvert
from bnconvert.export.onnx import onnx_bn_leftovers
from bnconvert.graph import Graph

from conftest import fixture_specs

SPECS = fixture_specs()


def _onnx_ops(path):
    return Counter(n.op_type for n in onnx.load(path).graph.node)


@pytest.mark.parametrize("spec", SPECS, ids=[s["name"] for s in SPECS])
def test_convert_fixture(spec, tmp_out):
    report = bnconvert.convert(spec["path"], str(tmp_out))
    assert report.ok
    stem = os.path.basename(os.path.normpath(spec["path"])).rsplit(".", 1)[0] if not os.path.isdir(spec["path"]) \
        else os.path.basename(os.path.normpath(spec["path"]))
    if spec["path"].endswith(".meta"):
        stem = "model"
    files = report.files
    assert set(files) == {"pb", "onnx", "tflite", "report"}
    for p in files.values():
        assert os.path.isfile(p)
    assert sorted(os.listdir(tmp_out)) == sorted(os.path.basename(p) for p in files.values())
    assert set(report.verification) == {"tf:folded", "onnx:CPUExecutionProvider", "tflite"}
    for runtime, v in report.verification.items():
        assert v["ok"], (runtime, v)
        for o in v["outputs"]:
            assert o["max_rel"] <= 1e-4 or spec.get("dtype") == "float16", (runtime, o)
    # nothing BN-derived in the ONNX model: no BatchNormalization, If, Sqrt/Reciprocal, and no
    # more Mul/Add than the folded TF graph itself holds (the reported scale-shifts, real biases)
    assert onnx_bn_leftovers(files["onnx"]) == [] or _allowed_sqrt(spec, files["onnx"])
    folded = Graph(bnconvert.load(files["pb"]).graph_def).op_histogram()
    ops = _onnx_ops(files["onnx"])
    assert ops.get("Mul", 0) <= folded.get("Mul", 0) + folded.get("Square", 0), (ops, folded)  # Square → Mul
    onnx.checker.check_model(onnx.load(files["onnx"]))
    tfl = report.exports["tflite"]["ops"]
    assert not any("BATCH_NORM" in k.upper() for k in tfl), tfl
    with open(files["report"]) as f:
        saved = json.load(f)
    assert saved["bn"] == report.bn and saved["ok"] is True
    assert set(saved["timings"]) >= {"load", "inference_mode", "match_fold", "export_onnx", "export_tflite",
                                      "verify_tf_original", "verify_tf:folded"}
    assert stem


def _allowed_sqrt(spec, path):
    """tf.nn.l2_normalize (the FaceNet embedding) legitimately becomes Sqrt/Reciprocal."""
    left = onnx_bn_leftovers(path)
    return spec["name"].startswith("facenet") and all(x.split(":")[0] in ("Sqrt", "Reciprocal") for x in left)
