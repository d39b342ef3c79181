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

import numpy as np

from .. import progress
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
    """One feed dict (tools/gpu_check.py): ``data`` (.npz) if given, else seeded random ones."""
    from ..tfproto import np_dtype
    from .inputs import load_npz_inputs, random_inputs

    if data:
        return load_npz_inputs(data, inputs)
    g = Graph(graph_def)
    dtypes = {t: np_dtype(g.node(t).attr["dtype"].type) for t in inputs}
    return random_inputs(shapes, dtypes, seed=seed)


def make_samples(declared_batch: dict, dtypes: dict, inputs, shapes, vopts, fixed_batch: int | None = None):
    """``(runs, info)``: the verification inputs as a list of feed dicts and their description.

    ``--data`` gives one run of the user's arrays; otherwise :func:`inputs.sample_runs` draws
    ``vopts.samples`` seeded samples.  The batch is free when every input's declared dim 0 is
    unknown (``declared_batch``: -1; None for an unknown rank or a scalar) and no exported model
    fixes it (``fixed_batch``, e.g. an ONNX with a static batch).  ``dtypes``: numpy dtypes.
    """
    from .inputs import load_npz_inputs, sample_runs

    if vopts.data:
        feeds = load_npz_inputs(vopts.data, inputs)
        first = np.asarray(next(iter(feeds.values()))) if feeds else np.zeros(())
        return [feeds], {"source": os.fspath(vopts.data), "samples": int(first.shape[0]) if first.ndim else 1,
                         "runs": 1}
    bad = next((dtypes[t] for t in inputs if isinstance(dtypes.get(t), str)), None)
    if bad is not None:
        raise InputError(bad)
    free = fixed_batch is None and batch_free(declared_batch, inputs, shapes)
    shapes = {t: ([fixed_batch] + list(s[1:]) if fixed_batch and len(s) else list(s)) for t, s in shapes.items()}
    return sample_runs(shapes, {t: dtypes[t] for t in inputs}, free, vopts.samples, vopts.seed)


def batch_free(declared_batch: dict, inputs, shapes) -> bool:
    """Every input with a batch dimension declares it unknown (``declared_batch``: -1)."""
    # scalars (rank 0: keep_prob, a temperature) have no batch dimension and do not decide it
    declared = {t: declared_batch.get(t) for t in inputs if len(shapes.get(t, [0])) > 0}
    return all(d is not None and d < 0 for d in declared.values())


def layer_head(declared_batch: dict, inputs, shapes, fixed_batch: int | None = None, onnx_inputs=None) -> bool:
    """Whether cut layer tensors (``layer_rows``) may be computed on each run's first rows alone:
    only where the original's batch is free and no converted model fixes it (``fixed_batch``;
    ``onnx_inputs``: an ONNX model's ``[{"shape", "dtype"}]``, none with a static dim 0).

    Every runtime and the reference follow this one choice.  In a graph whose rows are not
    independent (a mean over the batch, a BN left in training mode) the first rows computed
    alone differ from the first rows of the whole run: a runtime computing its layers one way
    and the reference the other failed a correct model (an ONNX with a fixed batch beside an
    original with a free one, or the reverse)."""
    onnx_fixed = any(i.get("shape") and isinstance(i["shape"][0], int) and i["shape"][0] > 0
                     and i.get("dtype") != "bool" for i in onnx_inputs or ())
    return fixed_batch is None and not onnx_fixed and batch_free(declared_batch, inputs, shapes)


def declared_batches(graph_def, inputs) -> dict:
    """Each input's declared dim 0 in ``graph_def`` (-1 unknown; None: unknown rank, a scalar, absent)."""
    declared = {}
    for t in inputs:
        node = next((n for n in graph_def.node if n.name == node_of(t)), None)
        shp = node.attr["shape"].shape if node is not None and "shape" in node.attr else None
        declared[t] = None if shp is None or shp.unknown_rank or not shp.dim else shp.dim[0].size
    return declared


