"""Child processes for the stages that run foreign native code: TensorFlow executing a graph,
the converters (tf2onnx, the TFLite converter) and the runtimes (onnxruntime, TFLite).

What a child buys:

- **a crash is one line**: a segfault, an abort or an OOM kill ends the child, not bnconvert;
  :class:`StageCrashed` (exit 3) names the stage and the signal;
- **a hang is bounded**: a stage that outlives the timeout (``--timeout``, default
  :data:`DEFAULT_TIMEOUT` s) is killed, :class:`StageTimeout` (exit 2: the graph computes for
  longer than allowed, the input's doing);
- **an interrupt is prompt**: the parent only waits on a pipe in Python, 0.1 s at a time, so
  SIGINT/SIGTERM reach it within that; the child's process group is killed with SIGKILL;
- **memory is the largest stage, not the sum**: each stage's interpreter, converter and
  runtime memory goes back to the system when its child exits.  Graphs travel as files (the
  staged ``.pb``, the original model's own file), never as pickled GraphDefs; small arguments
  and results (feeds, outputs, export summaries) travel pickled through a pipe.

Mechanism (decided by measurement, docs/BENCHMARKS_REAL_SIZE.md): a ``multiprocessing``
**forkserver preloaded with TensorFlow, tf2onnx and onnxruntime**.  A fresh interpreter per
stage (``python -m bnconvert.isolate …`` or the ``spawn`` start method) pays the imports every
time: measured on this project's shared 2-core machine (load ~4.5), ``import tensorflow`` took
18.3 and 21.7 s and 728 MB, ``import tf2onnx`` 27.8 s and 734 MB, per child — five stages would
add minutes.  Forking the parent itself costs nothing but is unsafe: the parent may already have
run a TF session (checkpoint restore) whose thread pools do not survive ``fork``.  The forkserver
imports the libraries once, in parallel with the parent's load and fold (it is started once the
output folder is checked and locked), never runs a graph itself, and forks a clean child per stage: 0.35–0.5 s per stage round trip measured at load 20
(a trivial stage), against the imports' tens of seconds.
Without TensorFlow installed the forkserver preloads what is there, so the ONNX-only paths work.

Children put themselves in their own process group (so a terminal's Ctrl-C reaches only
bnconvert, which then kills them), write their stdout to stderr (``--json`` stays clean), and
exit by themselves when the bnconvert process that asked for them is gone.
"""
from __future__ import annotations

import contextlib
import gc
import importlib
import os
import signal
import tempfile
import threading
import time

from .errors import BNConvertError

#: seconds a single stage may run before it is killed (``--timeout``)
DEFAULT_TIMEOUT = 600.0
_POLL_S = 0.1
_PRELOAD_TF = ["bnconvert._lean_tf", "tensorflow", "tf2onnx", "onnx", "onnxruntime", "ai_edge_litert.interpreter",
               "bnconvert.verify.runners", "bnconvert.export.onnx", "bnconvert.export.tflite"]
_PRELOAD_LIGHT = ["numpy", "onnxruntime", "bnconvert.verify.runners"]

_state = {"ctx": None, "timeout": DEFAULT_TIMEOUT, "scratch": None}
#: starting a child hides ``__main__`` and sets PYTHONPATH for a moment (process-wide state):
#: stages run from several threads (:mod:`bnconvert.schedule`) start their children one at a time
_start_lock = threading.Lock()
_ctx_lock = threading.RLock()
#: per thread: the event that cancels the stage this thread waits on (set by bnconvert.schedule)
_local = threading.local()
#: stage → peak resident memory of its child in MiB (the last run of each stage); the
#: conversion copies it into ``report.memory`` so benchmarks can say where the memory goes
peaks: dict[str, float] = {}


class StageCrashed(BNConvertError):
    """A child stage died from a signal (segfault, abort, out-of-memory kill)."""

    exit_code = 3


class StageTimeout(BNConvertError):
    """A child stage ran longer than the timeout and was killed."""


