"""Argument groups shared by several subcommands, and their conversion to API arguments.

Conventions: tensor names are accepted with or without ``":0"`` everywhere (``--inputs``,
``--outputs``, ``--input-shape``, ``--set``); every option's default is shown in ``--help``
(:class:`DefaultsFormatter`), the tolerances' from :mod:`bnconvert.verify.compare`.
"""
from __future__ import annotations

import argparse

from ..errors import InputError


class DefaultsFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Adds ``(default: …)`` to every option that has a meaningful default and does not say it."""

    def _get_help_string(self, action):
        text = action.help or ""
        if "default" in text or action.default in (None, False, [], argparse.SUPPRESS) or not action.option_strings:
            return text
        return super()._get_help_string(action)


def tolerance_help() -> tuple[str, str]:
    """Help of --atol/--rtol with the defaults of bnconvert.verify (numpy-only imports)."""
    from ..verify.check import NARROW_TOLERANCES
    from ..verify.compare import DEFAULT_ATOL, DEFAULT_RTOL

    f16 = NARROW_TOLERANCES["float16"]
    return (f"absolute tolerance (default: {DEFAULT_ATOL:g}; {f16['atol']:g} for float16 outputs)",
            f"tolerance relative to the output's magnitude (default: {DEFAULT_RTOL:g}; {f16['rtol']:g} for float16 "
            "outputs); an output passes when max|diff| <= atol + rtol * max|reference|")


def add_model_arguments(p) -> None:
    p.add_argument("--inputs", help="comma-separated input tensors, 'x' or 'x:0' (default: the data placeholders)")
    p.add_argument("--outputs", help="comma-separated output tensors, 'y' or 'y:0' (default: found from the graph)")
    p.add_argument("--set", action="append", metavar="NAME=VALUE", default=[],
                   help="set a training flag, e.g. phase=false (default: every flag that selects a BN cond is set false)")
    p.add_argument("--max-memory", metavar="BYTES",
                   help="memory budget for the model's constants and the inputs, e.g. 4G (default: min(8G, half the RAM))")


def add_verify_arguments(p) -> None:
    p.add_argument("--providers", default="cpu",
                   help="onnxruntime providers to verify with: cpu, cuda (TF32 off), comma-separated (default: cpu)")
    p.add_argument("--data", metavar="FILE.npz", help="verify on these inputs instead of seeded random ones")
    p.add_argument("--input-shape", action="append", default=[], metavar="NAME=D0,D1,...",
                   help="concrete shape for an input with unknown dims, NAME 'x' or 'x:0' (repeatable; "
                        "default: the placeholder's shape, unknown batch = --batch)")
    p.add_argument("--batch", type=int, default=1,
                   help="size for an unknown batch dimension when verifying and exporting ONNX; the .tflite "
                        "keeps the batch dynamic (resizable) where the converter allows it, else it is fixed "
                        "to this (the report says which: exports.tflite.batch) (default: 1)")
    atol_help, rtol_help = tolerance_help()
    p.add_argument("--atol", type=float, default=None, help=atol_help)
    p.add_argument("--rtol", type=float, default=None, help=rtol_help)
    p.add_argument("--seed", type=int, default=0, help="seed of the random inputs (default: 0)")
    p.add_argument("--samples", type=int, default=8,
                   help="random samples to verify on (default: 8; a fixed batch runs several times)")
    p.add_argument("--layer-budget", metavar="BYTES", default="64M",
                   help="memory for the layer-by-layer comparison, per runtime (e.g. 256M); beyond it the layers "
                        "are compared on the first samples, the outputs always on all (default: 64M)")
    p.add_argument("--save-io", metavar="DIR",
                   help="write the verification inputs and expected outputs (inputs.npz, expected.npz) for verify-onnx")
    p.add_argument("--timeout", type=float, default=None, metavar="SECONDS",
                   help="stop a stage (TF run, converter, runtime) that runs longer (default: 600)")
    p.add_argument("--allow-unsafe-ops", action="store_true",
                   help="run graphs even if they hold file/process I/O ops")


def positive_int(text: str) -> int:
    import argparse

    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got '{text}'")
    return n


def layer_budget(text: str) -> int:
    """``--layer-budget``: bytes ("64M", "1G", "1000000"), positive."""
    from ..budget import parse_size

    return parse_size(text, "--layer-budget")


def split_list(s: str | None) -> list[str] | None:
    if s is None:
        return None
    items = [x.strip() for x in s.split(",") if x.strip()]
    return items or None


def parse_shapes(items: list[str]) -> dict[str, list[int]] | None:
    out = {}
    for item in items or []:
        name, sep, dims = item.partition("=")
        try:
            if not sep:
                raise ValueError
            if not name.strip():
                raise ValueError
            out[name.strip()] = [int(d) for d in dims.split(",")]
        except ValueError:
            raise InputError(f"--input-shape '{item}': expected NAME=D0,D1,... with integer dims") from None
    return out or None


def providers(s: str) -> tuple[str, ...]:
    items = split_list(s) or ["cpu"]
    for it in items:
        if it not in ("cpu", "cuda"):
            raise InputError(f"--providers: unknown provider '{it}' (cpu or cuda)")
    return tuple(items)
