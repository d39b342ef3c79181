"""tools/bench.py --quick runs end to end, so the benchmark code never rots.

Quick mode builds the 10- and 50-BN graphs afresh (in tmp_path), runs bnconvert stage by stage
on all of them and the peers, both command lines and the latency comparison at 10 BN layers,
and writes the Markdown report.  About a minute on 2 cores.
"""
import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SECTIONS = ("## Targets", "## Graphs", "## bnconvert, stage by stage", "## Growth with graph size",
            "## Against peers", "## Command lines", "## Inference latency (onnxruntime, CPU)")


def _table_rows(text: str, heading: str) -> list[dict[str, str]]:
    """Rows of the first Markdown table after ``heading``, as {column header: cell}."""
    part = text.split(heading, 1)[1]
    rows = []
    for line in part.splitlines():
        if not line.startswith("|"):
            if rows:
                break
            continue
        if not line.startswith("|---"):
            rows.append([c.strip() for c in line.strip().strip("|").split("|")])
    head = rows[0]
    assert all(len(r) == len(head) for r in rows), rows
    return [dict(zip(head, r)) for r in rows[1:]]


def test_bench_quick_writes_the_tables(tmp_path):
    out = tmp_path / "b.md"
    cmd = [sys.executable, os.path.join(ROOT, "tools", "bench.py"), "--quick", "--out", str(out),
           "--graphs", str(tmp_path / "graphs"), "--workdir", str(tmp_path / "work")]
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    log = tmp_path / "work" / "children.log"
    detail = r.stderr[-2000:] + (log.read_text()[-3000:] if log.exists() else "")
    assert r.returncode == 0, detail
    text = out.read_text()
    assert r.stdout.strip() == text.strip()  # what it prints is what it writes
    for section in SECTIONS:
        assert section in text, section

    stages = _table_rows(text, "## bnconvert, stage by stage")
    assert {(r["graph"], r["BNs"]) for r in stages} == {("resnet", "10"), ("resnet", "50"), ("mlp", "10"), ("mlp", "50")}
    for r in stages:
        assert r["result"] == f"{r['BNs']}/{r['BNs']} folded, verification passed", r

    growth = [r for r in _table_rows(text, "## Growth with graph size") if "→" not in r["BNs"]]
    assert len(growth) == 4 and all(re.fullmatch(r"\d+", r["match+fold µs per BN"]) for r in growth), growth

    peers = _table_rows(text, "## Against peers")
    assert {r["tool"] for r in peers} == {"bnconvert", "tf2onnx, phase an input", "tf2onnx, phase → const False",
                                         "TF optimize_for_inference"}
    for r in peers:
        assert r["outputs match"].startswith("yes"), r  # every converter's outputs match the original
        if r["tool"] == "bnconvert":
            assert r["BN-derived"] == "0", r  # nothing BN-derived left
        if r["tool"] == "tf2onnx, phase an input":
            assert int(r["BN-derived"]) > 0, r  # BatchNormalization / If left

    cli = _table_rows(text, "## Command lines")
    assert len(cli) == 1 and re.fullmatch(r"\d+\.\d+", cli[0]["bnconvert / tf2onnx"]), cli

    latency = _table_rows(text, "## Inference latency (onnxruntime, CPU)")
    assert len(latency) == 8, latency  # 2 graphs x threads {1, all} x batch {1, 100}
    for r in latency:
        assert re.fullmatch(r"\d+\.\d+", r["bnconvert / floor"]), r
        assert re.fullmatch(r"\d+\.\d+", r["A/A: floor again / floor"]), r

    targets = _table_rows(text, "## Targets")
    assert len(targets) == 4, targets
