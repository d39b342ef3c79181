"""Put a graph into inference mode without executing it.

1. **Training flags** are the bool ``Placeholder``/``PlaceholderWithDefault`` nodes that decide
   a ``cond`` (they reach the predicate input of a ``Switch``, possibly through Identity nodes
   such as ``cond/pred_id``).  Each becomes a ``Const`` holding False (or what ``--set`` says).
2. **Cond pruning**: with a constant predicate, one output of every ``Switch`` is dead.  Deadness
   propagates forward through data and control edges, exactly as TensorFlow's executor does; a
   ``Merge`` is live when one input is live and is replaced by that input.  Dead nodes go.
3. **Control dependencies** are dropped: in a frozen inference graph they only order training
   machinery (moving-average updates, ``cond`` frame pivots), never values on the output path.
4. The graph is pruned to what the outputs need, so batch ``moments``, ``AssignMovingAvg``,
   ``RefSwitch``/``Assign*`` (already made value-typed by the loader) and optimizer ops vanish.

A ``Switch`` whose predicate is not constant (a flag the user did not ask to set, a computed
predicate) is left alone and reported by the matcher if a BN depends on it.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .errors import InputError, UnsupportedError
from .graph import Graph, node_of, split_input, tensor_name
from . import tfproto

_PLACEHOLDERS = ("Placeholder", "PlaceholderWithDefault")
_IDENTITY_LIKE = ("Identity", "Snapshot", "StopGradient")
DT_BOOL = 10


@dataclass
class InferenceResult:
    flags: dict[str, bool] = field(default_factory=dict)  # "phase:0" -> value set
    switches_resolved: int = 0
    merges_resolved: int = 0
    dead_removed: int = 0
    control_deps_dropped: int = 0
    #: nodes that fed only training-mode computations: they lost every consumer here
    orphans: set[str] = field(default_factory=set)


def find_training_flags(g: Graph) -> list[str]:
    """Bool placeholders that reach a Switch predicate through Identity-like nodes."""
    flags = set()
    for n in g.nodes.values():
        if n.op not in ("Switch", "RefSwitch") or len(n.input) < 2:
            continue
        t = tensor_name(n.input[1])
        for _ in range(len(g.nodes)):
            src = g.get(t)
            if src is None:
                break
            if src.op in _PLACEHOLDERS:
                if src.attr["dtype"].type == DT_BOOL:
                    flags.add(src.name)
                break
            if src.op not in _IDENTITY_LIKE or not src.input:
                break
            t = tensor_name(src.input[0])
    return sorted(flags)


def parse_set(items: list[str] | None) -> dict[str, bool]:
    """``["phase=false", "keras_learning_phase:0=0"]`` -> {"phase": False, ...}."""
    out: dict[str, bool] = {}
    for item in items or []:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise InputError(f"--set '{item}': expected NAME=VALUE (e.g. phase=false)")
        v = value.strip().lower()
        if v in ("0", "false", "no", "off"):
            out[node_of(name.strip())] = False
        elif v in ("1", "true", "yes", "on"):
            out[node_of(name.strip())] = True
        else:
            raise InputError(f"--set '{item}': value must be true or false")
    return out


def to_inference(g: Graph, overrides: dict[str, bool] | None = None) -> InferenceResult:
    """Set training flags and prune every cond they decide.  Edits ``g`` in place."""
    overrides = dict(overrides or {})
    flags = find_training_flags(g)
    for name in overrides:
        n = g.get(name)
        if n is None:
            raise InputError(f"--set: no node named '{name}' in the graph")
        if n.op not in _PLACEHOLDERS or n.attr["dtype"].type != DT_BOOL:
            raise InputError(f"--set: '{name}' is a {n.op}, not a bool placeholder")
        if name not in flags:
            flags.append(name)
    res = InferenceResult()
    had_consumers = {name for name in g.nodes if g.all_consumers(name)}
    for name in sorted(flags):
        value = overrides.get(name, False)
        _replace_with_const(g, name, value)
        res.flags[f"{name}:0"] = value
    _resolve_conds(g, res)
    for name in list(g.nodes):
        res.control_deps_dropped += g.drop_control_inputs(name)
    res.orphans = {name for name in had_consumers if name in g.nodes and not g.all_consumers(name)}
    return res


def _replace_with_const(g: Graph, name: str, value: bool) -> None:
    old = g.nodes[name]
    node = type(old)()
    node.name = name
    node.op = "Const"
    node.attr["dtype"].CopyFrom(tfproto.type_attr(DT_BOOL))
    node.attr["value"].tensor.CopyFrom(tfproto.make_tensor_proto(np.array(value)))
    g.remove_node(name)
    g.add_node(node)
    g.invalidate()


def _resolve_conds(g: Graph, res: InferenceResult) -> None:
    order = g.topo_order()
    dead_tensors: set[str] = set()
    dead_nodes: set[str] = set()
    switch_live: dict[str, str] = {}  # live Switch output tensor -> its data input
    merge_live: dict[str, str] = {}  # Merge name -> live data input tensor
    merge_index: dict[str, int] = {}  # Merge name -> which input is live (its output :1)
    for name in order:
        n = g.nodes[name]
        data = g.inputs(n)
        ctrl = g.control_inputs(n)
        if n.op == "Merge":
            live = [t for t in data if t not in dead_tensors]
            if not live:
                dead_nodes.add(name)
            elif len(live) == 1 and len(data) > 1:
                merge_live[name] = live[0]
                merge_index[name] = data.index(live[0])
            if any(c in dead_nodes for c in ctrl) and name not in dead_nodes:
                dead_nodes.add(name)
                merge_live.pop(name, None)
        elif any(t in dead_tensors for t in data) or any(c in dead_nodes for c in ctrl):
            dead_nodes.add(name)
        elif n.op == "Switch":
            pred = g.const(data[1])
            if pred is not None and pred.size == 1:
                taken = 1 if bool(pred.reshape(-1)[0]) else 0
                dead_tensors.add(f"{name}:{1 - taken}")
                switch_live[f"{name}:{taken}"] = data[0]
        if name in dead_nodes:
            dead_tensors.update(f"{name}:{i}" for i in range(16))
    # apply: bypass live Switch outputs and resolved Merges, then delete the dead
    for tensor, src in switch_live.items():
        g.rewire(tensor, src)
        res.switches_resolved += 1
    for name, live in merge_live.items():
        g.rewire(f"{name}:0", switch_live.get(live, live))
        if g.consumers(f"{name}:1"):
            c = g.add_const(f"{name}/value_index", np.array(merge_index[name], dtype=np.int32))
            g.rewire(f"{name}:1", f"{c.name}:0")
        res.merges_resolved += 1
    for name in dead_nodes:
        if name in g.nodes:
            g.remove_node(name)
            res.dead_removed += 1
    # a resolved Switch/Merge still used (control edges, other ports) becomes an Identity
    resolved = {node_of(t): src for t, src in switch_live.items()}
    resolved.update({name: switch_live.get(live, live) for name, live in merge_live.items()})
    for name, src in resolved.items():
        if name not in g.nodes:
            continue
        if not g.all_consumers(name):
            g.remove_node(name)
            continue
        old = g.nodes[name]
        t_attr = old.attr["T"] if "T" in old.attr else None
        g.remove_node(name)
        ident = type(old)()
        ident.name, ident.op = name, "Identity"
        ident.input.append(src if not src.endswith(":0") else src[:-2])
        if t_attr is not None:
            ident.attr["T"].CopyFrom(t_attr)
        g.add_node(ident)
    # anything still consuming a removed node was itself dead; make sure none is left dangling
    for n in g.nodes.values():
        for s in n.input:
            if split_input(s)[0] not in g.nodes and not s.startswith("^"):
                raise UnsupportedError(f"node '{n.name}' needs '{s}', which exists only in training mode")
