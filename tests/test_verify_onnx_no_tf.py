"""verify_onnx runs where TensorFlow and tf2onnx cannot be imported (the GPU machine's setup)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import onnx
import pytest
import tensorflow as tf
from onnx import numpy_helper

from bnconvert.export import export_onnx
from bnconvert.verify import run_tf, save_npz

ROOT = Path(__file__).resolve().parents[1]

CHILD = textwrap.dedent("""
    import json, sys
    try:
        import tensorflow  # noqa: F401
        sys.exit("tensorflow imported although blocked")
    except ImportError:
        pass
    from bnconvert.verify import verify_onnx
    model, inputs, expected = sys.argv[1:4]
    results = verify_onnx(model, inputs, expected, providers=("cpu",))
    assert "tensorflow" not in sys.modules or sys.modules["tensorflow"] is None
    assert "tf2onnx" not in sys.modules
    print(json.dumps([r.to_dict() for r in results]))
""")


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory):
    """A real tf2onnx export, its inputs, and TF's outputs; plus a copy with one weight corrupted."""
    d = tmp_path_factory.mktemp("onnx_only")
    rng = np.random.default_rng(0)
    g = tf.Graph()
    with g.as_default():
        x = tf.compat.v1.placeholder(tf.float32, [None, 6, 6, 2], name="x")
        h = tf.nn.conv2d(x, tf.constant(rng.standard_normal((3, 3, 2, 4)).astype(np.float32)), 1, "SAME")
        h = tf.nn.relu(tf.nn.bias_add(h, tf.constant(rng.standard_normal(4).astype(np.float32))))
        w = tf.constant(rng.standard_normal((4, 3)).astype(np.float32))
        tf.matmul(tf.reduce_mean(h, [1, 2]), w, name="logits")
    gd = g.as_graph_def()
    model = d / "m.onnx"
    export_onnx(gd, ["x:0"], ["logits:0"], str(model))
    feeds = {"x:0": rng.standard_normal((4, 6, 6, 2)).astype(np.float32)}
    save_npz(d / "inputs.npz", feeds)
    save_npz(d / "expected.npz", run_tf(gd, feeds, ["logits:0"]))
    m = onnx.load(str(model))
    init = max(m.graph.initializer, key=lambda t: numpy_helper.to_array(t).size)
    arr = numpy_helper.to_array(init) * np.float32(1.01)
    init.CopyFrom(numpy_helper.from_array(arr, init.name))
    onnx.save(m, str(d / "bad.onnx"))
    # the positional key form: input_0 / output_0
    np.savez(d / "inputs_pos.npz", input_0=feeds["x:0"])
    with np.load(d / "expected.npz") as z:
        np.savez(d / "expected_pos.npz", output_0=z["logits:0"])
    return d


def run_without_tf(tmp_path, model, inputs, expected):
    blocker = tmp_path / "blocker"
    for mod in ("tensorflow", "tf2onnx"):
        (blocker / mod).mkdir(parents=True, exist_ok=True)
        (blocker / mod / "__init__.py").write_text(f"raise ImportError('{mod} is blocked in this test')\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(blocker), str(ROOT)]))
    proc = subprocess.run([sys.executable, "-c", CHILD, str(model), str(inputs), str(expected)],
                          capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_verify_onnx_passes_without_tensorflow(artifacts, tmp_path):
    results = run_without_tf(tmp_path, artifacts / "m.onnx", artifacts / "inputs.npz", artifacts / "expected.npz")
    assert len(results) == 1
    r = results[0]
    assert r["ok"] and r["runtime"] == "onnx:CPUExecutionProvider"
    assert r["outputs"][0]["name"] == "logits:0" and r["outputs"][0]["max_rel"] < 1e-5


def test_verify_onnx_positional_keys(artifacts, tmp_path):
    r = run_without_tf(tmp_path, artifacts / "m.onnx", artifacts / "inputs_pos.npz", artifacts / "expected_pos.npz")
    assert r[0]["ok"]


def test_verify_onnx_fails_on_corrupted_model(artifacts, tmp_path):
    results = run_without_tf(tmp_path, artifacts / "bad.onnx", artifacts / "inputs.npz", artifacts / "expected.npz")
    r = results[0]
    assert not r["ok"]
    out = r["outputs"][0]
    assert out["shape_ok"] and not out["ok"] and out["max_rel"] > 1e-3
