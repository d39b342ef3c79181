"""Verification as a stage: run the original graph and every produced file on the same inputs,
compare, and record the results in the report.

- :func:`verify_conversion`: what ``bnconvert fold`` runs after exporting (original in TF vs the
  folded .pb, the .onnx on each provider, the .tflite).
- :func:`verify_converted`: what ``bnconvert verify ORIGINAL CONVERTED`` runs (a file made by
  anything).
"""
from __future__ import annotations

import os
import time

from ..errors import BNConvertError, InputError, Interrupted, OutputError, VerificationError
from ..graph import Graph, node_of

#: default tolerances for outputs computed in float16/bfloat16 (their epsilon is ~1e-3/8e-3):
#: a float16 original rounds every layer, so a float32 or folded run differs by a few ulps
NARROW_TOLERANCES = {"float16": {"atol": 1e-3, "rtol": 5e-3}, "bfloat16": {"atol": 1e-2, "rtol": 4e-2}}


def naming(path):
    """Context manager: errors raised inside name ``path`` (prefixed ``path: ``) unless they do."""
    import contextlib

    @contextlib.contextmanager
    def _cm():
        try:
            yield
        except BNConvertError as e:
            if isinstance(path, (str, os.PathLike)) and not isinstance(e, (OutputError, VerificationError, Interrupted)):
                p = os.fspath(path)
                if p not in e.message:
                    e.message = f"{p}: {e.message}"
            raise

    return _cm()


def tolerances(atol, rtol) -> dict:
    from .compare import DEFAULT_ATOL, DEFAULT_RTOL

    return {"atol": DEFAULT_ATOL if atol is None else atol, "rtol": DEFAULT_RTOL if rtol is None else rtol}


def dtype_tolerances(ref: dict, atol, rtol, tol: dict, notes: list) -> dict:
    """Widen the default tolerances for float16/bfloat16 outputs (explicit ones stay)."""
    narrow = [str(v.dtype) for v in ref.values() if str(v.dtype) in NARROW_TOLERANCES]
    if not narrow:
        return tol
    wide = NARROW_TOLERANCES["bfloat16" if "bfloat16" in narrow else "float16"]
    out = {"atol": wide["atol"] if atol is None else atol, "rtol": wide["rtol"] if rtol is None else rtol}
    notes.append(f"outputs are {narrow[0]}: default tolerances atol={out['atol']}, rtol={out['rtol']}")
    return out


def make_feeds(graph_def, inputs, shapes, data, seed):
    """Inputs for verification: ``data`` (.npz) if given, else seeded random ones."""
    from ..tfproto import np_dtype
    from .inputs import load_npz_inputs, random_inputs

    if data:
        return load_npz_inputs(data, inputs)
    g = Graph(graph_def)
    dtypes = {t: np_dtype(g.node(t).attr["dtype"].type) for t in inputs}
    return random_inputs(shapes, dtypes, seed=seed)


def verify_conversion(folded, staged: dict[str, str], report, vopts, allow_unsafe: bool = False) -> None:
    """Compare every staged file with the original graph; results go into ``report.verification``."""
    from .inputs import resolve_shapes
    from .runners import onnx_runtime_label, run_onnx, run_tf, run_tflite

    tol = tolerances(vopts.atol, vopts.rtol)
    shapes = report.input_shapes or resolve_shapes(folded.graph_def, report.inputs, None, batch=1)
    report.input_shapes = shapes
    feeds = make_feeds(folded.graph_def, report.inputs, shapes, vopts.data, vopts.seed)
    t = time.perf_counter()
    ref = run_tf(folded.model, feeds, report.outputs, flags=report.training_flags, allow_unsafe=allow_unsafe,
                 what=folded.model.path, stage="TensorFlow (original graph)")
    report.timings["verify_tf_original"] = time.perf_counter() - t
    tol = dtype_tolerances(ref, vopts.atol, vopts.rtol, tol, report.notes)
    runs = []
    if "pb" in staged:
        runs.append(("tf:folded", staged["pb"],
                     lambda: run_tf(staged["pb"], feeds, report.outputs, allow_unsafe=allow_unsafe,
                                    stage="TensorFlow (folded graph)")))
    if "onnx" in staged:
        for prov in vopts.providers:
            runs.append((onnx_runtime_label(prov), staged["onnx"],
                         lambda prov=prov: run_onnx(staged["onnx"], feeds, report.outputs, provider=prov)))
    if "tflite" in staged:
        runs.append(("tflite", staged["tflite"], lambda: run_tflite(staged["tflite"], feeds, report.outputs)))
    report.verification.update(compare_runs(ref, runs, tol, report.timings))


