"""Argument groups shared by several subcommands, and their conversion to API arguments."""
from __future__ import annotations

from ..errors import InputError


def add_model_arguments(p) -> None:
    p.add_argument("--inputs", help="comma-separated input tensors (default: the data placeholders)")
    p.add_argument("--outputs", help="comma-separated output tensors (default: found from the graph)")
    p.add_argument("--set", action="append", metavar="NAME=VALUE", default=[],
                   help="set a training flag (default: every flag that selects a BN cond is set false)")


def add_verify_arguments(p) -> None:
    p.add_argument("--providers", default="cpu",
                   help="onnxruntime providers to verify with: cpu, cuda (TF32 off), comma-separated (default: cpu)")
    p.add_argument("--data", metavar="FILE.npz", help="verify on these inputs instead of seeded random ones")
    p.add_argument("--input-shape", action="append", default=[], metavar="NAME=D0,D1,...",
                   help="concrete shape for an input with unknown dims (repeatable)")
    p.add_argument("--batch", type=int, default=1, help="size for an unknown batch dimension (default: 1)")
    p.add_argument("--atol", type=float, default=None, help="absolute tolerance (default: see bnconvert.verify.compare)")
    p.add_argument("--rtol", type=float, default=None,
                   help="tolerance relative to the output's magnitude (default: see bnconvert.verify.compare)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random inputs (default: 0)")
    p.add_argument("--timeout", type=float, default=None, metavar="SECONDS",
                   help="stop a stage (TF run, converter, runtime) that runs longer (default: 600)")
    p.add_argument("--allow-unsafe-ops", action="store_true",
                   help="run graphs even if they hold file/process I/O ops")


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
