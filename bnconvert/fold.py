"""Apply batch-norm matches to the graph: fold into the producer, or keep a Mul+Add.

For each match a frozen :class:`Plan` is made first (nothing edited), answering three
questions: :func:`walk_back` goes from the BN input through ``Identity``-like ops, shape ops
(``Squeeze``, ``ExpandDims``, ``Reshape``) and one bias (``BiasAdd`` or an ``Add``/``AddV2`` of
a per-channel constant) to a linear producer — ``Conv2D``, ``DepthwiseConv2dNative``,
``MatMul`` (``transpose_b`` too), ``Conv2DBackpropInput``, ``Conv3D``; :func:`check_producer`
follows the channel axis from the producer (whose rank and data format are known) forward
through every op of that walk to the BN's axis, and checks the weights; :func:`check_exclusive`
checks that nothing else reads the tensors the fold changes.  The fold is refused, and the BN
becomes its inference form ``x * s + t`` (one ``Mul`` and one ``AddV2`` with constant
per-channel vectors), when:

* there is no linear producer (e.g. the BN follows a Relu or a pooling op);
* a FakeQuant sits between the producer and the BN (quantization-aware graphs): the BN would
  move across a rounding step, which is not exact;
* the producer's weights are not constant (computed weights — ``Dequantize`` of quint8 as TF's
  ``quantize_weights`` writes them, ``FakeQuant`` of constant weights — are evaluated and
  folded into float constants, and the report says so);
* the producer's output, or any tensor between it and the BN, feeds something else or is a
  requested graph output — folding would change what that other consumer sees;
* the channel axis does not survive the shape ops (a ``Squeeze`` of it, a ``Reshape`` that
  does not keep the channels fastest-varying), or is not the producer's output-channel axis.

After the last round :func:`_final_check` reports every BN chain left in the graph (a
training-mode chain is refused; a constant chain that only computes a layer's weights — the BN
``tf.contrib.quantize`` already folded — counts as folded; any other is left as computed and
reported), so "0 found" never hides a chain.

Weights shared with other layers are never edited in place: the folded weights and bias are
new ``Const`` nodes private to this producer.  Matches are collected, planned, then applied;
plans that touch a node another plan of the same round touches wait for the next round, and
the driver repeats until a round finds no batch norm (``BN -> BN`` chains fold into one conv).
"""
from __future__ import annotations

import fnmatch
import logging
from dataclasses import dataclass

import numpy as np

from . import arith, consteval, ops, progress, tfproto
from .errors import UnsupportedError
from .graph import Graph, node_of, tensor_name
from .match import BNMatch, leftover_chains, match_all, unresolved_bns

log = logging.getLogger("bnconvert")

PRODUCERS = ops.PRODUCERS
_PASS_THROUGH = ops.PASS_THROUGH
_SHAPE_ONLY = ops.SHAPE_ONLY
_WEIGHT_RANK = ops.PRODUCER_RANK  # the weights' rank equals the output's rank for every producer


@dataclass(frozen=True)
class Plan:
    """What to do with one match: ``fold`` into ``producer`` or ``scale_shift``, and why."""

    match: BNMatch
    action: str  # "fold" or "scale_shift"
    reason: str = ""
    producer: str | None = None
    weight_input: int | None = None
    bias_node: str | None = None
    bias_input: int | None = None
    path: tuple = ()  # nodes from the producer (excluded) to the BN input, in data order
    notes: tuple = ()  # (key, value) pairs for the report

    @property
    def touched(self) -> set[str]:
        out = set(self.match.nodes) | set(self.path)
        if self.producer:
            out.add(self.producer)
        return out


@dataclass(frozen=True)
class Walk:
    """The way back from a BN's input to the node before it: ``nodes`` in data order."""

    producer: str
    nodes: tuple  # pass-through, shape and bias nodes between producer and BN
    bias_node: str | None = None
    bias_input: int | None = None


@dataclass
class LayerRecord:
    name: str
    form: str
    producer: str | None
    action: str
    reason: str
    channels: int
    details: dict

    def to_dict(self) -> dict:
        d = {"name": self.name, "form": self.form, "producer": self.producer, "action": self.action,
             "reason": self.reason, "channels": self.channels}
        d.update(self.details)
        return d


