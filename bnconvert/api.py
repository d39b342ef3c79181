"""The library API: load → inference mode → match → fold → export → verify → report.

    import bnconvert
    model = bnconvert.load("model.pb")
    result = bnconvert.fold(model)                 # FoldedModel: .graph_def, .report
    report = bnconvert.convert("model.pb", outdir="out", to=("pb", "onnx", "tflite"))

The CLI is a thin layer over these functions; everything it can do, they can.
"""
from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass

from . import endpoints, inference
from .errors import BNConvertError, InputError, Interrupted, OutputError, VerificationError
from .fold import fold_all
from .graph import Graph, node_of
from .load import MAX_PROTO_BYTES, Model
from .load import load as _load
from .report import BN_OPS, Report

FORMATS = ("pb", "onnx", "tflite")
_BN_RELATED = BN_OPS + ("Rsqrt", "Switch", "Merge", "RefSwitch")


@dataclass
class FoldedModel:
    """A folded, frozen GraphDef plus the report of what was done."""

    graph_def: object
    report: Report
    model: Model


def load(path: str, outputs: list[str] | None = None, allow_unsafe: bool = False,
         max_memory: int | str | None = None) -> Model:
    """Read a .pb / .pbtxt / checkpoint / SavedModel into a checked, frozen :class:`Model`.

    ``max_memory``: bytes (or "4G") the decoded constants may take (see :mod:`bnconvert.budget`)."""
    return _load(path, outputs=outputs, allow_unsafe=allow_unsafe, max_memory=max_memory)


def _as_model(model_or_graph_def, allow_unsafe: bool = False) -> Model:
    if isinstance(model_or_graph_def, Model):
        return model_or_graph_def
    if isinstance(model_or_graph_def, (str, os.PathLike)):
        return load(model_or_graph_def, allow_unsafe=allow_unsafe)
    if hasattr(model_or_graph_def, "node"):
        from .load import check_graph, repair_ref_ops

        gd, repairs = repair_ref_ops(model_or_graph_def)
        check_graph(gd, "graph")
        return Model(gd, "<GraphDef>", "graphdef", repairs=repairs)
    raise InputError(f"expected a path, a Model or a GraphDef, got {type(model_or_graph_def).__name__}")


@contextlib.contextmanager
def _naming(path):
    """Errors raised inside name ``path`` (prefixed ``path: ``) unless they already do.

    Output errors name their own file; verification failures name the converted file.
    """
    try:
        yield
    except BNConvertError as e:
        if isinstance(path, (str, os.PathLike)) and not isinstance(e, (OutputError, VerificationError, Interrupted)):
            p = os.fspath(path)
            if p not in e.message:
                e.message = f"{p}: {e.message}"
        raise


def _bn_ops(hist: dict[str, int]) -> dict[str, int]:
    return {k: v for k, v in hist.items() if k in _BN_RELATED}


