"""README examples run: the Python block executes as written, and the CLI block's commands parse."""
import os
import re
import subprocess
import sys

from conftest import ROOT


def _readme():
    with open(os.path.join(ROOT, "README.md")) as f:
        return f.read()


def test_python_example_runs():
    (block,) = re.findall(r"```python\n(.*?)```", _readme(), re.S)
    p = subprocess.run([sys.executable, "-c", block], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-2000:]
    assert "{'found': 2, 'folded': 2, 'scale_shift': 0, 'refused': 0}" in p.stdout
    assert "scale_shift" in p.stdout and "also feeds" in p.stdout


def test_setup_commands_are_what_ci_runs():
    text = _readme()
    ci = open(os.path.join(ROOT, ".ci", "run")).read()
    assert 'python -m pip install ".[test]" && python -m pytest -q' in text
    assert 'python -m pip install --quiet ".[test]"' in ci and "python -m pytest -q" in ci
    assert "bnconvert fold fixtures/mnist_mlp_contrib_fused.pb -o out --force" in text


def test_cli_help_lists_every_subcommand():
    p = subprocess.run([sys.executable, "-m", "bnconvert.cli.main", "--help"], capture_output=True, text=True)
    for sub in ("fold", "inspect", "verify", "verify-onnx", "mnist-check"):
        assert sub in p.stdout
        assert f"bnconvert {sub}" in _readme()
