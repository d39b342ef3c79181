"""Mutation testing for bnconvert's core: plant one plausible bug at a time, run the tests.

Usage (from the repository root)::

    python tools/mutate.py --list --modules bnconvert/arith.py      # what would be planted
    python tools/mutate.py --max-mutants 50 --seed 1 -j 2 --json out/mutation.json
    python tools/mutate.py --ids bnconvert/fold.py#57 --show         # the diff of one mutant

Decisions:

* **Own AST runner, no dependency.**  Each target module is parsed with :mod:`ast`; mutation
  sites are found by a deterministic depth-first walk, so the same source gives the same
  numbered list of mutants (``module#index``) whatever its functions are called.  A mutant is
  applied by re-parsing, changing the one node and writing ``ast.unparse`` of the tree
  (comments and formatting are lost in the throw-away copy only).
* **Operators** (each a bug someone could plausibly write): comparison flips (``<``/``<=``,
  ``>``/``>=``, ``==``/``!=``, ``in``/``not in``, ``is``/``is not``), arithmetic swaps
  (``+``/``-``, ``*``/``/``), constant tweaks (``0``/``1``, ``n`` -> ``n+1``, ``True``/``False``,
  ``None`` left alone), ``and``/``or``, negating the condition of ``if``/``while``/``x if c else
  y``, deleting a guard's ``raise``/``return``/``continue``/``break`` (the body of an ``if``
  becomes ``pass``), index/axis swaps ``0``/``-1`` (subscripts and ``axis=`` keywords),
  removing a ``not`` and removing a unary minus.
* **Not mutated**: docstrings and other strings, f-strings, the arguments of ``raise`` (error
  text), logging calls (``log.*``/``logging.*``), annotations, and any line carrying
  ``# pragma: no mutate``.  A mutant that does not compile is dropped, not counted.
* **Never touches the real files**: the repository (without ``.git``, caches, ``out/``) is copied
  once per worker into a temporary folder; each mutant is written into that copy and the
  original text is restored after the run.  Bytecode is never written, so no stale ``.pyc``.
* **Killed / survived / timeout**: a mutant is killed when ``python -m pytest -x -q -p
  no:cacheprovider <tests>`` fails, survives when it passes, and is a timeout (counted as killed,
  reported apart) when it runs longer than ``--timeout`` (default: 3x the unmutated run + 15 s).
  The unmutated run must pass first, or nothing is reported.
* **Tests per module** come from ``TESTS`` (by file stem, so a renamed/split module falls back to
  the default set); every ``tests/test_mutation_*.py`` (but this tool's own test) is added.
  ``--tests`` overrides.
* **Sampling**: ``--max-mutants N`` takes a seeded (``--seed``) sample of N per module, run in
  index order.
* **Equivalent mutants** (those no test can kill: the program behaves the same) are listed in
  ``tools/mutation_equivalent.json`` by module, source line text and mutation, not by line
  number, so they survive edits elsewhere in the file.  The report gives the kill rate over all
  mutants and over the non-equivalent ones.
"""
from __future__ import annotations

import argparse
import ast
import concurrent.futures as cf
import copy
import difflib
import glob
import json
import os
import queue
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_MODULES = ["bnconvert/arith.py", "bnconvert/match.py", "bnconvert/fold.py",
                   "bnconvert/inference.py", "bnconvert/graph.py", "bnconvert/consteval.py"]
# the fold/match/inference paths real TF1 files take (loops, Conv1D, QAT, quantized weights) are
# pinned down by these as much as by the unit tests (tests/test_convert_fixtures.py would add every
# fixture end to end, at 3x the time per surviving mutant)
_CORE = ["tests/test_fold_fixtures.py", "tests/test_core_regressions.py", "tests/test_fold_forms.py",
         "tests/test_loops_outputs.py"]
