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
- TensorFlow's C++ code (the TFLite converter, grappler) also writes straight to file
  descriptor 2; the library leaves that alone (redirecting a process's stderr behind a caller's
  back hides their own output) — the CLI silences it unless ``--debug``.
"""
from __future__ import annotations

import contextlib
import logging
import os
import threading
import warnings

log = logging.getLogger("bnconvert")

_QUIET_LOGGERS = {"tensorflow": logging.ERROR, "absl": logging.ERROR, "tf2onnx": logging.CRITICAL,
                  "h5py": logging.ERROR}
_WARNING_MODULES = r"(tensorflow|tf2onnx|keras|tf_keras|ai_edge_litert|absl|onnx)(\..*)?"
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
            with warnings.catch_warnings():
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