def fold(
    model,
    *,
    inputs: list[str] | None = None,
    outputs: list[str] | None = None,
    set_flags: dict[str, bool] | None = None,
    mode: str = "fold",
    only: list[str] | None = None,
    keep_going: bool = False,
) -> FoldedModel:
    """Switch ``model`` to inference mode and fold every batch norm.

    ``model``: a :class:`Model`, a path or a GraphDef (never modified).  ``inputs``/``outputs``
    default to what :mod:`bnconvert.endpoints` finds (or the SavedModel signature).
    ``set_flags`` overrides training flags (``{"phase": False}``).  ``mode="scale_shift"``
    turns folding off (every BN becomes Mul+Add); ``only`` folds just the BNs whose name
    contains one of the strings.  ``keep_going`` records unusable BNs as "refuse" instead of
    raising (what ``inspect`` shows).
    """
    if mode not in ("fold", "scale_shift"):
        raise InputError(f"unknown mode '{mode}' (fold or scale_shift)")
    m = _as_model(model)
    report = Report(source={"path": m.path, "format": m.format, "sha256": m.sha256})
    if m.repairs:
        report.notes.append("reference ops rewritten: " + ", ".join(f"{k}×{v}" for k, v in sorted(m.repairs.items())))
    t0 = time.perf_counter()
    g = Graph(m.graph_def)
    report.ops_before = _bn_ops(g.op_histogram())
    inf = inference.to_inference(g, set_flags)
    g.invalidate()
    flags = {node_of(k) for k in inf.flags}
    report.training_flags = inf.flags
    report.inference = {
        "switches_resolved": inf.switches_resolved, "merges_resolved": inf.merges_resolved,
        "dead_nodes_removed": inf.dead_removed, "control_deps_dropped": inf.control_deps_dropped,
    }
    ins = endpoints.check_tensors(g, inputs, "input") if inputs else None
    if ins is None:
        ins = endpoints.check_tensors(g, m.inputs, "input") if m.inputs else endpoints.default_inputs(g, flags)
    if outputs:
        outs = endpoints.check_tensors(g, outputs, "output")
    elif m.outputs:
        outs = endpoints.check_tensors(g, m.outputs, "output")
    else:
        outs = endpoints.default_outputs(g, ins, flags, exclude=inf.orphans)
    for t in ins:
        if node_of(t) in flags:
            raise InputError(f"input '{t}' is a training flag; it is set, not fed")
    report.inputs, report.outputs = ins, outs
    g.prune(outs, keep=[node_of(t) for t in ins])
    report.timings["inference_mode"] = time.perf_counter() - t0
    t1 = time.perf_counter()
    result = fold_all(g, outs, mode=mode, only=set(only) if only else None, keep_going=keep_going)
    g.prune(outs, keep=[node_of(t) for t in ins])
    g.invalidate()  # drop the numpy copies of constants before writing the GraphDef
    report.layers = [layer.to_dict() for layer in result.layers]
    report.timings["match_fold"] = time.perf_counter() - t1
    gd = g.to_graph_def()
    report.ops_after = _bn_ops(g.op_histogram())
    return FoldedModel(gd, report, m)


def inspect(model, **kwargs) -> Report:
    """What :func:`fold` would do, without writing anything; unusable BNs show as "refuse"."""
    kwargs.setdefault("keep_going", True)
    with _naming(model):
        return fold(model, **kwargs).report


# ---------------------------------------------------------------------- convert
def output_paths(path: str, outdir: str | None, to: tuple[str, ...]) -> dict[str, str]:
    stem = Model(None, path, "").stem
    outdir = outdir if outdir is not None else os.path.dirname(os.path.abspath(path))
    names = {"pb": f"{stem}.folded.pb", "onnx": f"{stem}.onnx", "tflite": f"{stem}.tflite", "report": f"{stem}.report.json"}
    return {k: os.path.join(outdir, v) for k, v in names.items() if k in to or k == "report"}


def write_graph_def(graph_def, path: str) -> int:
    size = graph_def.ByteSize()
    if size > MAX_PROTO_BYTES:
        raise OutputError(f"{path}: the folded graph is {size} bytes, over protobuf's 2 GiB limit")
    with open(path, "wb") as f:
        f.write(graph_def.SerializeToString())
    return size


def _check_outdir(paths: dict[str, str], src: str, force: bool) -> str:
    outdir = os.path.dirname(next(iter(paths.values())))
    if os.path.exists(outdir) and not os.path.isdir(outdir):
        raise OutputError(f"{outdir}: output folder is a file")
    try:
        os.makedirs(outdir, exist_ok=True)
    except OSError as e:
        raise OutputError(f"{outdir}: cannot create the output folder ({e.strerror})") from e
    if not os.access(outdir, os.W_OK | os.X_OK):
        raise OutputError(f"{outdir}: output folder is not writable")
    src_real = os.path.realpath(src)
    for p in paths.values():
        if os.path.realpath(p) == src_real:
            raise OutputError(f"{p}: would overwrite the input; choose another -o folder")
    existing = [p for p in paths.values() if os.path.exists(p)]
    if existing and not force:
        raise OutputError(f"{existing[0]} exists (pass --force to overwrite)")
    return outdir


