"""Verification power: would this comparison, on these inputs, have caught a small error?

For the first and the last folded layer, output channel 0 of the folded weights is scaled by
``1 + e`` — the size of error a wrong epsilon or a misplaced fold leaves — and the folded graph
is run in TensorFlow on the same inputs with that weight fed in place of its constant (no copy
of the graph, no re-export).  Each run is judged twice by the rule of the real verification:
with the layer-by-layer tensors (``caught``: what the folded .pb and the .onnx are checked on)
and on the model outputs alone (``outputs_caught``: a runtime that exposes no layer).  ``e``
starts at 1%; if the outputs catch it, 0.1% is tried, if not, 10%.  The report records, per
layer, both verdicts per ``e`` and the smallest ``e`` each caught.
"""
from __future__ import annotations

import numpy as np

from ..graph import Graph, tensor_name

LEVELS = (0.01, 0.001, 0.1)


def _channel0(op: str, w: np.ndarray, transpose_b: bool) -> tuple:
    """Index selecting output channel 0 of a producer's weights (layouts as in fold.py)."""
    if op == "MatMul":
        return (0, slice(None)) if transpose_b else (slice(None), 0)
    if op == "DepthwiseConv2dNative":  # HWIM: channel 0 is input 0, multiplier 0
        return (slice(None), slice(None), 0, 0)
    if op == "Conv2DBackpropInput":  # HWOI
        return (slice(None), slice(None), 0, slice(None))
    return (Ellipsis, 0)  # Conv2D HWIO, Conv3D DHWIO


def targets(folded_gd, layers: list[dict]) -> list[tuple[str, str, dict]]:
    """The weights the check perturbs: ``(position, weight tensor, facts)`` for the first and the
    last folded layer, ``facts["w"]`` being the folded weight array (computed where the graph is
    loaded, :mod:`bnconvert.prepare`)."""
    g = Graph(folded_gd, copy_nodes=False)
    folded = [ly for ly in layers if ly.get("action") == "fold" and ly.get("producer") in g]
    if not folded:
        return []
    order = {n: i for i, n in enumerate(g.topo_order())}
    folded.sort(key=lambda ly: order.get(ly["producer"], 0))
    picks = [("first", folded[0])] + ([("last", folded[-1])] if len(folded) > 1 else [])
    out = []
    for pos, ly in picks:
        node = g.nodes[ly["producer"]]
        wt = _outside_frames(g, tensor_name(g.inputs(node)[1]))
        w = g.const(wt)
        if w is None or w.dtype.kind != "f":
            continue
        idx = _channel0(node.op, w, bool(g.attr(node, "transpose_b", False)))
        out.append((pos, wt, {"layer": ly["name"], "producer": node.name, "weights": wt, "w": w, "idx": idx}))
    return out


def _outside_frames(g: Graph, t: str) -> str:
    """The tensor to feed for weights ``t``: a weight read inside a while loop enters its frame
    through ``Enter`` (and maybe ``Identity``); TensorFlow refuses a feed inside the frame, so
    the constant outside it is fed instead (the same values reach the loop body)."""
    seen = set()
    while t not in seen:
        seen.add(t)
        node = g.nodes.get(t.split(":")[0])
        if node is None or node.op not in ("Enter", "RefEnter", "Identity") or not g.inputs(node):
            return t
        t = tensor_name(g.inputs(node)[0])
    return t


def run_alone(folded, spec: tuple[str, dict], allow_unsafe: bool = False) -> dict:
    """The check of :func:`in_session`'s ``spec`` in a child of its own (:func:`measure_power_here`),
    on the folded graph (a GraphDef or its binary file)."""
    from bnconvert import isolate

    with isolate.graph_file(folded) as src:
        return isolate.run_stage("TensorFlow (power check)", "bnconvert.verify.power:measure_power_here",
                                 dict(graph_def=src, allow_unsafe=allow_unsafe, **spec[1]))


def in_session(weight_targets: list, runs: list[dict], outputs: list[str], reference: dict, tol: dict,
               samples: int | None, layer_refs: list = (), layer_rows: int | None = None,
               free_batch: bool = False) -> tuple[str, dict] | None:
    """The check as ``("module:function", kwargs)``; None when no layer was folded.

    Its result is ``{"perturbation", "layers": [{layer, position, tried: {e: caught},
    outputs_tried, caught_1pct, smallest_caught, outputs_smallest_caught}], "caught_1pct",
    "seconds"}``.  ``weight_targets``: :func:`targets` of the folded graph.  ``layer_refs``:
    ``(layer name, tensor in the folded graph, reference)``, the references holding the first
    ``layer_rows`` rows of each run; with a free batch (``free_batch``, one run) the whole check
    then runs on those rows.

    It runs on the session of the folded graph that verification opens anyway (``then=`` of
    :func:`bnconvert.verify.runners.run_tf_many`: no second import of the graph), or in a child
    of its own (:func:`run_alone`), and sends back only the verdicts."""
    if not weight_targets:
        return None
    head = layer_rows is not None and free_batch and len(runs) == 1
    if head:
        # the layers are compared on the first rows only: so is the power check, outputs included
        runs = [{k: (v[:layer_rows] if np.ndim(v) else v) for k, v in runs[0].items()}]
        reference = {k: (v[:layer_rows] if np.ndim(v) else v) for k, v in reference.items()}
        samples = layer_rows
    return ("bnconvert.verify.power:power_with",
            dict(weight_targets=weight_targets, runs=runs, outputs=list(outputs), reference=reference, tol=tol,
                 samples=samples, layer_refs=list(layer_refs), layer_rows=layer_rows, head=head))


