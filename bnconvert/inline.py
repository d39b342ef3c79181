"""Inline the function calls of a TF2 SavedModel's graph, so that it freezes like a TF1 graph.

Decision (Keras ``model.save``): a SavedModel written by TensorFlow 2 — ``tf.saved_model.save``
or tf_keras' ``model.save(path)`` — is folded, not refused.  Its serving graph is a TF1 graph in
all but one respect: the computation sits in the GraphDef's function library.  The signature's
output is a ``StatefulPartitionedCall`` whose inputs are the signature's placeholders and the
variables' ``VarHandleOp`` handles; the function it calls reads each variable with
``ReadVariableOp`` on a resource argument (and may call further functions).  Once those calls are
replaced by the functions' bodies, the graph is an ordinary one with resource variables, which
:func:`bnconvert.freeze.freeze` freezes from the variables bundle (the keys come from the bundle's
object graph, :meth:`bnconvert.freeze.BundleReader.object_graph_keys`).

Inlining only rewrites protocol buffers: no TensorFlow graph is built, nothing is run (TensorFlow's
own route, ``tf.saved_model.load`` + ``convert_variables_to_constants_v2``, runs the file's restore
functions, which :mod:`bnconvert.freeze` exists to avoid).  Each inlined node keeps its name inside
the function where that name is free in the graph (so a Keras layer's BN is named
``model/batch_normalization/...`` as in Keras), else gets the call's name as a prefix; a call node
becomes an ``Identity`` (``IdentityN`` for several results, ``NoOp`` for none) of the function's
results, with control edges from the function's control outputs, so every tensor and control edge
that named the call still holds.  Calls through ``PartitionedCall``, ``StatefulPartitionedCall``
or a function's own name are inlined; functional control flow (``If``, ``While``, ``Case``) is
left alone.  A function with list-typed arguments cannot be inlined and is refused with one line,
as is a graph that would grow past :data:`MAX_NODES` nodes or past a byte bound (the memory
budget, at most protobuf's 2 GiB: nested calls copy a function's constants once per call), calls
nested more than :data:`MAX_DEPTH` deep (each level's names carry the enclosing call's name, so
names grow with the depth), a library function named like a TensorFlow op (TensorFlow refuses
such a library), and a function body with two nodes of one name or a malformed tensor name.
"""
from __future__ import annotations

from .errors import InputError

CALL_OPS = ("PartitionedCall", "StatefulPartitionedCall")
#: most nodes an inlined graph may hold (nested calls multiply: a bomb of functions each calling
#: the next twice is refused here instead of exhausting memory)
MAX_NODES = 2_000_000
#: most calls nested inside one another (Keras: signature -> model -> sub-model -> layer, ~10)
MAX_DEPTH = 256
#: protobuf refuses to serialize a GraphDef past 2 GiB
MAX_BYTES = (1 << 31) - 1


def _called_function(n, lib: dict) -> str | None:
    if n.op in lib:
        return n.op
    if n.op in CALL_OPS and "f" in n.attr and n.attr["f"].func.name in lib:
        return n.attr["f"].func.name
    return None


