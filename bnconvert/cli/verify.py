"""Run ORIGINAL (a TF1 graph, training flags false) and CONVERTED (.pb, .onnx or .tflite, made
by anything) on the same inputs and compare every output. Exit 1 when they disagree."""
from __future__ import annotations

from .common import add_model_arguments, add_verify_arguments, parse_shapes, providers, split_list

HELP = "compare a converted model (.pb/.onnx/.tflite) with the original graph"


def add_arguments(p) -> None:
    p.add_argument("original", help="the original TF1 model")
    p.add_argument("converted", help="a .pb, .onnx or .tflite to check")
    p.add_argument("--json", action="store_true", help="print JSON")
    add_model_arguments(p)
    add_verify_arguments(p)


def run(args) -> int:
    import json

    from .. import api
    from ..inference import parse_set
    from ..report import verification_table

    result = api.compare(
        args.original, args.converted, inputs=split_list(args.inputs), outputs=split_list(args.outputs),
        set_flags=parse_set(args.set), providers=providers(args.providers), data=args.data,
        input_shapes=parse_shapes(args.input_shape), batch=args.batch, atol=args.atol, rtol=args.rtol,
        allow_unsafe=args.allow_unsafe_ops, seed=args.seed, raise_on_failure=False,
    )
    if not args.quiet:
        print(json.dumps(result, indent=2) if args.json else verification_table(result))
    if not all(v["ok"] for v in result.values()):
        from ..errors import VerificationError

        bad = next(k for k, v in result.items() if not v["ok"])
        worst = next(o for o in result[bad]["outputs"] if not o["ok"])
        raise VerificationError(
            f"{args.converted} ({bad}) output {worst['name']}: max abs error {worst['max_abs']:.3g}, "
            f"max rel error {worst['max_rel']:.3g}"
        )
    return 0
