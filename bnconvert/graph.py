"""A small editable index over a TensorFlow GraphDef.

Protobuf stays at the edges: :class:`Graph` copies the nodes of a GraphDef once, keeps them by
name and keeps a consumer index (tensor -> consuming nodes) up to date through every edit, so
matching and folding are linear in the graph size.  :meth:`Graph.to_graph_def` writes a new,
topologically sorted GraphDef; the GraphDef passed in is never modified.

Tensor names are always ``"node:index"`` here; GraphDef input strings (``"node"``,
``"node:1"``, ``"^node"``) are normalised with :func:`tensor_name`.

Constant values (:meth:`Graph.const`) are cached per tensor.  The cache cannot go stale: every
edit that can change a value (:meth:`Graph.set_input`, :meth:`Graph.rewire`,
:meth:`Graph.remove_node`, :meth:`Graph.add_node` over a name something already reads) drops
the cached values of the edited node and of everything computed from it, at once.  Callers
never invalidate by hand.  The output ports a node has in use are read off the consumer index
(:meth:`Graph.output_tensors`), never guessed from a fixed range.
"""
from __future__ import annotations

import copy
from collections import defaultdict, deque
from typing import Iterable

import numpy as np

from .errors import GraphError

_MISSING = object()


def split_input(s: str) -> tuple[str, int, bool]:
    """``"a:1"`` -> ("a", 1, False); ``"^a"`` -> ("a", -1, True); ``"a"`` -> ("a", 0, False)."""
    if s.startswith("^"):
        return s[1:], -1, True
    name, sep, idx = s.rpartition(":")
    if sep and idx.isdigit():
        return name, int(idx), False
    return s, 0, False


def tensor_name(s: str) -> str:
    """Normalise a GraphDef input string or user-given name to ``node:index`` (``^a`` stays)."""
    name, idx, ctrl = split_input(s)
    return "^" + name if ctrl else f"{name}:{idx}"


def node_of(tensor: str) -> str:
    return split_input(tensor)[0]


def input_string(tensor: str) -> str:
    """``node:0`` -> ``node`` (how TF writes it), other indices unchanged."""
    name, idx, ctrl = split_input(tensor)
    if ctrl:
        return "^" + name
    return name if idx == 0 else f"{name}:{idx}"


def _invariant_enter(node) -> bool:
    """An ``Enter`` with ``is_constant`` set carries a loop invariant into a while frame."""
    return node.op == "Enter" and "is_constant" in node.attr and node.attr["is_constant"].b