def _producer_axis(g: Graph, node) -> int | None:
    """Output-channel axis of a producer, counted from the end."""
    fmt = g.attr(node, "data_format", "NHWC")
    if node.op == "MatMul":
        return -1
    if node.op == "Conv3D":
        return -1 if fmt == "NDHWC" else -4
    return -1 if fmt == "NHWC" else -3


def _weight_input(node) -> int:
    """Conv2D/Depthwise/Conv3D (input, filter); MatMul (a, b); Conv2DBackpropInput (sizes, filter, dy)."""
    return 1


def _out_channels(node, w: np.ndarray, g: Graph) -> int:
    if node.op == "DepthwiseConv2dNative":
        return int(w.shape[2] * w.shape[3])
    if node.op == "MatMul":
        return int(w.shape[0] if g.attr(node, "transpose_b", False) else w.shape[1])
    if node.op == "Conv2DBackpropInput":
        return int(w.shape[2])
    return int(w.shape[-1])


def plan(g: Graph, m: BNMatch, outputs: set[str], busy: set[str]) -> Plan | None:
    """Decide fold or scale-shift for one match; None means "wait for the next round".

    Three questions, each its own function: how to get back to the producer
    (:func:`walk_back`), whether the producer can take the BN (:func:`check_producer`), and
    whether nothing else sees the tensors the fold changes (:func:`check_exclusive`).
    """
    walk = walk_back(g, m, busy)
    if walk is None:
        return None
    if isinstance(walk, str):
        return Plan(m, "scale_shift", walk)
    why = check_producer(g, m, walk) or check_exclusive(g, m, walk, outputs)
    if why:
        return Plan(m, "scale_shift", why)
    prod = g.nodes[walk.producer]
    through = [n for n in walk.nodes if g.nodes[n].op in ops.SHAPE_OPS]
    notes = (("through", through),) if through else ()
    return Plan(m, "fold", "", producer=walk.producer, weight_input=_weight_input(prod), bias_node=walk.bias_node,
                bias_input=walk.bias_input, path=walk.nodes, notes=notes + _weight_notes(g, prod))


def walk_back(g: Graph, m: BNMatch, busy: set[str]) -> Walk | str | None:
    """From the BN's input back through pass-through ops (Identity ...), shape ops (Squeeze,
    ExpandDims, Reshape: checked later) and at most one bias (``BiasAdd``, or ``Add``/``AddV2``
    of a constant the size of the channels) to the first other node.

    Returns the :class:`Walk`, a reason string when the way back is unusable, or None when a
    node on it belongs to another BN of this round.
    """
    t = m.x
    nodes: list[str] = []
    bias_node = bias_input = None
    while True:
        node = g.get(t)
        if node is None:
            return f"input '{t}' has no producer node"
        if node.name in busy:
            return None
        if not tensor_name(t).endswith(":0"):
            break
        if node.op in _PASS_THROUGH or node.op in ops.SHAPE_OPS:
            nodes.append(node.name)
            t = g.inputs(node)[0]
            continue
        if bias_node is None and node.op == "BiasAdd":
            bias_node, bias_input = node.name, 1
            nodes.append(node.name)
            t = g.inputs(node)[0]
            continue
        if bias_node is None and node.op in ops.ADD:
            ins = g.inputs(node)
            consts = [g.const(x) for x in ins]
            k = next((j for j in (1, 0) if consts[j] is not None and consts[1 - j] is None), None)
            if k is not None and np.size(consts[k]) == m.channels:
                bias_node, bias_input = node.name, k
                nodes.append(node.name)
                t = ins[1 - k]
                continue
        break
    if node.op in ops.FAKE_QUANT:
        return (f"{node.op} '{node.name}' quantizes the values between the layer and the BN; folding would move "
                "the BN across a rounding step (not exact)")
    if node.op not in PRODUCERS:
        return f"no linear layer before it: its input comes from {node.op} '{node.name}'"
    return Walk(node.name, tuple(reversed(nodes)), bias_node, bias_input)


