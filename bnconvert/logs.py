"""Logging while bnconvert runs: TensorFlow's noise off, bnconvert's own messages on ``logging``.

Decisions:

- bnconvert's messages (stage timings, what was folded, notes) go to the logger ``"bnconvert"``
  (and its children, e.g. ``"bnconvert.fold"``); bnconvert adds no handler, so a library user
  sees them only when they configure logging. The CLI prints its own tables and the progress of
  :mod:`bnconvert.progress`.
- While a library call runs (:func:`quiet_tensorflow`, entered by every public function of
  :mod:`bnconvert.api`), TensorFlow's, absl's and tf2onnx's Python loggers are raised to ERROR,
  TensorFlow's C++ log level (``TF_CPP_MIN_LOG_LEVEL``) is 3 unless the user set it, and Python
  warnings from TensorFlow/tf2onnx/LiteRT (deprecations) are ignored. Everything is restored when
  the outermost call returns. ``TF_CPP_MIN_LOG_LEVEL=0`` (set by the user) keeps all of it.
- TensorFlow's and LiteRT's C++ code (absl start-up lines, CUDA probing, the TFLite converter,
  the XNNPACK delegate) write straight to file descriptor 2, past any Python setting. While the
  outermost call runs, fd 2 goes to a temporary file; when it returns, every captured line that is
  not such native log noise (:data:`NOISE`) is written back to stderr, so the caller's own output
  (a logging handler on ``"bnconvert"``, a warning) still appears, only later.
"""
from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import tempfile
import threading
import warnings

log = logging.getLogger("bnconvert")

_QUIET_LOGGERS = {"tensorflow": logging.ERROR, "absl": logging.ERROR, "tf2onnx": logging.CRITICAL,
                  "h5py": logging.ERROR}
_WARNING_MODULES = r"(tensorflow|tf2onnx|keras|tf_keras|ai_edge_litert|absl|onnx)(\..*)?"
#: lines native code writes to fd 2 that a library call drops (absl/glog "I0000 …] …" lines,
#: absl's pre-init banner, TF's CPU-feature notice, LiteRT's delegate notice)
NOISE = re.compile(
    r"^([IWEF]\d{4} \d\d:\d\d:\d\d[.\d]*\s+\d+ \S+:\d+\]"
    r"|WARNING: All log messages before absl::InitializeLog"
    r"|To enable the following instructions:"
    r"|INFO: Created TensorFlow Lite"
    r"|INFO: Initialized TensorFlow Lite"
    r"|\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+: [IWE] tensorflow/)")
_lock = threading.RLock()
_depth = 0


@contextlib.contextmanager
def quiet_tensorflow():
    """Silence TensorFlow/absl/tf2onnx logging for the block; restore it afterwards (re-entrant)."""
    global _depth
    if os.environ.get("TF_CPP_MIN_LOG_LEVEL") == "0":  # the user asked to see everything
        yield
        return
    with _lock:
        _depth += 1
        outer = _depth == 1
        if outer:
            saved_levels = {name: logging.getLogger(name).level for name in _QUIET_LOGGERS}
            saved_env = os.environ.get("TF_CPP_MIN_LOG_LEVEL")
            for name, level in _QUIET_LOGGERS.items():
                logger = logging.getLogger(name)
                if logger.level < level:
                    logger.setLevel(level)
            os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    try:
        if outer:
            with warnings.catch_warnings(), _native_stderr_filtered():
                warnings.filterwarnings("ignore", module=_WARNING_MODULES)
                warnings.filterwarnings("ignore", category=DeprecationWarning)
                yield
        else:
            yield
    finally:
        with _lock:
            _depth -= 1
            if outer:
                for name, level in saved_levels.items():
                    logging.getLogger(name).setLevel(level)
                if saved_env is None:
                    os.environ.pop("TF_CPP_MIN_LOG_LEVEL", None)
                else:
                    os.environ["TF_CPP_MIN_LOG_LEVEL"] = saved_env


@contextlib.contextmanager
def _native_stderr_filtered():
    """Send fd 2 to a temporary file for the block; write back what is not :data:`NOISE`."""
    try:
        sys.stderr.flush()
        capture = tempfile.TemporaryFile()
        saved = os.dup(2)
        os.dup2(capture.fileno(), 2)
    except (OSError, ValueError):
        yield
        return
    try:
        yield
    finally:
        try:
            sys.stderr.flush()
        except (OSError, ValueError):
            pass
        os.dup2(saved, 2)
        os.close(saved)
        capture.seek(0)
        text = capture.read().decode("utf-8", "replace")
        capture.close()
        kept = [ln for ln in text.splitlines(keepends=True) if not NOISE.match(ln)]
        if kept:
            try:
                sys.stderr.write("".join(kept))
                sys.stderr.flush()
            except (OSError, ValueError):
                pass
