"""Several child stages at once: the two converters side by side, the runtimes of the
verification side by side.

Decisions:

- **How many at once** (:func:`jobs`): ``--jobs N`` (``jobs=N``) when given.  Otherwise as many as
  the CPUs allow (at most :data:`AUTO_MAX`), and only as many as fit in the memory available now,
  at :func:`stage_estimate` bytes per stage; with a memory budget set (``--max-memory``,
  ``BNCONVERT_MAX_MEMORY``) one at a time, so that the budget, which caps each stage, also bounds
  the run.  Memory is what concurrency costs: the run's peak becomes the sum of the stages
  running together (measured in docs/BENCHMARKS_REAL_SIZE.md), so the default never runs more
  than fit.
- **Threads in this process, children for the work**: each stage already runs in its own child
  (:mod:`bnconvert.isolate`); a thread per running stage only waits on its child's pipe.  What
  the stages return is compared here afterwards, in the order of the calls, so the report does
  not depend on which finished first.
- **Failure and interrupts**: an exception the caller does not ``keep`` cancels the stages after
  it in call order (their children are killed within 0.1 s, :class:`bnconvert.isolate.Cancelled`)
  and is raised once the stages before it have ended — the error one job at a time would give;
  Ctrl-C cancels everything.  With one job the calls simply run in order in this thread.
"""
from __future__ import annotations

import os
import threading

#: the automatic choice never runs more stages at once than this
AUTO_MAX = 4


def cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def available_memory() -> int | None:
    """Bytes the system can give without swapping (``MemAvailable``), None where unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def stage_estimate(model_bytes: int) -> int:
    """Private memory one stage (a converter, a TensorFlow run) takes for a graph of
    ``model_bytes``: measured on ResNet-50 built the TF1 way at 11, 103 and 393 MB (the TFLite
    converter, the largest stage: about 0.45 GB beyond the preloaded libraries plus 10 bytes per
    byte of graph), rounded up."""
    return (512 << 20) + 12 * int(model_bytes)


def jobs(requested: int | None, model_bytes: int, budget_set: bool) -> int:
    """How many stages run at once (see the module's docstring)."""
    if requested is not None:
        return max(1, int(requested))
    if budget_set:
        return 1
    n = min(AUTO_MAX, cpus())
    avail = available_memory()
    if avail is not None:
        n = min(n, avail // stage_estimate(model_bytes))
    return max(1, int(n))


def parallel(calls: list, jobs: int = 1, keep=lambda e: False) -> list:
    """Run the zero-argument ``calls`` (each runs its child stages through
    :func:`bnconvert.isolate.run_stage`), at most ``jobs`` at once; their results in order.

    An exception ``keep(e)`` accepts takes its call's place in the results.  Any other is raised
    as it would be one job at a time: when call *k* fails, the calls after it are cancelled (or
    never started) and the ones before it run to their end; the first failure in call order is
    raised.  So the error does not depend on ``jobs`` or on which stage happened to fail first.
    """
    from . import isolate

    if jobs <= 1 or len(calls) <= 1:
        out = []
        for fn in calls:
            try:
                out.append(fn())
            except Exception as e:  # noqa: BLE001 - kept or raised, as the caller says
                if not keep(e):
                    raise
                out.append(e)
        return out
    import concurrent.futures as cf

    cancels = [threading.Event() for _ in calls]

    def run(i):
        if cancels[i].is_set():
            raise isolate.Cancelled("not started")
        isolate._local.cancel = cancels[i]
        try:
            return calls[i]()
        finally:
            isolate._local.cancel = None

    def fatal(f) -> bool:
        e = f.exception()
        return e is not None and not isinstance(e, isolate.Cancelled) and not (isinstance(e, Exception) and keep(e))

    pool = cf.ThreadPoolExecutor(max_workers=min(jobs, len(calls)), thread_name_prefix="bnconvert-stage")
    futures = []
    try:
        futures = [pool.submit(run, i) for i in range(len(calls))]
        pending = set(futures)
        while pending:
            done, pending = cf.wait(pending, timeout=isolate._POLL_S, return_when=cf.FIRST_COMPLETED)
            failed = [i for i, f in enumerate(futures) if f.done() and fatal(f)]
            if failed:
                for ev in cancels[failed[0] + 1:]:
                    ev.set()
                if all(f.done() for f in futures[:failed[0]]):
                    raise futures[failed[0]].exception()
        return [f.exception() if f.exception() is not None else f.result() for f in futures]
    finally:
        for ev in cancels:
            ev.set()
        for f in futures:
            f.cancel()
        pool.shutdown(wait=True)  # each running stage kills its child within one poll