def check_producer(g: Graph, m: BNMatch, walk: Walk) -> str | None:
    """Why the producer cannot take this BN (None: it can).

    Follows the channel axis from the producer's output through every node of the walk (its
    rank and format are known there) and checks it arrives at the BN's axis; then the weights.
    Weight rank and BiasAdd bias shape need no check: TensorFlow's shape functions, which the
    loader runs on every graph, enforce them.
    """
    node = g.nodes[walk.producer]
    why = _follow_channel_axis(g, m, node, walk)
    if why:
        return why
    wi = _weight_input(node)
    w_t = g.inputs(node)[wi]
    w = g.const(w_t)
    if w is None:
        return f"weights of {node.op} '{node.name}' are not constant ({consteval.why_not_constant(g, w_t)})"
    if w.dtype.kind != "f" and w.dtype.name != "bfloat16":
        return f"weights of '{node.name}' are {w.dtype}, not floating point"
    if _out_channels(node, w, g) != m.channels:
        return f"'{node.name}' has {_out_channels(node, w, g)} output channels, the BN {m.channels}"
    return None


def _follow_channel_axis(g: Graph, m: BNMatch, prod, walk: Walk) -> str | None:
    rank = _WEIGHT_RANK[prod.op]
    ci = rank + _producer_axis(g, prod)  # positive index of the channel axis
    for name in walk.nodes:
        node = g.nodes[name]
        if node.op in _PASS_THROUGH:
            continue
        if node.op == "BiasAdd":
            fmt = g.attr(node, "data_format", "NHWC")
            want = rank - 1 if fmt == "NHWC" else 1
            if ci != want:
                return f"BiasAdd '{name}' is {fmt} but the channel axis of {prod.op} '{prod.name}' differs"
            bias = g.const(g.inputs(node)[1])
            if bias is None:
                return f"bias of '{name}' is not constant"
        elif node.op in ops.ADD:
            v = g.const(g.inputs(node)[walk.bias_input])
            if not _per_channel(v, ci - rank, m.channels):
                return f"'{name}' adds a constant of shape {list(np.shape(v))}, not one value per channel"
        elif node.op == "Squeeze":
            dims = [d + rank if d < 0 else d for d in (g.attr(node, "squeeze_dims", []) or [])]
            if not dims:
                return f"Squeeze '{name}' has no squeeze_dims; the channel axis cannot be followed"
            if ci in dims:
                return f"Squeeze '{name}' removes the channel axis"
            ci -= sum(d < ci for d in dims)
            rank -= len(dims)
        elif node.op == "ExpandDims":
            a = g.const(g.inputs(node)[1])
            if a is None:
                return f"ExpandDims '{name}' has a non-constant axis"
            a = int(np.asarray(a).reshape(-1)[0])
            a = a + rank + 1 if a < 0 else a
            ci += a <= ci
            rank += 1
        elif node.op == "Reshape":
            target = g.const(g.inputs(node)[1])
            if target is None:
                return f"Reshape '{name}' has a non-constant shape"
            target = [int(d) for d in np.asarray(target).reshape(-1)]
            j = len(target) + m.axis  # where the BN expects the channels
            # channels stay put only when they vary fastest on both sides
            if ci != rank - 1 or not (0 <= j < len(target)) or target[j] != m.channels \
                    or any(d != 1 for d in target[j + 1:]):
                return f"Reshape '{name}' moves the channel axis"
            ci, rank = j, len(target)
    if ci - rank != m.axis:
        return f"channel axis of the BN ({m.axis}) is not the output-channel axis of {prod.op} '{prod.name}'"
    return None


def check_exclusive(g: Graph, m: BNMatch, walk: Walk, outputs: set[str]) -> str | None:
    """Why folding would change what something else sees (None: only the BN sees it).

    Every tensor from the producer to the BN must feed only the next node of the chain (or
    shape-only readers) and must not be a requested graph output.
    """
    chain = (walk.producer,) + walk.nodes
    for i, name in enumerate(chain):
        out = f"{name}:0"
        if out in outputs:
            return f"'{out}' is a graph output; folding would change it"
        users = {c for c, _ in g.consumers(out)}
        expected = {chain[i + 1]} if i + 1 < len(chain) else set(m.nodes)
        # shape-only consumers (contrib's rank-2 path reshapes back to Shape(input)) see no values
        extra = {u for u in users - expected if g.nodes[u].op not in _SHAPE_ONLY}
        if extra:
            return f"'{out}' also feeds '{sorted(extra)[0]}'; folding would change what it sees"
    return None