def graph_samples(graph_def, inputs, shapes, vopts, fixed_batch: int | None = None):
    """:func:`make_samples` for a GraphDef held in memory (``verify``: model vs converted file)."""
    from .inputs import placeholder_dtypes

    return make_samples(declared_batches(graph_def, inputs), placeholder_dtypes(graph_def, inputs), inputs, shapes,
                        vopts, fixed_batch)


def check_providers(providers) -> None:
    """Refuse an unusable onnxruntime provider before any work (one line, exit 2)."""
    if "cuda" not in tuple(providers or ()):
        return
    from .runners import import_onnxruntime

    try:
        ort = import_onnxruntime()
    except ImportError:
        raise InputError("--providers cuda: onnxruntime is not installed") from None
    have = ort.get_available_providers()
    if "CUDAExecutionProvider" not in have:
        raise InputError(f"--providers cuda: the CUDA execution provider is not available in this onnxruntime "
                         f"(available: {', '.join(have)}); install onnxruntime-gpu or use --providers cpu")


def reference_run(graph_def, runs, outputs, probes, flags, allow_unsafe, what, notes: list, also_candidates=False,
                  more: list[str] = (), names=None, layer_budget: int | None = None, layer_head: bool = True):
    """The original graph on every run: ``(outputs, {tensor: array})`` for each probe's original
    tensor (and, with ``also_candidates``, its candidate tensor where the original graph has it).
    ``graph_def``: a GraphDef or a binary GraphDef file (then ``names``: its node names).
    If the probe tensors cannot be fetched (e.g. one lies in a branch the flags switch off), the
    outputs alone.  Returns ``(outputs, layer tensors, rows)``: the layer tensors hold the first
    ``rows`` rows of each run (None: all; ``layer_budget`` bytes, default
    :data:`bnconvert.verify.runners.LAYER_BYTES`), and every runtime compared with them is cut
    the same way (``layer_head``: :func:`layer_head`)."""
    from .inputs import concat_runs
    from .runners import LAYER_BYTES, run_tf_many

    names = set(names) if names is not None else {n.name for n in graph_def.node}
    first = [t for p in probes for t in ((p.original, p.candidate) if also_candidates else (p.original,))
             if t not in outputs and node_of(t) in names]
    first = list(dict.fromkeys(first))
    second = [t for t in dict.fromkeys(more) if t not in outputs and t not in first]
    attempts = [first + second, first, []] if second else [first, []]
    for i, extra in enumerate(attempts):
        fetch = list(outputs) + extra
        try:
            results, rows = run_tf_many(graph_def, runs, fetch, flags=flags, allow_unsafe=allow_unsafe, what=what,
                                        stage="TensorFlow (original graph)", n_outputs=len(outputs),
                                        layer_budget=layer_budget or LAYER_BYTES, layer_head=layer_head)
            got = concat_runs(results)
            del results
            break
        except BNConvertError as e:
            from ..isolate import StageCrashed, StageTimeout

            if i == len(attempts) - 1 or not extra or isinstance(e, (StageCrashed, StageTimeout)):
                raise
            notes.append(f"some layers not compared: the original graph cannot compute them ({e})")
    if not extra:
        probes.clear()
    return {o: got[o] for o in outputs}, {t: got[t] for t in extra}, rows


def _layer_rows(probes, lref: dict, got: dict, pick, either: bool = False) -> tuple[list, list[str]]:
    """``compare`` layer rows for the probes this runtime produced; notes for the others.

    ``either`` (a converted file made by anything): a tensor named like the folded graph's
    replacement may hold the *unfolded* value (a plain export keeps the pre-BN tensor under that
    name), so it is compared with the BN output and with its own value in the original graph,
    and the closer counts.  A folded model with an error is far from the pre-BN value, so the
    error still shows.
    """
    from .expose import align

    rows, skipped = [], []
    for p in probes:
        t = pick(p)
        if t is None:
            names = dict.fromkeys((p.candidate, p.original))
            skipped.append(f"{p.name}: {' / '.join(repr(n) for n in names)} not in this model")
            continue
        ref = lref[p.original]
        label = p.label if t == p.candidate else p.original
        if either and t == p.candidate and t != p.original and t in lref and got.get(t) is not None:
            def dist(r):
                c = align(r, got[t])
                return float(np.nanmax(np.abs(np.asarray(r, np.float64) - np.asarray(c, np.float64)))) \
                    if np.shape(c) == np.shape(r) else float("inf")
            if dist(lref[t]) < dist(ref):
                ref, label = lref[t], f"{t} (unfolded)"
        rows.append((p.name, label, ref, got.get(t)))
    return rows, skipped