def compare_runs(ref: dict, runs: list, tol: dict, timings: dict | None = None) -> dict[str, dict]:
    """Run each ``(runtime, file, fn)`` and compare its outputs with ``ref``; one dict per runtime."""
    from .compare import compare as compare_outputs

    result = {}
    for runtime, file, fn in runs:
        t = time.perf_counter()
        with naming(file):
            cand = fn()
        if timings is not None:
            timings[f"verify_{runtime}"] = time.perf_counter() - t
        note = "TF32 off (use_tf32=0)" if "CUDA" in runtime else ""
        d = compare_outputs(ref, cand, runtime=runtime, file=os.path.basename(file), note=note, **tol).to_dict()
        d["atol"], d["rtol"] = tol["atol"], tol["rtol"]
        result[runtime] = d
    return result


def first_failure(verification: dict) -> str:
    """One line naming the first runtime and output that failed."""
    for runtime, v in verification.items():
        if not v.get("ok"):
            for o in v.get("outputs", []):
                if not o.get("ok"):
                    return (f"verification failed: {v.get('file', runtime)} ({runtime}) output {o.get('name')}: "
                            f"max abs error {o.get('max_abs'):.3g}, max rel error {o.get('max_rel'):.3g} "
                            f"(atol {v.get('atol')}, rtol {v.get('rtol')})")
            return f"verification failed: {runtime}"
    return "verification failed"


def verify_converted(model, converted: str, analysis, shapes, vopts, allow_unsafe: bool = False) -> dict[str, dict]:
    """Compare ``converted`` (.pb/.pbtxt, .onnx or .tflite) with ``model`` run in TF.

    ``analysis`` gives the inputs, outputs and training flags (``.inputs``, ``.outputs``,
    ``.training_flags``); ``shapes`` the concrete input shapes.
    """
    from ..load import load
    from .runners import onnx_runtime_label, run_onnx, run_tf, run_tflite

    if not os.path.exists(converted):
        raise InputError(f"{converted}: no such file or directory")
    ins, outs, flags = analysis.inputs, analysis.outputs, analysis.training_flags
    with naming(model.path):
        feeds = make_feeds(model.graph_def, ins, shapes, vopts.data, vopts.seed)
        ref = run_tf(model, feeds, outs, flags=flags, allow_unsafe=allow_unsafe, what=model.path,
                     stage="TensorFlow (original graph)")
    tol = dtype_tolerances(ref, vopts.atol, vopts.rtol, tolerances(vopts.atol, vopts.rtol), [])
    runs = []
    if converted.endswith(".onnx"):
        for prov in vopts.providers:
            runs.append((onnx_runtime_label(prov), converted,
                         lambda prov=prov: run_onnx(converted, feeds, outs, provider=prov)))
    elif converted.endswith(".tflite"):
        runs.append(("tflite", converted, lambda: run_tflite(converted, feeds, outs)))
    else:
        conv = load(converted, allow_unsafe=allow_unsafe)
        present = {k: v for k, v in flags.items() if node_of(k) in {n.name for n in conv.graph_def.node}}
        runs.append(("tf:converted", converted, lambda: run_tf(conv.graph_def, feeds, outs, flags=present,
                                                                allow_unsafe=allow_unsafe, what=converted)))
    return compare_runs(ref, runs, tol)
