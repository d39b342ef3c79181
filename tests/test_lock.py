"""One writer per output set (bnconvert/pipeline.py: OutputLock, _install) and what the CLI
says about it: a second run into a locked folder fails at once and changes nothing; the "exists,
pass --force" check holds at the moment of installing; a closed stdout ends quietly."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

import bnconvert
from bnconvert.errors import OutputError
from bnconvert.pipeline import OutputLock, _install

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODEL = os.path.join(ROOT, "fixtures", "mnist_conv.pb")
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "TF_USE_LEGACY_KERAS": "1"}


def test_second_writer_is_refused_and_changes_nothing(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("theirs")
    lock = OutputLock(str(out))  # another run holds the folder
    try:
        with pytest.raises(OutputError, match="another bnconvert run is writing into this folder") as e:
            bnconvert.convert(MODEL, str(out), to="pb", verify=False)
        assert e.value.exit_code == 2
        assert sorted(os.listdir(out)) == [".bnconvert.lock", "keep.txt"]
    finally:
        lock.release()
    assert sorted(os.listdir(out)) == ["keep.txt"]  # the lock file goes with its holder
    report = bnconvert.convert(MODEL, str(out), to="pb", verify=False)  # free again
    assert sorted(os.listdir(out)) == ["keep.txt", "mnist_conv.folded.pb", "mnist_conv.report.json"]
    assert report.files["pb"] == str(out / "mnist_conv.folded.pb")


def test_lock_is_exclusive_and_reusable(tmp_path):
    a = OutputLock(str(tmp_path))
    a.release()
    b = OutputLock(str(tmp_path))
    try:
        with pytest.raises(OutputError, match="another bnconvert run"):
            OutputLock(str(tmp_path))
    finally:
        b.release()


def test_exists_check_holds_at_install(tmp_path):
    staged_dir, out = tmp_path / "staged", tmp_path / "out"
    staged_dir.mkdir()
    out.mkdir()
    staged = {}
    for kind in ("pb", "onnx", "report"):
        staged[kind] = str(staged_dir / kind)
        (staged_dir / kind).write_text(f"new {kind}")
    paths = {k: str(out / f"m.{k}") for k in staged}
    (out / "m.onnx").write_text("appeared meanwhile")  # written by someone else after the start check
    state = {"installed": False}
    with pytest.raises(OutputError, match=r"m\.onnx exists \(pass --force to overwrite\)"):
        _install(staged, paths, False, state)
    assert not state["installed"]
    assert sorted(os.listdir(out)) == ["m.onnx"]  # the .pb linked before it was taken back
    assert (out / "m.onnx").read_text() == "appeared meanwhile"
    _install(staged, paths, True, state)
    assert state["installed"] and (out / "m.onnx").read_text() == "new onnx"


def test_two_concurrent_runs_leave_one_consistent_set(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    procs = [subprocess.Popen([sys.executable, "-m", "bnconvert.cli.main", "fold", MODEL, "-o", str(out),
                               "--to", "pb", "--no-verify"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              text=True, env=ENV, cwd=ROOT) for _ in range(2)]
    results = [(p.wait(timeout=300), p.stderr.read()) for p in procs]
    codes = sorted(rc for rc, _ in results)
    assert codes in ([0, 0], [0, 2]), results  # both succeed only if they did not overlap
    for rc, err in results:
        if rc == 2:
            assert err.count("\n") == 1 and ("another bnconvert run" in err or "exists (pass --force" in err), err
    assert sorted(os.listdir(out)) == ["mnist_conv.folded.pb", "mnist_conv.report.json"]


def test_closed_stdout_ends_quietly(tmp_path):
    """`bnconvert fold … --json | head -0`: exit 0, nothing on stderr, the files written."""
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before bnconvert prints anything
    try:
        p = subprocess.run([sys.executable, "-m", "bnconvert.cli.main", "fold", MODEL, "-o", str(tmp_path),
                            "--to", "pb", "--no-verify", "--json"], stdout=write_end, stderr=subprocess.PIPE,
                           text=True, env=ENV, cwd=ROOT, timeout=300)
    finally:
        os.close(write_end)
    assert p.returncode == 0, p.stderr
    assert p.stderr == ""
    assert sorted(os.listdir(tmp_path)) == ["mnist_conv.folded.pb", "mnist_conv.report.json"]
