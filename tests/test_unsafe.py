"""Graphs that reach outside the process: bnconvert refuses to execute them (exit 2, naming the
op) unless --allow-unsafe-ops, yet folds and inspects them, because folding never executes."""
from __future__ import annotations

import os
import subprocess
import sys

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np
import pytest
import tensorflow as tf

import bnconvert
import bnconvert.api
from bnconvert.errors import UnsafeGraphError

#: the library's "compare a converted model with the original" (named verify in older versions)
api_compare = getattr(bnconvert.api, "compare", None) or getattr(bnconvert.api, "verify")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "TF_USE_LEGACY_KERAS": "1"}


def conv_bn(x, rng):
    w = tf.constant(rng.normal(size=(3, 3, 3, 4)).astype(np.float32), name="Conv/weights")
    y = tf.nn.conv2d(x, w, 1, "SAME", name="Conv/Conv2D")
    c = lambda v, n: tf.constant(np.asarray(v, np.float32), name=n)  # noqa: E731
    z, _, _ = tf.compat.v1.nn.fused_batch_norm(
        y, c(rng.uniform(0.5, 1.5, 4), "bn/gamma"), c(rng.normal(size=4), "bn/beta"),
        mean=c(rng.normal(size=4), "bn/mean"), variance=c(rng.uniform(0.5, 2, 4), "bn/variance"),
        epsilon=1e-3, is_training=False, name="bn/FusedBatchNormV3")
    return z


def unsafe_graph(secret: str, target: str):
    """conv → BN → + len(ReadFile(secret)) → out, with WriteFile(target) as a control input."""
    g = tf.Graph()
    with g.as_default():
        x = tf.compat.v1.placeholder(tf.float32, [1, 8, 8, 3], name="x")
        z = conv_bn(x, np.random.default_rng(0))
        n = tf.cast(tf.strings.length(tf.io.read_file(tf.constant(secret), name="reader")), tf.float32)
        wr = tf.io.write_file(tf.constant(target), tf.constant("written by the graph"), name="writer")
        with tf.control_dependencies([wr]):
            tf.identity(z + n, name="out")
    return g.as_graph_def()


def failing_graph():
    """Safe ops only, but running it fails: CheckNumerics sees a NaN on the output path."""
    g = tf.Graph()
    with g.as_default():
        x = tf.compat.v1.placeholder(tf.float32, [1, 8, 8, 3], name="x")
        z = conv_bn(x, np.random.default_rng(1))
        nan = tf.constant(np.full(4, np.nan, np.float32), name="nan")
        tf.debugging.check_numerics(z + nan, "boom", name="out")
    return g.as_graph_def()


