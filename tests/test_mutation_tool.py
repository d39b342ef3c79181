"""tools/mutate.py (the mutation runner) works: it lists mutants of a module, deterministically,
and shows one as a diff.  The mutation run itself is a tool, not part of the test suite."""
import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOOL = os.path.join(ROOT, "tools", "mutate.py")


def _run(*args):
    r = subprocess.run([sys.executable, TOOL, *args], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return r.stdout


def test_list_arith_mutants():
    out = _run("--list", "--modules", "bnconvert/arith.py")
    rows = [line.split("\t") for line in out.splitlines() if line.startswith("bnconvert/")]
    assert len(rows) >= 20, out
    assert [r[0] for r in rows] == [f"bnconvert/arith.py#{i}" for i in range(len(rows))]
    families = {r[2] for r in rows}
    assert {"arith", "compare", "const", "negate", "guard"} <= families, families
    for r in rows:
        assert re.fullmatch(r"bnconvert/arith\.py:\d+", r[1]), r
    assert not any('"""' in r[-1] for r in rows), "docstrings are never mutated"
    assert _run("--list", "--modules", "bnconvert/arith.py") == out  # deterministic


def test_sample_and_show_one_mutant():
    out = _run("--list", "--modules", "bnconvert/arith.py", "--max-mutants", "5", "--seed", "3")
    ids = [line.split("\t")[0] for line in out.splitlines() if line.startswith("bnconvert/")]
    assert len(ids) == 5 and ids == sorted(ids, key=lambda i: int(i.split("#")[1]))
    shown = _run("--show", "--modules", "bnconvert/arith.py", "--ids", ids[0])
    assert "\n-" in shown and "\n+" in shown, shown
