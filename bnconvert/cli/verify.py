"""Run ORIGINAL (a TF1 graph, training flags false) and CONVERTED (.pb, .onnx or .tflite, made
by anything) on the same inputs and compare every output. Exit 1 when they disagree."""
from __future__ import annotations

from .common import add_model_arguments, add_verify_arguments, layer_budget, parse_shapes, providers, split_list

HELP = "compare a converted model (.pb/.onnx/.tflite) with the original graph"


def add_arguments(p) -> None:
    p.add_argument("original", help="the original TF1 model")
    p.add_argument("converted", help="a .pb, .onnx or .tflite to check")
    p.add_argument("--json", action="store_true", help="print JSON")
    add_model_arguments(p)
    add_verify_arguments(p)


def run(args) -> int:
    from .. import api
    from ..errors import VerificationError
    from ..inference import parse_set

    try:
        result = api.compare(
            args.original, args.converted, inputs=split_list(args.inputs), outputs=split_list(args.outputs),
            set_flags=parse_set(args.set), providers=providers(args.providers), data=args.data,
            input_shapes=parse_shapes(args.input_shape), batch=args.batch, atol=args.atol, rtol=args.rtol,
            allow_unsafe=args.allow_unsafe_ops, seed=args.seed, samples=args.samples, save_io=args.save_io,
            layer_budget=layer_budget(args.layer_budget),
            raise_on_failure=True,
        )
    except VerificationError as e:
        # a failed (or inconclusive) check prints the same tables as a pass, then the error line
        rep = getattr(e, "report", None)
        if rep is not None and not getattr(args, "quiet", False):
            _print(rep.verification, args.json)
        raise
    if not getattr(args, "quiet", False):
        _print(result, args.json)
    return 0


def _print(result: dict, as_json: bool) -> None:
    import json
    import sys

    from ..report import verification_table

    if as_json:
        print(json.dumps(result, indent=2, default=str))
    else:
        info = next(iter(result.values()), {}).get("inputs")
        print(verification_table(result, info))
    sys.stdout.flush()
