"""Progress of a long run on stderr: each stage with its elapsed time, a bar where it counts.

    with progress.session(enabled=not args.quiet):      # the CLI, around a command
        with progress.stage("fold"):                    # anywhere in bnconvert
            progress.total(len(matches), "BN")
            for m in matches:
                ...
                progress.advance()

Decisions:

- **Where it shows**: only inside :func:`session`, which the CLI enters (library calls print
  nothing; they log each stage's time to the ``"bnconvert"`` logger at INFO). A session is on
  when stderr is a terminal, off with ``--quiet`` or ``--json``; ``BNCONVERT_PROGRESS=1`` turns it
  on where stderr is not a terminal (tests, CI logs), ``BNCONVERT_PROGRESS=0`` off everywhere.
- **What it shows**: one line per finished stage, ``bnconvert: <stage> <elapsed> s`` (with the
  count, e.g. ``300 BN``). While a stage runs longer than :data:`LIVE_AFTER_S` seconds, a
  terminal gets a live line redrawn in place (bar and counter when the stage counts its items,
  elapsed seconds otherwise); a pipe gets a plain counter line at most every
  :data:`PIPE_EVERY_S` seconds instead of redraws.
- **Which stream**: the session duplicates file descriptor 2 when it starts, so progress still
  reaches the terminal while the CLI sends fd 2 to /dev/null to silence TensorFlow's C++ logs.
- Stages nest (``verify`` holds ``verify onnx:…``); the innermost one is drawn. Hooks are
  no-ops outside a session, so pipeline code calls them unconditionally.
"""
from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
import time

log = logging.getLogger("bnconvert.progress")

#: a stage gets a live line (terminal) or counter lines (pipe) once it runs longer than this
LIVE_AFTER_S = 2.0
#: on a pipe, at most one counter line per this many seconds
PIPE_EVERY_S = 2.0
BAR_WIDTH = 24

_current: "_Reporter | None" = None


def enabled_by_env(default: bool) -> bool:
    """``BNCONVERT_PROGRESS`` ("1"/"0") overrides ``default``."""
    v = os.environ.get("BNCONVERT_PROGRESS", "").strip().lower()
    if v in ("1", "true", "yes", "on"):
        return True
    if v in ("0", "false", "no", "off"):
        return False
    return default


def render(name: str, elapsed: float, done: int | None = None, total: int | None = None,
           unit: str = "") -> str:
    """One progress line (no newline): ``fold [######------] 150/300 BN 3.2 s``."""
    parts = [f"bnconvert: {name}"]
    if total:
        frac = min(max(done or 0, 0) / total, 1.0)
        fill = int(round(frac * BAR_WIDTH))
        parts.append("[" + "#" * fill + "-" * (BAR_WIDTH - fill) + "]")
        parts.append(f"{done}/{total}{' ' + unit if unit else ''}")
    elif done:
        parts.append(f"{done}{' ' + unit if unit else ''}")
    parts.append(f"{elapsed:.1f} s")
    return " ".join(parts)


class _Stage:
    def __init__(self, name: str):
        self.name, self.t0 = name, time.perf_counter()
        self.done, self.total, self.unit = 0, None, ""
        self.last_line = self.t0


