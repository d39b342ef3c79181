"""Convert an MNIST classifier and compare the accuracy of the original graph, the folded graph,
the ONNX model and the TFLite model on real test digits: the 1,000 test digits bundled with
bnconvert (MNIST, CC BY-SA 3.0), or the 10,000 of the standard IDX files with --mnist-dir.
Exit 1 when a conversion loses accuracy. With -o the converted files are kept there (existing
ones are replaced only with --force); without it nothing is written."""
from __future__ import annotations

HELP = "accuracy of original vs converted models on real MNIST digits"


def add_arguments(p) -> None:
    from .common import add_model_arguments

    p.add_argument("model", help="the original TF1 MNIST model (.pb, .pbtxt, checkpoint or SavedModel)")
    p.add_argument("--mnist-dir", help="folder with the four MNIST IDX files, e.g. t10k-images-idx3-ubyte.gz "
                                       "(default: the 1,000 test digits bundled with bnconvert)")
    p.add_argument("-o", "--outdir", help="keep the converted files here (default: convert in memory, write nothing)")
    p.add_argument("--force", action="store_true", help="overwrite existing files in OUTDIR")
    p.add_argument("--providers", default="cpu", help="onnxruntime providers: cpu, cuda (comma-separated)")
    p.add_argument("--max-drop", type=float, default=0.1, help="allowed accuracy loss in percentage points")
    p.add_argument("--max-changed", type=float, default=0.1, help="allowed %% of digits changing class")
    p.add_argument("--no-int8", action="store_true", help="skip the int8 columns (no --quantize int8)")
    p.add_argument("--json", action="store_true", help="print JSON")
    add_model_arguments(p)


def run(args) -> int:
    import json

    from ..errors import VerificationError
    from ..inference import parse_set
    from ..mnist_check import check, format_table
    from .common import providers, split_list

    result = check(args.model, mnist_dir=args.mnist_dir, outdir=args.outdir, providers=providers(args.providers),
                   max_drop=args.max_drop, max_changed=args.max_changed, force=args.force,
                   inputs=split_list(args.inputs), outputs=split_list(args.outputs), set_flags=parse_set(args.set), int8=not args.no_int8)
    if not args.quiet:
        print(json.dumps(result, indent=2) if args.json else format_table(result))
    if not result["ok"]:
        raise VerificationError(result["failure"])
    return 0