def inline_calls(graph_def, where: str, max_bytes: int | None = None):
    """``(graph_def, count)``: a copy of ``graph_def`` with every call of a library function
    replaced by the function's body (nested calls too); ``count`` is the number of calls inlined
    (0: ``graph_def`` itself is returned).  The library is cut to the functions still referenced.

    Refused before the graph is built: more than :data:`MAX_NODES` nodes, more than ``max_bytes``
    (at most :data:`MAX_BYTES`) serialized bytes, calls nested more than :data:`MAX_DEPTH` deep."""
    from collections import deque

    from . import tfproto

    lib = {f.signature.name: f for f in graph_def.library.function}
    if not lib or not any(_called_function(n, lib) for n in graph_def.node):
        return graph_def, 0
    for name in sorted(lib):
        if tfproto.op_registered(name):
            raise InputError(f"{where}: library function '{name}' has the name of a TensorFlow op; TensorFlow "
                             "refuses such a library, and bnconvert does not guess which one a node means")
    limit = min(max_bytes, MAX_BYTES) if max_bytes else MAX_BYTES
    out = tfproto.new_graph_def()
    out.versions.CopyFrom(graph_def.versions)
    nodes = deque((_copy(n), 0) for n in graph_def.node)
    names = {n.name for n, _ in nodes}
    size = sum(n.ByteSize() for n, _ in nodes)
    body_bytes: dict[str, int] = {}
    done: list = []
    count = 0
    while nodes:
        n, depth = nodes.popleft()
        fname = _called_function(n, lib)
        if fname is None:
            done.append(n)
            continue
        if depth >= MAX_DEPTH:
            shown = n.name if len(n.name) <= 80 else "…" + n.name[-79:]
            raise InputError(f"{where}: function calls nested more than {MAX_DEPTH} deep (node '{shown}' calls "
                             f"function '{fname}'); refusing to inline them")
        if fname not in body_bytes:
            body_bytes[fname] = sum(nd.ByteSize() for nd in lib[fname].node_def)
        if len(done) + len(nodes) + len(lib[fname].node_def) > MAX_NODES:
            raise InputError(f"{where}: inlining the function calls would make a graph of more than {MAX_NODES} "
                             "nodes; refusing it")
        _check_size(size + body_bytes[fname], limit, where)  # before the body is copied
        body, call = _inline_one(n, lib[fname], lib, names, where)
        count += 1
        size += sum(b.ByteSize() for b in body) + call.ByteSize() - n.ByteSize()
        _check_size(size, limit, where)
        nodes.extendleft((b, depth + 1) for b in reversed(body))  # nested calls are inlined in turn
        done.append(call)
    out.node.extend(done)
    out.library.CopyFrom(referenced_library(graph_def.library, out.node))
    return out, count


def _check_size(size: int, limit: int, where: str) -> None:
    if size > limit:
        from .budget import human

        raise InputError(f"{where}: inlining the function calls would make a graph of more than {human(limit)} "
                         "(nested calls copy a function's body once per call); refusing it"
                         + (" (--max-memory)" if limit < MAX_BYTES else ""))


def _copy(n):
    c = type(n)()
    c.CopyFrom(n)
    return c


def _inline_one(call, fdef, lib: dict, names: set, where: str):
    """The body of ``fdef`` for ``call`` (renamed, wired to the call's inputs) and the node that
    replaces the call."""
    sig = fdef.signature
    label = f"{where}: node '{call.name}' calls function '{sig.name}'"
    for a in list(sig.input_arg) + list(sig.output_arg):
        if a.number_attr or a.type_list_attr:
            raise InputError(f"{label}, which has a list-typed argument '{a.name}'; bnconvert cannot inline it "
                             "(export a frozen graph instead)")
    data = [s for s in call.input if not s.startswith("^")]
    ctrl = [s for s in call.input if s.startswith("^")]
    if len(data) != len(sig.input_arg):
        raise InputError(f"{label} with {len(data)} input(s); the function takes {len(sig.input_arg)}")
    args = {a.name: t for a, t in zip(sig.input_arg, data)}
    rename: dict[str, str] = {}
    seen: set[str] = set()
    for nd in fdef.node_def:
        if nd.name in seen:
            raise InputError(f"{label}, which has two nodes named '{nd.name}'")
        seen.add(nd.name)
        new = nd.name if nd.name not in names else f"{call.name}/{nd.name}"
        k = 1
        while new in names:
            new = f"{call.name}/{nd.name}_{k}"
            k += 1
        names.add(new)
        rename[nd.name] = new
    inner = {nd.name: nd for nd in fdef.node_def}

    def tensor(ref: str) -> str:
        if ref.startswith("^"):
            src = ref[1:]
            if src in args:
                return "^" + args[src].split(":")[0]
            if src not in rename:
                raise InputError(f"{label}, whose node list names a missing node '{src}'")
            return "^" + rename[src]
        if ref in args:
            return args[ref]
        parts = ref.split(":")
        if parts[0] not in rename:
            raise InputError(f"{label}, whose node list names a missing tensor '{ref}'")
        # a function body names node:output_arg:index; node:index and node are read as graph names
        if len(parts) > 3 or not (len(parts) == 1 or (parts[-1].isascii() and parts[-1].isdigit())):
            raise InputError(f"{label}, whose node list names the malformed tensor '{ref[:200]}'")
        if len(parts) == 3:
            index = _output_offset(inner[parts[0]], parts[1], lib, label) + int(parts[2])
        else:
            index = int(parts[1]) if len(parts) == 2 else 0
        return rename[parts[0]] + (f":{index}" if index else "")

    body = []
    for nd in fdef.node_def:
        n = _copy(nd)
        n.name = rename[nd.name]
        n.device = ""
        refs = [tensor(s) for s in nd.input]
        if not refs:
            refs = list(ctrl)  # a root of the body runs after the call's control inputs
        del n.input[:]
        n.input.extend(dict.fromkeys(refs))
        for a in n.attr.values():
            if a.WhichOneof("value") == "placeholder":
                if a.placeholder not in call.attr:
                    raise InputError(f"{label}, whose attribute '{a.placeholder}' the call does not set")
                a.CopyFrom(call.attr[a.placeholder])
        body.append(n)
    rets = [tensor(fdef.ret[a.name]) for a in sig.output_arg]
    after = ["^" + rename[fdef.control_ret[c]] for c in sig.control_output if fdef.control_ret.get(c) in rename]
    repl = type(call)()
    repl.name = call.name
    types = [a.type if not a.type_attr else call.attr[a.type_attr].type for a in sig.output_arg]
    if len(rets) == 1:
        repl.op = "Identity"
        repl.attr["T"].type = types[0]
    elif rets:
        repl.op = "IdentityN"
        repl.attr["T"].list.type.extend(types)
    else:
        repl.op = "NoOp"
    repl.input.extend(dict.fromkeys(rets + after + (ctrl if not rets else [])))
    return body, repl


