"""The attack corpus (tools/make_attacks.py, issue 14) through the real CLI.

The cases not marked ``inproc`` run the command line (``bnconvert.cli.main.main(argv)``, what
``python -m bnconvert.cli.main`` runs) in ONE separate process with ``HOME`` set to an empty
folder and the working directory a scratch folder, one case after the other, fds 1 and 2
captured per case (tests/_cli.py; a process per case spent most of its time importing
TensorFlow).  For every case: the exit code; for a refusal, the single line ``bnconvert: error:
…`` with the expected words; nothing written anywhere but the case's own output folder (the
corpus folder — where every hostile write in the corpus points —, the scratch folder and HOME
are listed before and after); the input's bytes unchanged; and for the memory bombs the peak
RSS under the budget (the batch process's peak when the case ended, so never less than the
case's own: the bombs run first).
"""
from __future__ import annotations

import json
import os
import resource
import sys

import pytest

from _cli import listing, run_batch, sha256

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tools"))
import make_attacks  # noqa: E402

TIMEOUT = 900  # the whole batch (it was 240 s per case)
#: peak RSS allowed for the bomb cases: far under the default budget (min(8 GiB, RAM/2)); TensorFlow
#: alone takes ~0.7 GiB
BOMB_PEAK = 2 << 30


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    folder = str(tmp_path_factory.mktemp("attacks"))
    cases = make_attacks.write_corpus(folder)
    outs = str(tmp_path_factory.mktemp("attack_outs"))
    home = str(tmp_path_factory.mktemp("home"))
    scratch = str(tmp_path_factory.mktemp("scratch"))
    jobs = {}
    for case in cases:
        if case["inproc"]:
            continue
        out = os.path.join(outs, case["name"])
        os.makedirs(out)
        argv = [a.replace("{out}", out).replace("{dir}", folder) for a in case["args"]]
        jobs[case["name"]] = (case, out, argv)
    before = {name: sha256(case["input"]) for name, (case, _, _) in jobs.items()}
    corpus_before, home_before, scratch_before = listing(folder), listing(home), listing(scratch)
    env = {k: v for k, v in os.environ.items() if k not in ("KERAS_HOME", "BNCONVERT_MAX_MEMORY")}
    env.update(HOME=home, TF_CPP_MIN_LOG_LEVEL="3", TF_USE_LEGACY_KERAS="1", PYTHONPATH=ROOT)
    order = sorted(jobs, key=lambda name: not jobs[name][0]["bomb"])  # bombs first: their peak is theirs
    procs = run_batch([{"name": name, "argv": jobs[name][2]} for name in order], env=env, cwd=scratch, timeout=TIMEOUT)
    results = {name: {"rc": p.returncode, "stdout": p.stdout, "stderr": p.stderr, "peak": p.peak}
               for name, p in procs.items()}
    for name, (case, out, argv) in jobs.items():
        results[name].update(case=case, argv=argv, out=out, hash_before=before[name], hash_after=sha256(case["input"]))
    return {"folder": folder, "outs": outs, "cases": {c["name"]: c for c in cases}, "results": results, "corpus_before": corpus_before, "corpus_after": listing(folder),
            "home_before": home_before, "home_after": listing(home), "scratch_before": scratch_before,
            "scratch_after": listing(scratch)}


@pytest.fixture
def budget_reset():
    from bnconvert import budget

    yield
    budget.configure(None)  # --max-memory in an in-process run sets the process-wide budget


def _in_process(corpus, name, capsys) -> dict:
    """Cases that cannot hang, crash or leak state run in this process (TensorFlow is imported once)."""
    from bnconvert.cli.main import main

    case = corpus["cases"][name]
    out = os.path.join(corpus["outs"], name)
    os.makedirs(out)
    argv = [a.replace("{out}", out).replace("{dir}", corpus["folder"]) for a in case["args"]]
    before = sha256(case["input"])
    capsys.readouterr()
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    rc = main(argv)
    growth = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak_before) * 1024
    cap = capsys.readouterr()
    return {"rc": rc, "stdout": cap.out, "stderr": cap.err, "peak": growth, "case": case, "argv": argv, "out": out,
            "hash_before": before, "hash_after": sha256(case["input"])}


@pytest.mark.parametrize("name", make_attacks.CASE_NAMES)
def test_attack(corpus, name, capsys, budget_reset):
    r = corpus["results"][name] if name in corpus["results"] else _in_process(corpus, name, capsys)
    case = r["case"]
    where = f"{name}: bnconvert {' '.join(r['argv'])}\nrc {r['rc']}\nstdout: {r['stdout'][-2000:]}\nstderr: {r['stderr']}"
    assert r["rc"] == case["exit"], where
    if case["exit"] != 0:
        lines = r["stderr"].splitlines()
        assert len(lines) == 1 and lines[0].startswith("bnconvert: error: "), where
        for text in case["expect"]:
            assert text in lines[0], f"{text!r} missing\n{where}"
        assert listing(r["out"]) == [], where
    else:
        assert r["stderr"] == "", where
    assert r["hash_after"] == r["hash_before"], where
    if case["bomb"]:  # subprocess: the child's peak RSS; in process: how much this process's peak grew
        assert r["peak"] is not None and r["peak"] < BOMB_PEAK, f"peak RSS {(r['peak'] or 0) / 2**20:.0f} MiB\n{where}"


def test_nothing_written_outside_the_output_folders(corpus):
    """No hostile write happened (all target the corpus folder), no state in HOME or the cwd
    (the subprocess cases; test_z_corpus_untouched_after_in_process_cases covers the rest)."""
    assert corpus["corpus_after"] == corpus["corpus_before"]
    assert corpus["home_after"] == corpus["home_before"] == []
    assert corpus["scratch_after"] == corpus["scratch_before"] == []


def test_successful_folds_wrote_their_outputs(corpus):
    res = corpus["results"]
    assert sorted(os.listdir(res["ckpt_evil_saver_fold"]["out"])) == [
        "ckpt_evil_saver.folded.pb", "ckpt_evil_saver.report.json"]
    odd = os.listdir(os.fsencode(res["non_utf8_file_name"]["out"]))
    assert sorted(odd) == [b"m\xff.folded.pb", b"m\xff.onnx", b"m\xff.report.json", b"m\xff.tflite"], odd
    with open(os.path.join(corpus["outs"], "outputs_duplicated", "valid.report.json")) as f:  # run by test_attack
        assert json.load(f)["outputs"] == ["out:0"]


def test_corpus_manifest_explains_every_case(corpus):
    with open(os.path.join(corpus["folder"], "cases.json")) as f:
        manifest = json.load(f)
    assert tuple(c["name"] for c in manifest) == make_attacks.CASE_NAMES
    assert all(c["why"] and (c["expect"] or c["exit"] == 0) for c in manifest)


def test_z_corpus_untouched_after_in_process_cases(corpus):
    """Runs after test_attack (pytest keeps file order): the in-process cases wrote nothing either."""
    assert listing(corpus["folder"]) == corpus["corpus_before"]
