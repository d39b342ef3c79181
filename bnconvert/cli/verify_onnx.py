"""Check an ONNX model against expected outputs with onnxruntime alone. Imports neither
TensorFlow nor tf2onnx, so it runs where only onnxruntime is installed (e.g. a GPU machine).
INPUTS.npz and EXPECTED.npz hold arrays keyed by tensor name ("x:0") or as input_0/output_0."""
from __future__ import annotations

HELP = "verify an .onnx against saved inputs/expected outputs, without TensorFlow"


def add_arguments(p) -> None:
    p.add_argument("model", help="the .onnx file")
    p.add_argument("--inputs", required=True, metavar="INPUTS.npz")
    p.add_argument("--expected", required=True, metavar="EXPECTED.npz")
    p.add_argument("--providers", default="cpu", help="cpu, cuda (TF32 off), comma-separated (default: cpu)")
    from .common import tolerance_help

    atol_help, rtol_help = tolerance_help()
    p.add_argument("--atol", type=float, default=None, help=atol_help)
    p.add_argument("--rtol", type=float, default=None, help=rtol_help)
    p.add_argument("--json", action="store_true", help="print JSON")


def run(args) -> int:
    import json

    from ..errors import VerificationError
    from ..verify.compare import format_table
    from ..verify.onnx_only import verify_onnx
    from .common import providers

    kw = {}
    if args.atol is not None:
        kw["atol"] = args.atol
    if args.rtol is not None:
        kw["rtol"] = args.rtol
    results = verify_onnx(args.model, args.inputs, args.expected, providers=providers(args.providers), **kw)
    if args.quiet:
        pass
    elif args.json:
        print(json.dumps([r.to_dict() for r in results], indent=2))
    else:
        print(format_table(results))
    bad = [r for r in results if not r]
    if bad and bad[0].status == "inconclusive":
        const = next(o for o in bad[0].outputs if o.constant)
        raise VerificationError(f"{args.model} ({bad[0].runtime}) inconclusive: expected output {const.name} is "
                                f"{const.constant}, so no error can show; save outputs of real inputs")
    if bad:
        worst = next(o for o in bad[0].outputs if not o.ok)
        raise VerificationError(f"{args.model} ({bad[0].runtime}) output {worst.name}: max abs error "
                                f"{worst.max_abs:.3g}, max rel error {worst.max_rel:.3g}")
    return 0
