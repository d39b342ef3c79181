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


def _table_rows(text: str, heading: str) -> list[list[str]]:
    """Data rows of the first Markdown table after ``heading``."""
    part = text.split(heading, 1)[1]
    rows = []
    for line in part.splitlines():
        if line.startswith("## ") and rows:
            break
        if line.startswith("|") and not line.startswith("|---"):
            rows.append([c.strip() for c in line.strip("|").split("|")])
    return rows[1:]  # without the header


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
    assert {(row[0], row[1]) for row in stages} == {("resnet", "10"), ("resnet", "50"), ("mlp", "10"), ("mlp", "50")}
    for row in stages:
        assert row[-1] == f"{row[1]}/{row[1]} folded, verification passed", row

    growth = _table_rows(text, "## Growth with graph size")
    assert len(growth) == 4 and all(re.fullmatch(r"\d+", row[-1]) for row in growth), growth

    peers = _table_rows(text, "## Against peers")
    tools = {row[2] for row in peers}
    assert {"bnconvert", "tf2onnx, phase an input", "tf2onnx, phase → const False",
            "TF optimize_for_inference"} <= tools
    for row in peers:
        assert row[8].startswith("yes"), row  # every converter's outputs match the original graph
        if row[2] == "bnconvert":
            assert row[6] == "0", row  # no BN-derived op left
        if row[2] == "tf2onnx, phase an input":
            assert int(row[6]) > 0, row  # BatchNormalization / If left

    cli = _table_rows(text, "## Command lines")
    assert cli and all(not c.startswith(("failed", ">")) for c in cli[0][2:4]), cli

    latency = _table_rows(text, "## Inference latency (onnxruntime, CPU)")
    assert len(latency) == 8, latency  # 2 graphs x threads {1, all} x batch {1, 100}
    assert all(re.fullmatch(r"\d+\.\d+", row[-2]) for row in latency), latency

    targets = _table_rows(text, "## Targets")
    assert len(targets) == 4, targets
