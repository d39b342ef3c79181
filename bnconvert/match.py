"""Recognise batch norms in an inference-mode graph.  Matching never edits the graph.

Forms:

* ``FusedBatchNorm`` / ``FusedBatchNormV2`` / ``FusedBatchNormV3`` with ``is_training=False``
  (NHWC, NCHW, NDHWC, NCDHW);
* ``BatchNormWithGlobalNormalization`` (old graphs; NHWC; ``scale_after_normalization``);
* the decomposed chain of ``tf.nn.batch_normalization``, matched by structure, not by name:
  ``Add|AddV2(Mul(x, A), B)`` (operands in either order) where ``A`` and ``B`` are computed
  from constants alone and ``A`` involves a ``Rsqrt`` (or ``Sqrt``/``Reciprocal``/``RealDiv``)
  of a constant — with or without gamma, with or without beta (``Sub`` or ``Neg``), ``Add`` or
  ``AddV2``, parameters behind ``Identity`` reads or reshaped to ``[1, C, 1, 1]`` (NCHW).

Parameters are evaluated from constants by :mod:`bnconvert.consteval` (any pure op chain:
``Dequantize`` as TF's ``quantize_weights`` writes it, ``Cast``, ``Reshape``, arithmetic,
``Fill``, ``Pack``, ``ConcatV2`` ...), in float64.  A parameter is "not a constant" only when a
placeholder, a variable, a stateful op, a batch statistic or an op bnconvert cannot evaluate
feeds it, and the message names that node.

Each match is an immutable :class:`BNMatch` holding the per-channel scale ``s`` and shift ``t``
(float64) so that ``y = x * s + t``.  Statistics are validated here: NaN/inf (named by the node
where they first appear in the constant chain), negative variance or ``variance + epsilon == 0``
raise :class:`StatisticsError` naming the node.

:func:`match_all` returns ``(matches, refusals)``: a :class:`Refusal` is a value (node, op,
reason, error class), never a message to parse.  Batch norms whose statistics are not
constants are reported by :func:`unresolved_bns`; BN chains left in the graph after folding by
:func:`leftover_chains`.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from . import arith, consteval, ops
from .errors import StatisticsError, UnsupportedError
from .graph import Graph, node_of, tensor_name

FUSED_OPS = ops.FUSED_BN
BNWGN = ops.BNWGN
_AXIS_FROM_END = {"NHWC": -1, "NDHWC": -1, "NCHW": -3, "NCDHW": -4}
_RANK = {"NHWC": 4, "NCHW": 4, "NDHWC": 5, "NCDHW": 5}
_INV_SQRT_OPS = ops.INV_SQRT


@dataclass(frozen=True)
class Refusal:
    """A batch norm bnconvert will not use: its node, op and why, and the error to raise."""

    node: str
    op: str
    reason: str
    error: type = UnsupportedError

    def exception(self):
        return self.error(self.reason)


@dataclass(frozen=True)
class BNMatch:
    """One batch norm: ``y = x * scale + shift`` along ``axis`` (counted from the end)."""

    name: str  # a readable name: the BN's scope
    form: str  # "FusedBatchNormV3", "BatchNormWithGlobalNormalization", "decomposed"
    x: str  # the normalised tensor
    y: str  # the BN's output tensor
    scale: np.ndarray = field(repr=False)
    shift: np.ndarray = field(repr=False)
    axis: int  # channel axis, negative (-1 = last)
    param_shape: tuple  # broadcast shape of scale/shift for the Mul+Add form
    nodes: frozenset  # nodes that make up the BN (removed once replaced)
    epsilon: float | None = None
    details: tuple = ()  # (key, value) pairs for the report

    @property
    def channels(self) -> int:
        return int(self.scale.size)


def _scope(name: str) -> str:
    """``bn/batchnorm_1/add_1`` -> ``bn``; a name without scope stays as it is."""
    parts = name.split("/")[:-1]
    if parts and parts[-1].startswith("batchnorm"):
        parts = parts[:-1]
    return "/".join(parts) or name


def _fused_scope(name: str) -> str:
    """``bn/cond/FusedBatchNormV3_1`` -> ``bn``; ``conv1/BatchNorm/FusedBatchNorm`` -> ``conv1/BatchNorm``."""
    parts = name.split("/")
    if len(parts) > 1 and parts[-1].startswith("FusedBatchNorm"):
        parts = parts[:-1]
        if parts and (parts[-1] == "cond" or parts[-1].startswith("cond_")):
            parts = parts[:-1]
    return "/".join(parts) or name


def _const_param(g: Graph, bn_name: str, tensor: str, what: str) -> np.ndarray:
    """A parameter's value in float64, or an error naming what stops it / where NaN appears."""
    v = g.const(tensor, wide=True)
    if v is None:
        raise UnsupportedError(f"BN '{bn_name}': {what} is not a constant ({consteval.why_not_constant(g, tensor)})")
    if v.dtype.kind == "f" and not np.all(np.isfinite(v)):
        origin = consteval.first_non_finite(g, tensor) or node_of(tensor)
        raise StatisticsError(f"BN '{bn_name}': {what} holds NaN or inf (node '{origin}')")
    return v


