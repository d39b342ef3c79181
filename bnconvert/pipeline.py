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

from . import progress
from .errors import InputError, Interrupted, OutputError, UnsupportedError, VerificationError
from .load import MAX_PROTO_BYTES, Model
from .options import FORMATS, ConvertOptions
from .verify.check import check_providers, first_failure, naming, verify_conversion


def output_stem(path: str) -> str:
    """The name outputs get: the file's name without .pb/.pbtxt; a checkpoint — its folder or
    its ``.meta`` file alike — is named after the folder that holds it (TF1 checkpoint prefixes
    are generic, ``model.ckpt-1000``); a SavedModel after its folder."""
    p = os.path.normpath(os.path.abspath(path))
    if p.endswith(".meta") and not os.path.isdir(p):
        return os.path.basename(os.path.dirname(p)) or Model(None, p, "").stem
    return Model(None, p, "").stem  # absolute: "." is named after the folder, not ".."


def output_paths(path: str, outdir: str | None, to: tuple[str, ...], mode: str = "fold") -> dict[str, str]:
    """``<stem>.folded.pb`` (``<stem>.scaleshift.pb`` when nothing is folded: ``--no-fold``),
    ``<stem>.onnx``, ``<stem>.tflite``, ``<stem>.report.json``."""
    stem = output_stem(path)
    outdir = outdir if outdir is not None else os.path.dirname(os.path.abspath(path))
    pb = f"{stem}.scaleshift.pb" if mode == "scale_shift" else f"{stem}.folded.pb"
    names = {"pb": pb, "onnx": f"{stem}.onnx", "tflite": f"{stem}.tflite", "report": f"{stem}.report.json"}
    return {k: os.path.join(outdir, v) for k, v in names.items() if k in to or k == "report"}


def write_graph_def(graph_def, path: str, what: str = "the folded graph") -> int:
    size = graph_def.ByteSize()
    if size > MAX_PROTO_BYTES:
        raise OutputError(f"{path}: {what} is {size} bytes, over protobuf's 2 GiB limit")
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


def _require(module: str) -> None:
    """:class:`MissingDependencyError` (exit 2, how to install) unless ``module`` is installed."""
    import importlib.util

    from .errors import missing_dependency

    try:
        found = importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        found = False
    if not found:
        raise missing_dependency(ModuleNotFoundError(f"No module named '{module}'", name=module))


def convert(path, outdir: str | None, opts: ConvertOptions):
    """Run the whole conversion of the model file ``path`` (or a loaded :class:`Model`, named by
    its ``.path``) into ``outdir``; returns the Report."""
    from . import budget, isolate

    _require("tensorflow")  # loading and folding run in a child, which needs it: say so here, first
    model = path if isinstance(path, Model) else None
    path = model.path if model is not None else path
    exp, ver, ana = opts.export, opts.verify, opts.analysis
    budget.check_batch(exp.batch)
    if opts.max_memory is not None:
        budget.configure(opts.max_memory)
    exp.to = check_formats(exp.to)
    if exp.bn_form not in ("bnop", "muladd"):
        raise InputError(f"--bn-form: unknown form '{exp.bn_form}' (bnop or muladd)")
    if ver.verify:
        check_providers(ver.providers)  # before any work: an unusable provider is one line, exit 2
    paths = output_paths(path, outdir, exp.to, opts.fold.mode)
    if opts.quantize.quantize or opts.quantize.calibration:
        from .quantize import prepare

        paths.update(prepare(opts.quantize, paths, exp.to))
    if model is None and not os.path.exists(path):
        raise InputError(f"{path}: no such file or directory")
    created = _missing_dirs(os.path.dirname(next(iter(paths.values()))))
    lock = None
    try:
        outdir = _check_outdir(paths, path, opts.force)
        lock = OutputLock(outdir)
    except BaseException:
        _release(lock, created)
        raise
    tmp = None
    state = {"installed": False}
    try:
        try:
            tmp = tempfile.mkdtemp(dir=outdir, prefix=".bnconvert-")
        except OSError as e:
            raise OutputError(f"{outdir}: cannot write into the output folder ({e.strerror})") from None
        with naming(path), _unstaged(tmp, paths), isolate.limits(timeout=opts.timeout, scratch=tmp):
            isolate.peaks.clear()
            prep = _prepare(model if model is not None else path, tmp, paths, opts)
            report = prep.report
            jobs = _jobs(opts, prep)
            staged = _export_all(prep, exp, tmp, paths, report, jobs)
            if opts.quantize.quantize:
                from .quantize import quantize_and_verify

                quantize_and_verify(prep, opts, staged, tmp, paths, report)
            if ver.verify:
                with progress.stage("verify"):
                    verify_conversion(prep, staged, report, ver, allow_unsafe=opts.allow_unsafe, jobs=jobs)
            staged.pop("_graph", None)
        report.memory = _memory(isolate.peaks)
        report.files = {k: v for k, v in paths.items() if k in staged}
        report.files["report"] = paths["report"]
        with open(os.path.join(tmp, "report.json"), "w") as f:
            f.write(report.to_json())
        staged["report"] = os.path.join(tmp, "report.json")
        _install(staged, paths, opts.force, state)
    except KeyboardInterrupt:
        shutil.rmtree(tmp or "/nonexistent", ignore_errors=True)
        _release(lock, [] if state["installed"] else created)
        lock = None
        if state["installed"]:
            raise Interrupted(f"interrupted after writing the outputs to {outdir}") from None
        raise
    except BaseException:
        shutil.rmtree(tmp or "/nonexistent", ignore_errors=True)
        _release(lock, [] if state["installed"] else created)
        lock = None
        raise
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)
        _release(lock, [])
    if ver.verify and not report.ok:
        from .verify.quant import failure_line

        float_ok = all(v.get("ok") for v in report.verification.values())
        err = VerificationError((float_ok and failure_line(report.quantization.get("verification", {})))
                                or first_failure(report.verification))
        err.report = report
        raise err
    return report


