import contextlib
import glob
import json
import os
import signal

import numpy as np
import pytest

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")  # NCHW convs run on CPU only with oneDNN

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(ROOT, "fixtures")


def fixture_specs(prefix: str = "") -> list[dict]:
    """Every fixture's JSON (with "path" to its model added), sorted by name."""
    specs = []
    for jpath in sorted(glob.glob(os.path.join(FIXTURES, "*.json"))):
        with open(jpath) as f:
            spec = json.load(f)
        if not isinstance(spec, dict) or "inputs" not in spec or "data" not in spec:
            continue
        name = os.path.basename(jpath)[: -len(".json")]
        for ext in (".pb", ".pbtxt", ""):
            cand = os.path.join(FIXTURES, name + ext)
            if os.path.exists(cand) and (ext or os.path.isdir(cand)):
                spec["path"] = cand
                break
        else:
            continue
        if name.startswith(prefix):
            spec["name"] = name
            specs.append(spec)
    return specs


def fixture_data(spec: dict) -> tuple[dict, dict]:
    d = np.load(os.path.join(FIXTURES, spec["data"]))
    feeds = {t: d[f"input_{i}"] for i, t in enumerate(spec["inputs"])}
    expected = {t: d[f"output_{i}"] for i, t in enumerate(spec["outputs"])}
    return feeds, expected


def run_graph_def(graph_def, feeds: dict, outputs: list[str], flags: dict | None = None) -> dict:
    """Run a GraphDef in real TensorFlow (test helper, independent of bnconvert.verify)."""
    import tensorflow as tf

    g = tf.Graph()
    with g.as_default():
        tf.compat.v1.import_graph_def(graph_def, name="")
        feed = dict(feeds)
        for k, v in (flags or {}).items():
            feed[k] = v
        with tf.compat.v1.Session(graph=g) as s:
            vals = s.run(outputs, feed)
    return dict(zip(outputs, vals))


@pytest.fixture
def tmp_out(tmp_path):
    d = tmp_path / "out"
    d.mkdir()
    return d


class Hang(Exception):
    """A run that exceeded its :func:`time_limit`."""


@contextlib.contextmanager
def time_limit(seconds: int):
    """Raise :class:`Hang` in the block after ``seconds`` (SIGALRM; main thread only)."""

    def handler(signum, frame):
        raise Hang(f"still running after {seconds} s")

    old = signal.signal(signal.SIGALRM, handler)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


@pytest.fixture(autouse=True, scope="session")
def one_forkserver_per_session():
    """In-process ``main(argv)`` calls share the session's forkserver.

    The command line stops bnconvert.isolate's forkserver when ``main`` returns (right for a
    process that is about to exit); in this process every later stage would then pay a new one
    (TensorFlow, tf2onnx and onnxruntime imported again, ~5 s of CPU).  Here ``main`` leaves it
    running, as the library calls do; it is stopped at the end of the session.
    tests/test_zz_forkserver_exit.py (run last) checks the real ``_stop_children``.
    """
    from bnconvert.cli import main as cli

    stop = cli._stop_children  # noqa: SLF001
    cli._stop_children = lambda: None  # noqa: SLF001
    try:
        yield stop
    finally:
        cli._stop_children = stop  # noqa: SLF001
        stop()


@pytest.fixture
def cli(capfd):
    """``bnconvert ARGS`` through ``bnconvert.cli.main.main`` in this process (the session's
    forkserver, no TensorFlow import per command): ``cli(*args)`` returns ``returncode``,
    ``stdout`` and ``stderr`` — everything written to fds 1 and 2 meanwhile (``capfd``)."""
    import types

    from bnconvert.cli.main import main

    def run(*args):
        capfd.readouterr()
        try:
            rc = main([str(a) for a in args])
        except SystemExit as e:  # argparse's usage errors, as `sys.exit(main())` would exit
            rc = e.code
        out, err = capfd.readouterr()
        return types.SimpleNamespace(returncode=rc, stdout=out, stderr=err)

    return run


@pytest.fixture(autouse=True, scope="module")
def frozen_heap():
    """Collect, then freeze what this process holds (gc.freeze) before each test module.

    This process imports TensorFlow, tf2onnx and onnxruntime: millions of objects that are never
    garbage but that every full collection walks again (~0.3 s each here).  tf2onnx export in
    this process collects before each of its ~24 optimizer passes (bnconvert.export.onnx
    ._Collecting), so an in-process export_onnx spent ~7 s in gc.collect().  Frozen objects are
    left out of collections (what bnconvert's stage children do, isolate._child); the
    collection first means no garbage is frozen with them."""
    import gc

    gc.collect()
    gc.freeze()
    yield


@contextlib.contextmanager
def tf1_graph(tf):
    """Switch/Merge conds, Enter/Exit while loops and ref variables, as TF 1.x built them, for
    the block only (not ``disable_v2_behavior``, which would change the whole test process)."""
    cf = tf.compat.v1.control_flow_v2_enabled()
    rv = tf.compat.v1.resource_variables_enabled()
    tf.compat.v1.disable_control_flow_v2()
    tf.compat.v1.disable_resource_variables()
    try:
        yield
    finally:
        if cf:
            tf.compat.v1.enable_control_flow_v2()
        if rv:
            tf.compat.v1.enable_resource_variables()


def build_in_subprocess(script: str, folder) -> str:
    """Run a model-building ``script`` (argv[1]: ``folder``) in a fresh Python, so TF1/Keras global
    settings stay out of the test process; returns ``folder``."""
    import subprocess
    import sys
    import textwrap

    env = dict(os.environ, TF_USE_LEGACY_KERAS="1", TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
    r = subprocess.run([sys.executable, "-c", textwrap.dedent(script), str(folder)], env=env,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    return str(folder)
