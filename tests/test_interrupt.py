"""SIGINT / SIGTERM during a conversion: exit code 130, one line on stderr, nothing left behind.

The signal is sent once the conversion's temporary folder (``OUT/.bnconvert-*``) exists, i.e.
after loading and folding, while exporting or verifying; if the run finishes first, the test
retries with a shorter wait.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "TF_USE_LEGACY_KERAS": "1"}


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """fixtures/resnet_like.pb when it exists, else a stack of conv+BN layers built here."""
    path = os.path.join(ROOT, "fixtures", "resnet_like.pb")
    if os.path.exists(path):
        return path
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    import numpy as np
    import tensorflow as tf

    rng = np.random.default_rng(0)
    g = tf.Graph()
    with g.as_default():
        y = tf.compat.v1.placeholder(tf.float32, [1, 32, 32, 16], name="x")
        for i in range(24):
            w = tf.constant(rng.normal(0, 0.1, size=(3, 3, 16, 16)).astype(np.float32))
            y = tf.nn.conv2d(y, w, 1, "SAME")
            c = lambda v: tf.constant(np.asarray(v, np.float32))  # noqa: E731
            y, _, _ = tf.compat.v1.nn.fused_batch_norm(y, c(rng.uniform(0.5, 1.5, 16)), c(rng.normal(size=16)),
                                                       mean=c(rng.normal(size=16)),
                                                       variance=c(rng.uniform(0.5, 2, 16)), is_training=False)
            y = tf.nn.relu(y)
        tf.identity(y, name="out")
    path = str(tmp_path_factory.mktemp("model") / "stack.pb")
    with open(path, "wb") as f:
        f.write(g.as_graph_def().SerializeToString())
    return path


def interrupt(model: str, out: str, sig: int, delay: float, timeout: float = 120):
    """Start ``bnconvert fold``, wait for its temporary folder, then ``delay`` s, then ``sig``.

    Returns (returncode, stderr, signalled) where ``signalled`` says whether the signal was
    sent while the process was still running.
    """
    proc = subprocess.Popen([sys.executable, "-m", "bnconvert.cli.main", "fold", model, "-o", out],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=ENV, cwd=ROOT)
    deadline = time.monotonic() + timeout
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            if any(n.startswith(".bnconvert-") for n in os.listdir(out)):
                break
            time.sleep(0.02)
        time.sleep(delay)
        signalled = proc.poll() is None
        if signalled:
            proc.send_signal(sig)
        _, err = proc.communicate(timeout=max(5.0, deadline - time.monotonic()))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc.returncode, err, signalled


@pytest.mark.parametrize("sig, delays", [(signal.SIGINT, (1.0, 0.3, 0.0)), (signal.SIGTERM, (2.0, 0.5, 0.0))],
                         ids=["SIGINT", "SIGTERM"])
def test_signal_during_conversion_leaves_nothing(model, tmp_path, sig, delays):
    for attempt, delay in enumerate(delays):
        out = tmp_path / f"out{attempt}"
        out.mkdir()
        rc, err, signalled = interrupt(model, str(out), sig, delay)
        if signalled and rc != 0:
            break
        assert rc == 0, err  # it finished before the signal: try again sooner
    else:
        pytest.skip("the conversion finished before every signal")
    assert rc == 130, err
    lines = err.splitlines()
    assert lines == ["bnconvert: error: interrupted; no output written"], err
    assert os.listdir(out) == [], os.listdir(out)
