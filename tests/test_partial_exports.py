"""Partial exports (issue 9 item 7) and ``--input-shape`` with every ``--to`` (item 8).

When ``--to`` is not given and one converter cannot handle the graph, the other formats are
still written and verified, the report and the table say which format was skipped and why, and
the run succeeds; a format asked for explicitly that fails is still exit 2.  The graph here ends
in a matrix determinant (``MatrixDeterminant``): tf2onnx maps it to ONNX ``Det``, TFLite has no
builtin for it.
"""
from __future__ import annotations

import json
import os

import numpy as np
import pytest

import bnconvert
from bnconvert.errors import UnsupportedError



def _bn(tf, y, rng, c):
    const = lambda v: tf.constant(np.asarray(v, np.float32))  # noqa: E731
    y, _, _ = tf.compat.v1.nn.fused_batch_norm(y, const(rng.uniform(0.5, 1.5, c)), const(rng.normal(size=c)),
                                               mean=const(rng.normal(size=c)),
                                               variance=const(rng.uniform(0.5, 2, c)), is_training=False)
    return y


@pytest.fixture(scope="module")
def det_pb(tmp_path_factory):
    """x[1,2,2,1] → conv 1x1 → BN → reshape [1,2,2] → MatrixDeterminant → out."""
    import tensorflow as tf

    rng = np.random.default_rng(0)
    g = tf.Graph()
    with g.as_default():
        x = tf.compat.v1.placeholder(tf.float32, [1, 2, 2, 1], name="x")
        y = tf.nn.conv2d(x, tf.constant(rng.normal(size=(1, 1, 1, 1)).astype(np.float32)), 1, "SAME")
        y = _bn(tf, y, rng, 1)
        tf.linalg.det(tf.reshape(y, [1, 2, 2]), name="out")
    path = tmp_path_factory.mktemp("det") / "det.pb"
    path.write_bytes(g.as_graph_def().SerializeToString())
    return str(path)


@pytest.fixture(scope="module")
def free_shape_pb(tmp_path_factory):
    """x[?, ?, ?, 3] → conv 3x3 → BN → relu: no shape is known until --input-shape gives one."""
    import tensorflow as tf

    rng = np.random.default_rng(1)
    g = tf.Graph()
    with g.as_default():
        x = tf.compat.v1.placeholder(tf.float32, [None, None, None, 3], name="x")
        y = tf.nn.conv2d(x, tf.constant(rng.normal(size=(3, 3, 3, 4)).astype(np.float32)), 1, "SAME")
        tf.nn.relu(_bn(tf, y, rng, 4), name="out")
    path = tmp_path_factory.mktemp("free") / "free.pb"
    path.write_bytes(g.as_graph_def().SerializeToString())
    return str(path)


def test_default_formats_skip_what_tflite_cannot_convert(cli, det_pb, tmp_path):
    p = cli("fold", det_pb, "-o", str(tmp_path))  # the command in this process, fds 1 and 2 captured
    assert p.returncode == 0, p.stderr
    assert p.stderr.startswith("bnconvert: warning: tflite skipped: the TFLite converter failed: "), p.stderr
    assert len(p.stderr.splitlines()) == 1, p.stderr
    assert "MatrixDeterminant" in p.stderr, p.stderr
    assert sorted(os.listdir(tmp_path)) == ["det.folded.pb", "det.onnx", "det.report.json"]
    assert "skipped tflite" in p.stdout
    report = json.loads((tmp_path / "det.report.json").read_text())
    assert report["ok"] is True
    assert set(report["verification"]) == {"tf:folded", "onnx:CPUExecutionProvider"}
    assert all(v["ok"] for v in report["verification"].values())
    assert "MatrixDeterminant" in report["skipped"]["tflite"]
    assert "tflite" not in report["files"]


def test_explicit_format_that_fails_is_exit_2(det_pb, tmp_path):
    out = tmp_path / "out"
    with pytest.raises(UnsupportedError, match="TFLite converter failed") as e:
        bnconvert.convert(det_pb, str(out), to=("onnx", "tflite"), verify=False)
    assert e.value.exit_code == 2
    assert not out.exists()


@pytest.mark.parametrize("to", ["pb", "tflite"])
def test_input_shape_with_every_format(free_shape_pb, tmp_path, to):
    report = bnconvert.convert(free_shape_pb, str(tmp_path), to=to, input_shapes={"x:0": [2, 5, 6, 3]})
    assert report.ok, report.verification
    assert report.input_shapes == {"x:0": [2, 5, 6, 3]}
    (v,) = report.verification.values()
    assert v["ok"]
    assert str(tmp_path) in report.files[to] and os.path.exists(report.files[to])


def test_no_message_names_the_staging_folder(free_shape_pb, tmp_path):
    """Without --input-shape the TFLite export cannot know H and W: the message names the input
    and the output path, never the deleted .bnconvert-* folder."""
    with pytest.raises(bnconvert.BNConvertError) as e:
        bnconvert.convert(free_shape_pb, str(tmp_path), to="tflite")
    assert ".bnconvert-" not in str(e.value)
    assert "--input-shape" in str(e.value)
    assert os.listdir(tmp_path) == []


def test_inputs_baked_in_as_constants(tmp_path):
    """No placeholder at all: --outputs names the tensor, the .pb is written and verified, the
    formats whose converters need an input are skipped with the reason (named: exit 2)."""
    import tensorflow as tf

    rng = np.random.default_rng(2)
    g = tf.Graph()
    with g.as_default():
        x = tf.constant(rng.normal(size=(1, 6, 6, 3)).astype(np.float32), name="x")
        y = tf.nn.conv2d(x, tf.constant(rng.normal(size=(3, 3, 3, 4)).astype(np.float32)), 1, "SAME")
        tf.nn.relu(_bn(tf, y, rng, 4), name="out")
    model = tmp_path / "const_in.pb"
    model.write_bytes(g.as_graph_def().SerializeToString())
    with pytest.raises(bnconvert.BNConvertError, match="no input placeholder .*pass --outputs"):
        bnconvert.convert(str(model), str(tmp_path / "a"))
    report = bnconvert.convert(str(model), str(tmp_path / "b"), outputs=["out:0"])
    assert report.ok and report.bn["folded"] == 1
    assert set(report.skipped) == {"onnx", "tflite"} and "no input placeholder" in report.skipped["onnx"]
    assert list(report.verification) == ["tf:folded"]
    with pytest.raises(bnconvert.BNConvertError, match="cannot write onnx: the graph has no input placeholder") as e:
        bnconvert.convert(str(model), str(tmp_path / "c"), outputs=["out:0"], to="onnx")
    assert e.value.exit_code == 2