def _check_stats(bn_name: str, mean, var, eps, gamma=None, beta=None) -> None:
    """Statistics bnconvert cannot fold.  (Parameter shapes need no check: TensorFlow's shape
    functions, which the loader runs on every graph, make them per-channel vectors of one
    length.)"""
    problem = arith.statistics_problem(mean, var, eps, gamma, beta)
    if problem:
        raise StatisticsError(f"BN '{bn_name}': {problem}")


def match_fused(g: Graph, node) -> BNMatch:
    if node.attr["is_training"].b if "is_training" in node.attr else True:
        raise UnsupportedError(
            f"BN '{node.name}' ({node.op}) runs in training mode (is_training=True is baked into the graph, "
            "no training flag selects it); bnconvert folds only moving statistics"
        )
    x, gamma_t, beta_t, mean_t, var_t = g.inputs(node)[:5]
    gamma = _const_param(g, node.name, gamma_t, "scale (gamma)")
    beta = _const_param(g, node.name, beta_t, "offset (beta)")
    mean = _const_param(g, node.name, mean_t, "mean")
    var = _const_param(g, node.name, var_t, "variance")
    eps = float(node.attr["epsilon"].f) if "epsilon" in node.attr else 1e-4
    _check_stats(node.name, mean, var, eps, gamma, beta)
    s, t = arith.scale_shift(mean, var, eps, gamma, beta)
    fmt = g.attr(node, "data_format", "NHWC")
    if fmt not in _AXIS_FROM_END:
        raise UnsupportedError(f"BN '{node.name}': unknown data_format '{fmt}'")
    axis = _AXIS_FROM_END[fmt]
    shape = (s.size,) + (1,) * (-axis - 1)
    return BNMatch(
        name=_fused_scope(node.name), form=node.op, x=x, y=f"{node.name}:0", scale=s, shift=t, axis=axis,
        param_shape=shape, nodes=frozenset([node.name]), epsilon=eps,
        details=(("data_format", fmt), ("rank", _RANK[fmt])),
    )


def match_bnwgn(g: Graph, node) -> BNMatch:
    x, mean_t, var_t, beta_t, gamma_t = g.inputs(node)[:5]
    mean = _const_param(g, node.name, mean_t, "mean")
    var = _const_param(g, node.name, var_t, "variance")
    beta = _const_param(g, node.name, beta_t, "beta")
    scale_after = bool(node.attr["scale_after_normalization"].b)
    gamma = _const_param(g, node.name, gamma_t, "gamma") if scale_after else None
    eps = float(node.attr["variance_epsilon"].f)
    _check_stats(node.name, mean, var, eps, gamma, beta)
    s, t = arith.scale_shift(mean, var, eps, gamma, beta)
    return BNMatch(
        name=node.name, form=BNWGN, x=x, y=f"{node.name}:0", scale=s, shift=t, axis=-1,
        param_shape=(s.size,), nodes=frozenset([node.name]), epsilon=eps,
        details=(("data_format", "NHWC"), ("scale_after_normalization", scale_after)),
    )


