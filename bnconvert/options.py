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
    #: True when the caller named the formats: then a converter that fails stops the run;
    #: otherwise its format is skipped with a warning (partial export)
    explicit_to: bool = False
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
    samples: int = 8  # see bnconvert.verify.inputs.sample_runs
    save_io: str | None = None  # folder for inputs.npz / expected.npz (what verify-onnx takes)
    power: bool = True  # measure the check's power on the inputs used (bnconvert.verify.power)
    #: bytes of layer tensors each runtime sends back (all runs together); beyond it the layers are
    #: compared on the first rows of each run (bnconvert.verify.runners.LAYER_BYTES, 64 MiB)
    layer_budget: int = 64 << 20


@dataclass
class QuantizeOptions:
    """int8 post-training quantization (:mod:`bnconvert.quantize`; thresholds: :mod:`bnconvert.verify.quant`)."""

    quantize: str | None = None  # "int8" or None
    calibration: str | None = None  # FILE.npz, "mnist" or "random"
    calibration_samples: int = 200
    int8_io: bool = False
    int8_min_top1: float | None = None
    int8_min_cosine: float | None = None
    int8_min_sqnr: float | None = None


@dataclass
class ConvertOptions:
    analysis: AnalysisOptions = field(default_factory=AnalysisOptions)
    fold: FoldOptions = field(default_factory=FoldOptions)
    export: ExportOptions = field(default_factory=ExportOptions)
    verify: VerifyOptions = field(default_factory=VerifyOptions)
    quantize: QuantizeOptions = field(default_factory=QuantizeOptions)
    force: bool = False
    allow_unsafe: bool = False
    #: bytes (or "4G") the decoded constants and inputs may take (bnconvert.budget)
    max_memory: int | str | None = None
    #: seconds one child stage (TF run, converter, runtime) may take; bnconvert.isolate
    timeout: float = 600.0
    #: child stages run at once (the converters, the verification runtimes); None: as many as
    #: the CPUs and the available memory allow, 1 with a memory budget (bnconvert.schedule)
    jobs: int | None = None

    _GROUPS = ("analysis", "fold", "export", "verify", "quantize")

    @classmethod
    def from_kwargs(cls, **kwargs) -> "ConvertOptions":
        """Sort flat keyword arguments (``to=…, atol=…``) into their groups."""
        opts = cls()
        for key, value in kwargs.items():
            if key == "to" and value is not None:
                opts.export.explicit_to = True
            if key == "to" and value is None:
                continue
            if key in ("force", "allow_unsafe", "timeout", "max_memory", "jobs"):
                if key == "timeout" and value is None:
                    continue
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
