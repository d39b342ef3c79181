"""Which tensors are the model's inputs and outputs, when the user does not say.

Run on the inference-mode graph (flags already constant):

* **Training machinery** is found by structure (:func:`training_machinery`): everything
  computed from a gradient seed — gradient-only ops (``*Grad``, ``*BackpropFilter``,
  ``BroadcastGradientArgs``), the backprop output ``:1`` of a softmax/sigmoid cross-entropy op,
  the ``Fill``/``OnesLike`` that starts ``tf.gradients`` — from optimizer updates (``Apply*``,
  ``Assign*``, ``Scatter*``), summaries (``*Summary``, ``MergeSummary``), savers (``SaveV2``,
  ``RestoreV2``, …) and from a batch norm's statistics outputs (``:1``…``:5``, read only by
  moving-average updates).  A consumer inside it never makes a tensor an output candidate,
  whatever the names are (names under a ``gradients`` scope are excluded as well).
* **Inputs** are the ``Placeholder`` nodes (not training flags) from which a weighted layer
  (Conv*, MatMul, a BN op) can be reached, plus those that feed no loss and no training
  machinery (a CRNN's ``seq_len``); one that feeds nothing is no input.  The others — labels, learning rates — are training
  scaffolding.  If no placeholder qualifies, every placeholder is an input.
* **Outputs** are tensors computed from the inputs alone (no label placeholder, no training
  machinery, not shape arithmetic, not only feeding training-mode branches).  Every output
  tensor of a *sink* node is an output — a node nothing reads (two heads: two outputs; a final
  ``tf.split``: each piece, in index order), or one read only by training machinery; a batch
  norm's statistics (``:1``…) never are.  Only the latter is a guess.  An unread output of a
  node whose other outputs are read (``top_k``'s indices) is no output (:func:`find_outputs`).
  A graph with no sink (a training graph whose ends are all losses) falls back to the tensors
  that feed a loss op or a label-dependent op, keeping the earliest (logits win over their
  argmax): a guess too.  Guessed outputs are marked
  (:class:`Outputs` ``.guessed``) and the candidates listed; nothing is refused for ambiguity.
  In a graph holding training machinery every default is a guess.  Unread loop ``Exit``s,
  shape arithmetic, and — when some candidate goes through a weighted layer — candidates that
  do not, are no outputs.  Outputs come in graph order.
"""
from __future__ import annotations

import re
from collections import deque
from dataclasses import dataclass, field

from .errors import InputError
from .graph import Graph, node_of, tensor_name

_WEIGHTED = {
    "Conv2D", "Conv3D", "DepthwiseConv2dNative", "MatMul", "BatchMatMul", "BatchMatMulV2",
    "Conv2DBackpropInput", "FusedBatchNorm", "FusedBatchNormV2", "FusedBatchNormV3",
    "BatchNormWithGlobalNormalization",
}
_LOSS_OPS = {
    "SoftmaxCrossEntropyWithLogits", "SparseSoftmaxCrossEntropyWithLogits",
    "SigmoidCrossEntropyWithLogits", "InTopK", "InTopKV2", "CTCLoss", "CTCLossV2", "EditDistance",
}
#: losses whose output :1 is the gradient w.r.t. the logits (read only by tf.gradients)
_BACKPROP_OUTPUT = {"SoftmaxCrossEntropyWithLogits", "SparseSoftmaxCrossEntropyWithLogits", "CTCLoss", "CTCLossV2"}
_BN_STATS = {"FusedBatchNorm", "FusedBatchNormV2", "FusedBatchNormV3"}
#: multi-output ops whose other outputs are by-products, not results: the results' indices
#: (a pooling's argmax, a quantizer's range, an LSTM/GRU cell's gate values; ``Quantized*`` ops'
#: ``:1``/``:2`` are their output range too)
_RESULT_OUTPUTS = {"MaxPoolWithArgmax": (0,), "QuantizeV2": (0,), "_FusedBatchNormEx": (0,),
                   "LSTMBlockCell": (1, 6), "BlockLSTM": (1, 6), "BlockLSTMV2": (1, 6), "GRUBlockCell": (3,)}
