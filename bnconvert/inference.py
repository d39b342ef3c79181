"""Put a graph into inference mode without executing it.

1. **Training flags** are the bool ``Placeholder``/``PlaceholderWithDefault`` nodes that decide
   a ``cond`` (they reach the predicate input of a ``Switch``, possibly through Identity nodes
   such as ``cond/pred_id`` and through the ``Enter`` that carries them into a while loop).
   Each becomes a ``Const`` holding False (or what ``--set`` says).
   **Dropout parameters** are set the same way: a float placeholder that feeds a dropout —
   compared with (or, before TF 1.13, added to) a ``RandomUniform`` — as its keep probability
   (through ``1 - p``, or added to the noise) becomes 1.0, as its rate 0.0: inference keeps every
   unit, the classic TF1 ``keep_prob`` placeholder included (:func:`find_dropout_params`).
   ``--set NAME=NUMBER`` sets any scalar numeric placeholder to a constant.
2. **Cond pruning** resolves only the conds those constants decide: a ``Switch`` whose predicate
   is a constant (through Identity/Enter) has one dead output.  Deadness propagates forward
   through data and control edges, exactly as TensorFlow's executor does.  A ``Merge`` with one
   live input is resolved; a loop ``Merge`` (one input from ``NextIteration``) is never
   resolved, it dies only with its ``Enter``.  Resolution is one mechanism over the output
   ports each resolved node really has in use (read off the consumer index): a ``Switch``'s
   taken port stands for its data input, a ``Merge``'s ``:0`` for its live input and its
   ``:1`` (``value_index``) for a constant holding the live input's index.  Dead nodes go.
   ``Switch``es with a computed predicate (``LoopCond``, ``tf.cond`` on a tensor) stay.
3. **Control dependencies.**  TensorFlow uses a control edge for two things: to *order*
   execution, and — because a node takes the frame and the deadness of all its inputs — to
   *place* a node that has no data input into a frame: a Const in a while body gets
   ``^while/Identity`` (the body pivot), one in the loop condition ``^while/Merge``, one in a
   cond branch ``^cond/switch_t``.  The rule: a control edge ``^src -> dst`` is **kept** when
   ``src`` lies inside a while frame (frame depth > 0, counting Enter +1 and Exit -1 along all
   edges) or ``src`` may still be dead at run time (it depends on a ``Switch`` left
   unresolved, i.e. it is inside a cond that is not decided by a training flag).  Dropping
   such an edge would move ``dst`` into the root frame ("inputs from different frames") or make
   a branch constant live in both branches (a wrong ``Merge``).  Every other control edge only
   orders execution — moving-average updates, assertions, pivots of conds resolved here — and
   is **dropped**.
4. The graph is pruned to what the outputs need, so batch ``moments``, ``AssignMovingAvg``,
   ``RefSwitch``/``Assign*`` (already made value-typed by the loader) and optimizer ops vanish.
   While-loop machinery (``Enter``/``Exit``/``NextIteration``/``LoopCond``, ``TensorArray*``)
   is kept as it is.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .errors import InputError, UnsupportedError
from .graph import Graph, input_string, node_of, split_input, tensor_name
from . import tfproto

_PLACEHOLDERS = ("Placeholder", "PlaceholderWithDefault")
_IDENTITY_LIKE = ("Identity", "Snapshot", "StopGradient")
#: ops a predicate passes through unchanged: Identity-likes and the Enter into a while frame
_PASS_THROUGH = _IDENTITY_LIKE + ("Enter",)
DT_BOOL = 10


_FLOAT_TYPES = {1: np.float32, 2: np.float64, 19: np.float16}
_NUMERIC_TYPES = {**_FLOAT_TYPES, 3: np.int32, 9: np.int64, 4: np.uint8, 5: np.int16, 6: np.int8}
#: uniform noise in [0, 1) (scaled by constants): a dropout's; with the keep probability 1 (rate 0)
#: every draw keeps every unit
_RANDOM = ("RandomUniform", "StatelessRandomUniform", "StatelessRandomUniformV2")
#: ops a dropout's noise passes through on its way to the comparison (``min + (max-min)·u``)
_NOISE_PATH = ("Mul", "Add", "AddV2", "Identity", "Cast", "Enter")


@dataclass
class InferenceResult:
    flags: dict[str, bool | float] = field(default_factory=dict)  # "phase:0" -> value set
    switches_resolved: int = 0
    merges_resolved: int = 0
    #: dropout draws replaced by zeros (their keep probability set to 1)
    dropout_draws_removed: list[str] = field(default_factory=list)
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
            if src.op not in _PASS_THROUGH or not src.input:
                break
            t = tensor_name(src.input[0])
    return sorted(flags)


def parse_set(items: list[str] | None) -> dict[str, bool | float]:
    """``["phase=false", "keras_learning_phase:0=0", "keep_prob=1.0"]`` ->
    {"phase": False, ..., "keep_prob": 1.0}: true/false words (and 1/0) are bools, other
    numbers floats (a numeric placeholder takes 1/0 as numbers too, :func:`to_inference`)."""
    out: dict[str, bool | float] = {}
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
            try:
                number = float(v)
            except ValueError:
                number = float("nan")
            if not np.isfinite(number):
                raise InputError(f"--set '{item}': value must be true, false or a finite number")
            out[node_of(name.strip())] = number
    return out


def find_dropout_params(g: Graph) -> dict[str, tuple[float, set[str]]]:
    """``{placeholder: (value, noise nodes)}`` for the float placeholders that are a dropout's keep
    probability (value 1.0) or rate (0.0), by the dropout's structure, not by name; the noise
    nodes are the random ops that dropout draws from and nothing else reads.

    A candidate is a scalar (or unknown-rank) float placeholder.  Followed forward through
    Identity-likes, ``Cast``, the ``Enter`` into a while loop, the ``Switch`` into a cond's branches
    (``tf.layers.dropout(rate=p, training=phase)``) and ``Sub(1, p)`` (TF >= 1.13 writes
    ``keep_prob`` as ``rate = 1 - keep_prob``), it must reach a comparison with noise from a
    ``RandomUniform`` (``random >= rate``: the keep mask) or, before TF 1.13, an ``Add`` with that
    noise feeding a ``Floor`` (``floor(keep_prob + random)``).  The mask must be used as one: it
    selects between a value and zero (``where(mask, x, 0)``) or is cast and multiplied
    (``x * cast(mask)``, ``x * floor(...)``) — a ``where(uniform >= epsilon, a, b)`` picking between
    two values is no dropout.  The noise must be a uniform draw in [0, 1): with the keep
    probability 1 (rate 0) every draw keeps every unit, so :func:`to_inference` also replaces the
    draw by zeros (a deterministic model with the same values; nothing random is exported) —
    only a draw read by nothing but keep masks (a draw also added to the output, or compared with
    a fixed rate, stays).  Every other reader on the way may only be the dropout's scaling: a
    division by the keep probability (``x / keep_prob``, ``1 / (1 - rate)``, ``Reciprocal``),
    which is 1 at inference; a placeholder also read otherwise (``logits * keep_prob``,
    ``x / rate``) has another role and is left alone.  Reached through an odd number of
    ``1 - p`` it is a keep probability, else a rate."""
    return _dropout_params(g)[0]


def _dropout_params(g: Graph) -> tuple[dict[str, tuple[float, set[str]]], dict[str, set[str]]]:
    """(:func:`find_dropout_params`, ``{draw: the placeholders whose keep masks it feeds}``)."""
    params: dict[str, tuple[float, set[str]]] = {}
    masks: dict[tuple[str, int], str] = {}  # (mask node, the noise's input index) -> placeholder
    for n in list(g.nodes.values()):
        if n.op not in _PLACEHOLDERS or n.attr["dtype"].type not in _FLOAT_TYPES or not _scalar_like(n):
            continue
        found = _dropout_kind(g, n.name)
        if found is not None:
            params[n.name] = (1.0 if found[0] == "keep" else 0.0, found[1])
            masks.update(dict.fromkeys(found[2], n.name))
    owners: dict[str, set[str]] = {}
    for name, (value, draws) in params.items():
        for d in draws:
            if d not in owners:
                owners[d] = _mask_owners(g, d, masks)
        params[name] = (value, {d for d in draws if owners[d] is not None})
    return params, {d: o for d, o in owners.items() if o is not None}


def _mask_owners(g: Graph, draw: str, masks: dict[tuple[str, int], str]) -> set[str] | None:
    """The placeholders whose keep masks ``draw`` feeds, if it feeds nothing else (through its own
    arithmetic, ``min + (max-min)·u``), else None: zeroing it would change another value."""
    owners: set[str] = set()
    stack, seen = [f"{draw}:0"], set()
    while stack:
        t = stack.pop()
        if t in seen:
            continue
        seen.add(t)
        for c, index in g.consumers(t):
            if (c, index) in masks:
                owners.add(masks[(c, index)])
            elif _noise_step(g, g.nodes[c]) == t:
                stack.append(f"{c}:0")
            else:
                return None
    return owners


def _scalar_like(node) -> bool:
    shape = node.attr["shape"].shape if "shape" in node.attr else None
    return shape is None or shape.unknown_rank or all(d.size == 1 for d in shape.dim)


def _noise_step(g: Graph, n) -> str | None:
    """The noise input of ``n`` if ``n`` is a step of a uniform draw's own arithmetic that keeps
    it in [0, 1) (``u·c`` with c in [0, 1], ``u + 0``, Identity, Cast, the Enter into a loop)."""
    if n.op not in _NOISE_PATH:
        return None
    consts = [g.const(t) for t in g.inputs(n)]
    ins = [t for t, c in zip(g.inputs(n), consts) if c is None]  # the noise, not min/max
    known = [c for c in consts if c is not None]
    if len(ins) != 1 or (n.op in ("Add", "AddV2") and any(np.any(c != 0) for c in known)) \
            or (n.op == "Mul" and any(np.any((c < 0) | (c > 1)) for c in known)):
        return None  # the draw leaves [0, 1)
    return ins[0]


def _from_noise(g: Graph, tensor: str, hops: int = 4) -> str | None:
    """The uniform random op ``tensor`` is computed from, through the noise's own arithmetic
    (``min + (max - min)·u`` with ``min`` 0: the draw stays in [0, 1)), else None."""
    for _ in range(hops + 1):
        n = g.get(tensor)
        if n is None:
            return None
        if n.op in _RANDOM:
            return n.name
        tensor = _noise_step(g, n)
        if tensor is None:
            return None
    return None


def _is_zero(g: Graph, tensor: str) -> bool:
    """``tensor`` is all zeros: a constant, ``zeros_like(x)`` or ``fill(shape, 0)``."""
    v = g.const(tensor)
    if v is not None:
        return v.size > 0 and not np.any(v)
    n = g.get(tensor)
    if n is None:
        return False
    if n.op == "ZerosLike":
        return True
    if n.op == "Fill" and len(g.inputs(n)) == 2:
        v = g.const(g.inputs(n)[1])
        return v is not None and v.size == 1 and not np.any(v)
    return False


def _used_as_mask(g: Graph, tensor: str, keep: str) -> bool:
    """Every reader of the 0/1 ``tensor`` uses it to keep or zero units: ``where(mask, x, 0)``,
    ``x * cast(mask)`` (``keep`` "bool"), or ``x * floor(keep_prob + u)`` (``keep`` "float")."""
    for c, index in g.consumers(tensor):
        n = g.nodes[c]
        if keep == "bool" and n.op in ("Select", "SelectV2") and index == 0 and len(g.inputs(n)) == 3 \
                and _is_zero(g, g.inputs(n)[2]):
            continue
        if keep == "bool" and n.op == "Cast" and _used_as_mask(g, f"{c}:0", "float"):
            continue
        if keep == "float" and n.op == "Mul":
            continue
        return False
    return True


def _dropout_kind(g: Graph, name: str) -> tuple[str, set[str], set[tuple[str, int]]] | None:
    """``("keep" or "rate", noise nodes, keep masks)`` if placeholder ``name`` only parameterises
    a dropout (see :func:`find_dropout_params`), else None; a keep mask is ``(node, index)``: the
    node and the input the noise enters it by."""
    found: set[str] = set()
    noise: set[str] = set()
    masks: set[tuple[str, int]] = set()
    divisors: list[int] = []  # the flips of each tensor something divides by
    todo = [(f"{name}:0", 0)]
    seen = set()
    while todo:
        t, flips = todo.pop()
        if (t, flips) in seen:
            continue  # one tensor read by two paths (a shared ``1 - p``): each reader is checked once
        if len(seen) > 2 * len(g.nodes):
            return None
        seen.add((t, flips))
        readers = g.consumers(t)
        if not readers:
            continue
        for reader, index in readers:
            r = g.nodes[reader]
            ins = g.inputs(r)
            others = [x for x in ins if x != t]
            if r.op in _IDENTITY_LIKE or r.op in ("Cast", "Enter"):
                todo.append((f"{reader}:0", flips))
            elif r.op == "Switch" and index == 0:  # into a cond's branches (tf.layers.dropout's training cond)
                todo.extend([(f"{reader}:0", flips), (f"{reader}:1", flips)])
            elif r.op == "Sub" and len(r.input) == 2 and tensor_name(r.input[1]) == t \
                    and _is_one(g, tensor_name(r.input[0])):
                todo.append((f"{reader}:0", flips + 1))
            elif r.op == "GreaterEqual" and ins[1:] == [t] and _from_noise(g, ins[0]) \
                    and _used_as_mask(g, f"{reader}:0", "bool"):
                noise.add(_from_noise(g, ins[0]))  # the keep mask: noise >= rate
                masks.add((reader, 0))
                found.add("rate" if flips % 2 == 0 else "keep")
            elif r.op in ("Add", "AddV2") and len(others) == 1 and len(ins) == 2 and _from_noise(g, others[0]) \
                    and g.consumers(f"{reader}:0") \
                    and all(g.nodes[c].op == "Floor" and _used_as_mask(g, f"{c}:0", "float")
                            for c, _ in g.consumers(f"{reader}:0")):
                noise.add(_from_noise(g, others[0]))  # TF <= 1.12: floor(keep_prob + noise)
                masks.add((reader, 1 - index))
                found.add("keep" if flips % 2 == 0 else "rate")
            elif (r.op in ("RealDiv", "Div") and index == 1 and ins[0] != t) or r.op == "Reciprocal":
                divisors.append(flips)  # the scaling x / keep_prob, 1 / (1 - rate)
            else:
                return None  # read by something else: not only a dropout's parameter
    if len(found) != 1:
        return None
    kind = found.pop()
    # a divisor must be the keep probability (1 at inference), never the rate (0)
    if any((kind == "keep") != (f % 2 == 0) for f in divisors):
        return None
    return kind, noise, masks


def _is_one(g: Graph, tensor: str) -> bool:
    v = g.const(tensor)
    return v is not None and v.size == 1 and float(v.reshape(-1)[0]) == 1.0


def to_inference(g: Graph, overrides: dict[str, bool | float] | None = None) -> InferenceResult:
    """Set training flags and dropout parameters, and prune every cond the flags decide.  Edits
    ``g`` in place.  ``overrides``: ``{placeholder: value}`` (``--set``): a bool placeholder takes
    a bool, a scalar numeric one a number."""
    overrides = dict(overrides or {})
    flags = find_training_flags(g)
    values: dict[str, np.ndarray] = {}
    for name in overrides:
        n = g.get(name)
        if n is None:
            raise InputError(f"--set: no node named '{name}' in the graph")
        if n.op not in _PLACEHOLDERS:
            raise InputError(f"--set: '{name}' is a {n.op}, not a placeholder")
        dtype = n.attr["dtype"].type
        value = overrides[name]
        if dtype == DT_BOOL:
            if not isinstance(value, (bool, np.bool_)):
                raise InputError(f"--set: '{name}' is a bool placeholder: give true or false, not {value:g}")
            if name not in flags:
                flags.append(name)
        elif dtype in _NUMERIC_TYPES:
            if not _scalar_like(n):
                raise InputError(f"--set: '{name}' is not a scalar placeholder (shape "
                                 f"{[d.size for d in n.attr['shape'].shape.dim]}); only a scalar can be set")
            values[name] = _numeric_value(name, _NUMERIC_TYPES[dtype], value)
        else:
            raise InputError(f"--set: '{name}' is a placeholder of a type --set cannot give (bool or number)")
    params, owners = _dropout_params(g)
    neutral = set()  # dropout parameters at their inference value: every unit kept
    for name, (v, _) in params.items():
        if name not in overrides:
            values[name] = np.asarray(v, dtype=_FLOAT_TYPES[g.nodes[name].attr["dtype"].type])
        if float(values.get(name, np.nan)) == v:
            neutral.add(name)
    # a draw no longer matters when every keep mask it feeds keeps every unit
    noise = {d for d, o in owners.items() if o <= neutral}
    res = InferenceResult()
    had_consumers = {name for name in g.nodes if g.all_consumers(name)}
    for name in sorted(flags):
        value = bool(overrides.get(name, False))
        _replace_with_const(g, name, np.array(value))
        res.flags[f"{name}:0"] = value
    for name in sorted(values):
        _replace_with_const(g, name, _shaped(g.nodes[name], values[name]))
        res.flags[f"{name}:0"] = values[name].item()
    for name in sorted(noise):
        _zero_draw(g, name)
    res.dropout_draws_removed = sorted(noise)
    _resolve_conds(g, res)
    keep = _placing_sources(g)
    for name in list(g.nodes):
        res.control_deps_dropped += g.drop_control_inputs(name, keep=keep.__contains__)
    res.orphans = {name for name in had_consumers if name in g.nodes and not g.all_consumers(name)}
    return res


def noise_path(g: Graph, draws, own: bool = False) -> set[str]:
    """The nodes whose values depend on the dropout ``draws`` only through the noise's own
    arithmetic (the draws themselves, ``min + (max-min)·u``, ``keep_prob + u``): their values
    change when a draw is zeroed; the keep mask after them does not.  ``own``: only the draw's
    own arithmetic (each step's other inputs constants: ``min + (max-min)·u``), for a random op
    left in the model, whose values differ from runtime to runtime."""
    out, stack = set(), [d for d in draws if d in g.nodes]
    while stack:
        n = stack.pop()
        if n in out:
            continue
        out.add(n)
        for c in g.all_consumers(n):
            node = g.nodes[c]
            if node.op in _NOISE_PATH and (not own or all(
                    node_of(t) == n or g.const(t) is not None for t in g.inputs(node))):
                stack.append(c)
    return out


def _numeric_value(name: str, np_type, value) -> np.ndarray:
    """``value`` as the placeholder's type, or an InputError if that type cannot hold it (a uint8
    placeholder set to 300 or -1, a float16 one to 1e6: never a silently wrapped or infinite
    constant)."""
    what = np.dtype(np_type).name
    if np.issubdtype(np_type, np.integer):
        if float(value) != int(value):
            raise InputError(f"--set: '{name}' is an integer placeholder ({what}): give a whole number, not {value:g}")
        info = np.iinfo(np_type)
        if not info.min <= int(value) <= info.max:
            raise InputError(f"--set: '{name}' is a placeholder of type {what}: {value:g} is out of its range "
                             f"[{info.min}, {info.max}]")
        return np.asarray(int(value), dtype=np_type)
    with np.errstate(over="ignore"):
        out = np.asarray(value, dtype=np_type)
    if not np.isfinite(out):
        raise InputError(f"--set: '{name}' is a placeholder of type {what}: {value:g} is out of its range "
                         f"(largest {float(np.finfo(np_type).max):g})")
    return out


def _zero_draw(g: Graph, name: str) -> None:
    """Random op ``name`` (a dropout's uniform draw) becomes ``Fill(its shape, 0)``: a draw it
    could make, the same for every run."""
    old = g.nodes[name]
    zero = type(old)()
    zero.name = g.unique_name(f"{name}/bnconvert_zero")
    zero.op = "Const"
    zero.attr["dtype"].CopyFrom(old.attr["dtype"])
    np_type = _FLOAT_TYPES.get(old.attr["dtype"].type, np.float32)
    zero.attr["value"].tensor.CopyFrom(tfproto.make_tensor_proto(np.zeros((), np_type)))
    fill = type(old)()
    fill.name = name
    fill.op = "Fill"
    control = [i for i in old.input if i.startswith("^")]  # a frame's placement stays
    fill.input.extend([old.input[0], zero.name] + control)
    # the zero constant sits in the draw's frame: a draw inside a while loop takes its frame from
    # its shape input, a Const from a control edge (a root-frame Const feeding the loop's Fill
    # would be "inputs from different frames"); outside a loop the edge only orders, and goes
    zero.input.extend(control or ["^" + node_of(old.input[0])])
    fill.attr["T"].CopyFrom(old.attr["dtype"])
    fill.attr["index_type"].CopyFrom(old.attr["T"] if "T" in old.attr else old.attr["Tshape"])
    if old.device:
        fill.device = old.device
    g.remove_node(name)
    g.add_node(zero)
    g.add_node(fill)


def _shaped(node, value: np.ndarray) -> np.ndarray:
    """``value`` in the placeholder's declared shape (all ones, e.g. ``[1]``), a scalar if it
    declares none."""
    shape = node.attr["shape"].shape if "shape" in node.attr else None
    if shape is None or shape.unknown_rank:
        return value
    return value.reshape([1] * len(shape.dim))


def _replace_with_const(g: Graph, name: str, value: np.ndarray) -> None:
    old = g.nodes[name]
    node = type(old)()
    node.name = name
    node.op = "Const"
    node.attr["dtype"].CopyFrom(old.attr["dtype"])
    node.attr["value"].tensor.CopyFrom(tfproto.make_tensor_proto(value))
    g.remove_node(name)
    g.add_node(node)


def predicate_value(g: Graph, tensor: str) -> bool | None:
    """The constant value of a Switch predicate (through Identity-likes and Enter), else None."""
    for _ in range(len(g.nodes) + 1):
        src = g.get(tensor)
        if src is None or src.op not in _PASS_THROUGH or not src.input:
            break
        tensor = tensor_name(src.input[0])
    v = g.const(tensor)
    if v is None or v.size != 1:
        return None
    return bool(v.reshape(-1)[0])


def _is_loop_merge(g: Graph, data: list[str]) -> bool:
    return any(g.nodes[node_of(t)].op in ("NextIteration", "RefNextIteration") for t in data if node_of(t) in g.nodes)


@dataclass
class _Deadness:
    """What a constant predicate decides: dead nodes, dead ports, resolved Switches/Merges."""

    dead: set[str] = field(default_factory=set)  # nodes all of whose outputs are dead
    dead_ports: set[str] = field(default_factory=set)  # untaken Switch outputs
    #: resolved port -> the tensor it stands for ("Merge:1" -> None: its value_index const)
    port_value: dict[str, str | None] = field(default_factory=dict)
    merge_index: dict[str, int] = field(default_factory=dict)  # resolved Merge -> live input
    partial: dict[str, list[str]] = field(default_factory=dict)  # Merge -> its live inputs (> 1)
    resolved: list[str] = field(default_factory=list)  # Switch/Merge names, topological order

    def is_dead(self, t: str) -> bool:
        return node_of(t) in self.dead or t in self.dead_ports


def _propagate(g: Graph) -> _Deadness:
    """Forward deadness from constant predicates, as TensorFlow's executor would."""
    d = _Deadness()
    for name in g.topo_order():
        n = g.nodes[name]
        data = g.inputs(n)
        if any(c in d.dead for c in g.control_inputs(n)):
            d.dead.add(name)
        elif n.op == "Merge":
            _merge(g, d, name, data)
        elif any(d.is_dead(t) for t in data):
            d.dead.add(name)
        elif n.op == "Switch":
            value = predicate_value(g, data[1])
            if value is not None:
                taken = int(value)
                d.dead_ports.add(f"{name}:{1 - taken}")
                d.port_value[f"{name}:{taken}"] = data[0]
                d.resolved.append(name)
    return d


def _merge(g: Graph, d: _Deadness, name: str, data: list[str]) -> None:
    if _is_loop_merge(g, data):  # a loop never starts when its Enter is dead
        if any(d.is_dead(t) for t in data if g.nodes[node_of(t)].op not in ("NextIteration", "RefNextIteration")):
            d.dead.add(name)
        return
    live = [t for t in data if not d.is_dead(t)]
    if not live:
        d.dead.add(name)
    elif len(live) == 1:
        d.port_value[f"{name}:0"] = live[0]
        d.port_value[f"{name}:1"] = None
        d.merge_index[name] = data.index(live[0])
        d.resolved.append(name)
    elif len(live) < len(data):
        d.partial[name] = live


def _final(d: _Deadness, t: str) -> str:
    """Follow resolved ports to the tensor that really computes the value."""
    seen = set()
    while t in d.port_value and d.port_value[t] is not None and t not in seen:
        seen.add(t)
        t = d.port_value[t]
    return t


def _resolve_conds(g: Graph, res: InferenceResult) -> None:
    d = _propagate(g)
    for name in d.dead:
        g.remove_node(name)
        res.dead_removed += 1
    for name, live in d.partial.items():  # a Merge of 3+ branches with some left: drop the dead
        node = g.nodes[name]
        ctrl = [s for s in node.input if s.startswith("^")]
        g.remove_node(name)
        del node.input[:]
        node.input.extend([input_string(t) for t in live] + ctrl)
        node.attr["N"].i = len(live)
        g.add_node(node)
    resolved = set(d.resolved)
    for name in d.resolved:
        node = g.nodes[name]
        for port in g.used_ports(name):
            t = f"{name}:{port}"
            if t not in d.port_value:
                continue  # an untaken Switch port: only resolved Merges still read it
            if d.port_value[t] is None:  # Merge value_index
                c = g.add_const(f"{name}/value_index", np.array(d.merge_index[name], dtype=np.int32))
                g.rewire(t, f"{c.name}:0")
            else:
                g.rewire(t, _final(d, t), skip=resolved)
        if node.op == "Switch":
            res.switches_resolved += 1
        else:
            res.merges_resolved += 1
    # the resolved nodes now feed only each other and control edges: replace or remove them
    for name in reversed(d.resolved):  # consumers first: a Merge may still read a Switch port
        _retire(g, name, _final(d, f"{name}:0" if g.nodes[name].op == "Merge" else
                                _taken_port(d, name)))
    for n in g.nodes.values():
        for s in n.input:
            if not s.startswith("^") and split_input(s)[0] not in g.nodes:
                raise UnsupportedError(f"node '{n.name}' needs '{s}', which exists only in training mode")


def _taken_port(d: _Deadness, name: str) -> str:
    return next(f"{name}:{i}" for i in (0, 1) if f"{name}:{i}" in d.port_value)


def _retire(g: Graph, name: str, src: str) -> None:
    """Remove resolved ``name``, or make it an Identity of ``src`` if control edges still use it."""
    others = [c for c in g.all_consumers(name) if c in g.nodes]
    old = g.nodes[name]
    t_attr = old.attr["T"] if "T" in old.attr else None
    g.remove_node(name)
    if not others:
        return
    ident = type(old)()
    ident.name, ident.op = name, "Identity"
    ident.input.append(input_string(src))
    if t_attr is not None:
        ident.attr["T"].CopyFrom(t_attr)
    g.add_node(ident)


def _placing_sources(g: Graph) -> set[str]:
    """Nodes whose outgoing control edges place their consumers (see the module docstring):
    those inside a while frame and those that may still be dead at run time."""
    depth: dict[str, int] = {}
    may_dead: set[str] = set()
    for name in g.topo_order():
        n = g.nodes[name]
        srcs = [split_input(s)[0] for s in n.input]
        data = g.inputs(n)
        if n.op in ("Enter", "RefEnter"):
            depth[name] = depth.get(node_of(data[0]), 0) + 1
        elif n.op in ("Exit", "RefExit"):
            depth[name] = max(depth.get(node_of(data[0]), 0) - 1, 0)
        else:
            depth[name] = max((depth.get(s, 0) for s in srcs), default=0)
        if n.op in ("Switch", "RefSwitch"):
            may_dead.add(name)
        elif n.op in ("Merge", "RefMerge"):
            entry = [node_of(t) for t in data if g.nodes[node_of(t)].op not in ("NextIteration", "RefNextIteration")]
            if entry and all(s in may_dead for s in entry):
                may_dead.add(name)
        elif n.op not in ("Exit", "RefExit") and any(s in may_dead for s in srcs):
            may_dead.add(name)
    return {name for name, k in depth.items() if k > 0} | may_dead


def place_constants_in_frames(g: Graph) -> int:
    """Give every input-less ``Const`` read inside a while frame an ``Enter`` (``is_constant``)
    into that frame, as TensorFlow itself carries loop invariants.  Folding writes its new
    weights and biases as such constants; without the Enter a folded layer inside a loop body
    would read from the root frame.  Returns the number of Enter nodes added."""
    frames, templates = _frames(g)
    added = 0
    for name in list(g.nodes):
        node = g.nodes[name]
        if node.op != "Const" or node.input:
            continue
        by_frame: dict[tuple, list[tuple[str, int]]] = {}
        for cname, idx in g.consumers(f"{name}:0"):
            c = g.nodes[cname]
            want = frames.get(cname, ())[:-1] if c.op in ("Enter", "RefEnter") else frames.get(cname, ())
            if c.op not in ("Exit", "RefExit") and want:
                by_frame.setdefault(want, []).append((cname, idx))
        for stack, users in by_frame.items():
            src = f"{name}:0"
            for frame in stack:
                src = f"{_enter(g, src, node.attr['dtype'], templates[frame]).name}:0"
                added += 1
            for cname, idx in users:
                g.set_input(cname, idx, src)
    return added


def _frames(g: Graph) -> tuple[dict[str, tuple], dict[str, object]]:
    """Each node's stack of while frame names, and one Enter node per frame (as a template)."""
    frames: dict[str, tuple] = {}
    templates: dict[str, object] = {}
    for name in g.topo_order():
        n = g.nodes[name]
        srcs = [split_input(s)[0] for s in n.input]
        data = g.inputs(n)
        if n.op in ("Enter", "RefEnter"):
            frame = n.attr["frame_name"].s.decode()
            frames[name] = frames.get(node_of(data[0]), ()) + (frame,)
            templates.setdefault(frame, n)
        elif n.op in ("Exit", "RefExit"):
            frames[name] = frames.get(node_of(data[0]), ())[:-1]
        else:
            frames[name] = max((frames.get(s, ()) for s in srcs), key=len, default=())
    return frames, templates


def _enter(g: Graph, src: str, dtype_attr, template):
    node = g.new_node("Enter", f"{node_of(src)}/enter", [src])
    node.attr["T"].type = dtype_attr.type
    node.attr["frame_name"].CopyFrom(template.attr["frame_name"])
    node.attr["is_constant"].b = True
    if "parallel_iterations" in template.attr:
        node.attr["parallel_iterations"].CopyFrom(template.attr["parallel_iterations"])
    return node