def onnx_run(path, runs, outputs, probes, provider, extra_feeds=None, layer_rows=None, layer_head=True):
    """ONNX Runtime on a copy of ``path`` that also outputs the probe tensors it has (child)."""
    from .inputs import concat_runs
    from .runners import run_onnx_probes

    results, found = run_onnx_probes(path, runs, outputs, [t for p in probes for t in (p.candidate, p.original)],
                                     provider, layer_rows=layer_rows, extra_feeds=extra_feeds, layer_head=layer_head)
    have = set(found)
    return concat_runs(results), lambda p: p.candidate if p.candidate in have else (p.original if p.original in have else None)


def verify_conversion(prep, staged: dict[str, str], report, vopts, allow_unsafe: bool = False,
                      jobs: int = 1) -> None:
    """Compare every staged file with the original graph; results go into ``report.verification``
    (one entry per runtime), ``report.verification_inputs`` and ``report.verification_power``.
    The original graph runs first (every runtime is compared with it); then the runtimes and
    the power check, ``jobs`` at a time.

    ``prep``: the :class:`~bnconvert.prepare.Prepared` of the run — the graphs are files there
    (each runtime's child reads its own), this process holds none of them."""
    from .inputs import concat_runs
    from .runners import onnx_runtime_label, run_tf_many

    check_providers(vopts.providers)
    tol = tolerances(vopts.atol, vopts.rtol)
    shapes = report.input_shapes
    fixed, onnx_inputs = None, None
    if "onnx" in staged:  # from the export's own record: loading a big .onnx here would cost its size
        record = report.exports.get("onnx")
        onnx_inputs = record.get("inputs") if record else onnx_input_shapes(staged["onnx"])
        fixed = static_batch(onnx_inputs)
    head = layer_head(prep.declared_batch, report.inputs, shapes, fixed, onnx_inputs)
    runs, info = make_samples(prep.declared_batch, prep.input_dtypes, report.inputs, shapes, vopts, fixed)
    report.verification_inputs = info
    probes, skipped = list(prep.probes), list(prep.probes_skipped)
    tfl = TFLiteLayers(staged["tflite"], prep.original_ops, report.outputs,
                       prep.fold_changed) if "tflite" in staged else None
    t = time.perf_counter()
    ref, lref, rows = reference_run(prep.original_path, runs, report.outputs, probes,
                                    {**prep.idle_feeds, **report.training_flags},
                              allow_unsafe, prep.source_path, report.notes, more=tfl.references if tfl else (),
                              names=prep.original_ops, layer_budget=vopts.layer_budget, layer_head=head)
    report.timings["verify_tf_original"] = time.perf_counter() - t
    if rows is not None:
        info["layer_rows"] = rows
        report.notes.append(f"layer tensors compared on the first {rows} row(s) of each run (all of them "
                            f"would exceed {vopts.layer_budget / 2**20:g} MiB); the outputs on every sample")
    tol = dtype_tolerances(ref, vopts.atol, vopts.rtol, tol, report.notes)
    outs = report.outputs
    power = None  # the power check: on the folded graph's own session when it runs anyway
    if vopts.power:
        from .power import in_session

        refs = [(p.name, p.candidate, lref[p.original]) for p in probes if p.original in lref]
        free = head and info.get("source") == "random" and info.get("runs") == 1  # sample_runs: one run = free batch
        power = in_session(prep.power_targets, runs, outs, ref, tol, info.get("samples"), refs, rows, free)
        if power is None:
            report.verification_power = {}
    entries, beside = [], []
    if "pb" in staged:
        def tf_folded():
            fetch = list(outs) + [p.candidate for p in probes if p.candidate not in outs]
            then = power if power is None or power[1]["runs"] is not runs else (power[0], {**power[1], "runs": None})
            out = run_tf_many(prep.folded_path, runs, fetch, allow_unsafe=allow_unsafe,
                              stage="TensorFlow (folded graph)", n_outputs=len(outs), layer_rows=rows, then=then,
                              layer_head=head)
            if power is not None:
                report.verification_power = _noted(report, out[2])
                report.timings["verify_power"] = report.verification_power.pop("seconds", 0.0)
            return concat_runs(out[0]), lambda p: p.candidate
        entries.append(("tf:folded", staged["pb"], tf_folded))
    elif power is not None:
        from .power import run_alone

        def power_alone():
            t = time.perf_counter()
            with progress.stage("verify power"):
                report.verification_power = _power_or_note(report, lambda: run_alone(prep.folded_path, power,
                                                                                     allow_unsafe))
            report.verification_power.pop("seconds", None)
            report.timings["verify_power"] = time.perf_counter() - t
        beside.append(power_alone)
    if "onnx" in staged:
        for prov in vopts.providers:
            entries.append((onnx_runtime_label(prov), staged["onnx"],
                            lambda prov=prov: onnx_run(staged["onnx"], runs, outs, probes, prov, layer_rows=rows,
                                                       layer_head=head)))
    if "tflite" in staged:
        entries.append(("tflite", staged["tflite"], lambda: tfl.run(staged["tflite"], runs, outs, layer_rows=rows,
                                                                   layer_head=head)))
    report.verification.update(compare_runs(ref, lref, probes, skipped, entries, tol, info, report.timings,
                                            jobs=jobs, beside=beside))
    if vopts.save_io:
        save_io(vopts.save_io, runs, ref)