def _weight_notes(g: Graph, prod) -> tuple:
    """Report notes when the weights were computed (Dequantize, FakeQuant) rather than stored."""
    w_t = g.inputs(prod)[_weight_input(prod)]
    seen, stack, found = set(), [w_t], []
    while stack:
        node = g.get(stack.pop())
        if node is None or node.name in seen:
            continue
        seen.add(node.name)
        if node.op == "Dequantize" or node.op in ops.FAKE_QUANT:
            found.append(f"{node.op} '{node.name}'")
        stack.extend(g.inputs(node))
    if not found:
        return ()
    return (("weights_computed_from", ", ".join(sorted(found))),
            ("weights_note", "evaluated and folded: the folded weights are float constants, equal in float to "
                             "what the original computes; the quantization grid of the weights is not kept"))


def _per_channel(v: np.ndarray, axis: int, c: int) -> bool:
    if v is None or v.size != c or v.ndim == 0:
        return False
    non1 = [i - v.ndim for i, d in enumerate(v.shape) if d != 1]
    return non1 == [axis] or (c == 1 and v.ndim >= -axis)


# ---------------------------------------------------------------------- apply
def _fold_weights(g: Graph, node, w: np.ndarray, s: np.ndarray) -> np.ndarray:
    if node.op == "Conv2D":
        return arith.fold_conv2d_hwio(w, s)
    if node.op == "DepthwiseConv2dNative":
        return arith.fold_depthwise_hwim(w, s)
    if node.op == "MatMul":
        return arith.fold_dense(w, s, bool(g.attr(node, "transpose_b", False)))
    if node.op == "Conv2DBackpropInput":
        return arith.fold_conv2d_transpose_hwoi(w, s)
    if node.op == "Conv3D":
        return arith.fold_conv3d_dhwio(w, s)
    raise UnsupportedError(f"internal: no fold for {node.op}")


def apply_fold(g: Graph, p: Plan, outputs: set[str]) -> str:
    m = p.match
    prod = g.nodes[p.producer]
    w_t = g.inputs(prod)[p.weight_input]
    w = g.const(w_t)
    w_new = _fold_weights(g, prod, w, m.scale)
    wc = g.add_const(f"{p.producer}/bn_folded/weights", w_new)
    g.set_input(p.producer, p.weight_input, f"{wc.name}:0")
    if p.bias_node is not None:
        bnode = g.nodes[p.bias_node]
        b = g.const(g.inputs(bnode)[p.bias_input])
        b_new = arith.fold_bias(b, m.scale, m.shift, b.dtype).reshape(b.shape)
        bc = g.add_const(f"{p.bias_node}/bn_folded/bias", b_new)
        g.set_input(p.bias_node, p.bias_input, f"{bc.name}:0")
        new = m.x
    else:
        added = _insert_bias(g, prod, arith.fold_bias(None, m.scale, m.shift, w.dtype))
        new = m.x if p.path else added  # with no node in between, the BN read the producer
    _replace_output(g, m, new, outputs)
    for name in p.path:  # contrib's rank-2 path: Reshape to [-1,1,1,C] ... and back
        if name in g.nodes and g.nodes[name].op == "Reshape":
            _collapse_reshape_pair(g, name)
            if node_of(new) == name:  # the reshape right before the BN: same values before it
                return g.inputs(g.nodes[name])[0]
            break
    return new


def _insert_bias(g: Graph, prod, bias: np.ndarray) -> str:
    """A new bias add right after the producer; returns its output tensor."""
    out = f"{prod.name}:0"
    axis = _producer_axis(g, prod)
    rank_hint = ops.PRODUCER_RANK[prod.op]
    bc = g.add_const(f"{prod.name}/bn_folded/bias", bias if axis == -1 or rank_hint == 4 else bias.reshape((-1,) + (1,) * (-axis - 1)))
    users = g.consumers(out)
    if axis == -1 or (rank_hint == 4 and axis == -3):
        fmt = "NHWC" if axis == -1 else "NCHW"
        add = g.new_node("BiasAdd", f"{prod.name}/bn_folded/BiasAdd", [out, f"{bc.name}:0"],
                         T=prod.attr["T"], data_format=tfproto.string_attr(fmt))
    else:  # NCDHW: BiasAdd's NCHW form would pick the wrong axis for rank 5
        add = g.new_node("AddV2", f"{prod.name}/bn_folded/add", [out, f"{bc.name}:0"], T=prod.attr["T"])
    for cname, idx in users:
        g.set_input(cname, idx, f"{add.name}:0")
    return f"{add.name}:0"


