"""Regressions for what the newcomer/attacker review of this release found (closing note, issue 14/11)."""
import os
import shutil
import subprocess
import sys
import textwrap

import pytest

from conftest import FIXTURES, ROOT

CLI = [sys.executable, "-m", "bnconvert.cli.main"]


def _env(**extra):
    env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="3")
    env.update(extra)
    return env


def test_library_call_from_an_unguarded_script_runs_once(tmp_path):
    """The stage children must not re-run the caller's script (no ``if __name__ == "__main__"``)."""
    script = tmp_path / "convert_it.py"
    script.write_text(textwrap.dedent(f"""
        import bnconvert
        print("script body ran")
        files, report = bnconvert.convert_bytes({os.path.join(FIXTURES, 'mnist_conv.pb')!r}, to="onnx")
        print("onnx bytes", len(files["onnx"]) > 1000, report.ok)
    """))
    p = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, cwd=tmp_path, env=_env(),
                       timeout=600)
    assert p.returncode == 0, p.stderr[-2000:]
    assert p.stdout.count("script body ran") == 1, p.stdout
    assert "onnx bytes True True" in p.stdout


@pytest.mark.parametrize("argv,what", [
    (["--atol", "nan"], "atol"),
    (["--rtol", "inf"], "rtol"),
    (["--only", ""], "only"),
    (["--only", ","], "only"),
    (["--no-fold", "--only", "bn1"], "only"),
])
def test_bad_tolerances_and_selections_are_usage_errors(tmp_path, argv, what):
    p = subprocess.run(CLI + ["fold", os.path.join(FIXTURES, "mnist_mlp_contrib_fused.pb"), "-o", str(tmp_path / "o"),
                              "--to", "pb", *argv], capture_output=True, text=True, cwd=ROOT, env=_env(), timeout=300)
    assert p.returncode == 2, (p.returncode, p.stderr)
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("bnconvert: error:") and what in lines[0], p.stderr
    assert not (tmp_path / "o").exists()


def test_checkpoint_folder_given_as_dot_is_named_after_the_folder(cli, tmp_path, monkeypatch):
    ck = tmp_path / "ckpt_dense"
    shutil.copytree(os.path.join(FIXTURES, "ckpt_dense"), ck)
    out = tmp_path / "out"
    monkeypatch.chdir(ck)  # the command in this process (conftest.cli), run from the checkpoint's folder
    p = cli("fold", ".", "-o", str(out), "--to", "pb", "--no-verify")
    assert p.returncode == 0, p.stderr
    assert sorted(os.listdir(out)) == ["ckpt_dense.folded.pb", "ckpt_dense.report.json"]


def _fill_bomb(path: str, n: int) -> None:
    """A ~1 KB graph whose verification allocates ``n`` floats at run time (``Fill``): nothing for
    the constant budget to see."""
    import tensorflow as tf

    g = tf.Graph()
    with g.as_default():
        x = tf.compat.v1.placeholder(tf.float32, [1, 4, 4, 3], name="x")
        big = tf.fill(tf.constant([n], tf.int64), 1.0)
        c = tf.nn.conv2d(x + tf.reduce_sum(big) * 0.0, tf.constant(0.1, shape=[3, 3, 3, 4]), [1, 1, 1, 1], "SAME")
        y = tf.compat.v1.nn.fused_batch_norm(c, tf.ones([4]), tf.zeros([4]), tf.zeros([4]) + 0.5, tf.ones([4]),
                                             is_training=False)[0]
        tf.identity(y, name="out")
    with open(path, "wb") as f:
        f.write(g.as_graph_def().SerializeToString())


def test_runtime_allocation_bomb_stops_at_the_memory_budget(tmp_path):
    """``Fill([2**29])`` (2 GiB) under ``--max-memory 512M``: the stage child's data segment is
    capped, the run stops with one line naming the budget, and no process grew to 2 GiB."""
    bomb = tmp_path / "fillbomb.pb"
    _fill_bomb(str(bomb), 2**29)
    runner = textwrap.dedent(f"""
        import resource, subprocess, sys
        p = subprocess.run({CLI + ["fold", str(bomb), "-o", str(tmp_path / "o"), "--to", "pb",
                                   "--max-memory", "512M"]!r}, capture_output=True, text=True)
        sys.stderr.write(p.stderr)
        print(p.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
    """)
    p = subprocess.run([sys.executable, "-c", runner], capture_output=True, text=True, cwd=ROOT, env=_env(),
                       timeout=300)
    rc, peak_kb = (int(v) for v in p.stdout.split())
    assert rc == 2, p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and "needs more memory than the budget of 512.0 MiB" in lines[0], p.stderr
    assert peak_kb < 1536 * 1024, peak_kb  # the 2 GiB tensor was never allocated
    assert not (tmp_path / "o").exists()
