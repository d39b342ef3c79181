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

from . import endpoints, inference
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


def load(path: str, outputs: list[str] | None = None, allow_unsafe: bool = False) -> Model:
    """Read a .pb / .pbtxt / checkpoint / SavedModel into a checked, frozen :class:`Model`."""
    return _load(path, outputs=outputs, allow_unsafe=allow_unsafe)


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
def convert(path: str, outdir: str | None = None, **options) -> Report:
    """``bnconvert fold``: load, fold, export, verify, write the report; returns the :class:`Report`.

    Files go to ``outdir`` (default: the input's folder) as ``<stem>.folded.pb``,
    ``<stem>.onnx``, ``<stem>.tflite`` and ``<stem>.report.json``.  ``options`` are the CLI's
    (see :mod:`bnconvert.options`): ``to``, ``verify``, ``force``, ``inputs``, ``outputs``,
    ``set_flags``, ``mode``, ``only``, ``opset``, ``batch``, ``input_shapes``, ``data``,
    ``providers``, ``atol``, ``rtol``, ``allow_unsafe``, ``seed``.  Nothing is left behind on
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
    samples: int = 8,
    save_io: str | None = None,
    raise_on_failure: bool = True,
) -> dict[str, dict]:
    """Compare ``converted`` (.pb/.pbtxt, .onnx or .tflite, made by anything) with ``original``.

    Returns one entry per runtime (``"tf:converted"``, ``"onnx:CPUExecutionProvider"``, …) with
    per-output and per-layer statistics, ``status`` and the ``inputs`` used (``samples`` seeded
    random samples; ``save_io``: a folder for inputs.npz/expected.npz); raises :class:`VerificationError` on a mismatch unless
    ``raise_on_failure`` is False.
    """
    from .errors import VerificationError
    from .verify.check import first_failure, verify_converted
    from .verify.inputs import resolve_shapes

    if not os.path.exists(converted):
        raise InputError(f"{converted}: no such file or directory")
    from .verify.check import check_providers

    check_providers(providers)
    with _naming(original):
        model = _as_model(original, allow_unsafe=allow_unsafe)
        info = fold(model, inputs=inputs, outputs=outputs, set_flags=set_flags, keep_going=True).report
        shapes = resolve_shapes(model.graph_def, info.inputs, input_shapes, batch=batch)
    vopts = VerifyOptions(data=data, providers=providers, atol=atol, rtol=rtol, seed=seed, samples=samples,
                          save_io=save_io)
    result = verify_converted(model, converted, info, shapes, vopts, allow_unsafe=allow_unsafe)
    if raise_on_failure and not all(v["ok"] for v in result.values()):
        err = VerificationError(first_failure(result))
        err.report = Report(verification=result, verification_inputs=next(iter(result.values()), {}).get("inputs", {}))
        raise err
    return result