def _const_ancestors(g: Graph, tensor: str) -> list:
    """Nodes of the constant subgraph computing ``tensor`` (stops at Const)."""
    out, seen, stack = [], set(), [tensor_name(tensor)]
    while stack:
        node = g.get(stack.pop())
        if node is None or node.name in seen:
            continue
        seen.add(node.name)
        out.append(node)
        if node.op != "Const":
            stack.extend(g.inputs(node))
    return out


def match_decomposed(g: Graph, add) -> BNMatch | None:
    """``Add(Mul(x, A), B)`` with constant A (involving an inverse square root) and B."""
    ins = g.inputs(add)
    if len(ins) != 2:
        return None
    for mul_t, b_t in ((ins[0], ins[1]), (ins[1], ins[0])):
        mul = g.get(mul_t)
        if mul is None or mul.op != "Mul" or not mul_t.endswith(":0"):
            continue
        b = g.const(b_t, wide=True)
        if b is None:
            continue
        m_ins = g.inputs(mul)
        for x_t, a_t in ((m_ins[0], m_ins[1]), (m_ins[1], m_ins[0])):
            if g.const(x_t) is not None:
                continue
            a = g.const(a_t, wide=True)
            if a is None:
                continue
            sub = _const_ancestors(g, a_t)
            inv = [n for n in sub if n.op in _INV_SQRT_OPS]
            if not any(n.op in ops.ROOTS for n in inv):
                continue
            return _decomposed_match(g, add, mul, x_t, a, b, sub, a_t, b_t)
    return None


def _decomposed_match(g, add, mul, x_t, a, b, a_sub, a_t, b_t) -> BNMatch | None:
    name = _scope(add.name)
    # validate the statistics: the variance feeds the inverse square root
    rs = next(n for n in a_sub if n.op in ops.ROOTS)
    var_eps_t = g.inputs(rs)[0]
    var_eps_node = g.get(var_eps_t)
    eps = None
    if var_eps_node is not None and var_eps_node.op in ops.ADD:
        p, q = (g.const(t, wide=True) for t in g.inputs(var_eps_node))
        if p is not None and q is not None:
            var, eps = (p, q) if p.size >= q.size else (q, p)
            eps_f = float(np.asarray(eps).reshape(-1)[0]) if np.asarray(eps).size == 1 else 0.0
            problem = arith.statistics_problem(np.zeros_like(var), var, eps_f)
            if problem:
                origin = consteval.first_non_finite(g, var_eps_t) or var_eps_node.name
                raise StatisticsError(f"BN '{name}': {problem} (node '{origin}')")
            eps = eps_f
    ve = g.const(var_eps_t, wide=True)
    if ve is not None and np.any(ve <= 0):
        raise StatisticsError(f"BN '{name}': variance + epsilon is not positive (node '{rs.name}')")
    for v, what in ((a, "scale"), (b, "shift")):
        if not np.all(np.isfinite(v)):
            bad = consteval.first_non_finite(g, b_t if what == "shift" else a_t) or add.name
            raise StatisticsError(f"BN '{name}': statistics hold NaN or inf (node '{bad}')")
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    rank = _known_rank(g, x_t)
    if rank is not None and max(a.ndim, b.ndim) > rank:
        # parameters of higher rank broadcast the output to a higher rank than the input: not a
        # per-channel affine map of x (folding or a [C] scale-shift would drop those dims)
        return None
    axis, shape, c = _broadcast_axis(a, b)
    if axis is None:
        return None
    s = np.broadcast_to(a.reshape(-1) if a.size == c else np.full(c, a.reshape(-1)[0]), (c,)).copy()
    t = np.broadcast_to(b.reshape(-1) if b.size == c else np.full(c, b.reshape(-1)[0]), (c,)).copy()
    return BNMatch(
        name=name, form="decomposed", x=x_t, y=f"{add.name}:0", scale=s, shift=t, axis=axis,
        param_shape=shape, nodes=frozenset([add.name, mul.name]), epsilon=eps,
        details=(("add_op", add.op),),
    )