def _noted(report, power: dict) -> dict:
    """The power check's result; one that says ``{"error": message}`` also becomes a note."""
    if set(power) == {"error"}:
        report.notes.append(f"verification power not measured: {power['error']}")
    return power


def _power_or_note(report, measure) -> dict:
    """The power check's result; when it cannot run (TensorFlow refuses the perturbed feed, a
    stage fails), a note saying so — it measures the check, it is not part of the verdict."""
    from ..isolate import StageCrashed, StageTimeout

    try:
        return measure()
    except (StageCrashed, StageTimeout):
        raise
    except BNConvertError as e:
        return _noted(report, {"error": str(e)})


def compare_runs(ref: dict, lref: dict, probes: list, skipped: list[str], entries: list, tol: dict, info: dict,
                 timings: dict | None = None, note: str = "", either: bool = False, jobs: int = 1,
                 beside: list = ()) -> dict[str, dict]:
    """Run each ``(runtime, file, fn)`` and compare with the reference.  ``fn()`` returns
    ``(tensors, pick)``: ``pick(probe)`` names the tensor holding that layer, or ``pick`` is a
    :class:`TFLiteLayers` (intermediates matched by their fused names).

    The runtimes run ``jobs`` at a time (:func:`bnconvert.schedule.parallel`), together with the
    calls ``beside`` (the power check: they keep their own results).  Each runtime is compared
    as soon as its results arrive, in the thread that waited for them, and its tensors are
    dropped then: this process holds the reference and at most ``jobs`` runtimes' tensors, not
    every runtime's (DenseNet-121: ~100 MB of layer rows each).  The result keeps the order of
    ``entries``."""
    from .. import schedule
    from .compare import compare as compare_outputs

    def checked(runtime, file, fn):
        t = time.perf_counter()
        try:
            with naming(file), progress.stage(f"verify {runtime}"):
                got, pick = fn()
        finally:
            if timings is not None:
                timings[f"verify_{runtime}"] = time.perf_counter() - t
        notes = [n for n in ("TF32 off (use_tf32=0)" if "CUDA" in runtime else "", note) if n]
        if isinstance(pick, TFLiteLayers):
            rows, miss = pick.rows(lref, got)
        else:
            rows, miss = _layer_rows(probes, lref, got, pick, either)
        return compare_outputs(ref, got, runtime=runtime, file=os.path.basename(file), note="; ".join(notes),
                               samples=info.get("samples"), layers=rows, layers_skipped=list(skipped) + miss,
                               **tol).to_dict()

    calls = [lambda e=e: checked(*e) for e in entries] + list(beside)
    done = schedule.parallel(calls, jobs)[:len(entries)]
    return {runtime: c for (runtime, _, _), c in zip(entries, done)}


