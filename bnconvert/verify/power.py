"""Verification power: would this comparison, on these inputs, have caught a small error?

For the first and the last folded layer, output channel 0 of the folded weights is scaled by
``1 + e`` — the size of error a wrong epsilon or a misplaced fold leaves — and the folded graph
is run in TensorFlow on the same inputs with that weight fed in place of its constant (no copy
of the graph, no re-export).  The outputs are compared with the reference by the same rule as
the real verification, *outputs only* (what a runtime that exposes no layers, e.g. TFLite, is
checked on).  ``e`` starts at 1%; if caught, 0.1% is tried, if not, 10%.  The report records,
per layer, whether 1% was caught and the smallest ``e`` that was.
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


def _targets(folded_gd, layers: list[dict]) -> list[tuple[str, str, dict]]:
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
        wt = tensor_name(g.inputs(node)[1])
        w = g.const(wt)
        if w is None or w.dtype.kind != "f":
            continue
        idx = _channel0(node.op, w, bool(g.attr(node, "transpose_b", False)))
        out.append((pos, wt, {"layer": ly["name"], "producer": node.name, "weights": wt, "w": w, "idx": idx}))
    return out


def measure_power(folded_gd, layers: list[dict], runs: list[dict], outputs: list[str], reference: dict,
                  tol: dict, samples: int | None, allow_unsafe: bool = False) -> dict:
    """``{"perturbation", "layers": [{layer, position, tried: {e: caught}, caught_1pct,
    smallest_caught}], "caught_1pct"}``; ``{}`` when no layer was folded."""
    from .compare import compare
    from .inputs import concat_runs
    from .runners import run_tf

    result = []
    for pos, wt, t in _targets(folded_gd, layers):
        tried: dict[str, bool] = {}

        def caught(e: float) -> bool:
            w = t["w"].copy()
            w[t["idx"]] = w[t["idx"]] * (1 + e)
            got = concat_runs([run_tf(folded_gd, {**f, wt: w}, outputs, allow_unsafe=allow_unsafe) for f in runs])
            c = compare(reference, got, "power", "", samples=samples, **tol)
            hit = any(not o.ok and not o.constant for o in c.outputs)
            tried[f"{e:g}"] = hit
            return hit

        first = caught(LEVELS[0])
        if first:
            caught(LEVELS[1])
        else:
            caught(LEVELS[2])
        hits = [float(e) for e, h in tried.items() if h]
        result.append({"layer": t["layer"], "position": pos, "producer": t["producer"], "tried": tried,
                       "caught_1pct": first, "smallest_caught": min(hits) if hits else None})
    if not result:
        return {}
    return {"perturbation": "output channel 0 of the folded weights x(1+e), outputs compared",
            "layers": result, "caught_1pct": all(r["caught_1pct"] for r in result)}


def power_line(power: dict) -> str:
    """One line for the text report."""
    if not power:
        return ""
    parts = []
    for r in power["layers"]:
        small = r["smallest_caught"]
        what = f"caught down to {small:.1%}" if small is not None else "NOT caught even at 10%"
        if small is not None and not r["caught_1pct"]:
            what = f"1% NOT caught, {small:.0%} caught"
        parts.append(f"{r['position']} folded layer {r['layer']}: {what}")
    return "power:     a 1% error in one channel of the weights — " + "; ".join(parts)