class _Reporter:
    def __init__(self, stream, live: bool):
        self.stream, self.live = stream, live
        self.stack: list[_Stage] = []
        self.lock = threading.Lock()
        self.drawn = False  # a live line is on screen
        self.stop = threading.Event()
        self.thread = None
        if live:
            self.thread = threading.Thread(target=self._tick, name="bnconvert-progress", daemon=True)
            self.thread.start()

    # -- drawing (under self.lock)
    def _write(self, text: str) -> None:
        try:
            self.stream.write(text)
            self.stream.flush()
        except (OSError, ValueError):
            pass

    def _clear(self) -> None:
        if self.drawn:
            self._write("\r\033[K")
            self.drawn = False

    def _draw(self, now: float) -> None:
        if not self.stack:
            return
        s = self.stack[-1]
        if now - s.t0 < LIVE_AFTER_S:
            return
        line = render(s.name, now - s.t0, s.done, s.total, s.unit)
        if self.live:
            self._write("\r\033[K" + line)
            self.drawn = True
        elif now - s.last_line >= PIPE_EVERY_S:
            self._write(line + "\n")
            s.last_line = now

    def _tick(self) -> None:
        while not self.stop.wait(0.2):
            with self.lock:
                self._draw(time.perf_counter())

    # -- events
    def push(self, name: str) -> _Stage:
        with self.lock:
            s = _Stage(name)
            self.stack.append(s)
            return s

    def pop(self, s: _Stage, ok: bool) -> None:
        with self.lock:
            if s in self.stack:
                self.stack.remove(s)
            self._clear()
            if ok:
                count = f" {s.done} {s.unit}".rstrip() if s.total or s.done else ""
                self._write(f"bnconvert: {s.name}{count} {time.perf_counter() - s.t0:.1f} s\n")

    def update(self, done: int | None = None, total: int | None = None, unit: str | None = None,
               step: int = 0) -> None:
        with self.lock:
            if not self.stack:
                return
            s = self.stack[-1]
            if total is not None:
                s.total = total
            if unit is not None:
                s.unit = unit
            if done is not None:
                s.done = done
            s.done += step
            if not self.live:
                self._draw(time.perf_counter())

    def close(self) -> None:
        self.stop.set()
        if self.thread is not None:
            self.thread.join(timeout=1)
        with self.lock:
            self._clear()
        try:
            self.stream.close()
        except OSError:
            pass


@contextlib.contextmanager
def session(enabled: bool = True):
    """Show progress on stderr for the block (the CLI's run of one command).

    ``enabled`` False (``--quiet``/``--json``) turns it off; otherwise it is on when stderr is a
    terminal, or ``BNCONVERT_PROGRESS`` says 1 (0: off).
    """
    global _current
    try:
        tty = os.isatty(2)
    except OSError:
        tty = False
    on = enabled and enabled_by_env(tty)
    if not on or _current is not None:
        yield
        return
    try:
        stream = os.fdopen(os.dup(2), "w", buffering=1, encoding="utf-8", errors="replace")
    except OSError:
        yield
        return
    _current = _Reporter(stream, live=tty)
    try:
        yield
    finally:
        rep, _current = _current, None
        rep.close()


@contextlib.contextmanager
def stage(name: str, final_line: bool = True):
    """A stage of the run: its elapsed time is shown at the end (and logged at INFO).

    ``final_line`` False: drawn while it runs, but its sub-stages ran in a child process and
    are reported with :func:`done` instead of one line for the whole.
    """
    rep = _current
    s = rep.push(name) if rep is not None else None
    t0 = time.perf_counter()
    ok = False
    try:
        yield
        ok = True
    finally:
        log.info("%s: %.2f s%s", name, time.perf_counter() - t0, "" if ok else " (failed)")
        if rep is not None:
            rep.pop(s, ok and final_line)


def done(name: str, seconds: float, count: int | None = None, unit: str = "") -> None:
    """The line of a finished stage that ran in a child process (measured there)."""
    rep = _current
    if rep is None:
        return
    what = f" {count} {unit}".rstrip() if count else ""
    with rep.lock:
        rep._clear()
        rep._write(f"bnconvert: {name}{what} {seconds:.1f} s\n")


def total(n: int, unit: str = "") -> None:
    """The current stage has ``n`` items (shows a bar)."""
    if _current is not None:
        _current.update(total=n, unit=unit, done=0)


def advance(n: int = 1) -> None:
    """``n`` more items of the current stage are done."""
    if _current is not None:
        _current.update(step=n)


def active() -> bool:
    return _current is not None
