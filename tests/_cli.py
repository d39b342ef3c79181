"""Running the real ``bnconvert`` command line many times, cheaply (shared by the corpus tests).

A separate ``python -m bnconvert.cli.main`` per case pays a Python start and a forkserver start
(bnconvert.isolate: TensorFlow, tf2onnx and onnxruntime imported, ~5 s of CPU) every time.
:func:`run_batch` runs a list of command lines in ONE fresh subprocess instead — with the
environment, working directory and ``HOME`` the caller gives it — calling
``bnconvert.cli.main.main(argv)`` once per case, exactly what ``python -m bnconvert.cli.main``
does, with file descriptors 1 and 2 sent to files for that case (so the captured output is all
the process wrote, the native libraries' output included, as with a subprocess per case).
Between cases the forkserver is kept (``main`` would stop it at the end of every run); a case
marked ``fresh`` gets a newly started one (e.g. ``--debug``, which the stage children read
from the environment the forkserver started with).

Run as a script: ``python tests/_cli.py JOBS.json RESULTS.json``.
"""
from __future__ import annotations

import hashlib
import json
import os
import stat
import subprocess
import sys
import tempfile
import types

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def sha256(path: str | None) -> str | None:
    """The bytes' digest; None for no path or a missing one; a marker for a non-regular file."""
    if path is None or not os.path.lexists(path):
        return None
    if not stat.S_ISREG(os.stat(path).st_mode):
        return "not a regular file"
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def listing(folder: str) -> list[str]:
    """Every file and folder under ``folder`` (relative paths), hidden ones included."""
    out = []
    for base, dirs, files in os.walk(folder):
        for name in dirs + files:
            out.append(os.path.relpath(os.path.join(base, name), folder))
    return sorted(out)


def run_batch(jobs: list[dict], env: dict, cwd: str, timeout: float) -> dict[str, types.SimpleNamespace]:
    """Run ``jobs`` (``{"name", "argv", "fresh"?}``) in one subprocess of this script, in order.

    Returns name → ``SimpleNamespace(returncode, stdout, stderr, peak)``; ``peak`` is the
    batch process's peak RSS in bytes when the case ended (the largest of this case and the
    ones before it: never less than the case's own).  A case that did not finish (the batch
    crashed or timed out) is reported with ``returncode`` None and what is known in ``stderr``.
    """
    with tempfile.TemporaryDirectory(prefix="bncli-") as tmp:
        jpath, rpath = os.path.join(tmp, "jobs.json"), os.path.join(tmp, "results.json")
        with open(jpath, "w") as f:
            json.dump(jobs, f)
        env = dict(env, PYTHONPATH=os.pathsep.join(p for p in (ROOT, env.get("PYTHONPATH")) if p))
        try:
            p = subprocess.run([sys.executable, os.path.abspath(__file__), jpath, rpath], capture_output=True,
                               env=env, cwd=cwd, timeout=timeout)
            why = f"batch exited {p.returncode}: {p.stderr.decode(errors='replace')[-3000:]}"
        except subprocess.TimeoutExpired:
            why = f"batch still running after {timeout} s"
        results = {}
        if os.path.exists(rpath):
            with open(rpath) as f:
                results = json.load(f)
    return {j["name"]: types.SimpleNamespace(**results[j["name"]]) if j["name"] in results else
            types.SimpleNamespace(returncode=None, stdout="", stderr=why, peak=None) for j in jobs}


# ------------------------------------------------------------------------- the batch process
def run_captured(argv: list[str]) -> dict:
    """``main(argv)`` as ``python -m bnconvert.cli.main`` runs it, in this process, with fds 1
    and 2 (and ``sys.stdout``/``sys.stderr``, new streams on them configured like the
    interpreter's own) sent to files: returns ``returncode``, ``stdout``, ``stderr`` (all that
    was written there meanwhile) and ``peak`` (this process's peak RSS so far, bytes)."""
    import io
    import resource
    import traceback

    from bnconvert.cli import main as cli

    def stream(fd, like, **kw):
        return io.TextIOWrapper(io.FileIO(fd, "w", closefd=False), encoding=like.encoding, errors=like.errors, **kw)

    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        for s in (sys.stdout, sys.stderr):
            s.flush()
        saved = os.dup(1), os.dup(2)
        old = sys.stdout, sys.stderr
        os.dup2(out.fileno(), 1)
        os.dup2(err.fileno(), 2)
        sys.stdout = stream(1, sys.__stdout__)
        sys.stderr = stream(2, sys.__stderr__, line_buffering=True)
        try:
            try:
                rc = cli.main(argv)  # what `sys.exit(main())` exits with
            except SystemExit as e:  # argparse's usage errors
                rc = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
            except BaseException:  # noqa: BLE001 - an uncaught exception: traceback, exit status 1
                traceback.print_exc()
                rc = 1
            for s in (sys.stdout, sys.stderr):
                try:
                    s.flush()
                except (OSError, ValueError):
                    pass
        finally:
            sys.stdout, sys.stderr = old
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])
        out.seek(0)
        err.seek(0)
        return {"returncode": rc, "stdout": out.read().decode(errors="replace"),
                "stderr": err.read().decode(errors="replace"),
                "peak": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}


def _batch(jobs_path: str, results_path: str) -> int:
    from bnconvert import isolate
    from bnconvert.cli import main as cli

    stop = cli._stop_children  # noqa: SLF001
    cli._stop_children = lambda: None  # noqa: SLF001 - one forkserver for the batch (stopped below)
    with open(jobs_path) as f:
        jobs = json.load(f)
    results = {}
    try:
        for job in jobs:
            if job.get("fresh"):
                isolate.shutdown()
            results[job["name"]] = run_captured(job["argv"])
            with open(results_path + ".tmp", "w") as f:  # what finished survives a crash of a later case
                json.dump(results, f)
            os.replace(results_path + ".tmp", results_path)
    finally:
        stop()
    return 0


if __name__ == "__main__":
    sys.exit(_batch(sys.argv[1], sys.argv[2]))