class Cancelled(BaseException):
    """The stage was stopped because a stage running beside it failed or the run was
    interrupted (:func:`bnconvert.schedule.parallel`); its child is killed.  Not an error of
    its own: the failure that caused it is the one reported."""


class GraphFile:
    """A GraphDef passed to a child as a file: the child parses ``path`` (binary GraphDef)."""

    def __init__(self, path: str):
        self.path = os.fspath(path)


# ---------------------------------------------------------------------------- parent side

def _tf_env() -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
    # oneDNN's pooling allocator waits 10 s after each failed allocation before it gives up: a
    # graph that needs more than the stage's capped data segment (_limit_data) stalled about a
    # minute before its one-line error (six 2 GiB Fills: 67-83 s, 6 s with this).  Measured on
    # ResNet-50, batch 8: the same run time, +80 MB peak.
    os.environ.setdefault("TF_ONEDNN_USE_SYSTEM_ALLOCATOR", "1")


def _context(tf: bool = True):
    with _ctx_lock:  # stages started from several threads at once share one forkserver
        return _context_locked(tf)


def _context_locked(tf: bool):
    if _state["ctx"] is not None and tf and not _state.get("tf"):
        shutdown()  # started light (ONNX-only work first); TF stages want the preloaded server
    if _state["ctx"] is None:
        import multiprocessing
        import sys

        tf = tf or sys.modules.get("tensorflow") is not None  # the caller uses TF: its stages will too

        ctx = multiprocessing.get_context("forkserver")
        if tf:
            _tf_env()
        ctx.set_forkserver_preload(_PRELOAD_TF if tf else _PRELOAD_LIGHT)
        _state["ctx"], _state["tf"] = ctx, tf
    return _state["ctx"]


def prestart(tf: bool = True) -> None:
    """Start the forkserver now (it imports TensorFlow while the caller goes on)."""
    _context(tf)
    from multiprocessing import forkserver

    with _start_lock, _caller_main_hidden():
        forkserver.ensure_running()


def _kill_and_reap(pid: int) -> None:
    with contextlib.suppress(OSError):
        os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(OSError):
        os.waitpid(pid, os.WNOHANG)


def shutdown() -> None:
    """Stop the forkserver (the CLI calls this on exit; it would also stop by itself)."""
    from multiprocessing import forkserver

    server = forkserver._forkserver  # noqa: SLF001 - no public handle on the server process
    pid = getattr(server, "_forkserver_pid", None)
    if pid:
        _kill_and_reap(pid)
        for attr in ("_forkserver_pid", "_forkserver_address", "_forkserver_alive_fd"):
            if attr == "_forkserver_alive_fd" and getattr(server, attr, None) is not None:
                with contextlib.suppress(OSError):
                    os.close(server._forkserver_alive_fd)  # noqa: SLF001
            setattr(server, attr, None)
    from multiprocessing import resource_tracker

    tracker = resource_tracker._resource_tracker  # noqa: SLF001 - started with the forkserver
    tpid = getattr(tracker, "_pid", None)
    if tpid:
        _kill_and_reap(tpid)
        with contextlib.suppress(OSError, TypeError):
            os.close(tracker._fd)  # noqa: SLF001
        tracker._pid = tracker._fd = None  # noqa: SLF001
    _state["ctx"] = None


def set_timeout(timeout: float) -> None:
    """The default stage timeout, in seconds, from now on (``--timeout``)."""
    _check_timeout(timeout)
    _state["timeout"] = float(timeout)


def _check_timeout(timeout) -> None:
    if not (isinstance(timeout, (int, float)) and timeout > 0):
        from .errors import InputError

        raise InputError(f"--timeout must be a positive number of seconds, got {timeout}")


@contextlib.contextmanager
def limits(timeout: float | None = None, scratch: str | None = None):
    """Within the block, stages time out after ``timeout`` s and graph copies go to ``scratch``."""
    old = dict(_state)
    if timeout is not None:
        _check_timeout(timeout)
        _state["timeout"] = float(timeout)
    if scratch is not None:
        _state["scratch"] = scratch
    try:
        yield
    finally:
        _state["timeout"], _state["scratch"] = old["timeout"], old["scratch"]