def _release_side_outputs(g: Graph, m: BNMatch) -> None:
    """A fused BN's outputs 1 and 2 (batch mean/variance) equal its mean/variance inputs in
    inference mode: their consumers read those.  Outputs 3-5 (reserve space) cannot be kept."""
    node = g.nodes[node_of(m.y)]
    if node.op not in ops.FUSED_BN:
        return
    ins = g.inputs(node)
    for port, src in ((1, ins[3]), (2, ins[4])):
        g.rewire(f"{node.name}:{port}", src)
    for port in (3, 4, 5):
        if g.consumers(f"{node.name}:{port}"):
            user = g.consumers(f"{node.name}:{port}")[0][0]
            raise UnsupportedError(f"BN '{node.name}': its reserve-space output {port} is used by '{user}'")


def _replace_output(g: Graph, m: BNMatch, new: str, outputs: set[str]) -> None:
    """Consumers of the BN output read ``new``; a BN output that is a graph output keeps its name."""
    _release_side_outputs(g, m)
    if m.y in outputs:
        ynode = g.nodes[node_of(m.y)]
        g.rewire(m.y, new)
        g.remove_node(ynode.name)
        g.new_node("Identity", ynode.name, [new], T=_t_attr(g, ynode))
    else:
        g.rewire(m.y, new)


def _t_attr(g: Graph, node):
    return node.attr["T"] if "T" in node.attr else tfproto.type_attr(ops.DT.FLOAT)


def _collapse_reshape_pair(g: Graph, first: str) -> None:
    """``Reshape(Reshape(z, [-1,1,1,C]), [-1,C])`` left by contrib's rank-2 path -> ``z``."""
    r1 = g.nodes[first]
    z = g.inputs(r1)[0]
    zprod = g.get(z)
    if zprod is not None and zprod.op == "BiasAdd":  # the dense layer's bias
        zprod = g.get(g.inputs(zprod)[0])
    if zprod is None or zprod.op != "MatMul":  # only a MatMul's output is [N, C] already (a conv's is not)
        return
    c = int(np.asarray(g.const(g.inputs(r1)[1])).reshape(-1)[-1])
    for cname, _ in g.consumers(f"{first}:0"):
        r2 = g.nodes[cname]
        if r2.op != "Reshape":
            continue
        shape_t = g.inputs(r2)[1]
        shape_node = g.get(shape_t)
        if shape_node is not None and shape_node.op == "Shape" and g.inputs(shape_node)[0] == tensor_name(z):
            g.rewire(f"{cname}:0", z)  # contrib: reshape(outputs, shape(original_inputs))
            continue
        target = g.const(shape_t)
        if target is None:
            continue
        target = [int(d) for d in np.asarray(target).reshape(-1)]
        if len(target) == 2 and target[1] == c and target[0] == -1:
            g.rewire(f"{cname}:0", z)


def apply_scale_shift(g: Graph, m: BNMatch, outputs: set[str]) -> str:
    xdt = _x_dtype(g, m)
    s = g.add_const(f"{m.name}/scale_shift/scale", m.scale.reshape(m.param_shape).astype(xdt))
    t = g.add_const(f"{m.name}/scale_shift/shift", m.shift.reshape(m.param_shape).astype(xdt))
    T = tfproto.dtype_attr(xdt)
    mul = g.new_node("Mul", f"{m.name}/scale_shift/mul", [m.x, f"{s.name}:0"], T=T)
    add = g.new_node("AddV2", f"{m.name}/scale_shift/add", [f"{mul.name}:0", f"{t.name}:0"], T=T)
    _replace_output(g, m, f"{add.name}:0", outputs)
    return f"{add.name}:0"


def _x_dtype(g: Graph, m: BNMatch) -> np.dtype:
    node = g.nodes[node_of(m.y)]
    if "T" in node.attr:
        return tfproto.np_dtype(node.attr["T"].type)
    return np.dtype(np.float32)


@dataclass
class FoldResult:
    layers: list[LayerRecord]
    rounds: int


