"""The conversion run behind ``bnconvert fold`` / :func:`bnconvert.convert`:
load → fold → export → verify → report, staged in a temporary folder and installed at the end.

Everything is written into a temporary folder beside the outputs first and renamed into place
only when all of it is done, so a failure or an interrupt leaves nothing behind; existing files
are replaced only with ``force``; the input is only read.  When verification fails the files and
the report are still written (to inspect them) and :class:`VerificationError` (exit code 1) is
raised.
"""
from __future__ import annotations

import os
import shutil
import tempfile
import time

from .errors import InputError, OutputError, VerificationError
from .load import MAX_PROTO_BYTES, Model
from .options import FORMATS, ConvertOptions
from .verify.check import first_failure, naming, verify_conversion


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


def check_formats(to) -> tuple[str, ...]:
    """``to`` as a sequence of format names or one comma-separated string ("pb,onnx")."""
    if isinstance(to, str):
        to = [t.strip() for t in to.split(",") if t.strip()]
    to = tuple(dict.fromkeys(to))
    bad = [f for f in to if f not in FORMATS]
    if bad or not to:
        raise InputError(f"--to: unknown format '{bad[0] if bad else ''}' (choose from {', '.join(FORMATS)})")
    return to


def convert(path: str, outdir: str | None, opts: ConvertOptions):
    """Run the whole conversion of the model file ``path`` into ``outdir``; returns the Report."""
    from . import api

    exp, ver, ana = opts.export, opts.verify, opts.analysis
    exp.to = check_formats(exp.to)
    if exp.bn_form not in ("bnop", "muladd"):
        raise InputError(f"--bn-form: unknown form '{exp.bn_form}' (bnop or muladd)")
    paths = output_paths(path, outdir, exp.to)
    if not os.path.exists(path):
        raise InputError(f"{path}: no such file or directory")
    created = _missing_dirs(os.path.dirname(next(iter(paths.values()))))
    try:
        outdir = _check_outdir(paths, path, opts.force)
        with naming(path):
            t0 = time.perf_counter()
            model = api.load(path, outputs=ana.outputs, allow_unsafe=opts.allow_unsafe)
            load_s = time.perf_counter() - t0
            folded = api.fold(model, inputs=ana.inputs, outputs=ana.outputs, set_flags=ana.set_flags,
                              mode=opts.fold.mode, only=opts.fold.only)
            if not opts.allow_unsafe and (ver.verify or set(exp.to) - {"pb"}):
                # verification runs the original graph; TF's converters run grappler on the folded one
                from .safety import check_safe

                check_safe(model.graph_def if ver.verify else folded.graph_def, what=path)
    except BaseException:
        _remove_dirs(created)
        raise
    report = folded.report
    report.timings = {"load": load_s, **report.timings}
    tmp = None
    try:
        tmp = tempfile.mkdtemp(dir=outdir, prefix=".bnconvert-")
        with naming(path):
            staged = _export_all(folded, exp, tmp, paths, report)
            if ver.verify:
                verify_conversion(folded, staged, report, ver, allow_unsafe=opts.allow_unsafe)
        report.files = {k: v for k, v in paths.items() if k in staged}
        report.files["report"] = paths["report"]
        with open(os.path.join(tmp, "report.json"), "w") as f:
            f.write(report.to_json())
        staged["report"] = os.path.join(tmp, "report.json")
        _install(staged, paths)
    except BaseException:
        _remove_dirs(created)
        raise
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)
    if ver.verify and not report.ok:
        err = VerificationError(first_failure(report.verification))
        err.report = report
        raise err
    return report


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


def _export_all(folded, exp, tmp, paths, report) -> dict[str, str]:
    staged: dict[str, str] = {}
    r = report
    if "pb" in exp.to:
        t = time.perf_counter()
        staged["pb"] = os.path.join(tmp, os.path.basename(paths["pb"]))
        write_graph_def(folded.graph_def, staged["pb"])
        r.timings["write_pb"] = time.perf_counter() - t
    if "onnx" in exp.to or "tflite" in exp.to:
        from .verify.inputs import resolve_shapes

        r.input_shapes = resolve_shapes(folded.graph_def, r.inputs, exp.input_shapes, batch=exp.batch)
    if "onnx" in exp.to:
        from .export.onnx import export_onnx

        t = time.perf_counter()
        staged["onnx"] = os.path.join(tmp, os.path.basename(paths["onnx"]))
        r.exports["onnx"] = export_onnx(folded.graph_def, r.inputs, r.outputs, staged["onnx"], opset=exp.opset,
                                        input_shapes=exp.input_shapes, bn_form=exp.bn_form)
        r.timings["export_onnx"] = time.perf_counter() - t
    if "tflite" in exp.to:
        from .export.tflite import export_tflite

        t = time.perf_counter()
        staged["tflite"] = os.path.join(tmp, os.path.basename(paths["tflite"]))
        r.exports["tflite"] = export_tflite(folded.graph_def, r.inputs, r.outputs, staged["tflite"], r.input_shapes)
        r.timings["export_tflite"] = time.perf_counter() - t
    return staged
