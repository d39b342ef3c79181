"""Error classes. Each carries its exit code; the CLI prints ``bnconvert: error: <message>``.

Exit codes:
  0  success
  1  verification failed (a converted model disagrees with the original) or accuracy lost
  2  bad input or usage (unreadable model, missing tensor, bad statistics, unsafe ops, ...)
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


class Interrupted(BNConvertError):
    exit_code = 130