class TFLiteLayers:
    """Layer-by-layer for TFLite: every intermediate tensor of the flatbuffer (read with
    ``experimental_preserve_all_tensors``) whose name lists TF ops of the original graph.

    The converter fuses ops and names the fused tensor by all of them (``relu1;conv1/BiasAdd;
    conv1/Conv2D``); the tensor holds the value of one of them, so it is compared with each
    original tensor named and the closest counts (a wrong kernel is far from all of them).  Ops
    whose reference is constant (shapes, indices) are not compared.  The BN boundary itself is
    usually fused away (bias and Relu in one kernel), so these are the tensors around it."""

    PREFIX = "tflite:"

    #: ops whose output snaps to a grid: a one-step rounding difference between TF and TFLite is
    #: expected there (the outputs still have to agree), so tensors fused with them are not compared
    ROUNDING_OPS = ("FakeQuantWithMinMaxVars", "FakeQuantWithMinMaxArgs", "FakeQuantWithMinMaxVarsPerChannel",
                    "QuantizeAndDequantizeV2", "QuantizeAndDequantizeV3", "QuantizeAndDequantizeV4")

    def __init__(self, path, original_names: dict[str, str], outputs: list[str], changed: set[str] = frozenset()):
        from .runners import tflite_interpreter

        it = tflite_interpreter(path)
        details = {d["index"]: d for d in it.get_tensor_details()}
        skip = {node_of(o) for o in outputs} | set(changed)  # changed: see layers.fold_changed
        self.tensors: list[tuple[str, list[str]]] = []
        for op in it._get_ops_details():
            for i in op["outputs"]:
                d = details.get(i)
                if d is None or np.dtype(d["dtype"]).kind != "f":
                    continue
                named = list(dict.fromkeys(d["name"].split(";")))
                if any(p not in original_names for p in named):
                    continue  # fused with an op bnconvert wrote: its value may be that op's, not an original's
                if any(original_names[p] in self.ROUNDING_OPS for p in named):
                    continue
                parts = [p for p in named if p not in skip]
                if parts:
                    self.tensors.append((d["name"], [f"{p}:0" for p in parts]))

    @property
    def references(self) -> list[str]:
        return list(dict.fromkeys(t for _, parts in self.tensors for t in parts))

    def run(self, path, runs, outs, extra=None, layer_rows=None, layer_head=True):
        from .inputs import concat_runs
        from .runners import run_tflite_layers

        results = run_tflite_layers(path, [{**f, **(extra or {})} for f in runs], outs, layer_rows, self.PREFIX,
                                    only=[name for name, _ in self.tensors],  # what rows() compares, no more
                                    layer_head=layer_head)
        return concat_runs(results), self

    def rows(self, lref: dict, got: dict) -> tuple[list, list[str]]:
        from .compare import reference_constant
        from .expose import align

        rows = []
        for name, parts in self.tensors:
            cand = got.get(self.PREFIX + name)
            refs = [(p, lref[p]) for p in parts if p in lref and not reference_constant(lref[p])]
            if cand is None or not refs:
                continue

            def dist(r):
                c = align(r, cand)
                return float(np.nanmax(np.abs(np.asarray(r, np.float64) - np.asarray(c, np.float64)))) \
                    if np.shape(c) == np.shape(r) else float("inf")
            best, ref = min(refs, key=lambda pr: dist(pr[1]))
            if dist(ref) == float("inf"):
                continue  # no original tensor of its shape (e.g. a weight named after its layer)
            rows.append((node_of(best), f"{best} (tflite '{name}')", ref, cand))
        return rows, ([] if rows else ["tflite: no intermediate tensor of the .tflite names a tensor of the original"])