_NOT_OUTPUT = {
    "Const", "NoOp", "Shape", "ShapeN", "Size", "Rank", "BroadcastGradientArgs", "Assert",
    "Placeholder", "PlaceholderWithDefault", "Switch", "Merge", "Exit",
}
_SHAPE_OPS = {"Shape", "ShapeN", "Size", "Rank"}
_GRADIENT_OP = re.compile(r"(Grad(V\d+)?|BackpropFilter(V\d+)?|GradientArgs)$")
_OPTIMIZER_PREFIXES = ("Apply", "ResourceApply", "SparseApply", "ResourceSparseApply")
_UPDATE_OPS = {
    "Assign", "AssignAdd", "AssignSub", "AssignVariableOp", "AssignAddVariableOp", "AssignSubVariableOp",
    "ScatterUpdate", "ScatterAdd", "ScatterSub", "ScatterNdUpdate", "ResourceScatterUpdate",
}
_SAVER_OPS = {"SaveV2", "RestoreV2", "Save", "Restore", "RestoreSlice", "SaveSlices", "MergeV2Checkpoints",
              "ShardedFilename", "ShardedFilespec"}


@dataclass
class Outputs:
    """Default outputs: ``tensors`` (graph order), whether they are a guess, and the candidates."""

    tensors: list[str]
    guessed: bool = False
    candidates: list[str] = field(default_factory=list)


def is_training_op(op: str) -> bool:
    """Gradient, optimizer, summary or saver op types (the seeds of training machinery)."""
    return (bool(_GRADIENT_OP.search(op)) or op.startswith(_OPTIMIZER_PREFIXES) or op in _UPDATE_OPS
            or "Summary" in op or op in _SAVER_OPS)


def training_machinery(g: Graph) -> set[str]:
    """Nodes that exist to train, summarize or save.

    The gradient/optimizer part is everything its seeds feed, plus every node whose consumers
    all belong to it (the zeros ``tf.gradients`` makes for an untaken cond branch, the shapes
    it reads); summaries and savers add what they feed (not what they read: a tensor read only
    by a summary is still a sink)."""
    seeds, aux = set(), set()
    for n in g.nodes.values():
        if "Summary" in n.op or n.op in _SAVER_OPS:
            aux.add(n.name)
        elif is_training_op(n.op):
            seeds.add(n.name)
        elif n.op in ("Fill", "OnesLike") and _scaffolding(g, n.name):  # tf.gradients' grad_ys
            seeds.add(n.name)
        if n.op in _BACKPROP_OUTPUT:
            seeds.update(c for c, _ in g.consumers(f"{n.name}:1"))
        elif n.op in _BN_STATS:
            for t in g.output_tensors(n.name)[1:]:
                seeds.update(c for c, _ in g.consumers(t))
    grad = _descendants(g, seeds, g.all_consumers)
    for name in reversed(g.topo_order()):
        if name not in grad:
            users = g.all_consumers(name)
            if users and all(u in grad for u in users):
                grad.add(name)
    return grad | _descendants(g, aux, g.all_consumers)


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


def _placeholders(g: Graph, flags: set[str], training: set[str] | None = None) -> tuple[list[str], list[str]]:
    """(data placeholders, all placeholders), training flags left out.

    Data placeholders reach a weighted layer, or reach neither a loss op nor training machinery."""
    cons = _consumer_map(g)
    training = training_machinery(g) if training is None else training
    placeholders = [n.name for n in g.nodes.values() if n.op == "Placeholder" and n.name not in flags]
    data = []
    for p in placeholders:
        reach = _descendants(g, {p}, lambda x: [c for c in cons[x] if not _scaffolding(g, c)])
        if any(g.nodes[r].op in _WEIGHTED for r in reach):
            data.append(p)
        elif len(reach) > 1 and not any(g.nodes[r].op in _LOSS_OPS or r in training for r in reach):
            data.append(p)  # fed, and to no loss: a CRNN's seq_len
    return data, placeholders


def default_inputs(g: Graph, flags: set[str] = frozenset()) -> list[str]:
    data, placeholders = _placeholders(g, flags)
    return [f"{p}:0" for p in (data or placeholders)]