TESTS = {
    "arith": ["tests/test_arith.py", "tests/test_match.py"] + _CORE,
    "match": ["tests/test_match.py"] + _CORE,
    "fold": _CORE,
    "inference": ["tests/test_inference.py"] + _CORE,
    "graph": ["tests/test_match.py", "tests/test_inference.py"] + _CORE,
    "consteval": ["tests/test_consteval_vs_tf.py", "tests/test_match.py", "tests/test_inference.py"] + _CORE,
}
DEFAULT_TESTS = ["tests/test_arith.py", "tests/test_match.py", "tests/test_inference.py"] + _CORE
SELF_TEST = "tests/test_mutation_tool.py"
EQUIVALENT_FILE = os.path.join("tools", "mutation_equivalent.json")
NO_MUTATE = "pragma: no mutate"

_CMP_SWAP = {ast.Lt: ast.LtE, ast.LtE: ast.Lt, ast.Gt: ast.GtE, ast.GtE: ast.Gt, ast.Eq: ast.NotEq,
             ast.NotEq: ast.Eq, ast.In: ast.NotIn, ast.NotIn: ast.In, ast.Is: ast.IsNot, ast.IsNot: ast.Is}
_BIN_SWAP = {ast.Add: ast.Sub, ast.Sub: ast.Add, ast.Mult: ast.Div, ast.Div: ast.Mult}
_SYM = {ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">", ast.GtE: ">=", ast.Eq: "==", ast.NotEq: "!=",
        ast.In: "in", ast.NotIn: "not in", ast.Is: "is", ast.IsNot: "is not", ast.Add: "+",
        ast.Sub: "-", ast.Mult: "*", ast.Div: "/", ast.And: "and", ast.Or: "or"}


# ---------------------------------------------------------------------- finding sites
@dataclass
class Site:
    """One mutation: the ``k``-th site of the walk, what it changes, where."""

    module: str
    index: int
    line: int
    col: int
    op: str  # operator family
    what: str  # e.g. "< -> <="
    source: str = ""  # the original source line, stripped
    context: str = ""  # the source line of the enclosing node (e.g. the `if` of a guard), stripped

    @property
    def id(self) -> str:
        return f"{self.module}#{self.index}"


def _is_docstring(parent, node) -> bool:
    body = getattr(parent, "body", None)
    return (isinstance(body, list) and body and body[0] is node and isinstance(node, ast.Expr)
            and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str))


def _is_log_call(node) -> bool:
    if not isinstance(node, ast.Call):
        return False
    f = node.func
    return (isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name)
            and f.value.id in ("log", "logger", "logging", "warnings"))


def _children(node):
    """Child nodes to visit, skipping what is never mutated."""
    for name, value in ast.iter_fields(node):
        if name in ("annotation", "returns", "type_comment", "decorator_list"):
            continue
        if isinstance(node, ast.Raise) and name in ("exc", "cause"):
            continue
        items = value if isinstance(value, list) else [value]
        for item in items:
            if not isinstance(item, ast.AST) or _is_docstring(node, item):
                continue
            if isinstance(item, ast.JoinedStr) or _is_log_call(item):
                continue
            yield item


def _walk(tree):
    """Deterministic depth-first pre-order walk with parents."""
    stack = [(tree, None)]
    while stack:
        node, parent = stack.pop()
        yield node, parent
        kids = list(_children(node))
        stack.extend((k, node) for k in reversed(kids))


def _neg_one(node) -> bool:
    return (isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub)
            and isinstance(node.operand, ast.Constant) and node.operand.value == 1
            and type(node.operand.value) is int)


