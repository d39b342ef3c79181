"""Fold every batch norm of a TF1 graph, export ONNX/TFLite, verify them against the original.

Writes OUTDIR/<stem>.folded.pb, <stem>.onnx, <stem>.tflite and <stem>.report.json (OUTDIR
defaults to the model's folder). Exit codes: 0 ok, 1 verification failed, 2 bad input.
"""
from __future__ import annotations

import sys

from .common import add_model_arguments, add_verify_arguments, parse_shapes, providers, split_list

HELP = "fold batch norms, export .pb/.onnx/.tflite and verify them"


def add_arguments(p) -> None:
    p.add_argument("model", help=".pb, .pbtxt, checkpoint .meta (or folder), or SavedModel folder")
    p.add_argument("-o", "--outdir", help="output folder (default: the model's folder)")
    p.add_argument("--to", default="pb,onnx,tflite", help="formats to write: pb,onnx,tflite (default: all)")
    p.add_argument("--force", action="store_true", help="overwrite existing outputs")
    p.add_argument("--no-verify", action="store_true", help="skip the numerical verification")
    p.add_argument("--no-fold", action="store_true",
                   help="do not fold into weights: every BN becomes one Mul and one Add (inference form)")
    p.add_argument("--only", help="fold only BNs whose name contains one of these comma-separated strings")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset (default: 17)")
    p.add_argument("--bn-form", choices=("bnop", "muladd"), default="bnop",
                   help="ONNX form of a BN that cannot be folded: one BatchNormalization (bnop, faster on "
                        "onnxruntime) or Mul+Add (default: bnop)")
    p.add_argument("--json", action="store_true", help="print the report as JSON instead of tables")
    add_model_arguments(p)
    add_verify_arguments(p)


def run(args) -> int:
    from .. import api
    from ..inference import parse_set

    report = None
    try:
        report = api.convert(
            args.model, args.outdir, to=tuple(split_list(args.to) or ()), verify=not args.no_verify,
            force=args.force, inputs=split_list(args.inputs), outputs=split_list(args.outputs),
            set_flags=parse_set(args.set), mode="scale_shift" if args.no_fold else "fold",
            only=split_list(args.only), opset=args.opset, bn_form=args.bn_form, batch=args.batch,
            input_shapes=parse_shapes(args.input_shape), data=args.data, providers=providers(args.providers),
            atol=args.atol, rtol=args.rtol, allow_unsafe=args.allow_unsafe_ops, seed=args.seed,
        )
    except Exception as e:
        report = getattr(e, "report", None)
        if report is not None:
            print_report(report, args.json)
        raise
    print_report(report, args.json)
    return 0


def print_report(report, as_json: bool) -> None:
    if as_json:
        print(report.to_json())
        return
    print(report.summary())
    print()
    print(report.layer_table())
    if report.verification:
        print()
        print(report.verification_table())
    print()
    print(report.files_table())
    sys.stdout.flush()