def convert(
    path: str,
    outdir: str | None = None,
    *,
    to: tuple[str, ...] = FORMATS,
    verify: bool = True,
    force: bool = False,
    inputs: list[str] | None = None,
    outputs: list[str] | None = None,
    set_flags: dict[str, bool] | None = None,
    mode: str = "fold",
    only: list[str] | None = None,
    opset: int = 17,
    batch: int = 1,
    input_shapes: dict[str, list[int]] | None = None,
    data: str | None = None,
    providers: tuple[str, ...] = ("cpu",),
    atol: float | None = None,
    rtol: float | None = None,
    allow_unsafe: bool = False,
    seed: int = 0,
    max_memory: int | str | None = None,
) -> Report:
    """``bnconvert fold``: load, fold, export ``to`` formats, verify, write the report.

    Files go to ``outdir`` (default: the input's folder) as ``<stem>.folded.pb``,
    ``<stem>.onnx``, ``<stem>.tflite`` and ``<stem>.report.json``.  Everything is written into
    a temporary folder beside them first and renamed into place only when all of it is done,
    so a failure or an interrupt leaves nothing behind; existing files are replaced only with
    ``force``; the input is only read.  When verification fails the files and the report are
    still written (to inspect them) and :class:`VerificationError` (exit code 1) is raised.
    """
    import shutil
    import tempfile

    from . import budget

    budget.check_batch(batch)
    if max_memory is not None:
        budget.configure(max_memory)
    to = tuple(dict.fromkeys(to))
    bad = [f for f in to if f not in FORMATS]
    if bad or not to:
        raise InputError(f"--to: unknown format '{bad[0] if bad else ''}' (choose from {', '.join(FORMATS)})")
    paths = output_paths(path, outdir, to)
    if not os.path.exists(path):
        raise InputError(f"{path}: no such file or directory")
    created = _missing_dirs(os.path.dirname(next(iter(paths.values()))))
    try:
        outdir = _check_outdir(paths, path, force)
        with _naming(path):
            t0 = time.perf_counter()
            model = load(path, outputs=outputs, allow_unsafe=allow_unsafe)
            load_s = time.perf_counter() - t0
            folded = fold(model, inputs=inputs, outputs=outputs, set_flags=set_flags, mode=mode, only=only)
            if not allow_unsafe and (verify or set(to) - {"pb"}):
                # verification runs the original graph; TF's converters run grappler on the folded one
                from .safety import check_safe

                check_safe(model.graph_def if verify else folded.graph_def, what=path)
    except BaseException:
        _remove_dirs(created)
        raise
    report = folded.report
    report.timings = {"load": load_s, **report.timings}
    tmp = None
    try:
        try:
            tmp = tempfile.mkdtemp(dir=outdir, prefix=".bnconvert-")
        except OSError as e:
            raise OutputError(f"{outdir}: cannot write into the output folder ({e.strerror})") from None
        with _naming(path):
            staged = _export_all(folded, to, tmp, paths, opset, batch, input_shapes, report)
            if verify:
                _verify_all(folded, staged, report, data, providers, atol, rtol, allow_unsafe, seed)
        report.files = {k: v for k, v in paths.items() if k in staged}
        report.files["report"] = paths["report"]
        with open(os.path.join(tmp, "report.json"), "w") as f:
            f.write(report.to_json())
        staged["report"] = os.path.join(tmp, "report.json")
        _install(staged, paths)
    except BaseException:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)
        _remove_dirs(created)
        raise
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)
    if verify and not report.ok:
        from .errors import VerificationError

        raise VerificationError(_first_failure(report))
    return report


def _missing_dirs(folder: str) -> list[str]:
    """The folders ``os.makedirs(folder)`` would create, deepest first."""
    out = []
    folder = os.path.abspath(folder)
    while folder and not os.path.lexists(folder):
        out.append(folder)
        parent = os.path.dirname(folder)
        if parent == folder:
            break
        folder = parent
    return out


def _remove_dirs(folders: list[str]) -> None:
    """Remove the folders a failed :func:`convert` created, if they are still empty."""
    for d in folders:
        try:
            os.rmdir(d)
        except OSError:
            return