def _known_rank(g, t: str) -> int | None:
    """The rank of tensor ``t`` where its producer fixes it (a MatMul or a conv:
    :data:`ops.PRODUCER_RANK`, through BiasAdd and pass-through ops), else None."""
    for _ in range(16):  # pragma: no mutate - a bound on a chain of BiasAdd/Identity
        node = g.get(t)
        if node is None:
            return None
        if node.op in ops.PRODUCER_RANK:
            return ops.PRODUCER_RANK[node.op]
        if node.op not in ("BiasAdd",) + ops.PASS_THROUGH or not g.inputs(node):
            return None
        t = g.inputs(node)[0]
    return None


def _broadcast_axis(a: np.ndarray, b: np.ndarray):
    """Channel axis (negative) and parameter shape from the constants' shapes."""
    ref = max((a, b), key=lambda v: (v.size, v.ndim))  # the per-channel one; of two size-1 ones the higher rank
    c = int(ref.size)
    for v in (a, b):
        if v.size not in (1, c):
            return None, None, None
    if c == 1:  # one value: keep its shape, so x * s + t broadcasts as the BN did (a scalar BN keeps a scalar)
        return -1, tuple(ref.shape), c
    non1 = [i for i, d in enumerate(ref.shape) if d != 1]
    if len(non1) > 1:
        return None, None, None
    i = non1[0]  # c > 1: some axis is not 1
    axis = i - ref.ndim
    shape = tuple(ref.shape[i:])
    return axis, shape, c


def match_all(g: Graph) -> tuple[list[BNMatch], list[Refusal]]:
    """Every BN in the graph, in graph order, and every BN that cannot be used (bad statistics,
    training mode, non-constant parameters) as a :class:`Refusal`."""
    matches: list[BNMatch] = []
    refusals: list[Refusal] = []
    for node in list(g.nodes.values()):
        try:
            if node.op in FUSED_OPS:
                matches.append(match_fused(g, node))
            elif node.op == BNWGN:
                matches.append(match_bnwgn(g, node))
            elif node.op in ops.ADD:
                m = match_decomposed(g, node)
                if m is not None:
                    matches.append(m)
        except (StatisticsError, UnsupportedError) as e:
            refusals.append(Refusal(node.name, node.op, str(e), type(e)))
    return matches, refusals


def find_bns(g: Graph) -> list[BNMatch]:
    """Every BN in the graph; the first unusable one raises its error."""
    matches, refusals = match_all(g)
    if refusals:
        raise refusals[0].exception()
    return matches


def unresolved_bns(g: Graph) -> list[Refusal]:
    """BN-looking ops left that no match covers (a training-mode chain), one refusal each."""
    problems = []
    for node in g.nodes.values():
        if node.op in ops.BN_OPS:
            problems.append(Refusal(node.name, node.op, f"{node.op} '{node.name}' is still in the graph"))
        elif node.op == "Rsqrt":
            why = _unresolved_variance(g, g.inputs(node)[0])
            if why:
                problems.append(Refusal(node.name, node.op,
                                        f"BN at '{_scope(node.name)}' has statistics that are not constant ({why})"))
    return problems


_WALK_BACK = ("Identity", "Snapshot", "StopGradient", "Squeeze", "Reshape", "Cast", "ExpandDims")


