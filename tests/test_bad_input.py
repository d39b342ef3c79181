"""Bad inputs through the real CLI: exit code 2, one line ``bnconvert: error: …`` naming the file
(and the node where there is one), no traceback, nothing written, the input's bytes unchanged.

The corpus comes from tools/make_bad_inputs.py.  Every case runs the command line
(``bnconvert.cli.main.main(argv)``, what ``python -m bnconvert.cli.main`` runs) in ONE separate
process, one case after the other with everything it writes to fds 1 and 2 captured per case
(tests/_cli.py: a process per case spent most of its ~5 s importing TensorFlow); ``--debug``
runs last, with a forkserver of its own.  Once per module; the tests check the results.
"""
from __future__ import annotations

import json
import os
import sys

import pytest

from _cli import listing, run_batch, sha256

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tools"))
import make_bad_inputs  # noqa: E402

ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "TF_USE_LEGACY_KERAS": "1"}
TIMEOUT = 600  # the whole batch (it was 180 s per case)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """Write the corpus, run every case (plus one with --debug) and record what happened."""
    folder = str(tmp_path_factory.mktemp("corpus"))
    cases = make_bad_inputs.write_corpus(folder)
    outs = tmp_path_factory.mktemp("outs")
    jobs = {}
    for case in cases:
        out = os.path.join(outs, case["name"])
        os.makedirs(out)
        if case["name"] == "existing_outputs":
            with open(os.path.join(out, "valid.folded.pb"), "wb") as f:
                f.write(b"an earlier result")
        argv = [a.replace("{out}", out).replace("{dir}", folder) for a in case["args"]]
        jobs[case["name"]] = (case, out, argv)
    debug_out = os.path.join(outs, "debug")
    os.makedirs(debug_out)
    cycle = next(c for c in cases if c["name"] == "cycle")
    jobs["debug"] = (cycle, debug_out, ["fold", cycle["input"], "-o", debug_out, "--debug"])

    before = {name: (sha256(case["input"]), listing(out)) for name, (case, out, _) in jobs.items()}
    corpus_before = listing(folder)
    # --debug last and with a fresh forkserver: it sets BNCONVERT_DEBUG, which the children read
    procs = run_batch([{"name": name, "argv": argv, "fresh": name == "debug"} for name, (_, _, argv) in jobs.items()],
                      env=ENV, cwd=ROOT, timeout=TIMEOUT)
    results = {}
    for name, (case, out, argv) in jobs.items():
        results[name] = {"case": case, "argv": argv, "proc": procs[name], "out": out,
                         "hash_before": before[name][0], "hash_after": sha256(case["input"]),
                         "out_before": before[name][1], "out_after": listing(out)}
    return {"folder": folder, "results": results, "corpus_before": corpus_before}


@pytest.mark.parametrize("name", make_bad_inputs.CASE_NAMES)
def test_bad_input_is_one_clean_error(corpus, name):
    r = corpus["results"][name]
    proc, case = r["proc"], r["case"]
    where = f"{name}: bnconvert {' '.join(r['argv'])}\nstdout: {proc.stdout}\nstderr: {proc.stderr}"
    assert proc.returncode == 2, where
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, where
    line = lines[0]
    assert line.startswith("bnconvert: error: "), where
    assert "Traceback" not in proc.stderr, where
    for text in case["expect"]:
        assert text in line, f"{text!r} missing\n{where}"
    assert proc.stdout == "", where
    assert r["out_after"] == r["out_before"], f"left behind: {set(r['out_after']) - set(r['out_before'])}\n{where}"
    assert r["hash_after"] == r["hash_before"], where


def test_corpus_folder_is_untouched(corpus):
    """No run wrote beside its input (no default outputs, no .bnconvert-* temporary folders)."""
    assert listing(corpus["folder"]) == corpus["corpus_before"]


def test_debug_shows_the_traceback_and_keeps_the_exit_code(corpus):
    r = corpus["results"]["debug"]
    proc = r["proc"]
    assert proc.returncode == 2, proc.stderr
    assert "Traceback (most recent call last)" in proc.stderr
    assert "GraphError" in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("bnconvert: error: ") and "cycle" in last
    assert r["out_after"] == r["out_before"]


def test_every_case_is_explained(corpus):
    with open(os.path.join(corpus["folder"], "cases.json")) as f:
        manifest = json.load(f)
    assert [c["name"] for c in manifest] == list(make_bad_inputs.CASE_NAMES)
    assert all(c["why"] and c["expect"] for c in manifest)


# ------------------------------------------------------------------ in-process cases
def test_model_over_2gib_is_refused_before_parsing(corpus, monkeypatch, capsys, tmp_path):
    """Simulated: the size limit is lowered below the valid graph's size."""
    import importlib

    from bnconvert.cli.main import main

    valid = os.path.join(corpus["folder"], "valid.pb")
    digest = sha256(valid)
    importlib.import_module("bnconvert.pipeline")  # imported now, it must not copy the patched limit
    monkeypatch.setattr(importlib.import_module("bnconvert.load"), "MAX_PROTO_BYTES", 100)
    out = tmp_path / "out"
    out.mkdir()
    rc = main(["fold", valid, "-o", str(out)])
    err = capsys.readouterr().err
    assert rc == 2
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("bnconvert: error: "), err
    assert valid in lines[0] and "2 GiB" in lines[0]
    assert listing(str(out)) == []
    assert sha256(valid) == digest


def test_folded_graph_over_2gib_is_refused_and_nothing_is_left(corpus, monkeypatch, capsys, tmp_path):
    """The written .pb hits the limit: the staged files are removed too."""
    import importlib

    from bnconvert.cli.main import main

    valid = os.path.join(corpus["folder"], "valid.pb")
    monkeypatch.setattr(importlib.import_module("bnconvert.pipeline"), "MAX_PROTO_BYTES", 100)
    out = tmp_path / "out"
    out.mkdir()
    rc = main(["fold", valid, "-o", str(out), "--no-verify", "--to", "pb"])
    err = capsys.readouterr().err
    assert rc == 2
    lines = err.splitlines()
    assert len(lines) == 1 and "2 GiB" in lines[0] and "valid.folded.pb" in lines[0], err
    assert listing(str(out)) == []


def test_failed_run_removes_the_output_folder_it_created(corpus, capsys, tmp_path):
    from bnconvert.cli.main import main

    out = tmp_path / "new" / "deeper"
    rc = main(["fold", os.path.join(corpus["folder"], "neg_variance.pb"), "-o", str(out)])
    assert rc == 2
    assert "negative" in capsys.readouterr().err
    assert not (tmp_path / "new").exists()


def test_usage_error_is_one_line(capsys):
    from bnconvert.cli.main import main

    with pytest.raises(SystemExit) as e:
        main(["fold", "--no-such-flag"])
    assert e.value.code == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("bnconvert: error: "), lines