class OutputLock:
    """One writer per output set: an exclusive ``flock`` on ``OUTDIR/.bnconvert.lock``.

    Taken before staging and held until the outputs are installed; a second run into the same
    folder fails at once (no waiting) with :class:`OutputError`.  The lock file is removed at the
    end; a run that takes the lock re-checks that the file it locked is still the one at the path
    (another run may have removed it in between) and retries otherwise.  A run killed with SIGKILL
    leaves the file, but never the lock (the kernel drops it), so the next run proceeds.
    """

    NAME = ".bnconvert.lock"

    def __init__(self, outdir: str):
        import fcntl

        self.path = os.path.join(outdir, self.NAME)
        for _ in range(20):
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
            except OSError as e:
                raise OutputError(f"{outdir}: cannot create the lock file ({e.strerror})") from e
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                raise OutputError(f"{outdir}: another bnconvert run is writing into this folder "
                                  f"(lock {self.NAME}); wait for it or choose another -o folder") from None
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except OSError:
                same = False
            if same:
                self.fd = fd
                return
            os.close(fd)  # removed by the run that held it: lock the new file instead
        raise OutputError(f"{outdir}: cannot take the lock {self.NAME}")

    def release(self) -> None:
        if self.fd is None:
            return
        try:
            os.remove(self.path)
        except OSError:
            pass
        os.close(self.fd)
        self.fd = None


def _release(lock, created) -> None:
    if lock is not None:
        lock.release()
    _remove_dirs(created)


class _unstaged:
    """Error messages name the final output path, never the staging folder (deleted at the end)."""

    def __init__(self, tmp: str, paths: dict[str, str]):
        self.tmp, self.paths = tmp, paths

    def __enter__(self):
        return self

    def __exit__(self, et, e, tb):
        from .errors import BNConvertError

        if isinstance(e, BNConvertError) and self.tmp in e.message:
            msg = e.message
            for p in self.paths.values():
                msg = msg.replace(os.path.join(self.tmp, os.path.basename(p)), p)
            e.message = msg.replace(self.tmp + os.sep, "").replace(self.tmp, os.path.dirname(self.tmp))
        return False


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


def _install(staged: dict[str, str], paths: dict[str, str], force: bool, state: dict) -> None:
    """Move staged files into place with SIGINT/SIGTERM held back, report last.

    ``state["installed"]`` becomes True once every file is in place (a signal held back is
    delivered as the mask is restored, i.e. before this function returns).
    Without ``force`` the "exists" check is made again here, at the moment of installing, and
    each file is put in place with ``link`` (which never replaces); if one appeared meanwhile,
    the files already linked are removed again and nothing of this run stays.
    """
    import signal

    sigs = {signal.SIGINT, signal.SIGTERM}
    old = signal.pthread_sigmask(signal.SIG_BLOCK, sigs)
    done: list[str] = []
    try:
        order = sorted(staged, key=lambda k: k == "report")
        if force:
            for kind in order:
                os.replace(staged[kind], paths[kind])
            state["installed"] = True
            return
        for kind in order:
            try:
                os.link(staged[kind], paths[kind])
            except FileExistsError:
                for p in done:
                    os.remove(p)
                raise OutputError(f"{paths[kind]} exists (pass --force to overwrite)") from None
            except OSError:  # a file system without hard links: the check made just before holds
                if os.path.exists(paths[kind]):
                    for p in done:
                        os.remove(p)
                    raise OutputError(f"{paths[kind]} exists (pass --force to overwrite)") from None
                os.replace(staged[kind], paths[kind])
            done.append(paths[kind])
        state["installed"] = True
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def _prepare(source, tmp: str, paths: dict[str, str], opts: ConvertOptions):
    """Load and fold in a child process (:mod:`bnconvert.prepare`); the staged files and facts.

    ``source``: the model's path, or a :class:`Model` the library caller loaded (written into
    the staging folder first, and named in the report as the caller's model).
    """
    from . import isolate
    from .prepare import FOLDED_INPUT, SOURCE

    meta = None
    if isinstance(source, Model):
        meta = {"path": source.path, "format": source.format, "sha256": source.sha256,
                "repairs": dict(source.repairs or {}), "inputs": source.inputs, "outputs": source.outputs}
        staged_source = os.path.join(tmp, SOURCE)
        write_graph_def(source.graph_def, staged_source, what="the model")
        source = staged_source
    graph_name = os.path.basename(paths["pb"]) if "pb" in opts.export.to else FOLDED_INPUT
    with progress.stage("load and fold", final_line=False):
        prep = isolate.run_stage("loading and folding", "bnconvert.prepare:prepare",
                                 dict(source=os.fspath(source), tmp=tmp, graph_name=graph_name, opts=opts,
                                      source_meta=meta, proto_limits=_proto_limits()))
    t = prep.report.timings
    progress.done("load", t.get("load", 0.0))
    progress.done("fold", t.get("inference_mode", 0.0) + t.get("match_fold", 0.0), len(prep.report.layers), "BN")
    if "pb" in opts.export.to:
        progress.done("export pb", t.get("write_pb", 0.0))
    return prep