def _unresolved_variance(g: Graph, tensor: str) -> str | None:
    """Why ``Rsqrt(var + eps)`` is a BN with non-constant statistics, or None if it is not a BN.

    Only ``variance + scalar eps`` counts, and only when the variance comes (through shape-only
    ops) from a placeholder, an unfrozen variable, a Switch/Merge, or a ``Mean`` over the batch
    axis (training-mode moments).  A layer norm (moments over non-batch axes) or an
    l2-normalisation is no batch norm and is left alone.
    """
    add = g.get(tensor)
    if add is None or add.op not in ops.ADD or g.const(tensor) is not None:
        return None
    ins = g.inputs(add)
    consts = [g.const(t) for t in ins]
    if sum(c is not None and np.asarray(c).size == 1 for c in consts) != 1:
        return None
    t = ins[0] if consts[0] is None else ins[1]
    for _ in range(64):
        node = g.get(t)
        if node is None:
            return None
        if node.op in _WALK_BACK:
            t = g.inputs(node)[0]
            continue
        if node.op in ops.PLACEHOLDERS:
            return f"fed by placeholder '{node.name}'"
        if node.op in ops.VARIABLES:
            return f"read from unfrozen variable '{node.name}'; freeze the graph first"
        if node.op in ("Switch", "Merge"):
            return f"chosen at run time by {node.op} '{node.name}' (a training flag that is not constant)"
        if node.op == "Mean":
            axes = g.const(g.inputs(node)[1])
            if axes is not None and 0 in np.asarray(axes).reshape(-1).tolist():
                return f"computed from the batch by '{node.name}' (training mode)"
        return None
    return None


@dataclass(frozen=True)
class Leftover:
    """A constant BN chain (``Rsqrt(variance + epsilon)``) still in the graph after folding.

    ``producer`` is set when the chain only computes a layer's weights and bias: the BN was
    already folded (what ``tf.contrib.quantize``'s ``fold_batch_norms`` writes:
    ``Conv2D(x, FakeQuant(W * gamma * rsqrt(var + eps))) + (beta - mean * ...)``).
    """

    node: str
    name: str
    producer: str | None
    reason: str


def leftover_chains(g: Graph) -> list[Leftover]:
    """Every constant ``Rsqrt``/``Sqrt`` of ``variance + scalar epsilon`` left in the graph."""
    out = []
    for node in list(g.nodes.values()):
        if node.op not in ops.ROOTS:
            continue
        src = g.get(g.inputs(node)[0])
        if src is None or src.op not in ops.ADD or g.const(f"{node.name}:0") is None:
            continue
        vals = [g.const(t) for t in g.inputs(src)]
        if not any(v is not None and np.asarray(v).size == 1 for v in vals):
            continue  # not variance + epsilon
        out.append(_classify_leftover(g, node))
    return out


def _classify_leftover(g: Graph, node) -> Leftover:
    frontier = _constant_frontier(g, node.name)
    producers = sorted({c for c, i in frontier if g.nodes[c].op in ops.PRODUCERS and i == 1})
    others = []
    for c, i in frontier:
        cn = g.nodes[c]
        if c in producers:
            continue
        if cn.op in ("BiasAdd",) + ops.ADD and _behind_producer(g, g.inputs(cn)[1 - i] if len(g.inputs(cn)) == 2 else "", producers):
            continue
        others.append(f"{cn.op} '{c}'")
    scope = _scope(node.name)
    if producers and not others:
        prod = g.nodes[producers[0]]
        return Leftover(node.name, scope, prod.name,
                        f"already folded into the weights of {prod.op} '{prod.name}' (as tf.contrib.quantize's "
                        "fold_batch_norms writes it); the constant chain is left as computed")
    feeds = ", ".join(sorted(set(others))[:3]) or "nothing"
    return Leftover(node.name, scope, None,
                    f"a batch-norm chain bnconvert does not recognise is left as computed ({node.op} '{node.name}' "
                    f"feeds {feeds})")


def _behind_producer(g: Graph, tensor: str, producers: list[str]) -> bool:
    node = g.get(tensor) if tensor else None
    while node is not None and node.op in ops.PASS_THROUGH:
        node = g.get(g.inputs(node)[0])
    return node is not None and node.name in producers


def _constant_frontier(g: Graph, start: str, limit: int = 10000) -> list[tuple[str, int]]:
    """(consumer, input index) where a constant value computed from ``start`` enters a node
    whose own value is not constant."""
    frontier, seen, queue = [], {start}, [start]
    while queue and len(seen) < limit:
        name = queue.pop()
        for t in g.output_tensors(name):
            for c, i in g.consumers(t):
                if g.const(f"{c}:0") is not None:
                    if c not in seen:
                        seen.add(c)
                        queue.append(c)
                else:
                    frontier.append((c, i))
    return frontier