def save_io(folder, runs: list[dict], ref: dict) -> None:
    """``inputs.npz`` / ``expected.npz`` (the first run; ``inputs_1.npz`` … for more runs of a
    fixed batch), keyed by TF tensor names: what ``bnconvert verify-onnx`` takes."""
    from .inputs import save_npz

    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as e:
        raise OutputError(f"{folder}: cannot create the --save-io folder ({e.strerror})") from None
    start = 0
    for i, feeds in enumerate(runs):
        n = int(np.shape(next(iter(feeds.values())))[0]) if len(runs) > 1 else None
        sfx = "" if i == 0 else f"_{i}"
        save_npz(os.path.join(folder, f"inputs{sfx}.npz"), feeds)
        part = {k: (v[start:start + n] if n else v) for k, v in ref.items()}
        save_npz(os.path.join(folder, f"expected{sfx}.npz"), part)
        start += n or 0


def first_failure(verification: dict) -> str:
    """One line naming the first runtime and output (or layer) that failed, or why the check
    is inconclusive."""
    for runtime, v in verification.items():
        if v.get("ok"):
            continue
        if v.get("status") == "inconclusive":
            const = next((o for o in v.get("outputs", []) + v.get("layers", []) if o.get("constant")), {})
            what = "output" if const in v.get("outputs", []) else "layer"
            return (f"verification inconclusive: the original's {what} {const.get('name')} is {const.get('constant')} "
                    f"on these inputs, so no error can show; verify with real inputs: --data inputs.npz")
        bad_layer = next((o for o in v.get("layers", []) if not o.get("ok")), None)
        for o in v.get("outputs", []):
            if not o.get("ok") and str(o.get("reason", "")).startswith(("NaN", "inf", "shape", "missing")):
                return f"verification failed: {v.get('file', runtime)} ({runtime}) output {o.get('name')}: {o['reason']}"
            if not o.get("ok"):
                where = (f"; first wrong layer {bad_layer['name']} (max rel {bad_layer['max_rel']:.3g})"
                         if bad_layer else "")
                return (f"verification failed: {v.get('file', runtime)} ({runtime}) output {o.get('name')}: "
                        f"{_err(o)} (atol {v.get('atol')}, rtol {v.get('rtol')}){where}")
        if bad_layer:
            return (f"verification failed: {v.get('file', runtime)} ({runtime}) layer {bad_layer['name']} "
                    f"({bad_layer.get('tensor')}): {_err(bad_layer)}, although the outputs agree "
                    f"(atol {v.get('atol')}, rtol {v.get('rtol')})")
        return f"verification failed: {runtime}"
    return "verification failed"


def _err(o: dict) -> str:
    if o.get("reason") and not isinstance(o.get("max_abs"), float):
        return o["reason"]
    try:
        return f"max abs error {float(o.get('max_abs')):.3g}, max rel error {float(o.get('max_rel')):.3g}"
    except (TypeError, ValueError):
        return o.get("reason") or "differs"


def static_batch(inputs_info) -> int | None:
    """The static dim 0 shared by the data inputs of an export record (``[{name, shape, dtype}]``,
    :func:`bnconvert.export.onnx.export_onnx`), else None."""
    dims = {(i["shape"][0] if isinstance(i["shape"][0], int) and i["shape"][0] > 0 else None)
            for i in inputs_info or () if i.get("shape") and i.get("dtype") != "bool"}
    return dims.pop() if len(dims) == 1 and None not in dims else None


def onnx_input_shapes(path) -> list[dict]:
    """``[{"shape", "dtype"}]`` of an ONNX model's inputs that are not initializers (a dim:
    its value, None when symbolic or unknown); ``[]`` for an unreadable model."""
    import onnx

    try:
        m = onnx.load(path, load_external_data=False)
    except Exception:  # noqa: BLE001 - an unreadable model fails later with its own message
        return []
    inits = {i.name for i in m.graph.initializer}
    return [{"shape": [d.dim_value if d.HasField("dim_value") else None for d in i.type.tensor_type.shape.dim],
             "dtype": onnx.TensorProto.DataType.Name(i.type.tensor_type.elem_type).lower()}
            for i in m.graph.input if i.name not in inits]