def measure_power_here(graph_def, weight_targets: list, runs: list[dict], outputs: list[str], reference: dict,
                       tol: dict, samples: int | None, allow_unsafe: bool = False,
                       layer_refs: list = (), layer_rows: int | None = None, head: bool = False) -> dict:
    """The power check on a session of its own, in this process."""
    from .runners import _tf_session

    with _tf_session(graph_def, allow_unsafe, "") as (run, _):
        return power_with(run, weight_targets, runs, outputs, reference, tol, samples, layer_refs, layer_rows, head)


def power_with(run, weight_targets: list, runs: list[dict], outputs: list[str], reference: dict, tol: dict,
               samples: int | None, layer_refs: list = (), layer_rows: int | None = None, head: bool = False) -> dict:
    """The check on an open session of the folded graph: ``run(feeds, fetch)`` →
    ``{name: array}`` (:func:`bnconvert.verify.runners._tf_session`).  ``head``: the runs are the
    first rows of the verification's run (:func:`in_session`), the reference's outputs that run's
    first rows; the unchanged graph is checked against them first — a graph whose rows depend
    on each other (a mean over the batch) gives other values on the first rows alone, and then
    every perturbation would look caught: the check says it cannot measure instead."""
    import time

    from .compare import compare
    from .inputs import concat_runs
    from .runners import trim_rows

    t0 = time.perf_counter()
    fetch = list(outputs) + list(dict.fromkeys(tn for _, tn, _ in layer_refs if tn not in outputs))
    if head:
        got = concat_runs([trim_rows(run(f, fetch), outputs, layer_rows) for f in runs])
        c = compare(reference, got, "power", "", samples=samples,
                    layers=[(name, tn, ref, got.get(tn)) for name, tn, ref in layer_refs], **tol)
        del got
        off = next((o for o in c.outputs + c.layers if not o.ok), None)
        if off is not None:
            return {"error": f"the unchanged folded graph already disagrees with the reference on the first "
                             f"rows alone, {off.name}: {off.reason or 'max rel %.3g' % off.max_rel} (rows that "
                             f"depend on each other, e.g. a mean over the batch?)"}
    result = []
    for pos, wt, t in weight_targets:
        tried: dict[str, bool] = {}
        out_tried: dict[str, bool] = {}

        def caught(e: float) -> bool:
            w = t["w"].copy()
            w[t["idx"]] = w[t["idx"]] * (1 + e)
            got = concat_runs([trim_rows(run({**f, wt: w}, fetch), outputs, layer_rows) for f in runs])
            rows = [(name, tn, ref, got.get(tn)) for name, tn, ref in layer_refs]
            c = compare(reference, got, "power", "", samples=samples, layers=rows, **tol)
            out_tried[f"{e:g}"] = any(not o.ok for o in c.outputs)
            tried[f"{e:g}"] = any(not o.ok for o in c.outputs + c.layers)
            return out_tried[f"{e:g}"]

        if caught(LEVELS[0]):
            caught(LEVELS[1])
        else:
            caught(LEVELS[2])
        hits = [float(e) for e, h in tried.items() if h]
        out_hits = [float(e) for e, h in out_tried.items() if h]
        result.append({"layer": t["layer"], "position": pos, "producer": t["producer"], "tried": tried,
                       "outputs_tried": out_tried, "caught_1pct": tried["0.01"],
                       "smallest_caught": min(hits) if hits else None,
                       "outputs_smallest_caught": min(out_hits) if out_hits else None})
    return {"perturbation": "output channel 0 of the folded weights x(1+e)",
            "layers": result, "caught_1pct": all(r["caught_1pct"] for r in result),
            "seconds": round(time.perf_counter() - t0, 4)}


def power_line(power: dict) -> str:
    """One line for the text report."""
    if not power:
        return ""
    if "error" in power:
        return f"power:     not measured ({power['error']})"

    def pct(v):
        return "not even 10%" if v is None else f"{v:.1%}".replace(".0%", "%")
    parts = [f"{r['position']} folded layer {r['layer']} {'caught' if r['caught_1pct'] else 'MISSED'} "
             f"(outputs alone catch down to {pct(r.get('outputs_smallest_caught'))})" for r in power["layers"]]
    return "power:     one weight channel off by 1%: " + "; ".join(parts)
