"""Issue 11, command-line conventions and progress: python -m bnconvert, --version, --quiet,
defaults in --help, names that say what a file is, tensor names with or without ":0",
mnist-check's options, progress on stderr (on a pipe only with BNCONVERT_PROGRESS=1)."""
from __future__ import annotations

import io
import os
import subprocess
import sys
import time

import pytest

from bnconvert import __version__, progress
from bnconvert.cli.main import build_parser, main
from bnconvert.pipeline import output_paths
from conftest import FIXTURES, ROOT

MLP = os.path.join(FIXTURES, "mnist_mlp_contrib_fused.pb")
MOMENTS = os.path.join(FIXTURES, "mnist_mlp_moments.pb")


def test_python_dash_m_and_version():
    p = subprocess.run([sys.executable, "-m", "bnconvert", "--version"], capture_output=True, text=True,
                       cwd=ROOT, timeout=60)
    assert p.returncode == 0 and p.stdout.strip() == f"bnconvert {__version__}", p.stderr


def _help(*argv) -> str:
    parser = build_parser()
    sub = parser._subparsers._group_actions[0].choices[argv[0]]  # noqa: SLF001
    return " ".join(sub.format_help().split())


def test_help_shows_defaults():
    text = _help("fold")
    for want in ("formats to write, comma-separated (default: pb,onnx,tflite;", "ONNX opset (default: 17)",
                 "absolute tolerance (default: 1e-05; 0.001 for float16 outputs)", "(default: 0.0001;",
                 "'x' or 'x:0'", "<stem>.scaleshift.pb", "globs", "(default: 1)", "--quiet"):
        assert want in text, want
    assert "(default: None)" not in text and "(default: False)" not in text
    text = _help("mnist-check")
    for want in ("--inputs", "--outputs", "--set", "--force", "--mnist-dir", "allowed accuracy loss in percentage "
                 "points (default: 0.1)", "bundled with bnconvert"):
        assert want in text, want


def test_one_naming_rule_for_checkpoints_and_no_fold():
    folder = os.path.join(FIXTURES, "ckpt_dense")
    a = output_paths(folder, "out", ("pb", "onnx"))
    b = output_paths(os.path.join(folder, "model.meta"), "out", ("pb", "onnx"))
    assert a == b == {"pb": "out/ckpt_dense.folded.pb", "onnx": "out/ckpt_dense.onnx",
                      "report": "out/ckpt_dense.report.json"}
    assert output_paths(MLP, "o", ("pb",), mode="scale_shift")["pb"] == "o/mnist_mlp_contrib_fused.scaleshift.pb"
    assert output_paths("m.pbtxt", "o", ("tflite",))["tflite"] == "o/m.tflite"


def test_fold_names_ports_progress_and_quiet(tmp_path, capfd, monkeypatch):
    """One real run: --no-fold output name, names without ':0' everywhere, progress forced on a pipe."""
    monkeypatch.setenv("BNCONVERT_PROGRESS", "1")
    argv = ["fold", MLP, "-o", str(tmp_path), "--no-fold", "--to", "pb,tflite", "--inputs", "x",
            "--outputs", "logits/BiasAdd", "--set", "phase:0=false", "--input-shape", "x=2,784"]
    assert main(argv) == 0
    out, err = capfd.readouterr()
    assert sorted(os.listdir(tmp_path)) == ["mnist_mlp_contrib_fused.report.json", "mnist_mlp_contrib_fused.scaleshift.pb",
                                            "mnist_mlp_contrib_fused.tflite"]
    assert "batch norms: 2 found, 0 folded, 2 kept as scale-shift" in out
    lines = err.splitlines()
    for stage in ("load", "fold 2 BN", "export pb", "export tflite", "verify tf:folded", "verify tflite", "verify"):
        assert any(ln.startswith(f"bnconvert: {stage} ") and ln.endswith(" s") for ln in lines), (stage, err)
    # --quiet: nothing at all on a successful run, even with BNCONVERT_PROGRESS=1; --json: no progress
    assert main(argv + ["--force", "--quiet"]) == 0
    assert capfd.readouterr() == ("", "")
    assert main(argv + ["--force", "--json", "--no-verify"]) == 0
    out, err = capfd.readouterr()
    assert out.lstrip().startswith("{") and err == ""
    # stderr not a terminal and no BNCONVERT_PROGRESS: no progress
    monkeypatch.delenv("BNCONVERT_PROGRESS")
    assert main(argv + ["--force", "--no-verify"]) == 0
    assert capfd.readouterr().err == ""


def test_mnist_check_options_and_no_overwrite(tmp_path, capfd):
    argv = ["mnist-check", MOMENTS, "-o", str(tmp_path), "--inputs", "x", "--outputs", "logits/BiasAdd:0",
            "--set", "phase=false"]
    assert main(argv) == 0
    out, _ = capfd.readouterr()
    assert "tflite" in out and "PASS" in out and "FAIL" not in out
    before = {f: os.path.getmtime(tmp_path / f) for f in os.listdir(tmp_path)}
    assert "mnist_mlp_moments.folded.pb" in before
    assert main(argv) == 2
    err = capfd.readouterr().err
    assert "exists (pass --force to overwrite)" in err and len(err.strip().splitlines()) == 1
    assert {f: os.path.getmtime(tmp_path / f) for f in os.listdir(tmp_path)} == before


# ------------------------------------------------------------------- progress, unit level
def test_render_bar():
    line = progress.render("fold", 3.24, 150, 300, "BN")
    assert line == "bnconvert: fold [" + "#" * 12 + "-" * 12 + "] 150/300 BN 3.2 s"
    assert progress.render("export onnx", 12.0) == "bnconvert: export onnx 12.0 s"


def test_counter_lines_on_a_pipe_and_live_redraw(monkeypatch):
    monkeypatch.setattr(progress, "LIVE_AFTER_S", 0.0)
    monkeypatch.setattr(progress, "PIPE_EVERY_S", 0.0)
    pipe = io.StringIO()
    pipe.close = lambda: None
    monkeypatch.setattr(progress, "_current", progress._Reporter(pipe, live=False))  # noqa: SLF001
    with progress.stage("fold"):
        progress.total(3, "BN")
        for _ in range(3):
            progress.advance()
    text = pipe.getvalue()
    assert "1/3 BN" in text and "3/3 BN" in text and "\r" not in text
    assert text.splitlines()[-1].startswith("bnconvert: fold 3 BN ")
    tty = io.StringIO()
    tty.close = lambda: None
    rep = progress._Reporter(tty, live=True)  # noqa: SLF001
    monkeypatch.setattr(progress, "_current", rep)
    with progress.stage("export onnx"):
        time.sleep(0.5)  # the redraw thread ticks every 0.2 s
    rep.close()
    assert "\r\x1b[Kbnconvert: export onnx" in tty.getvalue() and tty.getvalue().endswith(" s\n")
    monkeypatch.setattr(progress, "_current", None)
    with progress.stage("no session"):  # a library call: no output, only logging
        pass
