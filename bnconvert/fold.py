"""Apply batch-norm matches to the graph: fold into the producer, or keep a Mul+Add.

For each match a :class:`Plan` is made first (nothing edited): walk back from the BN input
through ``Identity``, one channel-preserving ``Reshape`` and one bias (``BiasAdd`` or an
``Add``/``AddV2`` of a per-channel constant) to a linear producer — ``Conv2D``,
``DepthwiseConv2dNative``, ``MatMul`` (``transpose_b`` too), ``Conv2DBackpropInput``,
``Conv3D``.  The fold is refused, and the BN becomes its inference form ``x * s + t`` (one
``Mul`` and one ``AddV2`` with constant per-channel vectors), when:

* there is no linear producer (e.g. the BN follows a Relu or a pooling op);
* the producer's weights are not constant;
* the producer's output, or any tensor between it and the BN, feeds something else or is a
  graph output — folding would change what that other consumer sees;
* the channel axis of the BN is not the producer's output-channel axis.

Weights shared with other layers are never edited in place: the folded weights and bias are
new ``Const`` nodes private to this producer.  Matches are collected, planned, then applied;
plans that touch a node another plan of the same round touches wait for the next round, and
the driver repeats until a round finds no batch norm (``BN -> BN`` chains fold into one conv).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

from . import arith, tfproto
from .errors import UnsupportedError
from .graph import Graph, node_of, tensor_name
from .match import BNMatch, find_bns, unresolved_bns

log = logging.getLogger("bnconvert")

PRODUCERS = ("Conv2D", "DepthwiseConv2dNative", "MatMul", "Conv2DBackpropInput", "Conv3D")
_PASS_THROUGH = ("Identity", "Snapshot", "StopGradient")
_SHAPE_ONLY = ("Shape", "ShapeN", "Size", "Rank")
_WEIGHT_RANK = {"Conv2D": 4, "DepthwiseConv2dNative": 4, "MatMul": 2, "Conv2DBackpropInput": 4, "Conv3D": 5}


@dataclass
class Plan:
    match: BNMatch
    action: str  # "fold" or "scale_shift"
    reason: str = ""
    producer: str | None = None
    weight_input: int | None = None
    bias_node: str | None = None
    bias_input: int | None = None
    path: list[str] = field(default_factory=list)  # nodes from the producer to the BN input
    reshape: str | None = None

    @property
    def touched(self) -> set[str]:
        out = set(self.match.nodes) | set(self.path)
        if self.producer:
            out.add(self.producer)
        return out


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
    """Decide fold or scale-shift for one match; None means "wait for the next round"."""
    t = m.x
    axis = m.axis
    path: list[str] = []
    bias_node = bias_input = reshape = None
    while True:
        node = g.get(t)
        if node is None:
            return Plan(m, "scale_shift", f"input '{t}' has no producer node")
        if node.name in busy:
            return None
        if node.op in _PASS_THROUGH:
            path.append(node.name)
            t = g.inputs(node)[0]
            continue
        if node.op == "Reshape" and reshape is None and tensor_name(t).endswith(":0"):
            target = g.const(g.inputs(node)[1])
            if target is None:
                return Plan(m, "scale_shift", f"Reshape '{node.name}' has a non-constant shape")
            target = [int(d) for d in np.asarray(target).reshape(-1)]
            i = len(target) + axis
            if not (0 <= i < len(target)) or target[i] != m.channels or int(np.prod(target[i + 1:])) != 1:
                return Plan(m, "scale_shift", f"Reshape '{node.name}' moves the channel axis")
            reshape = node.name
            path.append(node.name)
            axis = -1  # only a producer whose channels are last can sit behind this reshape
            t = g.inputs(node)[0]
            continue
        if bias_node is None and node.op == "BiasAdd":
            fmt = g.attr(node, "data_format", "NHWC")
            if (fmt == "NHWC") != (axis == -1):
                return Plan(m, "scale_shift", f"BiasAdd '{node.name}' is {fmt} but the BN's channel axis differs")
            bias = g.const(g.inputs(node)[1])
            if bias is None:
                return Plan(m, "scale_shift", f"bias of '{node.name}' is not constant")
            if bias.ndim != 1 or bias.size != m.channels:
                return Plan(m, "scale_shift", f"bias of '{node.name}' has shape {list(bias.shape)}, not [{m.channels}]")
            bias_node, bias_input = node.name, 1
            path.append(node.name)
            t = g.inputs(node)[0]
            continue
        if bias_node is None and node.op in ("Add", "AddV2"):
            ins = g.inputs(node)
            consts = [g.const(x) for x in ins]
            k = next((j for j in (1, 0) if consts[j] is not None and consts[1 - j] is None), None)
            if k is not None and _per_channel(consts[k], axis, m.channels):
                bias_node, bias_input = node.name, k
                path.append(node.name)
                t = ins[1 - k]
                continue
        break
    if node.op not in PRODUCERS:
        return Plan(m, "scale_shift", f"no linear layer before it: its input comes from {node.op} '{node.name}'")
    if reshape is not None and _producer_axis(g, node) != -1:
        return Plan(m, "scale_shift", f"Reshape '{reshape}' after {node.op} '{node.name}' with channels not last")
    if _producer_axis(g, node) != axis:
        return Plan(m, "scale_shift", f"channel axis of the BN ({axis}) is not the output-channel axis of {node.op} '{node.name}'")
    wi = _weight_input(node)
    w = g.const(g.inputs(node)[wi])
    if w is None:
        return Plan(m, "scale_shift", f"weights of {node.op} '{node.name}' are not constant")
    if w.ndim != _WEIGHT_RANK[node.op]:
        return Plan(m, "scale_shift", f"weights of {node.op} '{node.name}' have rank {w.ndim}, not {_WEIGHT_RANK[node.op]}")
    if w.dtype.kind != "f" and w.dtype.name != "bfloat16":
        return Plan(m, "scale_shift", f"weights of '{node.name}' are {w.dtype}, not floating point")
    if _out_channels(node, w, g) != m.channels:
        return Plan(m, "scale_shift", f"'{node.name}' has {_out_channels(node, w, g)} output channels, the BN {m.channels}")
    chain = [node.name] + list(reversed(path))
    for i, name in enumerate(chain):
        out = f"{name}:0"
        users = {c for c, _ in g.consumers(out)}
        expected = {chain[i + 1]} if i + 1 < len(chain) else set(m.nodes)
        if out in outputs:
            return Plan(m, "scale_shift", f"'{out}' is a graph output; folding would change it")
        # shape-only consumers (contrib's rank-2 path reshapes back to Shape(input)) see no values
        extra = {u for u in users - expected if g.nodes[u].op not in _SHAPE_ONLY}
        if extra:
            return Plan(m, "scale_shift", f"'{out}' also feeds '{sorted(extra)[0]}'; folding would change what it sees")
    return Plan(m, "fold", "", producer=node.name, weight_input=wi, bias_node=bias_node,
                bias_input=bias_input, path=list(reversed(path)), reshape=reshape)


def _per_channel(v: np.ndarray, axis: int, c: int) -> bool:
    if v.size != c or v.ndim == 0:
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
    if p.reshape is not None:
        _collapse_reshape_pair(g, p.reshape)
        if node_of(new) == p.reshape:  # contrib's rank-4 reshape right before the BN: same values before it
            return g.inputs(g.nodes[p.reshape])[0]
    return new


def _insert_bias(g: Graph, prod, bias: np.ndarray) -> str:
    """A new bias add right after the producer; returns its output tensor."""
    out = f"{prod.name}:0"
    axis = _producer_axis(g, prod)
    rank_hint = {"Conv3D": 5, "MatMul": 2}.get(prod.op, 4)
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
    if node.op not in ("FusedBatchNorm", "FusedBatchNormV2", "FusedBatchNormV3"):
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
    return node.attr["T"] if "T" in node.attr else tfproto.type_attr(1)  # DT_FLOAT


def _collapse_reshape_pair(g: Graph, first: str) -> None:
    """``Reshape(Reshape(z, [-1,1,1,C]), [-1,C])`` left by contrib's rank-2 path -> ``z``."""
    r1 = g.nodes[first]
    z = g.inputs(r1)[0]
    zprod = g.get(z)
    if zprod is None or zprod.op not in ("BiasAdd", "MatMul"):
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

    ``only`` restricts folding to BNs whose name contains one of the strings; the others are
    rewritten as scale-shift.  Edits ``g`` in place and prunes it to ``outputs``.  A BN that
    cannot be used raises — or, with ``keep_going`` (``inspect``), is recorded as "refuse".
    """
    out_set = set(outputs)
    layers: list[LayerRecord] = []
    rounds = 0
    refused: dict[str, tuple] = {}
    replaced: dict[str, str] = {}
    while True:
        errs: list | None = [] if keep_going else None
        matches = find_bns(g, errs)
        for name, op, msg in errs or []:
            if name not in refused:
                refused[name] = (op, msg)
                layers.append(LayerRecord(name, op, None, "refuse", msg, 0, {}))
        if not matches:
            break
        rounds += 1
        busy = set().union(*(mm.nodes for mm in matches))
        taken: set[str] = set()
        progressed = False
        for m in matches:
            if mode == "scale_shift":
                p = Plan(m, "scale_shift", "folding switched off (--no-fold)")
            elif only is not None and not any(o in m.name for o in only):
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
    problems = [p for p in unresolved_bns(g) if not any(f"'{n}'" in p for n in refused)]
    if problems and not keep_going:
        raise UnsupportedError(problems[0])
    for msg in problems:
        layers.append(LayerRecord(msg.split("'")[1], "decomposed", None, "refuse", msg, 0, {}))
    return FoldResult(layers, rounds)


def _details(m: BNMatch, p: Plan) -> dict:
    d = dict(m.details)
    if m.epsilon is not None:
        d["epsilon"] = m.epsilon
    if p.bias_node:
        d["bias"] = p.bias_node
    return d