def _output_offset(node, arg: str, lib: dict, label: str) -> int:
    """Flat index of the first tensor of output argument ``arg`` of a function-body node."""
    if node.op in lib:
        outs = [(a.name, 1) for a in lib[node.op].signature.output_arg]
    else:
        from tensorflow.python.framework import op_def_registry

        op_def = op_def_registry.get(node.op)
        if op_def is None:
            raise InputError(f"{label}, whose node '{node.name}' has the unknown op '{node.op}'")
        outs = []
        for a in op_def.output_arg:
            if a.number_attr:
                k = node.attr[a.number_attr].i if a.number_attr in node.attr else _default(op_def, a.number_attr).i
            elif a.type_list_attr:
                k = len(node.attr[a.type_list_attr].list.type) if a.type_list_attr in node.attr else 0
            else:
                k = 1
            outs.append((a.name, k))
    offset = 0
    for name, k in outs:
        if name == arg:
            return offset
        offset += k
    raise InputError(f"{label}, whose node '{node.name}' ({node.op}) has no output '{arg}'")


def _default(op_def, name: str):
    for a in op_def.attr:
        if a.name == name:
            return a.default_value
    raise InputError(f"op {op_def.name}: no attribute '{name}'")


def referenced_library(library, nodes):
    """``library`` cut to the functions that ``nodes`` call (directly, through function-valued
    attributes, or from another kept function's body)."""
    funcs = {f.signature.name: f for f in library.function}
    seen: set[str] = set()
    stack = [name for n in nodes for name in _refs(n) if name in funcs]
    while stack:
        name = stack.pop()
        if name in seen:
            continue
        seen.add(name)
        stack.extend(r for nd in funcs[name].node_def for r in _refs(nd) if r in funcs and r not in seen)
    out = type(library)()
    out.CopyFrom(library)
    del out.function[:]
    out.function.extend(f for f in library.function if f.signature.name in seen)
    keep_grads = [g for g in library.gradient if g.function_name in seen]
    del out.gradient[:]
    out.gradient.extend(keep_grads)
    return out


def _refs(n) -> set[str]:
    """Names a node may call: its op (a library function used as an op) and its func attributes."""
    from .safety import function_refs

    return {n.op} | function_refs(n)
