"""The analysis step: a graph in inference mode plus its inputs, outputs and flags.

``analyze`` is what :func:`bnconvert.fold` starts with and all that
:func:`bnconvert.compare` needs (it never folds): it copies the model's GraphDef into a
:class:`~bnconvert.graph.Graph`, sets the training flags and resolves the conds they decide
(:mod:`bnconvert.inference`), then settles the endpoints — what the caller gave, else the
SavedModel signature, else :mod:`bnconvert.endpoints`' defaults.  Defaults picked by a heuristic
(a training graph) are marked ``outputs_guessed`` and the candidates are listed.  The model is
never modified; the graph is not pruned yet.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from . import endpoints, inference
from .errors import InputError
from .graph import Graph, node_of


@dataclass
class Analysis:
    graph: Graph  # inference mode, not pruned
    inference: inference.InferenceResult
    inputs: list[str]
    outputs: list[str]
    flags: dict[str, bool] = field(default_factory=dict)  # "phase:0" -> value set
    outputs_guessed: bool = False
    output_candidates: list[str] = field(default_factory=list)
    op_histogram_before: dict[str, int] = field(default_factory=dict)


def analyze(model, inputs: list[str] | None = None, outputs: list[str] | None = None,
            set_flags: dict[str, bool] | None = None) -> Analysis:
    """``model``: a :class:`bnconvert.load.Model` (or a bare GraphDef)."""
    graph_def = getattr(model, "graph_def", model)
    g = Graph(graph_def)
    before = g.op_histogram()
    inf = inference.to_inference(g, set_flags)
    flags = {node_of(k) for k in inf.flags}
    sig_inputs = getattr(model, "inputs", None)
    sig_outputs = getattr(model, "outputs", None)
    if inputs:
        ins = endpoints.check_tensors(g, inputs, "input")
    elif sig_inputs:
        ins = endpoints.check_tensors(g, sig_inputs, "input")
    else:
        ins = endpoints.default_inputs(g, flags)
    guessed, candidates = False, []
    if outputs:
        outs = endpoints.check_tensors(g, outputs, "output")
    elif sig_outputs:
        outs = endpoints.check_tensors(g, sig_outputs, "output")
    else:
        found = endpoints.find_outputs(g, ins, flags, exclude=inf.orphans)
        outs, guessed, candidates = found.tensors, found.guessed, found.candidates
    if not (inputs or sig_inputs):  # a default input the outputs do not read is no input
        used = g.ancestors(outs)
        ins = [t for t in ins if node_of(t) in used] or ins
    for t in ins:
        if node_of(t) in flags:
            raise InputError(f"input '{t}' is a training flag; it is set, not fed")
    return Analysis(g, inf, ins, outs, dict(inf.flags), guessed, candidates, before)