def _mutations(node, parent):
    """(family, description, apply(node, parent)) for every mutation of ``node``."""
    out = []
    if isinstance(node, ast.Compare):
        for i, op in enumerate(node.ops):
            new = _CMP_SWAP.get(type(op))
            if new:
                def flip(n, p, i=i, new=new):
                    n.ops[i] = new()
                out.append(("compare", f"{_SYM[type(op)]} -> {_SYM[new]}", flip))
    elif isinstance(node, ast.BinOp) and type(node.op) in _BIN_SWAP:
        new = _BIN_SWAP[type(node.op)]
        def swap(n, p, new=new):
            n.op = new()
        out.append(("arith", f"{_SYM[type(node.op)]} -> {_SYM[new]}", swap))
    elif isinstance(node, ast.BoolOp):
        new = ast.Or if isinstance(node.op, ast.And) else ast.And
        def bswap(n, p, new=new):
            n.op = new()
        out.append(("boolop", f"{_SYM[type(node.op)]} -> {_SYM[new]}", bswap))
    elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
        out.append(("not", "remove not", lambda n, p: _replace(p, n, n.operand)))
    elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub) and not _neg_one(node):
        out.append(("neg", "remove unary minus", lambda n, p: _replace(p, n, n.operand)))
    elif isinstance(node, ast.Constant) and not isinstance(node.value, (str, bytes)):
        v = node.value
        if isinstance(v, bool):
            out.append(("const", f"{v} -> {not v}", lambda n, p: setattr(n, "value", not n.value)))
        elif isinstance(v, int):
            new = {0: 1, 1: 0}.get(v, v + 1)
            out.append(("const", f"{v} -> {new}", lambda n, p, new=new: setattr(n, "value", new)))
        elif isinstance(v, float):
            new = 0.0 if v else 1.0
            out.append(("const", f"{v!r} -> {new!r}", lambda n, p, new=new: setattr(n, "value", new)))
    if isinstance(node, (ast.If, ast.While, ast.IfExp)):
        def negate(n, p):
            n.test = ast.UnaryOp(op=ast.Not(), operand=n.test)
        out.append(("negate", f"negate {type(node).__name__.lower()} condition", negate))
    if isinstance(node, (ast.Raise, ast.Return, ast.Continue, ast.Break)) and isinstance(parent, ast.If) \
            and (node in parent.body or node in parent.orelse):
        kind = type(node).__name__.lower()
        out.append(("guard", f"delete guard {kind}", lambda n, p: _replace(p, n, ast.Pass())))
    # index / axis swaps 0 <-> -1
    if isinstance(node, ast.Subscript):
        sl = node.slice
        if isinstance(sl, ast.Constant) and sl.value == 0 and type(sl.value) is int:
            out.append(("index", "[0] -> [-1]", lambda n, p: setattr(n, "slice", _minus_one())))
        elif _neg_one(sl):
            out.append(("index", "[-1] -> [0]", lambda n, p: setattr(n, "slice", ast.Constant(0))))
    if isinstance(node, ast.keyword) and node.arg in ("axis", "index"):
        if isinstance(node.value, ast.Constant) and node.value.value == 0 and type(node.value.value) is int:
            out.append(("index", f"{node.arg}=0 -> {node.arg}=-1", lambda n, p: setattr(n, "value", _minus_one())))
        elif _neg_one(node.value):
            out.append(("index", f"{node.arg}=-1 -> {node.arg}=0", lambda n, p: setattr(n, "value", ast.Constant(0))))
    return out


def _minus_one():
    return ast.UnaryOp(op=ast.USub(), operand=ast.Constant(1))


def _replace(parent, old, new) -> None:
    """Put ``new`` where ``old`` sits in ``parent`` (a field or an element of a list field)."""
    for name, value in ast.iter_fields(parent):
        if value is old:
            setattr(parent, name, new)
            return
        if isinstance(value, list):
            for i, item in enumerate(value):
                if item is old:
                    value[i] = new
                    return
    raise ValueError("node not found in its parent")


def find_sites(module: str, text: str) -> list[Site]:
    return [s for s, *_ in _sites_with_nodes(module, text)]


def mutate_source(module: str, text: str, index: int) -> str | None:
    """The source with mutant ``index`` applied, or None if it does not compile."""
    for site, node, parent, apply, root in _sites_with_nodes(module, text):
        if site.index == index:  # the walk parses afresh: mutating its tree is safe
            apply(node, parent)
            ast.fix_missing_locations(root)
            try:
                new = ast.unparse(root)
                compile(new, module, "exec")
            except (SyntaxError, ValueError, TypeError):
                return None
            return new
    raise IndexError(f"{module} has no mutant #{index}")


