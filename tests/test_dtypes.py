"""float16 and bfloat16 batch norms fold keeping their dtype (or are refused in one clear line)."""
from __future__ import annotations

import os
import sys

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np
import pytest
import tensorflow as tf

import bnconvert

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tools"))
from make_bad_inputs import conv_bn_graph  # noqa: E402

#: relative tolerance (to max |output|) of the folded graph against the original, per dtype
REL_TOL = {"float16": 4e-3, "bfloat16": 3e-2}


def run(gd, x):
    g = tf.Graph()
    with g.as_default():
        tf.compat.v1.import_graph_def(gd, name="")
        with tf.compat.v1.Session(graph=g) as s:
            return s.run("out:0", {"x:0": x}).astype(np.float64)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_low_precision_conv_bn_folds_keeping_its_dtype(dtype):
    tfdt = tf.as_dtype(dtype)
    gd = conv_bn_graph(dtype=dtype)
    assert {n.attr["T"].type for n in gd.node if n.op == "FusedBatchNormV3"} == {tfdt.as_datatype_enum}
    folded = bnconvert.fold(gd, outputs=["out:0"])
    assert folded.report.bn["folded"] == 1
    nodes = {n.name: n for n in folded.graph_def.node}
    assert not {n.op for n in nodes.values()} & {"FusedBatchNormV3", "Rsqrt", "Mul"}
    conv = next(n for n in nodes.values() if n.op == "Conv2D")
    weights = nodes[conv.input[1].split(":")[0]]
    assert weights.op == "Const" and weights.attr["value"].tensor.dtype == tfdt.as_datatype_enum
    assert all(n.attr["T"].type == tfdt.as_datatype_enum for n in nodes.values() if "T" in n.attr)
    x = np.random.default_rng(1).normal(size=(1, 8, 8, 3)).astype(np.float32).astype(tfdt.as_numpy_dtype)
    ref, got = run(gd, x), run(folded.graph_def, x)
    assert np.max(np.abs(got - ref)) <= REL_TOL[dtype] * np.max(np.abs(ref))


def test_float16_converts_and_verifies(tmp_path, capsys):
    from bnconvert.cli.main import main

    model = tmp_path / "half.pb"
    model.write_bytes(conv_bn_graph(dtype="float16").SerializeToString())
    rc = main(["fold", str(model), "-o", str(tmp_path / "out")])
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    assert "PASS" in cap.out and "FAIL" not in cap.out


def test_bfloat16_folds_without_verification_and_verification_is_refused_clearly(tmp_path, capsys):
    """bfloat16: the folded .pb keeps bfloat16; verification (random inputs, onnxruntime and
    TFLite) cannot run it and says so in one line rather than crashing."""
    from bnconvert.cli.main import main

    model = tmp_path / "bf16.pb"
    model.write_bytes(conv_bn_graph(dtype="bfloat16").SerializeToString())
    rc = main(["fold", str(model), "-o", str(tmp_path / "a"), "--no-verify", "--to", "pb"])
    assert rc == 0, capsys.readouterr().err
    folded = bnconvert.load(str(tmp_path / "a" / "bf16.folded.pb")).graph_def
    assert {n.attr["T"].type for n in folded.node if n.op == "Conv2D"} == {tf.bfloat16.as_datatype_enum}
    capsys.readouterr()
    rc = main(["fold", str(model), "-o", str(tmp_path / "b")])
    err = capsys.readouterr().err
    assert rc in (0, 2), err
    if rc == 2:
        lines = err.splitlines()
        assert len(lines) == 1 and lines[0].startswith("bnconvert: error: ") and "bfloat16" in lines[0], err
        assert not (tmp_path / "b").exists() or os.listdir(tmp_path / "b") == []