def converted_inputs(path: str) -> list[tuple[str, list, str, bool]]:
    """``[(name, shape, dtype, required)]`` of an ONNX or TFLite model's inputs.  Not required:
    an ONNX model's inputs that have a default (onnxruntime's overridable initializers: tf2onnx
    writes a ``PlaceholderWithDefault`` so; in a model of IR version < 4 every weight is one)."""
    from .runners import onnx_session, tflite_interpreter

    if path.endswith(".onnx"):
        sess = onnx_session(path, "cpu")
        return [(i.name, list(i.shape), i.type, True) for i in sess.get_inputs()] + \
            [(i.name, list(i.shape), i.type, False) for i in sess.get_overridable_initializers()]
    it = tflite_interpreter(path)
    return [(d["name"], list(d["shape"]), str(np.dtype(d["dtype"])), True) for d in it.get_input_details()]


def flag_feeds(path: str, inputs: list[str], flags: dict[str, bool]) -> tuple[dict, str]:
    """Training flags the converted model still takes as inputs, fed as False (or as set), and
    a clear error for inputs on either side that the other lacks.

    A flag the converted model gives a default (an ONNX optional input: tf2onnx's
    ``PlaceholderWithDefault``, ``is_training`` defaulting to true) is not fed: the model is
    verified as it runs when nobody feeds it, the way it ships (feeding false would hide a
    default that keeps it in training mode); the note says so."""
    have = converted_inputs(path)
    required = {n for n, _, _, req in have if req}
    names = [n for n, _, _, _ in have]
    norm = {_bare(n): (n, shape, dtype) for n, shape, dtype, req in have if req}
    defaults = {_bare(n): n for n, _, _, req in have if not req}
    extra, fed, kept = {}, [], []
    for flag, value in flags.items():
        hit = norm.get(_bare(flag))
        if hit is None and _bare(flag) in defaults:
            kept.append(defaults[_bare(flag)])
        if hit is not None:
            from .runners import _ORT_TYPES

            shape = [d if isinstance(d, int) and d > 0 else 1 for d in hit[1]]
            dtype = _ORT_TYPES.get(hit[2], None) or np.dtype(hit[2].replace("tensor(", "").rstrip(")"))
            extra[hit[0]] = np.full(shape, value, dtype=dtype)
            fed.append(f"{hit[0]}={str(value).lower()}")
    rest = [n for n in names if n not in extra]
    missing = [t for t in inputs if _bare(t) not in {_bare(n) for n in rest}]
    unknown = [n for n in rest if n in required and _bare(n) not in {_bare(t) for t in inputs}]
    by_order_ok = path.endswith(".tflite") and len(rest) == len(inputs)  # TFLite may rename; run_tflite matches by order
    if (missing or unknown) and not by_order_ok:
        if missing:
            raise InputError(f"the converted model has no input for '{missing[0]}' (its inputs: "
                             f"{', '.join(n for n in names if n in required)}; the original's: {', '.join(inputs)})")
        raise InputError(f"the converted model takes input '{unknown[0]}', which is neither an input of the "
                         f"original ({', '.join(inputs)}) nor a training flag; name the inputs with --inputs")
    notes = (["fed " + ", ".join(fed)] if fed else []) + \
        [f"{n} not fed: the converted model has a default for it (verified as it runs unfed)" for n in kept]
    return extra, "; ".join(notes)


def _bare(name: str) -> str:
    import re

    name = re.sub(r"^serving_default_", "", name)
    return name[:-2] if name.endswith(":0") else name