def _sites_with_nodes(module: str, text: str):
    """Yield (site, node, parent, apply, tree) in walk order; lines marked no-mutate are skipped.

    Each call parses afresh, so applying a mutation to the yielded nodes never touches another
    call's tree (calls run in parallel threads)."""
    tree = ast.parse(text)
    lines = text.splitlines()
    k = 0
    for node, parent in _walk(tree):
        line = getattr(node, "lineno", None)
        if line is None or parent is None:
            continue
        src = lines[line - 1] if line <= len(lines) else ""
        if NO_MUTATE in src:
            continue
        pline = getattr(parent, "lineno", None)
        ctx = lines[pline - 1].strip() if pline and pline != line else ""
        for fam, what, apply in _mutations(node, parent):
            yield Site(module, k, line, node.col_offset, fam, what, src.strip(), ctx), node, parent, apply, tree
            k += 1


# ---------------------------------------------------------------------- running
def tests_for(module: str, override: list[str] | None, root: str) -> list[str]:
    if override:
        return override
    stem = os.path.splitext(os.path.basename(module))[0]
    tests = list(TESTS.get(stem, DEFAULT_TESTS))
    extra = sorted(os.path.relpath(p, root) for p in glob.glob(os.path.join(root, "tests", "test_mutation_*.py")))
    tests = [t for t in extra if t != SELF_TEST] + tests
    return [t for t in dict.fromkeys(tests) if os.path.exists(os.path.join(root, t))]


def _copy_repo(root: str) -> str:
    dst = tempfile.mkdtemp(prefix="bnconvert-mutate-")
    ignore = shutil.ignore_patterns(".git", "__pycache__", ".pytest_cache", ".hypothesis", "*.egg-info",
                                    "build", ".venv", "venv", ".gpu")
    for name in sorted(os.listdir(root)):
        if name in (".git", "out", "tmp", ".venv", "venv", "build", ".pytest_cache", ".hypothesis", ".gpu"):
            continue
        src = os.path.join(root, name)
        if os.path.isdir(src):
            shutil.copytree(src, os.path.join(dst, name), ignore=ignore, symlinks=True)
        else:
            shutil.copy2(src, os.path.join(dst, name))
    return dst


def _env(workdir: str) -> dict:
    """What tests/conftest.py sets, set before TensorFlow is imported (the fork server imports it
    before conftest runs; NCHW convs run on CPU only with oneDNN)."""
    env = {"TF_USE_LEGACY_KERAS": "1", "TF_CPP_MIN_LOG_LEVEL": "3", "TF_ENABLE_ONEDNN_OPTS": "1"}
    return env | dict(os.environ, PYTHONDONTWRITEBYTECODE="1", PYTHONPATH=workdir, PYTHONHASHSEED="0")


_PYTEST_ARGS = ["-x", "-q", "-p", "no:cacheprovider", "--no-header"]


def run_tests(workdir: str, tests: list[str], timeout: float) -> tuple[str, float, str]:
    """One fresh ``python -m pytest`` (``--no-fork``): ("passed" | "failed" | "timeout", s, tail)."""
    cmd = [sys.executable, "-m", "pytest", *_PYTEST_ARGS, *tests]
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, cwd=workdir, env=_env(workdir), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, start_new_session=True, text=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        return "timeout", time.monotonic() - t0, ""
    tail = "\n".join(out.strip().splitlines()[-3:])
    return ("passed" if proc.returncode == 0 else "failed"), time.monotonic() - t0, tail


class ForkServer:
    """A worker process that imports TensorFlow, numpy and pytest once, then forks a child per
    mutant that runs ``pytest.main`` in the worker's copy.  Importing TensorFlow costs 5-40 s on
    a loaded machine, the tests of one mutant often less: this makes a run several times faster.
    bnconvert itself is never imported by the server, so each child imports the mutated code."""

    def __init__(self, workdir: str):
        self.workdir = workdir
        self.proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--serve", workdir],
                                     cwd=workdir, env=_env(workdir), stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                                     start_new_session=True)
        if self.proc.stdout.readline().strip() != "ready":
            raise RuntimeError("mutation fork server did not start")

    def run(self, tests: list[str], timeout: float) -> tuple[str, float, str]:
        self.proc.stdin.write(json.dumps({"tests": tests, "timeout": timeout}) + "\n")
        self.proc.stdin.flush()
        r = json.loads(self.proc.stdout.readline())
        return r["status"], r["seconds"], r["tail"]

    def close(self) -> None:
        try:
            self.proc.stdin.close()
            self.proc.wait(timeout=10)
        except Exception:
            os.killpg(self.proc.pid, signal.SIGKILL)