@contextlib.contextmanager
def graph_file(source):
    """``source`` (a path, a :class:`bnconvert.load.Model` or a GraphDef) as a :class:`GraphFile`.

    A binary ``.pb`` model read without repairs is passed as its own file; anything else is
    written once to the scratch folder (the run's staging folder, else a private temp folder)
    and removed when the block ends.
    """
    if isinstance(source, (str, os.PathLike)) and not os.fspath(source).endswith((".pbtxt", ".txt")):
        yield GraphFile(source)
        return
    if isinstance(source, (str, os.PathLike)):
        from .load import load

        source = load(os.fspath(source), allow_unsafe=True)
    if hasattr(source, "graph_def") and hasattr(source, "path"):
        if source.format == "pb" and not source.repairs and os.path.isfile(source.path):
            yield GraphFile(source.path)
            return
        source = source.graph_def
    scratch = _state["scratch"]
    own = None
    if scratch is None or not os.path.isdir(scratch):
        scratch = own = tempfile.mkdtemp(prefix="bnconvert-")
    fd, path = tempfile.mkstemp(suffix=".pb", dir=scratch, prefix="graph-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(source.SerializeToString())
        yield GraphFile(path)
    finally:
        with contextlib.suppress(OSError):
            os.remove(path)
        if own:
            with contextlib.suppress(OSError):
                os.rmdir(own)


@contextlib.contextmanager
def _caller_main_hidden():
    """While a child or the forkserver starts, hide the caller's ``__main__`` from multiprocessing.

    multiprocessing's forkserver (like spawn) re-imports the parent's main module in every child
    (``__mp_main__``) unless the script guards its code with ``if __name__ == "__main__":`` —
    a library call from a plain script would then run the script again in each stage and fail.
    bnconvert's children need nothing from ``__main__`` (their target is ``bnconvert.isolate``),
    so its ``__spec__``/``__file__`` are hidden for the moment the preparation data is taken.
    """
    import sys

    from .tfproto import quiet_fd2

    main = sys.modules.get("__main__")
    saved = {k: main.__dict__[k] for k in ("__spec__", "__file__") if main is not None and k in main.__dict__}
    # a forkserver started here must import the same bnconvert as the caller (not another copy
    # that happens to be first on a fresh interpreter's path, e.g. after a chdir)
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    old_pp = os.environ.get("PYTHONPATH")
    try:
        os.environ["PYTHONPATH"] = here + (os.pathsep + old_pp if old_pp else "")
        if main is not None:
            main.__dict__["__spec__"] = None
            main.__dict__.pop("__file__", None)
        with quiet_fd2():  # a forkserver started here inherits fd 2: its preload imports stay quiet
            yield
    finally:
        if old_pp is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = old_pp
        if main is not None:
            main.__dict__.update(saved)
            if "__file__" not in saved:
                main.__dict__.pop("__file__", None)


def run_stage(stage: str, target: str, kwargs: dict, tf: bool = True, timeout: float | None = None):
    """Run ``target`` ("module:function") with ``kwargs`` in a child; return its result.

    :class:`GraphFile` arguments are parsed into GraphDefs in the child.  A
    :class:`BNConvertError` raised there is raised here (same class, message, exit code); any
    other exception becomes a :class:`BNConvertError` with exit code 3 naming the stage.
    """
    ctx = _context(tf)
    timeout = _state["timeout"] if timeout is None else timeout
    reader, writer = ctx.Pipe(duplex=False)
    from . import budget

    proc = ctx.Process(target=_child, args=(writer, stage, target, kwargs, os.getpid(), budget.limit()), daemon=True,
                       name=f"bnconvert {stage}")
    msg = None
    cancel = getattr(_local, "cancel", None)
    try:
        with _start_lock, _caller_main_hidden():
            proc.start()
        writer.close()
        deadline = time.monotonic() + timeout
        while True:
            if cancel is not None and cancel.is_set():
                raise Cancelled(stage)
            if reader.poll(_POLL_S):
                with contextlib.suppress(EOFError, OSError):
                    msg = reader.recv()
                break
            if not proc.is_alive():
                if reader.poll(0):
                    with contextlib.suppress(EOFError, OSError):
                        msg = reader.recv()
                break
            if time.monotonic() > deadline:
                _kill(proc)
                raise StageTimeout(f"{stage} ran longer than the {timeout:g} s timeout and was stopped "
                                   "(--timeout to allow more)")
    except BaseException:
        _kill(proc, wait=False)  # SIGKILL is enough: freeing a big child's memory takes seconds
        raise
    finally:
        reader.close()
        with contextlib.suppress(ValueError, OSError):
            writer.close()
    proc.join(5)
    if msg is not None and len(msg) > 1 and msg[0] == "ok":
        peaks[stage] = msg[2]
        _replay_logs(msg[3] if len(msg) > 3 else ())
    if msg is None:
        code = proc.exitcode
        _kill(proc)
        raise StageCrashed(f"{stage} crashed ({_describe(code)})")
    return _unpack(stage, msg)


def _kill(proc, wait: bool = True) -> None:
    pid = proc.pid
    if pid is None:
        return
    with contextlib.suppress(OSError):
        os.killpg(pid, signal.SIGKILL)
    with contextlib.suppress(OSError, ValueError, AttributeError):
        proc.kill()
    if wait:
        with contextlib.suppress(OSError, ValueError, AssertionError):
            proc.join(5)


def _describe(code) -> str:
    if code is None:
        return "no exit status"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        hint = {"SIGKILL": "; out of memory?", "SIGSEGV": "; a bug in the native library, triggered by this graph",
                "SIGABRT": "; the native library gave up on this graph"}.get(name, "")
        return f"killed by {name}{hint}"
    return f"exit status {code} without a result"


def _unpack(stage: str, msg):
    kind = msg[0]
    if kind == "ok":
        return msg[1]
    if kind == "err":
        _, module, cls_name, message, code = msg
        cls = getattr(importlib.import_module(module), cls_name, None)
        if not (isinstance(cls, type) and issubclass(cls, BNConvertError)):
            cls = BNConvertError
        err = cls.__new__(cls)
        BNConvertError.__init__(err, message)
        if err.exit_code != code:
            err.exit_code = code
        return _raise(err)
    if kind == "interrupt":
        raise KeyboardInterrupt
    _, cls_name, message = msg
    err = BNConvertError(f"internal error in {stage}: {cls_name}: {message} (run with --debug for details)")
    err.exit_code = 3
    return _raise(err)


def _raise(err):
    raise err


# ---------------------------------------------------------------------------- child side

def _limit_data(budget_bytes: int | None) -> None:
    """Cap this child's data segment (heap and private anonymous mappings: ``RLIMIT_DATA``) at
    what it holds now plus twice the memory budget: once for the model's constants, once for
    what running it allocates.  A graph that computes a huge tensor at run time (``Fill`` with
    a constant shape of billions) then fails its allocation here — TensorFlow reports "OOM when
    allocating", one line, exit 2 — instead of taking the machine's memory."""
    if not budget_bytes:
        return
    from . import budget

    budget.configure(int(budget_bytes))  # the parent's budget, for this child's checks and messages
    try:
        import resource

        with open("/proc/self/status") as f:
            data_kb = next(int(ln.split()[1]) for ln in f if ln.startswith("VmData:"))
        cap = data_kb * 1024 + 2 * int(budget_bytes)
        soft, hard = resource.getrlimit(resource.RLIMIT_DATA)
        if hard != resource.RLIM_INFINITY:
            cap = min(cap, hard)
        if soft == resource.RLIM_INFINITY or cap < soft:
            resource.setrlimit(resource.RLIMIT_DATA, (cap, hard))
    except (OSError, ValueError, StopIteration):  # not Linux /proc: no cap
        pass


def _child(conn, stage: str, target: str, kwargs: dict, parent_pid: int, budget_bytes: int | None = None) -> None:
    """Body of a child: own process group, stdout → stderr, data segment capped by the memory
    budget, run, send one message, exit."""
    with contextlib.suppress(OSError):
        os.setpgrp()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    if not os.environ.get("BNCONVERT_DEBUG"):
        # the libraries' chatter (TF deprecation warnings, onnxruntime telemetry, converter logs)
        # is not the user's business: results and errors come back through the pipe, a crash is
        # named by the parent; --debug (BNCONVERT_DEBUG) keeps it all
        with contextlib.suppress(OSError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 2)
            os.close(devnull)
    with contextlib.suppress(OSError):
        os.dup2(2, 1)
    threading.Thread(target=_watch_parent, args=(parent_pid,), daemon=True).start()
    _limit_data(budget_bytes)
    # the objects inherited from the forkserver (TensorFlow's modules: millions) are never
    # garbage: frozen, a collection costs what the stage allocated, not 0.25 s, and does not
    # write into (and so copy) the pages shared with the forkserver
    gc.freeze()
    records = _capture_logs()
    try:
        module, func = target.split(":")
        fn = getattr(importlib.import_module(module), func)
        args = {k: _read_graph(v.path) if isinstance(v, GraphFile) else v for k, v in kwargs.items()}
        result = fn(**args)
        import resource

        msg = ("ok", result, round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1), records)
    except BNConvertError as e:
        msg = _error_message(e)
    except MemoryError:
        # the data segment is capped at the memory budget (_limit_data): an allocation beyond it
        # (a constant computed while folding, a converter's buffers) is the budget's refusal
        from .budget import over_budget
        from .errors import InputError

        msg = _error_message(InputError(over_budget(stage[0].upper() + stage[1:])))
    except ImportError as e:
        from .errors import missing_dependency

        dep = missing_dependency(e)
        msg = _error_message(dep) if dep is not None else ("exc", type(e).__name__, " ".join(str(e).split())[:300])
    except KeyboardInterrupt:
        msg = ("interrupt",)
    except BaseException as e:  # noqa: BLE001 - everything else is an internal error, one line
        if os.environ.get("BNCONVERT_DEBUG"):
            import traceback

            traceback.print_exc()
        msg = ("exc", type(e).__name__, " ".join(str(e).split())[:300])
    try:
        conn.send(msg)
    except Exception as e:  # noqa: BLE001 - e.g. an unpicklable result
        conn.send(("exc", type(e).__name__, " ".join(str(e).split())[:300]))
    conn.close()
    os._exit(0)  # skip TensorFlow's teardown: nothing is left to flush


