"""Fold every batch norm of a TF1 graph, export ONNX/TFLite, verify them against the original.

Writes OUTDIR/<stem>.folded.pb (<stem>.scaleshift.pb with --no-fold), <stem>.onnx, <stem>.tflite
and <stem>.report.json (OUTDIR defaults to the model's folder; a checkpoint, folder or .meta, is
named after its folder). Exit codes: 0 ok, 1 verification failed, 2 bad input, 3 internal error.
"""
from __future__ import annotations

import sys

from .common import (add_model_arguments, add_verify_arguments, layer_budget, parse_shapes, positive_int, providers,
                     split_list)

HELP = "fold batch norms, export .pb/.onnx/.tflite and verify them"


def add_arguments(p) -> None:
    p.add_argument("model", help=".pb, .pbtxt, checkpoint .meta (or folder), or SavedModel folder")
    p.add_argument("-o", "--outdir", help="output folder (default: the model's folder)")
    p.add_argument("--to", default=None, help="formats to write, comma-separated (default: pb,onnx,tflite; "
                   "a format whose converter cannot handle the graph is then skipped with a warning)")
    p.add_argument("--force", action="store_true", help="overwrite existing outputs")
    p.add_argument("--no-verify", action="store_true", help="skip the numerical verification")
    p.add_argument("--no-fold", action="store_true",
                   help="do not fold into weights: every BN becomes one Mul and one Add (inference form); "
                        "the graph is written as <stem>.scaleshift.pb")
    p.add_argument("--only", metavar="NAME,...",
                   help="fold only the BNs named (exact names or globs such as 'block1/*', comma-separated; "
                        "see 'bnconvert inspect'); the others become Mul+Add (default: fold all)")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset")
    p.add_argument("--bn-form", choices=("bnop", "muladd"), default="bnop",
                   help="ONNX form of a BN that cannot be folded: one BatchNormalization (bnop, faster on "
                        "onnxruntime) or Mul+Add")
    p.add_argument("--json", action="store_true", help="print the report as JSON instead of tables")
    p.add_argument("--jobs", "-j", type=positive_int, default=None, metavar="N",
                   help="child stages (converters, verification runtimes) to run at once; each adds its memory "
                        "to the peak (default: as many as the CPUs and the free memory allow, 1 with --max-memory)")
    add_model_arguments(p)
    add_verify_arguments(p)
    q = p.add_argument_group("int8 (see README: int8)")
    q.add_argument("--quantize", choices=["int8"], help="also write <stem>.int8.tflite and <stem>.int8.onnx")
    q.add_argument("--calibration", metavar="FILE.npz|mnist|random", help="calibration inputs (required with --quantize)")
    q.add_argument("--calibration-samples", type=int, default=200, help="calibration samples (default: 200)")
    q.add_argument("--int8-io", action="store_true", help="int8 input/output in the .int8.tflite (default: float)")
    q.add_argument("--int8-min-top1", type=float, help="min top-1 agreement with the original (default 0.95)")
    q.add_argument("--int8-min-cosine", type=float, help="min cosine similarity per output (default 0.985)")
    q.add_argument("--int8-min-sqnr", type=float, help="min SQNR in dB per output (default 15)")


def run(args) -> int:
    from .. import api
    from ..inference import parse_set

    report = None
    try:
        to = {} if args.to is None else {"to": tuple(split_list(args.to) or ())}  # not given: partial exports
        report = api.convert(
            args.model, args.outdir, **to,
            verify=not args.no_verify, timeout=args.timeout, jobs=args.jobs,
            force=args.force, inputs=split_list(args.inputs), outputs=split_list(args.outputs),
            set_flags=parse_set(args.set), mode="scale_shift" if args.no_fold else "fold",
            only=args.only, opset=args.opset, bn_form=args.bn_form, batch=args.batch,
            input_shapes=parse_shapes(args.input_shape), data=args.data, providers=providers(args.providers),
            atol=args.atol, rtol=args.rtol, allow_unsafe=args.allow_unsafe_ops, seed=args.seed,
            quantize=args.quantize, calibration=args.calibration, calibration_samples=args.calibration_samples,
            int8_io=args.int8_io, int8_min_top1=args.int8_min_top1, int8_min_cosine=args.int8_min_cosine,
            int8_min_sqnr=args.int8_min_sqnr,
            samples=args.samples, save_io=args.save_io,
            layer_budget=layer_budget(args.layer_budget),
        )
    except Exception as e:
        report = getattr(e, "report", None)
        if report is not None:
            print_report(report, args.json, args.quiet)
        raise
    args._warnings = [f"{fmt} skipped: {why}" for fmt, why in report.skipped.items()]
    print_report(report, args.json, args.quiet)
    return 0


def print_report(report, as_json: bool, quiet: bool = False) -> None:
    if quiet:
        return
    try:
        _print_report(report, as_json)
    except BrokenPipeError:  # `… --json | head -1`: the reader is gone, the run's outcome stands
        from .main import _drop_stdout

        _drop_stdout()


def _print_report(report, as_json: bool) -> None:
    if as_json:
        print(report.to_json())
        return
    print(report.summary())
    print()
    print(report.layer_table())
    if report.verification:
        print()
        print(report.verification_table())
    if report.quantization.get("verification"):
        print()
        print(report.quantization_table())
    print()
    print(report.files_table())
    sys.stdout.flush()
