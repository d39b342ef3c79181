"""Option groups for a conversion: what to analyse, how to fold, what to export, how to verify.

``bnconvert.convert(path, outdir, **kwargs)`` takes every option as a keyword argument (the CLI's
flags, by the same names); :func:`ConvertOptions.from_kwargs` sorts them into these groups, so
each stage receives only what it uses, and an unknown keyword is an :class:`InputError`
naming it rather than a ``TypeError``.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from .errors import InputError

FORMATS = ("pb", "onnx", "tflite")


@dataclass
class AnalysisOptions:
    """Which tensors are the model's inputs and outputs, and which training flags to set."""

    inputs: list[str] | None = None
    outputs: list[str] | None = None
    set_flags: dict[str, bool] | None = None


@dataclass
class FoldOptions:
    """``mode``: "fold" or "scale_shift" (no folding); ``only``: BN names to fold."""

    mode: str = "fold"
    only: list[str] | None = None


@dataclass
class ExportOptions:
    """Formats to write and the shapes they are exported with."""

    to: tuple[str, ...] = FORMATS
    opset: int = 17
    batch: int = 1
    input_shapes: dict[str, list[int]] | None = None
    #: ONNX form of BNs kept as scale-shift: "bnop" (one BatchNormalization) or "muladd"
    bn_form: str = "bnop"


@dataclass
class VerifyOptions:
    """How produced files are checked against the original graph."""

    verify: bool = True
    data: str | None = None
    providers: tuple[str, ...] = ("cpu",)
    atol: float | None = None
    rtol: float | None = None
    seed: int = 0


@dataclass
class ConvertOptions:
    analysis: AnalysisOptions = field(default_factory=AnalysisOptions)
    fold: FoldOptions = field(default_factory=FoldOptions)
    export: ExportOptions = field(default_factory=ExportOptions)
    verify: VerifyOptions = field(default_factory=VerifyOptions)
    force: bool = False
    allow_unsafe: bool = False

    _GROUPS = ("analysis", "fold", "export", "verify")

    @classmethod
    def from_kwargs(cls, **kwargs) -> "ConvertOptions":
        """Sort flat keyword arguments (``to=…, atol=…``) into their groups."""
        opts = cls()
        for key, value in kwargs.items():
            if key in ("force", "allow_unsafe"):
                setattr(opts, key, value)
                continue
            for group in cls._GROUPS:
                obj = getattr(opts, group)
                if key in {f.name for f in dataclasses.fields(obj)}:
                    setattr(obj, key, value)
                    break
            else:
                raise InputError(f"unknown option '{key}'")
        return opts
