"""Which tensors are the model's inputs and outputs, when the user does not say.

Run on the inference-mode graph (flags already constant):

* **Inputs** are the ``Placeholder`` nodes (not training flags) from which a weighted layer
  (Conv*, MatMul, a BN op) can be reached.  Other placeholders — labels, learning rates — are
  training scaffolding.  If no placeholder reaches a weighted layer, every placeholder is an input.
* **Outputs** are tensors computed from the inputs alone (no label placeholder, not in a
  ``gradients`` scope, not shape arithmetic, not only feeding training-mode branches): the
  ones nothing consumes (the graph's ends, e.g. a named prediction); if there are none, the
  ones that feed a loss op or a label-dependent op (logits in a training graph).  Of those,
  the earliest are kept (a candidate computed from another is dropped: logits win over their
  argmax).  More than one candidate left is ambiguous: bnconvert stops and lists them (pass
  ``--outputs``).
"""
from __future__ import annotations

from collections import deque

from .errors import InputError
from .graph import Graph, node_of, tensor_name

_WEIGHTED = {
    "Conv2D", "Conv3D", "DepthwiseConv2dNative", "MatMul", "BatchMatMul", "BatchMatMulV2",
    "Conv2DBackpropInput", "FusedBatchNorm", "FusedBatchNormV2", "FusedBatchNormV3",
    "BatchNormWithGlobalNormalization",
}
_LOSS_OPS = {
    "SoftmaxCrossEntropyWithLogits", "SparseSoftmaxCrossEntropyWithLogits",
    "SigmoidCrossEntropyWithLogits", "InTopK", "InTopKV2",
}
_NOT_OUTPUT = {
    "Const", "NoOp", "Shape", "ShapeN", "Size", "Rank", "BroadcastGradientArgs", "Assert",
    "Placeholder", "PlaceholderWithDefault", "Switch", "Merge",
}


def _descendants(g: Graph, sources: set[str], consumers_of) -> set[str]:
    seen = set(sources)
    queue = deque(sources)
    while queue:
        name = queue.popleft()
        for c in consumers_of(name):
            if c not in seen:
                seen.add(c)
                queue.append(c)
    return seen


def _consumer_map(g: Graph) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {name: [] for name in g.nodes}
    for n in g.nodes.values():
        for s in n.input:
            if s.startswith("^"):
                continue
            src = node_of(tensor_name(s))
            if src in out:
                out[src].append(n.name)
    return out


def _placeholders(g: Graph, flags: set[str]) -> tuple[list[str], list[str]]:
    """(placeholders that reach a weighted layer, all placeholders), training flags left out."""
    cons = _consumer_map(g)
    placeholders = [n.name for n in g.nodes.values() if n.op == "Placeholder" and n.name not in flags]
    data = []
    for p in placeholders:
        reach = _descendants(g, {p}, lambda x: [c for c in cons[x] if not _scaffolding(g, c)])
        if any(g.nodes[r].op in _WEIGHTED for r in reach):
            data.append(p)
    return data, placeholders


def default_inputs(g: Graph, flags: set[str] = frozenset()) -> list[str]:
    data, placeholders = _placeholders(g, flags)
    return [f"{p}:0" for p in (data or placeholders)]


def default_outputs(g: Graph, inputs: list[str], flags: set[str] = frozenset(),
                    exclude: set[str] = frozenset()) -> list[str]:
    """``exclude``: nodes that fed only training-mode computations (never outputs)."""
    cons = _consumer_map(g)
    input_nodes = {node_of(t) for t in inputs}
    data, placeholders = _placeholders(g, flags)
    labels = set(placeholders) - set(data) - input_nodes  # labels never reach a weighted layer
    input_nodes |= set(data)
    from_inputs = _descendants(g, input_nodes, lambda x: cons[x])
    from_labels = _descendants(g, labels, lambda x: cons[x]) if labels else set()
    fwd = {n for n in from_inputs - from_labels if not _scaffolding(g, n)}
    sinks, feeders = [], []
    for name in fwd:
        node = g.nodes[name]
        if node.op in _NOT_OUTPUT or name in input_nodes or name in exclude:
            continue
        users = cons[name]
        if not users:
            sinks.append(name)
        elif any(g.nodes[u].op in _LOSS_OPS or u in from_labels for u in users):
            feeders.append(name)
    cand = set(sinks or feeders)
    earliest = []
    for name in sorted(cand):
        upstream = g.ancestors([name], control=False) - {name}
        if not (upstream & cand):
            earliest.append(name)
    if not earliest and not inputs:
        raise InputError("the graph has no input placeholder (its inputs are baked in as constants); "
                         "pass --outputs to name the tensors to convert")
    if not earliest:
        raise InputError("cannot tell the model's outputs (no tensor is computed from the inputs alone); pass --outputs")
    if len(earliest) > 1:
        listed = ", ".join(f"{n}:0" for n in earliest[:12])
        raise InputError(f"the outputs are ambiguous, candidates: {listed}; pass --outputs")
    return [f"{earliest[0]}:0"]


def _scaffolding(g: Graph, name: str) -> bool:
    parts = name.split("/")
    return any(p == "gradients" or p.startswith("gradients_") or p.endswith("_grad") for p in parts)


def check_tensors(g: Graph, tensors: list[str], what: str) -> list[str]:
    """Normalise user-given tensor names and make sure each exists."""
    out = []
    for t in tensors:
        tn = tensor_name(t.strip())
        node = g.get(tn)
        if node is None:
            raise InputError(f"{what} '{t}' is not in the graph")
        out.append(tn)
    return out