def verify_converted(model, converted: str, analysis, shapes, vopts, allow_unsafe: bool = False) -> dict[str, dict]:
    """Compare ``converted`` (.pb/.pbtxt, .onnx or .tflite) with ``model`` run in TF.

    ``analysis`` gives the inputs, outputs, training flags and layers (``.inputs``, ``.outputs``,
    ``.training_flags``, ``.layers``); ``shapes`` the concrete input shapes.  Training flags the
    converted model takes as inputs are fed (False); an ONNX with a static batch gets runs of it.
    The description of the inputs is in the returned dict's ``"inputs"`` entry of each runtime.
    """
    from ..load import load
    from .inputs import concat_runs
    from .layers import fold_changed, layer_probes
    from .runners import onnx_runtime_label, run_tf_many

    if not os.path.exists(converted):
        raise InputError(f"{converted}: no such file or directory")
    check_providers(vopts.providers)
    ins, outs = analysis.inputs, analysis.outputs
    flags = getattr(analysis, "training_flags", None) or getattr(analysis, "flags", None) or {}
    kind = "onnx" if converted.endswith(".onnx") else "tflite" if converted.endswith(".tflite") else "pb"
    extra, fed_note = ({}, "")
    onnx_inputs = onnx_input_shapes(converted) if kind == "onnx" else None
    fixed = static_batch(onnx_inputs) if kind == "onnx" else None
    if kind != "pb":
        with naming(converted):
            extra, fed_note = flag_feeds(converted, ins, flags)
    conv = load(converted, allow_unsafe=allow_unsafe) if kind == "pb" else None
    head = layer_head(declared_batches(model.graph_def, ins), ins, shapes, fixed, onnx_inputs)
    if conv is not None:  # the converted graph computes its layers on the first rows too, or none does
        head = head and batch_free(declared_batches(conv.graph_def, ins), ins, shapes)
    with naming(model.path):
        runs, info = graph_samples(model.graph_def, ins, shapes, vopts, fixed)
        probes, skipped = layer_probes(model.graph_def, None, analysis.layers, outs)
        notes: list[str] = []
        tfl = TFLiteLayers(converted, {n.name: n.op for n in model.graph_def.node}, outs,
                           fold_changed(model.graph_def, analysis.layers)) if kind == "tflite" else None
        ref, lref, rows = reference_run(model.graph_def, runs, outs, probes, flags, allow_unsafe, model.path, notes,
                                        also_candidates=True, more=tfl.references if tfl else (),
                                        layer_budget=getattr(vopts, "layer_budget", None), layer_head=head)
    tol = dtype_tolerances(ref, vopts.atol, vopts.rtol, tolerances(vopts.atol, vopts.rtol), [])
    entries = []
    if kind == "onnx":
        for prov in vopts.providers:
            entries.append((onnx_runtime_label(prov), converted,
                            lambda prov=prov: onnx_run(converted, runs, outs, probes, prov, extra, rows, head)))
    elif kind == "tflite":
        entries.append(("tflite", converted, lambda: tfl.run(converted, runs, outs, extra, rows, head)))
    else:
        present = {k: v for k, v in flags.items() if node_of(k) in {n.name for n in conv.graph_def.node}}
        conv_nodes = {n.name for n in conv.graph_def.node}

        def tf_conv():
            fetch = list(outs) + [t for p in probes for t in (p.candidate, p.original)
                                  if node_of(t) in conv_nodes and t not in outs]
            fetch = list(dict.fromkeys(fetch))
            try:
                results, _ = run_tf_many(conv.graph_def, runs, fetch, flags=present, allow_unsafe=allow_unsafe,
                                         what=converted, n_outputs=len(outs), layer_rows=rows, layer_head=head)
                got = concat_runs(results)
            except BNConvertError:  # the layers cannot be fetched: the outputs alone, still one child
                results, _ = run_tf_many(conv.graph_def, runs, outs, flags=present, allow_unsafe=allow_unsafe,
                                         what=converted, layer_rows=None)
                got = concat_runs(results)
            return got, lambda p: next((t for t in (p.candidate, p.original) if t in got), None)
        entries.append(("tf:converted", converted, tf_conv))
    result = compare_runs(ref, lref, probes, skipped + notes, entries, tol, info, note=fed_note, either=True)
    for v in result.values():
        v["inputs"] = info
    if vopts.save_io:
        save_io(vopts.save_io, [{**f, **extra} for f in runs], ref)
    return result
