"""Error classes. Each carries its exit code; the CLI prints ``bnconvert: error: <message>``.

Exit codes:
  0  success
  1  verification failed (a converted model disagrees with the original) or accuracy lost
  2  bad input or usage (unreadable model, missing tensor, bad statistics, unsafe ops, a
     missing optional dependency such as TensorFlow, ...)
  3  internal error (a bug in bnconvert or a library it calls)
  130 interrupted (SIGINT/SIGTERM); nothing half-written is left behind
"""
from __future__ import annotations


class BNConvertError(Exception):
    """Base class: a one-line message and an exit code."""

    exit_code = 2

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:  # one line, always
        return " ".join(str(self.message).split("\n"))


class InputError(BNConvertError):
    """The model file or an argument is unusable (missing, corrupt, wrong names, ...)."""


class GraphError(BNConvertError):
    """The graph is structurally broken (missing inputs, cycles, unknown ops)."""


class StatisticsError(BNConvertError):
    """A batch norm's statistics are unusable (NaN/inf, negative variance, var+eps == 0)."""


class UnsupportedError(BNConvertError):
    """Something bnconvert refuses to do (training-mode BN it cannot resolve, ...)."""


class UnsafeGraphError(BNConvertError):
    """The graph holds ops that reach outside the process; refused before execution."""


class OutputError(BNConvertError):
    """Outputs cannot be written (exists without --force, unwritable folder, ...)."""


class VerificationError(BNConvertError):
    """A converted model's outputs disagree with the original beyond tolerance."""

    exit_code = 1


class MissingDependencyError(BNConvertError):
    """A package the command needs is not installed (TensorFlow for everything but
    ``verify-onnx``); the message says what to install."""


class InternalError(BNConvertError):
    """Something failed that is not the input's fault: a bug in bnconvert or in a library it
    calls. The library raises this (chained to the original exception) instead of the raw error,
    so callers catch :class:`BNConvertError` only."""

    exit_code = 3


class Interrupted(BNConvertError):
    exit_code = 130


#: top-level module → what to install when it is missing
_INSTALL_HINTS = {
    "tensorflow": "TensorFlow", "tf2onnx": "tf2onnx", "tf_keras": "tf-keras", "keras": "Keras",
}


def missing_dependency(e: ImportError) -> MissingDependencyError | None:
    """The :class:`MissingDependencyError` for an ImportError of TensorFlow or tf2onnx, else None."""
    name = (getattr(e, "name", None) or "").split(".")[0]
    if name not in _INSTALL_HINTS:
        return None
    return MissingDependencyError(
        f"{_INSTALL_HINTS[name]} is not installed (this needs it): pip install \"bnconvert[tf]\" "
        f"(only verify-onnx runs without TensorFlow)")
