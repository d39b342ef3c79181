"""The real `bnconvert` command: formats, --no-verify, inspect, verify (incl. a corrupted ONNX).

The first test runs ``python -m bnconvert.cli.main`` as a process of its own; the others call
its ``main(argv)`` in this process with fds 1 and 2 captured (``capfd``), sharing the session's
forkserver instead of importing TensorFlow again per command."""
import json
import os
import subprocess
import sys

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from conftest import FIXTURES

MODEL = os.path.join(FIXTURES, "mnist_mlp_contrib_fused.pb")


def _subprocess(*args, timeout=600):
    return subprocess.run([sys.executable, "-m", "bnconvert.cli.main", *args], capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture
def bnconvert(cli):
    return cli


def test_fold_to_onnx_only_without_verification(tmp_path):
    p = _subprocess("fold", MODEL, "-o", str(tmp_path), "--to", "onnx", "--no-verify")
    assert p.returncode == 0, p.stderr
    assert sorted(os.listdir(tmp_path)) == ["mnist_mlp_contrib_fused.onnx", "mnist_mlp_contrib_fused.report.json"]
    rep = json.load(open(tmp_path / "mnist_mlp_contrib_fused.report.json"))
    assert rep["verification"] == {}
    assert rep["bn"] == {"found": 2, "folded": 2, "scale_shift": 0, "refused": 0}
    assert "runtime" not in p.stdout  # no verification table


def test_fold_prints_tables_and_json(bnconvert, tmp_path):
    p = bnconvert("fold", MODEL, "-o", str(tmp_path), "--json")
    assert p.returncode == 0, p.stderr
    rep = json.loads(p.stdout)
    assert set(rep["verification"]) == {"tf:folded", "onnx:CPUExecutionProvider", "tflite"}
    assert rep["training_flags"] == {"phase:0": False}
    assert rep["files"]["onnx"].endswith("mnist_mlp_contrib_fused.onnx")
    p2 = bnconvert("fold", MODEL, "-o", str(tmp_path))
    assert p2.returncode == 2 and "exists (pass --force" in p2.stderr
    p3 = bnconvert("fold", MODEL, "-o", str(tmp_path), "--force", "--to", "pb")
    assert p3.returncode == 0, p3.stderr
    assert "tf:folded" in p3.stdout and "PASS" in p3.stdout and "batch norms: 2 found, 2 folded" in p3.stdout


def test_no_fold_keeps_scale_shift(bnconvert, tmp_path):
    p = bnconvert("fold", MODEL, "-o", str(tmp_path), "--no-fold", "--to", "pb,onnx", "--json")
    assert p.returncode == 0, p.stderr
    rep = json.loads(p.stdout)
    assert rep["bn"]["scale_shift"] == 2 and rep["bn"]["folded"] == 0
    assert all(v["ok"] for v in rep["verification"].values())


def test_inspect_explains_and_writes_nothing(bnconvert, tmp_path):
    import shutil

    m = tmp_path / "m.pb"
    shutil.copy(os.path.join(FIXTURES, "shared_output.pb"), m)
    p = bnconvert("inspect", str(m), "--json")
    assert p.returncode == 0, p.stderr
    rep = json.loads(p.stdout)
    (layer,) = rep["layers"]
    assert layer["action"] == "scale_shift" and "also feeds" in layer["reason"]
    assert rep["training_flags"] == {"phase:0": False}
    assert os.listdir(tmp_path) == ["m.pb"]
    p = bnconvert("inspect", str(m))
    assert "scale_shift" in p.stdout and "also feeds" in p.stdout


def test_verify_detects_a_corrupted_onnx_weight(bnconvert, tmp_path):
    p = bnconvert("fold", MODEL, "-o", str(tmp_path), "--to", "onnx", "--no-verify")
    assert p.returncode == 0, p.stderr
    path = tmp_path / "mnist_mlp_contrib_fused.onnx"
    ok = bnconvert("verify", MODEL, str(path))
    assert ok.returncode == 0, ok.stderr
    assert "PASS" in ok.stdout
    model = onnx.load(str(path))
    init = next(t for t in model.graph.initializer if t.name.startswith("logits/biases"))
    w = numpy_helper.to_array(init).copy()
    w.flat[3] += 0.05  # one output bias: every logits row shifts
    init.CopyFrom(numpy_helper.from_array(w.astype(np.float32), init.name))
    bad = tmp_path / "bad.onnx"
    onnx.save(model, str(bad))
    p = bnconvert("verify", MODEL, str(bad))
    assert p.returncode == 1
    assert "FAIL" in p.stdout
    err = p.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("bnconvert: error:") and "bad.onnx" in err[0] and "max abs error" in err[0]


def test_verify_a_tflite_and_a_pb(bnconvert, tmp_path):
    p = bnconvert("fold", MODEL, "-o", str(tmp_path), "--to", "pb,tflite", "--no-verify")
    assert p.returncode == 0, p.stderr
    for f, runtime in (("mnist_mlp_contrib_fused.tflite", "tflite"), ("mnist_mlp_contrib_fused.folded.pb", "tf:converted")):
        v = bnconvert("verify", MODEL, str(tmp_path / f), "--json")
        assert v.returncode == 0, v.stderr
        assert json.loads(v.stdout)[runtime]["ok"] is True


def test_usage_errors_are_one_line_exit_2(bnconvert, tmp_path):
    p = bnconvert("fold", MODEL, "--to", "pb,keras", "-o", str(tmp_path))
    assert p.returncode == 2 and p.stderr.strip().splitlines()[-1].startswith("bnconvert: error: --to")
    p = bnconvert("fold", MODEL, "--set", "phase", "-o", str(tmp_path))
    assert p.returncode == 2 and "NAME=VALUE" in p.stderr
    p = bnconvert("fold", MODEL, "--set", "nosuch=false", "-o", str(tmp_path))
    assert p.returncode == 2 and "nosuch" in p.stderr
    assert os.listdir(tmp_path) == []