def _install(staged: dict[str, str], paths: dict[str, str]) -> None:
    """Rename staged files into place with SIGINT/SIGTERM held back, report last."""
    import signal

    sigs = {signal.SIGINT, signal.SIGTERM}
    old = signal.pthread_sigmask(signal.SIG_BLOCK, sigs)
    try:
        for kind in sorted(staged, key=lambda k: k == "report"):
            os.replace(staged[kind], paths[kind])
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def _export_all(folded, to, tmp, paths, opset, batch, input_shapes, report) -> dict[str, str]:
    staged: dict[str, str] = {}
    r = report
    if "pb" in to:
        t = time.perf_counter()
        staged["pb"] = os.path.join(tmp, os.path.basename(paths["pb"]))
        write_graph_def(folded.graph_def, staged["pb"])
        r.timings["write_pb"] = time.perf_counter() - t
    if "onnx" in to or "tflite" in to:
        from .verify.inputs import resolve_shapes

        r.input_shapes = resolve_shapes(folded.graph_def, r.inputs, input_shapes, batch=batch)
    if "onnx" in to:
        from .export.onnx import export_onnx

        t = time.perf_counter()
        staged["onnx"] = os.path.join(tmp, os.path.basename(paths["onnx"]))
        r.exports["onnx"] = export_onnx(folded.graph_def, r.inputs, r.outputs, staged["onnx"], opset=opset,
                                        input_shapes=input_shapes)
        r.timings["export_onnx"] = time.perf_counter() - t
    if "tflite" in to:
        from .export.tflite import export_tflite

        t = time.perf_counter()
        staged["tflite"] = os.path.join(tmp, os.path.basename(paths["tflite"]))
        r.exports["tflite"] = export_tflite(folded.graph_def, r.inputs, r.outputs, staged["tflite"], r.input_shapes)
        r.timings["export_tflite"] = time.perf_counter() - t
    return staged


def _tolerances(atol, rtol) -> dict:
    from .verify.compare import DEFAULT_ATOL, DEFAULT_RTOL

    return {"atol": DEFAULT_ATOL if atol is None else atol, "rtol": DEFAULT_RTOL if rtol is None else rtol}


#: default tolerances for outputs computed in float16/bfloat16 (their epsilon is ~1e-3/8e-3):
#: a float16 original rounds every layer, so a float32 or folded run differs by a few ulps
NARROW_TOLERANCES = {"float16": {"atol": 1e-3, "rtol": 5e-3}, "bfloat16": {"atol": 1e-2, "rtol": 4e-2}}


def _dtype_tolerances(ref: dict, atol, rtol, tol: dict, notes: list) -> dict:
    """Widen the default tolerances for float16/bfloat16 outputs (explicit ones stay)."""
    narrow = [str(v.dtype) for v in ref.values() if str(v.dtype) in NARROW_TOLERANCES]
    if not narrow:
        return tol
    wide = NARROW_TOLERANCES["bfloat16" if "bfloat16" in narrow else "float16"]
    out = {"atol": wide["atol"] if atol is None else atol, "rtol": wide["rtol"] if rtol is None else rtol}
    notes.append(f"outputs are {narrow[0]}: default tolerances atol={out['atol']}, rtol={out['rtol']}")
    return out


def _feeds(graph_def, inputs, shapes, data, seed):
    from .verify.inputs import load_npz_inputs, random_inputs
    from .tfproto import np_dtype

    if data:
        return load_npz_inputs(data, inputs)
    g = Graph(graph_def)
    dtypes = {t: np_dtype(g.node(t).attr["dtype"].type) for t in inputs}
    return random_inputs(shapes, dtypes, seed=seed)


def _verify_all(folded, staged, report, data, providers, atol, rtol, allow_unsafe, seed) -> None:
    from .verify.inputs import resolve_shapes
    from .verify.runners import onnx_runtime_label, run_onnx, run_tf, run_tflite

    tol = _tolerances(atol, rtol)
    shapes = report.input_shapes or resolve_shapes(folded.graph_def, report.inputs, None, batch=1)
    report.input_shapes = shapes
    feeds = _feeds(folded.graph_def, report.inputs, shapes, data, seed)
    t = time.perf_counter()
    ref = run_tf(folded.model.graph_def, feeds, report.outputs, flags=report.training_flags, allow_unsafe=allow_unsafe,
                 what=folded.model.path)
    report.timings["verify_tf_original"] = time.perf_counter() - t
    tol = _dtype_tolerances(ref, atol, rtol, tol, report.notes)
    runs = []
    if "pb" in staged:
        runs.append(("tf:folded", staged["pb"], lambda: run_tf(folded.graph_def, feeds, report.outputs, allow_unsafe=allow_unsafe)))
    if "onnx" in staged:
        for prov in providers:
            runs.append((onnx_runtime_label(prov), staged["onnx"],
                         lambda prov=prov: run_onnx(staged["onnx"], feeds, report.outputs, provider=prov)))
    if "tflite" in staged:
        runs.append(("tflite", staged["tflite"], lambda: run_tflite(staged["tflite"], feeds, report.outputs)))
    report.verification.update(_compare_runs(ref, runs, tol, report.timings))