class Graph:
    """Nodes by name plus a consumer index, with edits that keep both consistent."""

    def __init__(self, graph_def, copy_nodes: bool = True):
        """``copy_nodes=False`` indexes the GraphDef's own nodes: for read-only use only."""
        self._proto_type = type(graph_def)
        self.versions = copy.deepcopy(graph_def.versions)
        self.library = copy.deepcopy(graph_def.library)
        self.nodes: dict[str, object] = {}
        for n in graph_def.node:
            if not n.name:
                raise GraphError("a node has no name")
            if n.name in self.nodes:
                raise GraphError(f"node name '{n.name}' appears twice")
            self.nodes[n.name] = copy.deepcopy(n) if copy_nodes else n
        self._consumers: dict[str, list[tuple[str, int]]] = defaultdict(list)
        #: node -> {output port: number of data consumers}; the ports actually in use
        self._ports: dict[str, dict[int, int]] = defaultdict(dict)
        for n in self.nodes.values():
            for i, s in enumerate(n.input):
                self._link(s, n.name, i)
        self._const_cache: dict[str, np.ndarray | None] = {}
        self._wide_cache: dict[str, np.ndarray | None] = {}
        self._counter = 0

    # ------------------------------------------------------------------ queries
    def __contains__(self, name: str) -> bool:
        return name in self.nodes

    def node(self, name_or_tensor: str):
        return self.nodes[node_of(name_or_tensor)]

    def get(self, name_or_tensor: str):
        return self.nodes.get(node_of(name_or_tensor))

    def inputs(self, node) -> list[str]:
        """Data inputs of a node as normalised tensor names (control inputs left out)."""
        return [tensor_name(s) for s in node.input if not s.startswith("^")]

    def control_inputs(self, node) -> list[str]:
        return [s[1:] for s in node.input if s.startswith("^")]

    def consumers(self, tensor: str) -> list[tuple[str, int]]:
        """(node name, input index) of every data consumer of ``tensor``."""
        return list(self._consumers.get(tensor_name(tensor), ()))

    def control_consumers(self, node_name: str) -> list[str]:
        return [c for c, _ in self._consumers.get("^" + node_name, ())]

    def all_consumers(self, node_name: str) -> list[str]:
        """Names of nodes that use any output of ``node_name`` (data or control)."""
        out = set(self.control_consumers(node_name))
        for t in self.output_tensors(node_name):
            out.update(c for c, _ in self._consumers.get(t, ()))
        return sorted(out)

    def output_tensors(self, node_name: str) -> list[str]:
        """Tensors of ``node_name`` that something consumes (``:0`` always included).

        Read off the consumer index, so every port in use is listed, whatever the op."""
        ports = {0} | set(self._ports.get(node_name, ()))
        return [f"{node_name}:{i}" for i in sorted(ports)]

    def used_ports(self, node_name: str) -> list[int]:
        """Output ports of ``node_name`` that at least one data consumer reads."""
        return sorted(self._ports.get(node_name, ()))

    def attr(self, node, key, default=None):
        from .consteval import node_attr

        return node_attr(node, key, default)

    # ------------------------------------------------------------------ constants
    def const(self, tensor: str, wide: bool = False) -> np.ndarray | None:
        """The value of ``tensor`` if it is computable from Const nodes alone, else None.

        Evaluates pure ops in numpy with :data:`bnconvert.consteval.CONST_OPS`; nothing is
        executed in TensorFlow.  ``wide=True`` evaluates floats in float64.
        """
        cache = self._wide_cache if wide else self._const_cache
        t = tensor_name(tensor)
        if t in cache:
            return cache[t]
        # iterative post-order: no recursion limit on long chains
        stack = [t]
        while stack:
            cur = stack[-1]
            if cur in cache:
                stack.pop()
                continue
            node = self.get(cur)
            if node is None:
                cache[cur] = None
                stack.pop()
                continue
            ins = self.inputs(node)
            pending = [i for i in ins if i not in cache]
            if node.op != "Const" and (node.op in _CONST_OPS or _invariant_enter(node)) and pending:
                if len(stack) > 4 * len(self.nodes) + 10:
                    raise GraphError(f"the graph has a cycle through node '{node.name}'")
                stack.extend(pending)
                continue
            stack.pop()
            cache[cur] = self._eval_const(node, split_input(cur)[1], [cache.get(i) for i in ins], wide)
        return cache[t]

    def _eval_const(self, node, out_idx, vals, wide):
        if out_idx != 0:
            return None
        if _invariant_enter(node):  # a loop invariant: the same value in every iteration
            return vals[0]
        if node.op == "Const":
            v = _tensor_to_ndarray(node.attr["value"].tensor)
            return v.astype(np.float64) if wide and _is_float(v) else v
        fn = _CONST_OPS.get(node.op)
        if fn is None or any(v is None for v in vals):
            return None
        try:
            with np.errstate(all="ignore"):
                out = fn(node, self, *vals)
        except (ValueError, TypeError, IndexError, ArithmeticError):
            # numpy's refusals (shapes that do not broadcast or reshape, a bad axis, an
            # unsupported dtype): not a constant we can compute.  Anything else is a bug.
            return None
        # a computed bfloat16 (a Cast to it) too: left narrow, an op mixing it with a widened
        # operand would take its dtype from the operand order
        return out.astype(np.float64) if wide and _is_float(out) else out

    def invalidate(self) -> None:
        """Drop every cached constant value (to free memory; edits invalidate by themselves)."""
        self._const_cache.clear()
        self._wide_cache.clear()

    def _invalidate_from(self, node_name: str) -> None:
        """Drop the cached values of ``node_name`` and of everything computed from them."""
        caches = (self._const_cache, self._wide_cache)
        queue = deque([node_name])
        seen = set()
        while queue:
            name = queue.popleft()
            if name in seen:
                continue
            seen.add(name)
            for t in self.output_tensors(name):
                hit = False
                for cache in caches:
                    if cache.pop(t, _MISSING) is not _MISSING:
                        hit = True
                if hit:  # an uncached tensor has no cached value computed from it
                    queue.extend(c for c, _ in self._consumers.get(t, ()))

    def _link(self, s: str, node_name: str, index: int) -> None:
        t = tensor_name(s)
        self._consumers[t].append((node_name, index))
        src, port, ctrl = split_input(t)
        if not ctrl:
            ports = self._ports[src]
            ports[port] = ports.get(port, 0) + 1

    def _unlink(self, s: str, node_name: str, index: int) -> None:
        t = tensor_name(s)
        lst = self._consumers.get(t)
        if lst is None or (node_name, index) not in lst:
            return
        lst.remove((node_name, index))
        src, port, ctrl = split_input(t)
        if not ctrl:
            ports = self._ports[src]
            ports[port] -= 1
            if not ports[port]:
                del ports[port]

    # ------------------------------------------------------------------ edits
    def unique_name(self, base: str) -> str:
        name = base
        while name in self.nodes:
            self._counter += 1
            name = f"{base}_{self._counter}"
        return name

    def add_node(self, node) -> object:
        if node.name in self.nodes:
            raise GraphError(f"internal: node '{node.name}' exists")
        self.nodes[node.name] = node
        for i, s in enumerate(node.input):
            self._link(s, node.name, i)
        self._invalidate_from(node.name)  # a replacement under a name others already read
        return node

    def new_node(self, op: str, name: str, inputs: Iterable[str] = (), **attrs):
        node = self._node_class()()
        node.op = op
        node.name = self.unique_name(name)
        node.input.extend(input_string(t) for t in inputs)
        for k, v in attrs.items():
            node.attr[k].CopyFrom(v)
        return self.add_node(node)

    def _node_class(self):
        return type(self._proto_type().node.add())

    def add_const(self, name: str, value: np.ndarray):
        from .tfproto import make_tensor_proto, dtype_attr

        node = self._node_class()()
        node.op = "Const"
        node.name = self.unique_name(name)
        node.attr["dtype"].CopyFrom(dtype_attr(value.dtype))
        node.attr["value"].tensor.CopyFrom(make_tensor_proto(value))
        self.add_node(node)
        self._const_cache[f"{node.name}:0"] = value
        return node

    def set_input(self, node_name: str, index: int, tensor: str) -> None:
        node = self.nodes[node_name]
        self._unlink(node.input[index], node_name, index)
        node.input[index] = input_string(tensor)
        self._link(tensor, node_name, index)
        self._invalidate_from(node_name)

    def rewire(self, old: str, new: str, skip: set[str] | frozenset = frozenset()) -> int:
        """Point every data consumer of tensor ``old`` (except nodes in ``skip``) at ``new``."""
        count = 0
        for cname, idx in self.consumers(old):
            if cname in skip:
                continue
            self.set_input(cname, idx, new)
            count += 1
        return count

    def remove_node(self, name: str) -> None:
        self._invalidate_from(name)
        node = self.nodes.pop(name)
        for i, s in enumerate(node.input):
            self._unlink(s, name, i)

    def drop_control_inputs(self, node_name: str, keep=lambda src: False) -> int:
        node = self.nodes[node_name]
        keep_inputs = []
        dropped = 0
        for s in list(node.input):
            if s.startswith("^") and not keep(s[1:]):
                dropped += 1
            else:
                keep_inputs.append(s)
        if dropped:
            for i, s in enumerate(node.input):
                self._unlink(s, node_name, i)
            del node.input[:]
            node.input.extend(keep_inputs)
            for i, s in enumerate(node.input):
                self._link(s, node_name, i)
        return dropped

    # ------------------------------------------------------------------ structure
    def ancestors(self, tensors: Iterable[str], control: bool = True) -> set[str]:
        """Names of all nodes the given tensors depend on (including their own nodes)."""
        seen: set[str] = set()
        queue = deque(node_of(t) for t in tensors)
        while queue:
            name = queue.popleft()
            if name in seen or name not in self.nodes:
                continue
            seen.add(name)
            for s in self.nodes[name].input:
                if s.startswith("^") and not control:
                    continue
                queue.append(split_input(s)[0])
        return seen

    def prune(self, outputs: Iterable[str], keep: Iterable[str] = ()) -> int:
        """Remove every node that neither the outputs nor ``keep`` depend on."""
        live = self.ancestors(list(outputs) + list(keep))
        dead = [n for n in self.nodes if n not in live]
        for n in dead:
            self.remove_node(n)
        return len(dead)

    def check_inputs_exist(self) -> None:
        for n in self.nodes.values():
            for s in n.input:
                src = split_input(s)[0]
                if src not in self.nodes:
                    raise GraphError(f"node '{n.name}' names input '{s}', which is not in the graph")

    def topo_order(self) -> list[str]:
        """Kahn's algorithm; raises GraphError naming a node on a cycle.

        NextIteration -> Merge edges (while loops) are legal back edges and are ignored.
        """
        indeg = {name: 0 for name in self.nodes}
        succ: dict[str, list[str]] = defaultdict(list)
        for n in self.nodes.values():
            for s in n.input:
                src = split_input(s)[0]
                if src not in self.nodes:
                    continue
                if self.nodes[src].op in ("NextIteration", "RefNextIteration"):
                    continue
                indeg[n.name] += 1
                succ[src].append(n.name)
        queue = deque(name for name, d in indeg.items() if d == 0)
        order = []
        while queue:
            name = queue.popleft()
            order.append(name)
            for s in succ[name]:
                indeg[s] -= 1
                if indeg[s] == 0:
                    queue.append(s)
        if len(order) != len(self.nodes):
            stuck = sorted(n for n, d in indeg.items() if d > 0)
            raise GraphError(f"the graph has a cycle through node '{stuck[0]}'")
        return order

    def to_graph_def(self):
        """A new, topologically sorted GraphDef.  Drops the cached constant values first: they
        are numpy copies of the weights and would double the peak memory."""
        self.invalidate()
        gd = self._proto_type()
        gd.versions.CopyFrom(self.versions)
        gd.library.CopyFrom(self.library)
        for name in self.topo_order():
            gd.node.add().CopyFrom(self.nodes[name])
        return gd

    def op_histogram(self) -> dict[str, int]:
        hist: dict[str, int] = defaultdict(int)
        for n in self.nodes.values():
            hist[n.op] += 1
        return dict(sorted(hist.items()))


# ---------------------------------------------------------------------- const ops
# the op table lives in consteval.py (Dequantize, FakeQuant, Fill, Pack, ConcatV2, arithmetic ...)
from .consteval import CONST_OPS as _CONST_OPS  # noqa: E402


def _tensor_to_ndarray(tensor_proto) -> np.ndarray:
    from .tfproto import make_ndarray

    return make_ndarray(tensor_proto)


def _is_float(v) -> bool:
    """float16/32/64 and bfloat16 (ml_dtypes' bfloat16 is numpy kind 'V', not 'f'): the values
    ``wide`` evaluation carries in float64."""
    return v.dtype.kind == "f" or v.dtype.name == "bfloat16"