def find_outputs(g: Graph, inputs: list[str], flags: set[str] = frozenset(),
                 exclude: set[str] = frozenset()) -> Outputs:
    """The default outputs (see the module docstring).  ``exclude``: nodes that fed only
    training-mode computations (never outputs).  Raises InputError only when nothing at all is
    computed from the inputs.

    A sink node gives every one of its output tensors, in index order (``split:0``,
    ``split:1``), as many as its op registers (:func:`_terminal_tensors`); a batch norm gives
    only ``:0`` (its statistics and reserve spaces are training by-products).

    Decision: an unread output of a node that is read elsewhere is *not* a default output.
    When ``top_k``'s values feed the rest of the model and its indices are read by nothing, the
    graph's author took the values and dropped the indices; the same shape is common for
    by-products no one means as a result — a batch norm's statistics, ``max_pool_with_argmax``'s
    argmax, an LSTM cell's gate values, the pieces of a ``split`` the model discards — and making
    each an output would convert and verify tensors the model does not produce, and change the
    exported model's signature.  Name such a tensor with ``--outputs`` to keep it."""
    cons = _consumer_map(g)
    training = training_machinery(g)
    input_nodes = {node_of(t) for t in inputs}
    data, placeholders = _placeholders(g, flags, training)
    labels = set(placeholders) - set(data) - input_nodes
    input_nodes |= set(data)
    # shape arithmetic (zero states, batch sizes) is not computed from the inputs' values
    from_inputs = _descendants(g, input_nodes, lambda x: [] if g.nodes[x].op in _SHAPE_OPS else
                               [c for c in cons[x] if c not in training])
    from_labels = _descendants(g, labels, lambda x: cons[x]) if labels else set()
    sinks, after_training, feeders = [], [], []
    for name in g.nodes:  # graph order
        node = g.nodes[name]
        if (name not in from_inputs or name in from_labels or name in training or _scaffolding(g, name)
                or node.op in _NOT_OUTPUT or name in input_nodes or name in exclude):
            continue
        users = [u for u in cons[name] if u not in training]
        if not cons[name] and g.control_consumers(name):
            continue  # read only through control edges: a cond pivot, an ordering node
        if not cons[name]:
            if _output_count(node) == 0:
                continue  # an op with no output tensor (tf.print's PrintV2, a summary write): nothing to convert
            sinks.append(name)
        elif not users:
            after_training.append(name)
        elif any(g.nodes[u].op in _LOSS_OPS or u in from_labels for u in users):
            feeders.append(name)
    sinks, after_training = _prefer_weighted(g, cons, sinks, after_training)
    if sinks or after_training:
        position = {name: i for i, name in enumerate(g.nodes)}
        chosen = [t for n in sorted(sinks + after_training, key=position.__getitem__) for t in _terminal_tensors(g, n)]
        return Outputs(chosen, guessed=bool(after_training or training), candidates=list(chosen))
    earliest = []
    for name in feeders:
        upstream = g.ancestors([name], control=False) - {name}
        if not (upstream & set(feeders)):
            earliest.append(name)
    if not earliest and not inputs:
        raise InputError("the graph has no input placeholder (its inputs are baked in as constants); "
                         "pass --outputs to name the tensors to convert")
    if not earliest:
        raise InputError("cannot tell the model's outputs (no tensor is computed from the inputs alone); pass --outputs")
    return Outputs([f"{n}:0" for n in earliest], guessed=True, candidates=[f"{n}:0" for n in feeders])


def _terminal_tensors(g: Graph, name: str) -> list[str]:
    """The output tensors of sink node ``name``, in index order: as many as its op registers
    (``Split``'s ``num_split``, ``TopKV2``'s two); ``:0`` alone for a batch norm (its other
    outputs are statistics), a loss (its ``:1`` is a gradient), a quantized op (its range) or
    when the count is unknown (a library function's call, no TensorFlow); the results alone for
    the ops of :data:`_RESULT_OUTPUTS`."""
    node = g.nodes[name]
    if node.op in _RESULT_OUTPUTS:
        return [f"{name}:{i}" for i in _RESULT_OUTPUTS[node.op]]
    if node.op in _BN_STATS or node.op in _BACKPROP_OUTPUT or node.op.startswith("Quantized"):
        return [f"{name}:0"]
    count = _output_count(node)
    return [f"{name}:{i}" for i in range(max(count or 1, 1))]


def _output_count(node) -> int | None:
    """How many output tensors ``node`` has by its op's registered signature, else None."""
    try:
        from .tfproto import tf

        tf()
        from tensorflow.python.framework import op_def_registry

        from .load import _arg_count
    except Exception:  # noqa: BLE001 - no TensorFlow: the count is unknown
        return None
    op_def = op_def_registry.get(node.op)
    return None if op_def is None else _arg_count(op_def, op_def.output_arg, node)


def _prefer_weighted(g: Graph, cons, *groups: list[str]) -> tuple[list[str], ...]:
    """Keep the candidates computed through a weighted layer, when some are: a model's output
    passes through its weights (``reduce_min(seq_len)`` left unused in a checkpoint does not)."""
    weighted = {name for name, n in g.nodes.items() if n.op in _WEIGHTED}
    through = _descendants(g, weighted, lambda x: cons[x])
    if not any(n in through for grp in groups for n in grp):
        return groups
    return tuple([n for n in grp if n in through] for grp in groups)


def default_outputs(g: Graph, inputs: list[str], flags: set[str] = frozenset(),
                    exclude: set[str] = frozenset()) -> list[str]:
    """The tensors of :func:`find_outputs`."""
    return find_outputs(g, inputs, flags, exclude).tensors


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
    return list(dict.fromkeys(out))  # "out:0,out" names one tensor once