def fold_all(g: Graph, outputs: list[str], mode: str = "fold", only: set[str] | None = None,
             keep_going: bool = False) -> FoldResult:
    """Fold (``mode="fold"``) or only rewrite to Mul+Add (``"scale_shift"``) every BN.

    ``only`` restricts folding to BNs whose name matches one of the names or globs; the others are
    rewritten as scale-shift.  Edits ``g`` in place and prunes it to ``outputs``.  A BN that
    cannot be used raises — or, with ``keep_going`` (``inspect``), is recorded as "refuse".
    """
    out_set = set(outputs)
    layers: list[LayerRecord] = []
    rounds = 0
    refused: set[str] = set()
    replaced: dict[str, str] = {}
    while True:
        matches, refusals = match_all(g)
        if refusals and not keep_going:
            raise refusals[0].exception()
        for r in refusals:
            if r.node not in refused:
                refused.add(r.node)
                layers.append(LayerRecord(r.node, r.op, None, "refuse", r.reason, 0, {}))
        if not matches:
            break
        rounds += 1
        progress.total(len(matches), "BN")
        busy = set().union(*(mm.nodes for mm in matches))
        taken: set[str] = set()
        progressed = False
        for m in matches:
            if mode == "scale_shift":
                p = Plan(m, "scale_shift", "folding switched off (--no-fold)")
            elif only is not None and not any(fnmatch.fnmatchcase(m.name, o) for o in only):
                p = Plan(m, "scale_shift", "not selected by --only")
            else:
                p = plan(g, m, out_set, busy - set(m.nodes))
                if p is None:
                    continue
            if p.touched & taken:
                continue
            taken |= p.touched
            replaced.update({n: g.nodes[n].op for n in m.nodes})
            new = apply_fold(g, p, out_set) if p.action == "fold" else apply_scale_shift(g, m, out_set)
            progressed = True
            progress.advance()
            # verification compares the BN's output in the original graph with its replacement
            details = {**_details(m, p), "bn_output": m.y, "replaced_by": m.y if m.y in out_set else new}
            layers.append(LayerRecord(m.name, m.form, p.producer, p.action, p.reason, m.channels, details))
            log.info("%s %s (%s)%s", p.action, m.name, m.form, f": {p.reason}" if p.reason else "")
        if not progressed:
            raise UnsupportedError("internal: batch norms left that no round could place")
        g.prune(outputs)
        for name, op in replaced.items():  # a replaced BN must be gone, or the rounds never end
            if name in g.nodes and g.nodes[name].op == op:
                users = g.all_consumers(name)
                raise UnsupportedError(f"BN '{name}' is still needed by '{users[0] if users else '?'}' after it was replaced")
    layers += _final_check(g, refused, keep_going)
    return FoldResult(layers, rounds)


def _final_check(g: Graph, refused: set[str], keep_going: bool) -> list[LayerRecord]:
    """No BN chain may be left unreported: training-mode chains are refused (raise unless
    ``keep_going``); constant chains left in the graph are reported — as folded when they only
    compute a layer's weights (already folded), else as left as computed."""
    out = []
    scopes = {_scope_of(n) for n in refused}
    problems = [r for r in unresolved_bns(g) if r.node not in refused and _scope_of(r.node) not in scopes]
    if problems and not keep_going:
        raise problems[0].exception()
    for r in problems:
        name = _scope_of(r.node) if r.op == "Rsqrt" else r.node
        out.append(LayerRecord(name, "decomposed" if r.op == "Rsqrt" else r.op, None, "refuse", r.reason, 0, {}))
    for lo in leftover_chains(g):
        action = "fold" if lo.producer else "scale_shift"
        out.append(LayerRecord(lo.name, "prefolded" if lo.producer else "decomposed", lo.producer, action,
                               lo.reason, 0, {"chain": lo.node}))
        log.info("%s %s: %s", action, lo.name, lo.reason)
    return out


def _scope_of(name: str) -> str:
    from .match import _scope

    return _scope(name)


def _details(m: BNMatch, p: Plan) -> dict:
    d = dict(m.details)
    if m.epsilon is not None:
        d["epsilon"] = m.epsilon
    if p.bias_node:
        d["bias"] = p.bias_node
    d.update(dict(p.notes))
    return d