def serve(workdir: str) -> int:
    """The fork server's loop (``--serve WORKDIR``): one JSON request per line on stdin."""
    sys.dont_write_bytecode = True
    os.chdir(workdir)
    with open(os.devnull, "w") as quiet:  # TensorFlow's import chatter must not reach the pipe
        saved = os.dup(1)
        os.dup2(quiet.fileno(), 1)
        import numpy  # noqa: F401
        import pytest  # noqa: F401
        import tensorflow  # noqa: F401
        os.dup2(saved, 1)
    print("ready", flush=True)
    log_path = os.path.join(workdir, ".mutate-run.log")
    for line in sys.stdin:
        req = json.loads(line)
        t0 = time.monotonic()
        pid = os.fork()
        if pid == 0:  # child: own session (its subprocesses die with it), output to a file
            os.setsid()
            fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
            os.dup2(fd, 1)
            os.dup2(fd, 2)
            sys.path[:0] = [workdir, os.path.join(workdir, "tests")]
            try:
                rc = int(pytest.main(_PYTEST_ARGS + req["tests"]))
            except BaseException:
                rc = 99
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(rc)
        status = None
        while status is None:
            done, st = os.waitpid(pid, os.WNOHANG)
            if done:
                status = "passed" if os.waitstatus_to_exitcode(st) == 0 else "failed"
            elif time.monotonic() - t0 > req["timeout"]:
                os.killpg(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                status = "timeout"
            else:
                time.sleep(0.05)
        with open(log_path, errors="replace") as f:
            tail = "\n".join(f.read().strip().splitlines()[-3:])
        print(json.dumps({"status": status, "seconds": time.monotonic() - t0, "tail": tail}), flush=True)
    return 0


def _previous_kills(path: str | None) -> dict:
    """(id, source, mutation) -> result, for the mutants an earlier run killed or timed out."""
    if not path:
        return {}
    with open(path) as f:
        old = json.load(f)["mutants"]
    return {(r["id"], r["source"], r["what"]): r for r in old if r["status"] in ("killed", "timeout")}


def load_equivalent(path: str | None) -> list[dict]:
    if not path or not os.path.exists(path):
        return []
    with open(path) as f:
        return json.load(f)["equivalent"]


def is_equivalent(site: Site, equivalent: list[dict]) -> dict | None:
    mod = os.path.basename(site.module)
    for e in equivalent:
        if (os.path.basename(e["module"]) == mod and e["source"] == site.source and e["mutation"] == site.what
                and e.get("context", site.context) == site.context):
            return e
    return None


def select(sites_by_module: dict, max_mutants: int | None, seed: int, ids: set[str] | None) -> list[Site]:
    chosen = []
    for module, sites in sites_by_module.items():
        if ids:
            chosen.extend(s for s in sites if s.id in ids)
            continue
        if max_mutants and len(sites) > max_mutants:
            rng = random.Random(f"{seed}:{os.path.basename(module)}")
            sites = sorted(rng.sample(sites, max_mutants), key=lambda s: s.index)
        chosen.extend(sites)
    return chosen


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--modules", nargs="+", help="modules to mutate (default: the core modules that exist)")
    ap.add_argument("--tests", nargs="+", help="test files/ids to run for every mutant (default: per module)")
    ap.add_argument("--max-mutants", type=int, help="seeded sample of at most N mutants per module")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--ids", nargs="+", help="run only these mutants (module#index, see --list)")
    ap.add_argument("--list", action="store_true", help="list the mutants (after sampling) and exit")
    ap.add_argument("--show", action="store_true", help="print the diff of each selected mutant and exit")
    ap.add_argument("-j", "--jobs", type=int, default=2, help="parallel workers, each with its own copy")
    ap.add_argument("--timeout", type=float, help="seconds per mutant (default 3x the unmutated run + 15)")
    ap.add_argument("--equivalent", default=EQUIVALENT_FILE, help="JSON list of known equivalent mutants")
    ap.add_argument("--json", help="write the full result here")
    ap.add_argument("--previous", help="JSON of an earlier run: mutants it killed (same id, source line and "
                    "mutation) are not run again (tests were only added), the rest are")
    ap.add_argument("--no-fork", action="store_true", help="a fresh python per mutant (slower; no fork server)")
    ap.add_argument("--root", default=ROOT, help=argparse.SUPPRESS)
    ap.add_argument("--serve", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.serve:
        return serve(args.serve)

    root = os.path.abspath(args.root)
    modules = args.modules or [m for m in DEFAULT_MODULES if os.path.exists(os.path.join(root, m))]
    texts, sites_by_module = {}, {}
    for m in modules:
        m = os.path.relpath(os.path.abspath(os.path.join(root, m)), root) if not os.path.isabs(m) else os.path.relpath(m, root)
        if not os.path.exists(os.path.join(root, m)):
            print(f"mutate: error: no module {m}", file=sys.stderr)
            return 2
        with open(os.path.join(root, m)) as f:
            texts[m] = f.read()
        sites_by_module[m] = find_sites(m, texts[m])
    chosen = select(sites_by_module, args.max_mutants, args.seed, set(args.ids) if args.ids else None)
    equivalent = load_equivalent(os.path.join(root, args.equivalent) if not os.path.isabs(args.equivalent)
                                 else args.equivalent)

    if args.list or args.show:
        for s in chosen:
            eq = " [equivalent]" if is_equivalent(s, equivalent) else ""
            print(f"{s.id}\t{s.module}:{s.line}\t{s.op}\t{s.what}{eq}\t{s.source}")
            if args.show:
                new = mutate_source(s.module, texts[s.module], s.index)
                old = ast.unparse(ast.parse(texts[s.module]))
                if new is None:
                    print("  (does not compile; skipped)")
                else:
                    sys.stdout.writelines(difflib.unified_diff(old.splitlines(True), new.splitlines(True), n=1))
        total = {m: len(v) for m, v in sites_by_module.items()}
        print(f"{len(chosen)} mutants selected; sites per module: {total}")
        return 0

    return _run(args, root, texts, chosen, equivalent, sites_by_module)


def _run(args, root, texts, chosen, equivalent, sites_by_module) -> int:
    t_start = time.monotonic()
    jobs = max(1, args.jobs)
    copies, servers = [], []

    def stop(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)  # so the temporary copies are removed on kill
    try:
        copies = [_copy_repo(root) for _ in range(jobs)]
        if args.no_fork:
            runners = [lambda tests, timeout, c=c: run_tests(c, tests, timeout) for c in copies]
        else:
            servers = [ForkServer(c) for c in copies]
            runners = [srv.run for srv in servers]
        # the unmutated run of every test any module uses (each module's set is a subset) must pass
        test_sets = {m: tests_for(m, args.tests, root) for m in texts}
        union = list(dict.fromkeys(t for ts in test_sets.values() for t in ts))
        status, base_time, tail = runners[0](union, 1800)
        if status != "passed":
            print(f"mutate: error: the unmutated tests fail ({' '.join(union)}):\n{tail}", file=sys.stderr)
            return 1
        timeout = args.timeout or 3 * base_time + 15
        print(f"unmutated run: {base_time:.1f} s; per-mutant timeout {timeout:.0f} s; "
              f"{len(chosen)} mutants, {jobs} workers", flush=True)

        previous = _previous_kills(args.previous)
        free: queue.Queue = queue.Queue()
        for c, r in zip(copies, runners):
            free.put((c, r))

        def one(site: Site) -> dict:
            new = mutate_source(site.module, texts[site.module], site.index)
            rec = asdict(site) | {"id": site.id}
            old = previous.get((site.id, site.source, site.what))
            if old is not None:
                return rec | {"status": old["status"], "seconds": 0.0, "reused": True}
            if new is None:
                return rec | {"status": "invalid", "seconds": 0.0}
            work, runner = free.get()
            path = os.path.join(work, site.module)
            try:
                with open(path, "w") as f:
                    f.write(new)
                status, dt, tail = runner(test_sets[site.module], timeout)
            finally:
                with open(path, "w") as f:
                    f.write(texts[site.module])
                free.put((work, runner))
            status = {"passed": "survived", "failed": "killed"}.get(status, status)
            eq = is_equivalent(site, equivalent)
            return rec | {"status": status, "seconds": round(dt, 2), "tail": tail if status == "survived" else "",
                          "equivalent": bool(eq), "why_equivalent": eq.get("why", "") if eq else ""}

        results = []
        with cf.ThreadPoolExecutor(jobs) as ex:
            for i, rec in enumerate(ex.map(one, chosen), 1):
                results.append(rec)
                if not rec.get("reused"):
                    print(f"[{i}/{len(chosen)}] {rec['status']:8s} {rec['id']} {rec['module']}:{rec['line']} "
                          f"{rec['what']}  ({rec['seconds']:.0f} s)", flush=True)
    finally:
        for srv in servers:
            srv.close()
        for c in copies:
            shutil.rmtree(c, ignore_errors=True)

    summary = summarize(results, sites_by_module)
    print_report(summary, results)
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump({"command": " ".join(sys.argv), "seed": args.seed, "max_mutants": args.max_mutants,
                       "wall_seconds": round(time.monotonic() - t_start, 1), "summary": summary,
                       "survivors": [r for r in results if r["status"] == "survived"], "mutants": results},
                      f, indent=1)
    print(f"wall time {time.monotonic() - t_start:.0f} s")
    return 0


def summarize(results: list[dict], sites_by_module: dict) -> dict:
    out = {}
    for module in list(sites_by_module) + ["TOTAL"]:
        rs = [r for r in results if module == "TOTAL" or r["module"] == module]
        n = {k: sum(r["status"] == k for r in rs) for k in ("killed", "survived", "timeout", "invalid")}
        eq = sum(r["status"] == "survived" and r.get("equivalent") for r in rs)
        run = n["killed"] + n["survived"] + n["timeout"]
        dead = n["killed"] + n["timeout"]
        out[module] = n | {"sites": sum(len(v) for v in sites_by_module.values()) if module == "TOTAL"
                           else len(sites_by_module[module]), "run": run, "equivalent": eq,
                           "kill_rate": round(dead / run, 4) if run else None,
                           "kill_rate_non_equivalent": round(dead / (run - eq), 4) if run - eq else None}
    return out


def print_report(summary: dict, results: list[dict]) -> None:
    print(f"\n{'module':28s} {'sites':>5s} {'run':>4s} {'killed':>6s} {'timeout':>7s} {'survived':>8s} "
          f"{'equiv':>5s} {'rate':>6s} {'rate*':>6s}")
    for module, n in summary.items():
        rate = f"{100 * n['kill_rate']:.1f}%" if n["kill_rate"] is not None else "-"
        rate2 = f"{100 * n['kill_rate_non_equivalent']:.1f}%" if n["kill_rate_non_equivalent"] is not None else "-"
        print(f"{module:28s} {n['sites']:5d} {n['run']:4d} {n['killed']:6d} {n['timeout']:7d} {n['survived']:8d} "
              f"{n['equivalent']:5d} {rate:>6s} {rate2:>6s}")
    print("rate = (killed + timeout) / run; rate* = the same over the non-equivalent mutants")
    surv = [r for r in results if r["status"] == "survived"]
    if surv:
        print("\nsurvivors:")
        for r in surv:
            tag = "  [equivalent]" if r.get("equivalent") else ""
            print(f"  {r['id']:26s} {r['module']}:{r['line']}  {r['what']}{tag}\n      {r['source']}")


if __name__ == "__main__":
    sys.exit(main())