@pytest.fixture
def unsafe(tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("hello")
    target = tmp_path / "target.txt"
    model = tmp_path / "unsafe.pb"
    model.write_bytes(unsafe_graph(str(secret), str(target)).SerializeToString())
    out = tmp_path / "out"
    out.mkdir()
    return {"model": str(model), "target": target, "out": out, "bytes": model.read_bytes()}


def cli(argv, capsys):
    from bnconvert.cli.main import main

    rc = main(argv)
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def test_fold_with_verification_refuses_naming_the_op_real_cli(unsafe):
    proc = subprocess.run([sys.executable, "-m", "bnconvert.cli.main", "fold", unsafe["model"], "-o", str(unsafe["out"])],
                          capture_output=True, text=True, env=ENV, cwd=ROOT, timeout=180)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("bnconvert: error: "), proc.stderr
    assert unsafe["model"] in lines[0] and "ReadFile" in lines[0] and "'reader'" in lines[0]
    assert "WriteFile" in lines[0] and "--allow-unsafe-ops" in lines[0]
    assert os.listdir(unsafe["out"]) == []
    assert not unsafe["target"].exists()


def test_no_verify_folds_it_without_executing(unsafe, capsys):
    rc, out, err = cli(["fold", unsafe["model"], "-o", str(unsafe["out"]), "--no-verify", "--to", "pb"], capsys)
    assert rc == 0, err
    folded = bnconvert.load(str(unsafe["out"] / "unsafe.folded.pb"))
    ops = {n.op for n in folded.graph_def.node}
    assert not ops & {"FusedBatchNormV3", "Rsqrt"} and "ReadFile" in ops
    assert not unsafe["target"].exists()
    with open(unsafe["model"], "rb") as f:
        assert f.read() == unsafe["bytes"]


def test_export_to_onnx_or_tflite_is_refused_too(unsafe, capsys):
    """TF's converters run grappler over the graph, so exporting is treated like executing."""
    rc, out, err = cli(["fold", unsafe["model"], "-o", str(unsafe["out"]), "--no-verify"], capsys)
    assert rc == 2
    assert len(err.splitlines()) == 1 and "ReadFile" in err and "--allow-unsafe-ops" in err
    assert os.listdir(unsafe["out"]) == []


def test_inspect_works(unsafe, capsys):
    rc, out, err = cli(["inspect", unsafe["model"]], capsys)
    assert rc == 0, err
    assert "1 found, 1 folded" in out
    assert not unsafe["target"].exists()


def test_allow_unsafe_ops_runs_it(unsafe, capsys):
    rc, out, err = cli(["fold", unsafe["model"], "-o", str(unsafe["out"]), "--to", "pb", "--allow-unsafe-ops"], capsys)
    assert rc == 0, err
    assert "tf:folded" in out and "PASS" in out
    assert unsafe["target"].read_text() == "written by the graph"  # the original graph really ran


def test_verify_and_api_verify_refuse(unsafe, capsys):
    rc, _, err = cli(["fold", unsafe["model"], "-o", str(unsafe["out"]), "--no-verify", "--to", "pb"], capsys)
    assert rc == 0, err
    folded = str(unsafe["out"] / "unsafe.folded.pb")
    with pytest.raises(UnsafeGraphError, match="ReadFile"):
        api_compare(unsafe["model"], folded)
    rc, _, err = cli(["verify", unsafe["model"], folded], capsys)
    assert rc == 2 and len(err.splitlines()) == 1 and "ReadFile" in err and unsafe["model"] in err
    assert not unsafe["target"].exists()
    # the folded graph still reads the file (WriteFile, a control input, was dropped): refused as well
    with pytest.raises(UnsafeGraphError, match=r"ReadFile.*unsafe\.folded\.pb|unsafe\.folded\.pb.*ReadFile"):
        api_compare(failing_graph_path(unsafe), folded)


def failing_graph_path(unsafe) -> str:
    p = os.path.join(os.path.dirname(unsafe["model"]), "safe.pb")
    g = tf.Graph()
    with g.as_default():
        x = tf.compat.v1.placeholder(tf.float32, [1, 8, 8, 3], name="x")
        tf.identity(conv_bn(x, np.random.default_rng(0)), name="out")
    with open(p, "wb") as f:
        f.write(g.as_graph_def().SerializeToString())
    return p


def test_mnist_check_refuses(unsafe, capsys):
    rc, _, err = cli(["mnist-check", unsafe["model"], "-o", str(unsafe["out"])], capsys)
    assert rc == 2, err
    assert "ReadFile" in err and len(err.splitlines()) == 1
    assert not unsafe["target"].exists()


def test_a_graph_whose_execution_fails_still_folds_and_inspects(tmp_path, capsys):
    gd = failing_graph()
    model = tmp_path / "failing.pb"
    model.write_bytes(gd.SerializeToString())
    g = tf.Graph()  # running it does fail
    with g.as_default():
        tf.compat.v1.import_graph_def(gd, name="")
        with tf.compat.v1.Session() as s, pytest.raises(tf.errors.InvalidArgumentError):
            s.run("out:0", {"x:0": np.zeros((1, 8, 8, 3), np.float32)})
    rc, out, err = cli(["inspect", str(model)], capsys)
    assert rc == 0 and "1 folded" in out, err
    rc, out, err = cli(["fold", str(model), "-o", str(tmp_path / "out"), "--no-verify"], capsys)
    assert rc == 0, err
    assert sorted(os.listdir(tmp_path / "out")) == ["failing.folded.pb", "failing.onnx", "failing.report.json",
                                                   "failing.tflite"]


def test_fold_and_inspect_never_open_a_session(tmp_path, monkeypatch):
    """No tf.compat.v1.Session is created by load → fold → inspect of a .pb."""
    model = tmp_path / "failing.pb"
    model.write_bytes(failing_graph().SerializeToString())

    def no_session(*a, **k):
        raise AssertionError("a graph was executed")

    monkeypatch.setattr(tf.compat.v1, "Session", no_session)
    monkeypatch.setattr(tf.compat.v1, "InteractiveSession", no_session)
    folded = bnconvert.fold(str(model))
    assert folded.report.bn["folded"] == 1
    assert not {n.op for n in folded.graph_def.node} & {"FusedBatchNormV3", "Rsqrt"}
    assert bnconvert.inspect(str(model)).bn["folded"] == 1