def _proto_limits() -> dict[str, int]:
    """The protobuf size limits in force here (read at call time: the loader's, and the one for
    writing the folded graph), for the child that loads and folds."""
    import importlib

    return {"load": importlib.import_module("bnconvert.load").MAX_PROTO_BYTES, "write": MAX_PROTO_BYTES}


def _jobs(opts: ConvertOptions, prep) -> int:
    """How many stages run at once (:func:`bnconvert.schedule.jobs`), noted in the report."""
    from . import budget, schedule

    n = schedule.jobs(opts.jobs, os.path.getsize(prep.folded_path), budget.explicit())
    prep.report.jobs = n
    return n


def _export_all(prep, exp, tmp, paths, report, jobs: int = 1) -> dict[str, str]:
    """Convert the staged folded graph to ONNX and TFLite, each in a child process (side by
    side with ``jobs`` > 1, :mod:`bnconvert.schedule`).

    When ``exp.to`` was not given explicitly, a converter that cannot handle the graph
    (:class:`UnsupportedError`) skips its format: ``report.skipped[fmt]`` says why, a warning
    goes into the notes, the other formats are still written and verified.  An explicitly
    requested format that fails stops the run (exit 2).
    """
    from . import isolate, schedule

    staged: dict[str, str] = {}
    r = report
    graph_path = prep.folded_path
    if "pb" in exp.to:
        staged["pb"] = graph_path
    else:
        staged["_graph"] = graph_path
    stages = {
        "onnx": ("the ONNX export (tf2onnx)", "bnconvert.export.onnx:export_onnx",
                 dict(inputs=r.inputs, outputs=r.outputs, opset=exp.opset, input_shapes=exp.input_shapes,
                      bn_form=exp.bn_form)),
        "tflite": ("the TFLite export (TFLite converter)", "bnconvert.export.tflite:export_tflite",
                   dict(inputs=r.inputs, outputs=r.outputs, input_shapes=r.input_shapes)),
    }
    todo = []
    for fmt in ("onnx", "tflite"):
        if fmt not in exp.to:
            continue
        if not r.inputs:  # a graph whose inputs are baked in as constants: the converters need one
            why = "the graph has no input placeholder (its inputs are constants); the converter needs one"
            if exp.explicit_to:
                raise InputError(f"cannot write {fmt}: {why} (--to pb works)")
            _skip(r, fmt, why)
            continue
        todo.append(fmt)
    out = {fmt: os.path.join(tmp, os.path.basename(paths[fmt])) for fmt in todo}

    def export(fmt):
        stage, target, kwargs = stages[fmt]
        t = time.perf_counter()
        try:
            with progress.stage(f"export {fmt}"):
                return isolate.run_stage(stage, target, dict(graph_def=isolate.GraphFile(graph_path),
                                                              path=out[fmt], **kwargs))
        finally:
            r.timings[f"export_{fmt}"] = time.perf_counter() - t

    skippable = (lambda e: isinstance(e, UnsupportedError)) if not exp.explicit_to else (lambda e: False)
    results = schedule.parallel([lambda fmt=fmt: export(fmt) for fmt in todo], jobs, keep=skippable)
    for fmt, res in zip(todo, results):
        if isinstance(res, UnsupportedError):
            _skip(r, fmt, str(res))
            continue
        r.exports[fmt] = res
        staged[fmt] = out[fmt]
    if not any(k in staged for k in FORMATS):
        raise UnsupportedError(f"no format could be written: {'; '.join(f'{k}: {v}' for k, v in r.skipped.items())}")
    return staged


def _memory(child_peaks: dict) -> dict:
    """Peak resident MiB: this process and each child stage (loading and folding included), largest first."""
    import resource

    own = {"main process": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}
    return {**own, **dict(sorted(child_peaks.items(), key=lambda kv: -kv[1]))}


def _skip(report, fmt: str, why: str) -> None:
    report.skipped[fmt] = why
    report.notes.append(f"warning: {fmt} skipped: {why}")
