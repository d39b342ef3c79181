"""The library API: load → inference mode → match → fold → export → verify → report.

    import bnconvert
    model = bnconvert.load("model.pb")
    result = bnconvert.fold(model)                 # FoldedModel: .graph_def, .report
    report = bnconvert.convert("model.pb", outdir="out", to=("pb", "onnx", "tflite"))

The CLI is a thin layer over these functions; everything it can do, they can.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass

from . import inference
from .analysis import analyze
from .errors import InputError
from .fold import fold_all
from .graph import Graph, node_of
from .load import Model
from .load import load as _load
from .options import FORMATS, ConvertOptions, VerifyOptions
from .report import BN_OPS, Report
from .verify.check import naming as _naming

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
    a = analyze(m, inputs=inputs, outputs=outputs, set_flags=set_flags)
    g, inf, ins, outs = a.graph, a.inference, a.inputs, a.outputs
    report.ops_before = _bn_ops(a.op_histogram_before)
    report.training_flags = inf.flags
    report.inference = {
        "switches_resolved": inf.switches_resolved, "merges_resolved": inf.merges_resolved,
        "dead_nodes_removed": inf.dead_removed, "control_deps_dropped": inf.control_deps_dropped,
    }
    report.inputs, report.outputs = ins, outs
    report.outputs_guessed, report.output_candidates = a.outputs_guessed, a.output_candidates
    g.prune(outs, keep=[node_of(t) for t in ins])
    report.timings["inference_mode"] = time.perf_counter() - t0
    t1 = time.perf_counter()
    result = fold_all(g, outs, mode=mode, only=set(only) if only else None, keep_going=keep_going)
    inference.place_constants_in_frames(g)  # new weights read inside a while loop enter its frame
    g.prune(outs, keep=[node_of(t) for t in ins])
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
def convert(path: str, outdir: str | None = None, **options) -> Report:
    """``bnconvert fold``: load, fold, export, verify, write the report; returns the :class:`Report`.

    Files go to ``outdir`` (default: the input's folder) as ``<stem>.folded.pb``,
    ``<stem>.onnx``, ``<stem>.tflite`` and ``<stem>.report.json``.  ``options`` are the CLI's
    (see :mod:`bnconvert.options`): ``to``, ``verify``, ``force``, ``inputs``, ``outputs``,
    ``set_flags``, ``mode``, ``only``, ``opset``, ``batch``, ``input_shapes``, ``data``,
    ``providers``, ``atol``, ``rtol``, ``allow_unsafe``, ``seed``, ``max_memory``.  Nothing is left behind on
    failure; when verification fails the files are written and :class:`VerificationError`
    (exit code 1, ``.report`` attached) is raised.
    """
    from . import pipeline

    return pipeline.convert(path, outdir, ConvertOptions.from_kwargs(**options))


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
    from .errors import VerificationError
    from .verify.check import first_failure, verify_converted
    from . import budget
    from .verify.inputs import resolve_shapes

    budget.check_batch(batch)
    if max_memory is not None:
        budget.configure(max_memory)
    if not os.path.exists(converted):
        raise InputError(f"{converted}: no such file or directory")
    with _naming(original):
        model = _as_model(original, allow_unsafe=allow_unsafe)
        info = analyze(model, inputs=inputs, outputs=outputs, set_flags=set_flags)
        shapes = resolve_shapes(model.graph_def, info.inputs, input_shapes, batch=batch)
    vopts = VerifyOptions(data=data, providers=providers, atol=atol, rtol=rtol, seed=seed)
    result = verify_converted(model, converted, info, shapes, vopts, allow_unsafe=allow_unsafe)
    if raise_on_failure and not all(v["ok"] for v in result.values()):
        err = VerificationError(first_failure(result))
        err.report = Report(verification=result)
        raise err
    return result