def _error_message(e: BNConvertError) -> tuple:
    """The pipe message of a :class:`BNConvertError` (rebuilt by :func:`_unpack`)."""
    return ("err", type(e).__module__, type(e).__name__, e.message, e.exit_code)


def _capture_logs() -> list:
    """bnconvert's own log records in this child, kept to be replayed by the parent
    (:func:`_replay_logs`): a library caller's logging sees what each stage decided."""
    import logging

    records: list = []

    class _Keep(logging.Handler):
        def emit(self, record):
            records.append((record.name, record.levelno, record.getMessage()))

    logger = logging.getLogger("bnconvert")
    logger.addHandler(_Keep(logging.INFO))
    if logger.level == logging.NOTSET or logger.level > logging.INFO:
        logger.setLevel(logging.INFO)
    return records


def _replay_logs(records) -> None:
    import logging

    for name, level, message in records or ():
        logger = logging.getLogger(name)
        if logger.isEnabledFor(level):
            logger.log(level, "%s", message)


def _watch_parent(pid: int) -> None:
    while True:
        time.sleep(1.0)
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            os._exit(1)
        except OSError:
            pass


def _read_graph(path: str):
    from .tfproto import new_graph_def

    gd = new_graph_def()
    with open(path, "rb") as f:
        gd.ParseFromString(f.read())
    return gd
