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


def test_checkpoint_folder_given_as_dot_is_named_after_the_folder(tmp_path):
    ck = tmp_path / "ckpt_dense"
    shutil.copytree(os.path.join(FIXTURES, "ckpt_dense"), ck)
    out = tmp_path / "out"
    p = subprocess.run(CLI + ["fold", ".", "-o", str(out), "--to", "pb", "--no-verify"], capture_output=True,
                       text=True, cwd=ck, env=_env(), timeout=300)
    assert p.returncode == 0, p.stderr
    assert sorted(os.listdir(out)) == ["ckpt_dense.folded.pb", "ckpt_dense.report.json"]