def _compare_runs(ref: dict, runs: list, tol: dict, timings: dict | None = None) -> dict[str, dict]:
    """Run each ``(runtime, file, fn)`` and compare its outputs with ``ref``; one dict per runtime."""
    from .verify.compare import compare as compare_outputs

    result = {}
    for runtime, file, fn in runs:
        t = time.perf_counter()
        with _naming(file):
            cand = fn()
        if timings is not None:
            timings[f"verify_{runtime}"] = time.perf_counter() - t
        note = "TF32 off (use_tf32=0)" if "CUDA" in runtime else ""
        d = compare_outputs(ref, cand, runtime=runtime, file=os.path.basename(file), note=note, **tol).to_dict()
        d["atol"], d["rtol"] = tol["atol"], tol["rtol"]
        result[runtime] = d
    return result


def _first_failure(report: Report) -> str:
    for runtime, v in report.verification.items():
        if not v.get("ok"):
            for o in v.get("outputs", []):
                if not o.get("ok") and str(o.get("reason", "")).startswith(("NaN", "inf", "shape", "missing")):
                    return f"verification failed: {v.get('file', runtime)} ({runtime}) output {o.get('name')}: {o['reason']}"
                if not o.get("ok"):
                    return (f"verification failed: {v.get('file', runtime)} ({runtime}) output {o.get('name')}: "
                            f"max abs error {o.get('max_abs'):.3g}, max rel error {o.get('max_rel'):.3g} "
                            f"(atol {v.get('atol')}, rtol {v.get('rtol')})")
            return f"verification failed: {runtime}"
    return "verification failed"


def compare(
    original,
    converted: str,
    *,
    inputs: list[str] | None = None,
    outputs: list[str] | None = None,
    set_flags: dict[str, bool] | None = None,
    providers: tuple[str, ...] = ("cpu",),
    data: str | None = None,
    input_shapes: dict[str, list[int]] | None = None,
    batch: int = 1,
    atol: float | None = None,
    rtol: float | None = None,
    allow_unsafe: bool = False,
    seed: int = 0,
    raise_on_failure: bool = True,
    max_memory: int | str | None = None,
) -> dict[str, dict]:
    """Compare ``converted`` (.pb/.pbtxt, .onnx or .tflite, made by anything) with ``original``.

    Returns one entry per runtime (``"tf:converted"``, ``"onnx:CPUExecutionProvider"``, …) with
    per-output statistics; raises :class:`VerificationError` on a mismatch unless
    ``raise_on_failure`` is False.
    """
    from .verify.inputs import resolve_shapes
    from .verify.runners import onnx_runtime_label, run_onnx, run_tf, run_tflite

    from . import budget

    budget.check_batch(batch)
    if max_memory is not None:
        budget.configure(max_memory)
    if not os.path.exists(converted):
        raise InputError(f"{converted}: no such file or directory")
    with _naming(original):
        model = _as_model(original, allow_unsafe=allow_unsafe)
        info = fold(model, inputs=inputs, outputs=outputs, set_flags=set_flags, keep_going=True).report
        ins, outs, flags = info.inputs, info.outputs, info.training_flags
        shapes = resolve_shapes(model.graph_def, ins, input_shapes, batch=batch)
        feeds = _feeds(model.graph_def, ins, shapes, data, seed)
        ref = run_tf(model.graph_def, feeds, outs, flags=flags, allow_unsafe=allow_unsafe, what=model.path)
    tol = _dtype_tolerances(ref, atol, rtol, _tolerances(atol, rtol), [])
    runs = []
    if converted.endswith(".onnx"):
        for prov in providers:
            runs.append((onnx_runtime_label(prov), converted, lambda prov=prov: run_onnx(converted, feeds, outs, provider=prov)))
    elif converted.endswith(".tflite"):
        runs.append(("tflite", converted, lambda: run_tflite(converted, feeds, outs)))
    else:
        conv = load(converted, allow_unsafe=allow_unsafe)
        present = {k: v for k, v in flags.items() if node_of(k) in {n.name for n in conv.graph_def.node}}
        runs.append(("tf:converted", converted, lambda: run_tf(conv.graph_def, feeds, outs, flags=present,
                                                                allow_unsafe=allow_unsafe, what=converted)))
    result = _compare_runs(ref, runs, tol)
    if raise_on_failure and not all(v["ok"] for v in result.values()):
        from .errors import VerificationError

        r = Report(verification=result)
        raise VerificationError(_first_failure(r))
    return result
