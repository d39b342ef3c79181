"""Stages in child processes (bnconvert/isolate.py): a crash, a hang or a signal while TensorFlow,
a converter or a runtime works is one line, a clean exit code and nothing left behind.

The crashes are real: a segfault (``ctypes.string_at(0)``), an abort, and the TFLite converter
fed an absurd ``--batch``; the hang is a real ``while_loop`` whose condition never turns false,
on the output path, so verification runs it.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from bnconvert import isolate
from bnconvert.errors import InputError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "TF_USE_LEGACY_KERAS": "1"}
CLI = [sys.executable, "-m", "bnconvert.cli.main"]


@pytest.fixture(scope="module")
def hang_pb(tmp_path_factory):
    """x → MatMul → while_loop(i >= 0, i + 1 - 1) → out: never ends, pure compute."""
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    import tensorflow as tf

    g = tf.Graph()
    with g.as_default():
        x = tf.compat.v1.placeholder(tf.float32, [1, 4], name="x")
        y = tf.matmul(x, tf.constant([[1.0] * 4] * 4))
        _, y2 = tf.compat.v1.while_loop(lambda i, v: i >= 0, lambda i, v: (i + 1 - 1, v * 1.0), [tf.constant(0), y])
        tf.identity(y2, name="out")
    path = tmp_path_factory.mktemp("hang") / "hang.pb"
    path.write_bytes(g.as_graph_def().SerializeToString())
    return str(path)


def _leftovers(folder) -> list[str]:
    return sorted(os.listdir(folder)) if os.path.isdir(folder) else []


# ------------------------------------------------------------------ the mechanism itself

def test_stage_result_and_errors_cross_the_boundary():
    assert isolate.run_stage("mean", "statistics:mean", {"data": [1, 2, 3]}, tf=False) == 2
    with pytest.raises(InputError, match="no such ONNX model"):
        isolate.run_stage("ort", "bnconvert.verify.runners:onnx_session", {"path_or_bytes": "/nonexistent.onnx"},
                          tf=False)


@pytest.mark.parametrize("target, kwargs, signame", [("ctypes:string_at", {"ptr": 0}, "SIGSEGV"),
                                                     ("os:abort", {}, "SIGABRT")])
def test_crash_is_one_error_exit_3(target, kwargs, signame):
    with pytest.raises(isolate.StageCrashed, match=f"the stage crashed \\(killed by {signame}") as e:
        isolate.run_stage("the stage", target, kwargs, tf=False)
    assert e.value.exit_code == 3


def test_timeout_kills_the_child_and_its_group(tmp_path):
    marker = tmp_path / "late"
    t = time.monotonic()
    with pytest.raises(isolate.StageTimeout, match="the sleeper ran longer than the 1 s timeout") as e:
        isolate.run_stage("the sleeper", "subprocess:run", {"args": ["sh", "-c", f"sleep 4; touch {marker}"]},
                          tf=False, timeout=1)
    assert time.monotonic() - t < 10
    assert e.value.exit_code == 2
    time.sleep(4.5)
    assert not marker.exists()  # the grandchild went with the child's process group


# ------------------------------------------------------------------ through the CLI

def test_hang_times_out_cleanly(cli, hang_pb, tmp_path):
    out = tmp_path / "out"
    p = cli("fold", hang_pb, "-o", str(out), "--outputs", "out:0", "--to", "pb", "--timeout", "5")  # in process
    assert p.returncode == 2, p.stderr
    assert p.stderr.splitlines() == [f"bnconvert: error: {hang_pb}: TensorFlow (original graph) ran longer than "
                                     "the 5 s timeout and was stopped (--timeout to allow more)"], p.stderr
    assert not out.exists(), _leftovers(out)


def test_sigterm_during_a_hang_is_honoured(hang_pb, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    proc = subprocess.Popen(CLI + ["fold", hang_pb, "-o", str(out), "--outputs", "out:0", "--to", "pb"],
                            stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, env=ENV, cwd=ROOT, start_new_session=True)
    try:
        deadline = time.monotonic() + 240
        staged = False
        while proc.poll() is None and time.monotonic() < deadline and not staged:
            staged = any(n.startswith(".bnconvert-") for n in os.listdir(out))
            time.sleep(0.05)
        assert staged, "the run never started staging"
        time.sleep(1.0)  # now verification runs the endless loop in a child
        assert proc.poll() is None
        t = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
        took = time.monotonic() - t
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 130, err
    assert err.splitlines() == ["bnconvert: error: interrupted; no output written"], err
    assert took < 5, took
    assert _leftovers(out) == []
    for _ in range(50):  # no child left running the loop: nothing in bnconvert's session survives it
        left = subprocess.run(["pgrep", "-s", str(proc.pid)], capture_output=True, text=True).stdout.split()
        if not left:
            break
        time.sleep(0.1)
    assert left == [], left


@pytest.mark.skipif(not os.environ.get("BNCONVERT_SLOW_TESTS"), reason="slow (a TFLite converter run that "
                    "crashes); set BNCONVERT_SLOW_TESTS=1")
def test_converter_crash_is_one_line(tmp_path):
    """The TFLite converter segfaults on an absurd batch; the run reports it (or, where the
    memory budget refuses such a batch first, says so), exit 3 or 2, and leaves nothing."""
    out = tmp_path / "out"
    model = os.path.join(ROOT, "fixtures", "mnist_conv.pb")

    def limit():  # never let a broken converter take the shared machine's memory
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (16 << 30, 16 << 30))

    p = subprocess.run(CLI + ["fold", model, "-o", str(out), "--to", "tflite", "--no-verify", "--batch", "100000000"],
                       capture_output=True, text=True, env=ENV, cwd=ROOT, timeout=300, preexec_fn=limit)
    lines = p.stderr.splitlines()
    assert len(lines) == 1, p.stderr
    if p.returncode == 3:
        assert "the TFLite export (TFLite converter) crashed (killed by SIG" in lines[0]
    else:
        assert p.returncode == 2 and "--batch" in lines[0], p.stderr
    assert not out.exists(), _leftovers(out)
