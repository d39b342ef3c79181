"""Freeze a checkpoint's or SavedModel's graph without running any of it.

Decision (issue 14): a model file is untrusted input, so loading must execute nothing from it.
TensorFlow's usual way to freeze — import the MetaGraph, run the saver's ``restore_all`` op (and
a SavedModel's ``main_op``/``legacy_init_op``), then ``convert_variables_to_constants`` — runs
ops the file's author chose: a ``SaveV2`` chained into ``save/restore_all``, or a ``WriteFile``
as ``main_op``, writes wherever they like.  Instead:

1. the sub-graph that computes the wanted outputs is cut out of the GraphDef (by name, no
   TensorFlow graph is built and no session is created) without following control edges from
   variable updates (a training checkpoint's optimizer ``Apply*``/``ResourceApply*``, which Adam's
   beta-power updates depend on: :func:`extract`), so the optimizer's slot variables are never
   read; a TF2 SavedModel's function calls on it are inlined (:mod:`bnconvert.inline`);
2. each variable node on it (``VariableV2``, ``Variable``, ``VarHandleOp``) is mapped to its
   checkpoint key: the saver's ``SaveV2``/``Save`` node lists the keys (``tensor_names``) in the
   order of the tensors it saves, so key *i* belongs to the variable behind saved tensor *i*
   (through ``Identity``/``ReadVariableOp``); a variable the saver does not list keeps its own
   name as its key where the bundle holds it, else takes the key the bundle's object graph gives
   its name (a TF2 bundle: ``layer_with_weights-0/kernel/.ATTRIBUTES/VARIABLE_VALUE``);
3. the value is read from the checkpoint bundle (``.index`` + ``.data-*``) by key with
   TensorFlow's checkpoint reader — reading a file, not running an op — after checking its
   declared size against the memory budget, its dtype and its shape against the variable's;
4. the variable node becomes a ``Const`` with that value; ``ReadVariableOp`` becomes
   ``Identity``, ``ResourceGather`` (``embedding_lookup``) ``GatherV2``; resource assignments left on the path (``AssignVariableOp``…) become ``NoOp``s
   keeping their control edges; ``IsVariableInitialized``/``VarIsInitializedOp`` of a frozen
   variable become the constant true.  Reference-typed ``Assign``, ``AssignSub`` and ``AssignAdd``
   (whose values a graph may read) are left to :func:`bnconvert.load.repair_ref_ops`.

Anything else that consumes a variable on the kept path (``ResourceGatherNd``, …), a partitioned
variable, or a variable whose value the bundle lacks is refused with one line naming it.
Initializers, table initializers, the saver's restore ops and ``main_op`` are never run: they are
simply not on the path to the outputs (when they are, because the author wired them in with a
control edge, they stay in the frozen graph, where the execution allowlist refuses them).
"""
from __future__ import annotations

import os

from .errors import InputError

VARIABLE_OPS = ("VariableV2", "Variable", "VarHandleOp")
_INIT_CHECKS = ("VarIsInitializedOp", "IsVariableInitialized", "ReportUninitializedVariables")
_SAVE_OPS = ("SaveV2", "Save", "SaveSlices")
_READS = ("Identity", "ReadVariableOp", "RefIdentity", "Snapshot")
_RESOURCE_WRITES = ("AssignVariableOp", "AssignAddVariableOp", "AssignSubVariableOp")
#: ops never kept when no outputs are named: the saver's and the optimizers' state updates
_TRAINING_PREFIXES = ("Assign", "Apply", "ResourceApply", "ResourceSparseApply", "SparseApply")


def node_name(tensor: str) -> str:
    return tensor.lstrip("^").split(":")[0]


def default_keep(graph_def, saver_scope: str | None) -> list[str]:
    """Every node that is not saver, initializer or training-update machinery.

    Training-update machinery is every variable update (:func:`is_variable_update`: an
    optimizer's ``Apply*``, ``Scatter*``, ``Assign*``…) and whatever computes from an update's
    result (a sparse Adam step reads its ``ScatterAdd`` of the slot ``m``).  Variables and their
    plain reads (``dense/kernel/read``, ``…/Read/ReadVariableOp``) are not kept for themselves:
    they come with the nodes that use them, so an optimizer's slot variables (Adam's ``m``/``v``,
    Momentum's accumulator), used only by its updates, are never read from the checkpoint.
    """
    scopes = {n.name.split("/")[0] for n in graph_def.node if n.op in _SAVE_OPS + ("RestoreV2", "Restore")}
    if saver_scope:
        scopes.add(saver_scope)
    variables = {n.name for n in graph_def.node if n.op in VARIABLE_OPS}
    after_update = _after_updates(graph_def)
    keep = []
    for n in graph_def.node:
        if n.name.split("/")[0] in scopes or n.op in ("NoOp", "SaveV2", "RestoreV2", "MergeV2Checkpoints"):
            continue
        data = [node_name(s) for s in n.input if not s.startswith("^")]
        if n.name in variables or n.name in after_update or (n.op in _READS and len(data) == 1 and data[0] in variables):
            continue
        if n.name.endswith("/Assign") or n.op.startswith(_TRAINING_PREFIXES) or n.op in _INIT_CHECKS:
            continue
        if any(part in ("Initializer", "IsInitialized") for part in n.name.split("/")[1:]):
            continue
        keep.append(n.name)
    return keep


def _after_updates(graph_def) -> set[str]:
    """The variable updates, the reads of a variable that run after an update of it
    (:func:`reads_after_updates`: an ``ExponentialMovingAverage`` of the weights under a control
    dependency on the training step), and every node that reads (through data edges) one's result."""
    consumers: dict[str, list[str]] = {}
    for n in graph_def.node:
        for s in n.input:
            if not s.startswith("^"):
                consumers.setdefault(node_name(s), []).append(n.name)
    found = {n.name for n in graph_def.node if is_variable_update(n.op)}
    found.update(r for r, _, _ in reads_after_updates(graph_def))
    stack = list(found)
    while stack:
        for c in consumers.get(stack.pop(), ()):
            if c not in found:
                found.add(c)
                stack.append(c)
    return found


def extract(graph_def, keep: list[str], cut_updates: bool = False):
    """The nodes ``keep`` depends on (data and control edges), in the GraphDef's order.

    With ``cut_updates``, a control edge from a variable update (:func:`is_variable_update`) is
    neither followed nor kept: a frozen graph updates nothing, and a training checkpoint's kept
    nodes carry such edges (``AdamOptimizer`` updates its beta powers — plain ``Mul`` nodes —
    under a control dependency on every ``ApplyAdam``; a reference ``ApplyAdam`` fed by a frozen
    variable is what TensorFlow refused with "…was passed float … expected float_ref").  Updates
    whose result is read as data are still followed.
    """
    from . import tfproto

    by_name = {n.name: n for n in graph_def.node}
    missing = [k for k in keep if k not in by_name]
    if missing:
        raise InputError(f"output '{missing[0]}' is not in the graph")

    def cut(s: str) -> bool:
        src = by_name.get(node_name(s)) if cut_updates and s.startswith("^") else None
        return src is not None and is_variable_update(src.op)

    seen: set[str] = set()
    stack = list(keep)
    while stack:
        name = stack.pop()
        if name in seen:
            continue
        seen.add(name)
        node = by_name.get(name)
        if node is None:
            continue  # check_graph reports the dangling input later
        stack.extend(node_name(s) for s in node.input if not cut(s))
    out = tfproto.new_graph_def()
    out.versions.CopyFrom(graph_def.versions)
    out.library.CopyFrom(graph_def.library)
    out.node.extend(n for n in graph_def.node if n.name in seen)
    if cut_updates:
        for n in out.node:
            if any(cut(s) for s in n.input):
                kept = [s for s in n.input if not cut(s)]
                del n.input[:]
                n.input.extend(kept)
    _drop_colocation_with_missing(out, seen)
    return out


def _drop_colocation_with_missing(gd, present: set[str]) -> None:
    """Colocation constraints (``_class: loc:@node``) naming a node that was left out are removed:
    TensorFlow refuses to import a node colocated with an unknown one (``train/value`` with the
    ``global_step`` variable that a frozen training graph no longer holds)."""
    for n in gd.node:
        if "_class" not in n.attr:
            continue
        vals = list(n.attr["_class"].list.s)
        kept = [v for v in vals if not v.startswith(b"loc:@") or v[5:].decode("utf-8", "replace") in present]
        if kept != vals:
            if kept:
                del n.attr["_class"].list.s[:]
                n.attr["_class"].list.s.extend(kept)
            else:
                del n.attr["_class"]


def checkpoint_keys(graph_def) -> dict[str, str]:
    """variable node name → checkpoint key, from the saver's ``SaveV2``/``Save`` nodes: in the
    graph (TF1), or in a library function the graph calls with the variables' handles (a TF2
    SavedModel's ``__inference__traced_save``, whose ``SaveV2`` saves each argument's value)."""
    by_name = {n.name: n for n in graph_def.node}
    keys: dict[str, str] = {}
    for n in graph_def.node:
        for key, t in _saved_tensors(n, by_name):
            var = _variable_behind(by_name, node_name(t))
            if var is not None:
                keys.setdefault(var, key)
    lib = {f.signature.name: f for f in graph_def.library.function}
    if not lib:
        return keys
    from .inline import CALL_OPS

    saved: dict[str, list[tuple[int, str]]] = {}  # function -> (argument index, key) it saves
    for call in graph_def.node:
        fname = call.op if call.op in lib else ""
        if not fname and call.op in CALL_OPS and "f" in call.attr:
            fname = call.attr["f"].func.name
        if fname not in lib:
            continue
        if fname not in saved:
            saved[fname] = _saved_arguments(lib[fname])
        if not saved[fname]:
            continue
        data = [s for s in call.input if not s.startswith("^")]
        if len(data) != len(lib[fname].signature.input_arg):
            continue
        for i, key in saved[fname]:
            var = _variable_behind(by_name, node_name(data[i]))
            if var is not None:
                keys.setdefault(var, key)
    return keys


def _saved_arguments(fdef) -> list[tuple[int, str]]:
    """``(argument index, key)`` for each argument whose value a ``SaveV2``/``Save`` node in the
    function's body saves (through reads)."""
    index = {a.name: i for i, a in enumerate(fdef.signature.input_arg)}
    inner = {nd.name: nd for nd in fdef.node_def}
    out = []
    for nd in fdef.node_def:
        for key, t in _saved_tensors(nd, inner):
            arg = _arg_behind(inner, t)
            if arg in index:
                out.append((index[arg], key))
    return out


def _saved_tensors(n, by_name: dict) -> list[tuple[str, str]]:
    """``(key, tensor)`` for each tensor a ``SaveV2``/``Save`` node saves (its key list a Const)."""
    from . import tfproto

    if n.op not in _SAVE_OPS or len(n.input) < 3:
        return []
    names_node = by_name.get(node_name(n.input[1]))
    if names_node is None or names_node.op != "Const":
        return []
    try:
        names = [bytes(x).decode("utf-8") for x in tfproto.make_ndarray(names_node.attr["value"].tensor).ravel()]
    except Exception:  # noqa: BLE001 - a malformed key list: fall back to the variables' names
        return []
    first = 2 if n.op == "Save" else 3
    tensors = [s for s in n.input[first:] if not s.startswith("^")]
    return list(zip(names, tensors))


def _arg_behind(inner: dict, tensor: str) -> str | None:
    """The function argument whose value a function-body tensor is (through reads), or None."""
    name = tensor
    for _ in range(16):
        node = inner.get(node_name(name))
        if node is None:
            return node_name(name)  # not a body node: an argument's name
        data = [s for s in node.input if not s.startswith("^")]
        if node.op not in _READS or not data:
            return None
        name = data[0]
    return None


def _variable_behind(by_name: dict, name: str) -> str | None:
    for _ in range(16):
        node = by_name.get(name)
        if node is None:
            return None
        if node.op in VARIABLE_OPS:
            return node.name
        if node.op not in _READS or not node.input:
            return None
        name = node_name(node.input[0])
    return None


#: where an object-based checkpoint keeps its object graph (a serialized TrackableObjectGraph)
OBJECT_GRAPH_KEY = "_CHECKPOINTABLE_OBJECT_GRAPH"


class BundleReader:
    """Reads tensors from a checkpoint bundle by key, checking sizes before reading.

    Only regular files are opened: the bundle's ``.index`` and ``.data-*`` files are checked with
    ``os.stat`` first, so a named pipe or a device there is refused instead of blocking or
    streaming forever.
    """

    def __init__(self, prefix: str, where: str):
        self.prefix, self.where = prefix, where
        folder = os.path.dirname(prefix) or "."
        base = os.path.basename(prefix)
        files = [prefix + ".index"] if os.path.lexists(prefix + ".index") else [prefix]
        try:
            files += [os.path.join(folder, f) for f in os.listdir(folder) if f.startswith(base + ".data-")]
        except OSError as e:
            raise InputError(f"{where}: cannot list {folder} ({e.strerror})") from None
        for f in files:
            require_regular(f, where)
        from tensorflow.python.training import py_checkpoint_reader

        try:
            self.reader = py_checkpoint_reader.NewCheckpointReader(prefix)
            self.shapes = self.reader.get_variable_to_shape_map()
            self.dtypes = self.reader.get_variable_to_dtype_map()
        except Exception as e:  # noqa: BLE001 - DataLossError, NotFoundError, ...
            raise InputError(f"{where}: cannot read the checkpoint {os.path.basename(prefix)} ({_short(e)})") from None

    def object_graph_keys(self) -> dict[str, str | None]:
        """variable name → checkpoint key, from the object graph an object-based (TF2) checkpoint
        stores under ``_CHECKPOINTABLE_OBJECT_GRAPH`` (empty for a TF1 name-based one).  A name
        that several variables share (two Keras sub-models with layers of one name) maps to None:
        the object graph cannot say which value is which variable's."""
        if getattr(self, "_object_keys", None) is not None:
            return self._object_keys
        self._object_keys = {}
        if OBJECT_GRAPH_KEY not in self.shapes or self.shapes[OBJECT_GRAPH_KEY]:
            return self._object_keys
        from tensorflow.core.protobuf import trackable_object_graph_pb2

        graph = trackable_object_graph_pb2.TrackableObjectGraph()
        try:
            data = bytes(self.reader.get_tensor(OBJECT_GRAPH_KEY))
        except Exception as e:  # noqa: BLE001 - DataLossError, ...
            raise InputError(f"{self.where}: cannot read the checkpoint's object graph ({_short(e)})") from None
        try:
            graph.ParseFromString(data)
        except Exception:  # noqa: BLE001 - unparsable: variables fall back to their own names
            return self._object_keys
        for node in graph.nodes:
            for a in node.attributes:
                if a.name == "VARIABLE_VALUE" and a.full_name:
                    if self._object_keys.setdefault(a.full_name, a.checkpoint_key) != a.checkpoint_key:
                        self._object_keys[a.full_name] = None
        return self._object_keys

    def read(self, key: str, var: str, dtype_enum: int | None, shape: list[int] | None, limit: int):
        """The value of ``key`` for variable node ``var`` (shape/dtype checked, size budgeted)."""
        from .budget import human

        if key not in self.shapes:
            raise InputError(f"{self.where}: variable '{var}' has no value in the checkpoint (key '{key}' missing)")
        have_shape = [int(d) for d in self.shapes[key]]
        have_dtype = self.dtypes[key]
        if dtype_enum is not None and have_dtype.as_datatype_enum != dtype_enum % 100:
            raise InputError(f"{self.where}: variable '{var}' is {_dtype_name(dtype_enum)} but the checkpoint holds "
                             f"{have_dtype.name} under '{key}'")
        if shape is not None and (len(shape) != len(have_shape)
                                  or any(d >= 0 and d != h for d, h in zip(shape, have_shape))):
            raise InputError(f"{self.where}: variable '{var}' has shape {shape} but the checkpoint holds "
                             f"{have_shape} under '{key}'")
        size = _prod(have_shape) * max(have_dtype.size, 1)
        if size > limit:
            raise InputError(f"{self.where}: variable '{var}' holds {human(size)}, over the memory budget of "
                             f"{human(limit)} (--max-memory)")
        try:
            return self.reader.get_tensor(key)
        except Exception as e:  # noqa: BLE001
            raise InputError(f"{self.where}: cannot read variable '{var}' from the checkpoint ({_short(e)})") from None


def freeze(graph_def, prefix: str, keep: list[str], where: str, limit: int, signature: bool = False):
    """The sub-graph for ``keep`` with every variable replaced by its checkpoint value.

    Control edges from variable updates are cut (:func:`extract`), and a TF2 SavedModel's
    function calls on the sub-graph are inlined (:func:`bnconvert.inline.inline_calls`), before
    any value is read.  ``signature``: ``keep`` is a SavedModel signature's (refusals then do not
    suggest ``--outputs``, which a SavedModel does not take).
    """
    from . import tfproto
    from .inline import inline_calls, referenced_library

    way_out = ("the signature's outputs depend on it" if signature
               else "choose outputs that do not depend on it with --outputs")
    gd = extract(graph_def, keep, cut_updates=True)
    _refuse_reads_after_updates(graph_def, _values_of(gd, keep), where, way_out)  # the graph's updates (TF1)
    gd, inlined = inline_calls(gd, where, limit)
    if inlined:
        full = gd
        gd = extract(gd, keep, cut_updates=True)
        gd.library.CopyFrom(referenced_library(gd.library, gd.node))
        # updates inside the inlined functions (TF2: the control edges ordering a tf.function's state)
        _refuse_reads_after_updates(full, _values_of(gd, keep), where, way_out)
    _refuse_read_updates(gd, where, way_out)
    variables = [n for n in gd.node if n.op in VARIABLE_OPS]
    for n in gd.node:
        n.device = ""
    if not variables:
        return gd
    _answer_initialized_checks(gd, {n.name for n in variables})
    keys = checkpoint_keys(graph_def)
    _check_partitions(graph_def, keys)
    reader = BundleReader(prefix, where)
    used = 0
    resources: dict[str, int] = {}
    for n in variables:
        dtype = n.attr["dtype"].type if "dtype" in n.attr else None
        shape = _declared(n)
        value = reader.read(_key(n, keys, reader), n.name, dtype, shape, limit - used)
        used += value.nbytes
        dt = value.dtype
        if n.op == "VarHandleOp":
            resources[n.name] = tfproto.dtype_attr(dt).type
        n.op = "Const"
        n.ClearField("input")
        for a in list(n.attr):
            if a != "_class":
                del n.attr[a]
        n.attr["dtype"].CopyFrom(tfproto.dtype_attr(dt))
        n.attr["value"].tensor.CopyFrom(tfproto.make_tensor_proto(value))
    if resources:
        _rewrite_resource_users(gd, resources, where)
    return gd


def _answer_initialized_checks(gd, variables: set[str]) -> None:
    """``IsVariableInitialized``/``VarIsInitializedOp`` of a variable being frozen become the
    constant true: a frozen variable holds its value.  (``var.initialized_value()``, which
    ``ExponentialMovingAverage`` and many TF1 scripts use for an initial value, leaves such a check
    in a ``cond`` on the kept graph; TensorFlow would refuse its reference input once the variable is
    a constant.)"""
    import numpy as np

    from . import tfproto

    true = np.array(True)
    for n in gd.node:
        if n.op not in ("IsVariableInitialized", "VarIsInitializedOp"):
            continue
        data = [s for s in n.input if not s.startswith("^")]
        if len(data) != 1 or node_name(data[0]) not in variables:
            continue
        ctrl = [s for s in n.input if s.startswith("^")]
        n.op = "Const"
        n.ClearField("input")
        n.input.extend(ctrl)
        n.ClearField("attr")
        n.attr["dtype"].CopyFrom(tfproto.dtype_attr(true.dtype))
        n.attr["value"].tensor.CopyFrom(tfproto.make_tensor_proto(true))


def _key(n, keys: dict[str, str], reader: "BundleReader") -> str:
    """The checkpoint key of variable node ``n``: the saver's (``SaveV2`` lists it), else its own
    name where the bundle holds it, else the key the bundle's object graph gives its variable name
    (a TF2 checkpoint or SavedModel: ``layer_with_weights-0/kernel/.ATTRIBUTES/VARIABLE_VALUE``)."""
    if n.name in keys:
        return keys[n.name]
    if n.name in reader.shapes:
        return n.name
    shared = n.attr["shared_name"].s.decode("utf-8", "replace") if "shared_name" in n.attr else ""
    by_name = reader.object_graph_keys()
    for name in dict.fromkeys((shared or n.name, n.name)):
        if name in by_name and by_name[name] is None:
            raise InputError(f"{reader.where}: variable '{n.name}': the checkpoint's object graph holds several "
                             f"variables named '{name}' and no saver lists which is this one's")
        if by_name.get(name):
            return by_name[name]
    return n.name


#: reference updates with value twins (:func:`bnconvert.load.repair_ref_ops`): their result may be read
_TWINNED_UPDATES = ("Assign", "AssignAdd", "AssignSub")
_RESOURCE_UPDATE_PREFIXES = ("ResourceApply", "ResourceSparseApply", "ResourceScatter")


def is_variable_update(op: str, _cache: dict = {}) -> bool:  # noqa: B006 - a per-process cache
    """Whether ``op`` updates a variable in place: ``Assign``/``AssignAdd``/``AssignSub``, an
    optimizer's ``Apply*``/``SparseApply*``, ``Scatter*``/``ScatterNd*``, ``StridedSliceAssign``
    (first input a reference named ``var``/``ref``, one reference output), or a resource update
    (``AssignVariableOp``…, ``ResourceApply*``, ``ResourceScatter*``)."""
    if op in _cache:
        return _cache[op]
    if op in _TWINNED_UPDATES or op in _RESOURCE_WRITES or op == "ResourceStridedSliceAssign":
        found = True
    elif op.startswith(_RESOURCE_UPDATE_PREFIXES):
        found = True
    else:
        from tensorflow.python.framework import op_def_registry

        d = op_def_registry.get(op)
        found = bool(d is not None and d.input_arg and d.input_arg[0].is_ref and d.input_arg[0].name in ("var", "ref")
                     and len(d.output_arg) == 1 and d.output_arg[0].is_ref)
    _cache[op] = found
    return found


#: reference-typed ops that pass a reference variable on (``Identity`` of a reference is a read)
_REF_PASS_THROUGH = ("RefIdentity", "RefSwitch", "RefEnter", "RefExit", "RefMerge", "RefNextIteration", "RefSelect")
#: uses of a variable that do not read its value
_NOT_READS = _INIT_CHECKS + ("VariableShape", "DisableCopyOnRead", "DestroyResourceOp")


def reads_after_updates(graph_def, readers: set[str] | None = None) -> list[tuple[str, str, list[str]]]:
    """``(reader, variable, updates of it)`` for every node that reads a variable's value after an
    update of that variable has run: it is reachable, through data or control edges, from the update
    (``with tf.control_dependencies([v.assign_add(1)]): v.read_value()``; a tf.function's
    ``v.assign_add(1); x @ v``, which TensorFlow orders by a control edge).  A frozen graph holds
    the checkpoint's value, not the updated one.  ``readers``: only these nodes count as readers.

    A variable is its node, a resource handle passed on by ``Identity``/``Switch``/``Enter``… or a
    reference passed on by ``RefIdentity``/``RefSwitch``…; a read is any other data use of it
    (``ReadVariableOp``, ``Identity`` of a reference…) but an initialization check or a shape; an
    update writes the variables its reference or resource inputs name (:func:`is_variable_update`).
    """
    by_name = {n.name: n for n in graph_def.node}
    data_users: dict[str, list[str]] = {}
    users: dict[str, list[str]] = {}
    for n in graph_def.node:
        for s in n.input:
            src = node_name(s)
            users.setdefault(src, []).append(n.name)
            if not s.startswith("^"):
                data_users.setdefault(src, []).append(n.name)
    alias = {n.name: n.name for n in graph_def.node if n.op in VARIABLE_OPS}
    if not alias:
        return []
    stack = list(alias)
    while stack:
        a = stack.pop()
        for c in data_users.get(a, ()):
            node = by_name[c]
            first = next((s for s in node.input if not s.startswith("^")), None)
            if c in alias or first is None or node_name(first) != a:
                continue
            resource = by_name[alias[a]].op == "VarHandleOp"
            if (resource and node.op in _PASS_THROUGH) or node.op in _REF_PASS_THROUGH:
                alias[c] = alias[a]
                stack.append(c)
    writes: dict[str, list[str]] = {}
    reads: dict[str, set[str]] = {}
    for n in graph_def.node:
        if n.name in alias:
            continue
        data = [node_name(s) for s in n.input if not s.startswith("^")]
        if not any(d in alias for d in data):
            continue
        if is_variable_update(n.op):
            for v in _written(n, data, alias):
                writes.setdefault(v, []).append(n.name)
        elif n.op not in _NOT_READS and (readers is None or n.name in readers):
            for d in data:
                if d in alias:
                    reads.setdefault(alias[d], set()).add(n.name)
    tracked = sorted(v for v in writes if reads.get(v))
    found = []
    for start in range(0, len(tracked), 4096):  # bit sets of at most 512 bytes a node
        chunk = tracked[start:start + 4096]
        bit = {v: 1 << i for i, v in enumerate(chunk)}
        gen: dict[str, int] = {}
        for v in chunk:
            for u in writes[v]:
                gen[u] = gen.get(u, 0) | bit[v]
        after = _propagate(graph_def, users, gen)  # node -> bits of the variables updated before it
        for v in chunk:
            found.extend((r, v, writes[v]) for r in sorted(reads[v]) if after.get(r, 0) & bit[v])
    return found


def update_before(graph_def, reader: str, updates: list[str]) -> str:
    """The first of ``updates`` that ``reader`` is reachable from (for a message)."""
    users: dict[str, list[str]] = {}
    for n in graph_def.node:
        for s in n.input:
            users.setdefault(node_name(s), []).append(n.name)
    return next((u for u in updates if _reaches(u, reader, users)), updates[0])


def _propagate(graph_def, users: dict, gen: dict[str, int]) -> dict[str, int]:
    """node → the OR of ``gen`` over the node and every node it is reachable from (data and
    control edges), as int bit sets: one pass in topological order, then a worklist for the
    nodes on cycles (while loops), so a graph of N nodes and V variables costs about N x V/64
    word operations, not N x V."""
    from collections import deque

    indegree = {n.name: 0 for n in graph_def.node}
    for n in graph_def.node:
        for s in n.input:
            if node_name(s) in indegree:
                indegree[n.name] += 1
    mask = dict.fromkeys(indegree, 0)
    for name, bits in gen.items():
        if name in mask:
            mask[name] |= bits
    queue = deque(name for name, d in indegree.items() if d == 0)
    while queue:
        a = queue.popleft()
        for c in users.get(a, ()):
            if c in mask:
                mask[c] |= mask[a]
                indegree[c] -= 1
                if indegree[c] == 0:
                    queue.append(c)
    work = deque(name for name, d in indegree.items() if d > 0)  # on or after a cycle
    while work:
        a = work.popleft()
        for c in users.get(a, ()):
            if c in mask and mask[c] | mask[a] != mask[c]:
                mask[c] |= mask[a]
                work.append(c)
    return mask


def _reaches(src: str, dst: str, users: dict) -> bool:
    seen, stack = {src}, [src]
    while stack:
        a = stack.pop()
        if a == dst:
            return True
        for c in users.get(a, ()):
            if c not in seen:
                seen.add(c)
                stack.append(c)
    return False


def _written(n, data: list[str], alias: dict[str, str]) -> set[str]:
    """The variables update ``n`` writes: those behind its reference or resource inputs (only
    the first input where the op's signature cannot say)."""
    from tensorflow.python.framework import op_def_registry

    d = op_def_registry.get(n.op)
    if d is not None and len(d.input_arg) == len(data) and not any(a.number_attr or a.type_list_attr
                                                                   for a in d.input_arg):
        positions = [i for i, a in enumerate(d.input_arg) if a.is_ref or a.type == 20]  # DT_RESOURCE
    else:
        positions = [0]
    return {alias[data[i]] for i in positions if i < len(data) and data[i] in alias}


def _values_of(gd, keep: list[str]) -> set[str]:
    """The nodes whose values ``keep`` computes from: its ancestors through data edges."""
    by_name = {n.name: n for n in gd.node}
    seen: set[str] = set()
    stack = list(keep)
    while stack:
        name = stack.pop()
        if name in seen or name not in by_name:
            continue
        seen.add(name)
        stack.extend(node_name(s) for s in by_name[name].input if not s.startswith("^"))
    return seen


def _refuse_reads_after_updates(graph_def, values: set[str], where: str, way_out: str) -> None:
    """A read of a variable after an update of it (:func:`reads_after_updates`) whose value the
    outputs compute from (``values``: :func:`_values_of`) is refused in one line: its frozen value
    would be the checkpoint's, TensorFlow's the updated one, and verification (against the frozen
    graph) could not tell.  (A read that only feeds an update kept for a control edge — a
    zero-debiased moving average forced before a batch norm's output — changes no output.)"""
    found = reads_after_updates(graph_def, values)
    if found:
        reader, var, updates = found[0]
        update = update_before(graph_def, reader, updates)
        op = next(n.op for n in graph_def.node if n.name == update)
        raise InputError(f"{where}: node '{reader}' reads variable '{var}' after '{update}' ({op}) updates it; a "
                         "frozen graph holds the checkpoint's value, not the updated one, so bnconvert cannot freeze "
                         f"this path ({way_out})")


def _refuse_read_updates(gd, where: str,
                         way_out: str = "choose outputs that do not depend on it with --outputs") -> None:
    """A reference update without a value twin (``ApplyAdam``, ``ScatterUpdate``…) whose result the
    kept graph reads cannot be frozen: refused in one line (TensorFlow's own refusal, "…expected
    float_ref", names no way out)."""
    updates = {n.name: n.op for n in gd.node if n.op not in _TWINNED_UPDATES and is_variable_update(n.op)}
    if not updates:
        return
    for n in gd.node:
        for s in n.input:
            src = node_name(s)
            if not s.startswith("^") and src in updates:
                raise InputError(f"{where}: node '{src}' ({updates[src]}) updates a variable and '{n.name}' reads "
                                 "the result; a frozen graph cannot update variables, so bnconvert cannot freeze "
                                 f"this path ({way_out})")


#: ops that pass a resource handle through unchanged (tf.cond/while_loop route handles via them)
_PASS_THROUGH = ("Identity", "Switch", "Merge", "Enter", "Exit", "NextIteration", "RefSwitch", "RefIdentity")


def _rewrite_resource_users(gd, resources: dict[str, int], where: str) -> None:
    """Handles routed through Identity/Switch/Enter… now carry the value: retype them (T), then
    turn each ReadVariableOp of a handle into Identity (and each ResourceGather — an
    ``embedding_lookup`` of a resource variable — into GatherV2 of the value)."""
    changed = True
    while changed:
        changed = False
        for n in gd.node:
            if n.name in resources or n.op not in _PASS_THROUGH or "T" not in n.attr or n.attr["T"].type != 20:
                continue
            src = [node_name(s) for s in n.input if not s.startswith("^") and node_name(s) in resources]
            if src:  # a DT_RESOURCE pass-through fed by a frozen handle
                n.attr["T"].type = resources[src[0]]
                for a in ("_output_shapes", "_handle_dtypes", "_handle_shapes"):  # described the handle
                    if a in n.attr:
                        del n.attr[a]
                resources[n.name] = resources[src[0]]
                changed = True
    added = []
    for n in gd.node:
        if n.name in resources:
            continue
        data = [s for s in n.input if not s.startswith("^")]
        if not any(node_name(s) in resources for s in data):
            continue
        if n.op == "ResourceGather" and len(data) == 2 and node_name(data[0]) in resources:
            added.append(_gather_of_value(n, data, resources[node_name(data[0])]))
        elif n.op == "ReadVariableOp":
            dtype = n.attr["dtype"].type
            n.op = "Identity"
            del n.attr["dtype"]
            n.attr["T"].type = dtype
        elif n.op == "VariableShape":  # gradients of a resource read: the value's shape
            var = next(node_name(s) for s in data if node_name(s) in resources)
            n.op = "Shape"
            n.attr["T"].type = resources[var]
        elif n.op in _RESOURCE_WRITES or n.op.startswith(("ResourceApply", "ResourceSparseApply")):
            # a state update (no outputs) pulled in by a control edge: frozen state is never updated
            ctrl = ["^" + node_name(s) for s in n.input]
            n.op = "NoOp"
            n.ClearField("input")
            n.input.extend(dict.fromkeys(ctrl))
            n.ClearField("attr")
        else:
            var = next(node_name(s) for s in data if node_name(s) in resources)
            raise InputError(f"{where}: node '{n.name}' ({n.op}) uses resource variable '{var}' in a way bnconvert "
                             "cannot freeze (only ReadVariableOp, ResourceGather and VariableShape are supported); "
                             "freeze the model with TensorFlow (convert_variables_to_constants_v2) and pass the "
                             "frozen .pb")
    gd.node.extend(added)


def _gather_of_value(n, data: list[str], dtype: int):
    """Rewrite ResourceGather ``n`` into GatherV2(value, indices, axis=batch_dims); returns the
    new axis constant (``tf.gather(params, indices, batch_dims=b)`` gathers along axis ``b``)."""
    import numpy as np

    from . import tfproto

    batch_dims = n.attr["batch_dims"].i if "batch_dims" in n.attr else 0
    axis = type(n)()
    axis.name = n.name + "/frozen_axis"
    axis.op = "Const"
    axis.attr["dtype"].CopyFrom(tfproto.dtype_attr(np.dtype(np.int32)))
    axis.attr["value"].tensor.CopyFrom(tfproto.make_tensor_proto(np.array(batch_dims, np.int32)))
    axis.input.append("^" + node_name(data[1]))  # in the indices' frame (a gather in a while body)
    tindices = n.attr["Tindices"].type
    ctrl = [s for s in n.input if s.startswith("^")]
    n.op = "GatherV2"
    n.ClearField("input")
    n.input.extend(data + [axis.name] + ctrl)
    n.ClearField("attr")
    n.attr["Tparams"].type = dtype
    n.attr["Tindices"].type = tindices
    n.attr["Taxis"].type = 3  # int32
    n.attr["batch_dims"].i = batch_dims
    return axis


def _check_partitions(graph_def, keys: dict[str, str]) -> None:
    """Partitioned variables save slices of one key; freezing them is not supported."""
    from . import tfproto

    by_name = {n.name: n for n in graph_def.node}
    for n in graph_def.node:
        if n.op != "SaveV2" or len(n.input) < 3:
            continue
        slices = by_name.get(node_name(n.input[2]))
        if slices is None or slices.op != "Const":
            continue
        try:
            specs = [bytes(x) for x in tfproto.make_ndarray(slices.attr["value"].tensor).ravel()]
        except Exception:  # noqa: BLE001
            continue
        tensors = [s for s in n.input[3:] if not s.startswith("^")]
        for spec, t in zip(specs, tensors):
            if spec:
                var = _variable_behind(by_name, node_name(t)) or node_name(t)
                raise InputError(f"variable '{var}' is partitioned (slice '{spec.decode('utf-8', 'replace')}'); "
                                 "bnconvert cannot freeze partitioned variables")


def _declared(n) -> list[int] | None:
    if "shape" not in n.attr:
        return None
    s = n.attr["shape"].shape
    if s.unknown_rank:
        return None
    return [int(d.size) for d in s.dim]


def _prod(dims) -> int:
    out = 1
    for d in dims:
        out *= int(d)
    return out


def _dtype_name(enum: int) -> str:
    from tensorflow.core.framework import types_pb2

    try:
        return types_pb2.DataType.Name(enum % 100)[3:].lower()
    except ValueError:
        return str(enum)


def _short(e: Exception) -> str:
    msg = " ".join(str(e).split()) or type(e).__name__
    return msg[:200]


def require_regular(path: str, where: str | None = None) -> os.stat_result:
    """``os.stat(path)``, refusing anything that is not a regular file (pipes, devices, sockets)."""
    import stat

    try:
        st = os.stat(path)
    except OSError as e:
        raise InputError(f"{path}: cannot read ({e.strerror})") from None
    if not stat.S_ISREG(st.st_mode):
        kind = ("a named pipe" if stat.S_ISFIFO(st.st_mode) else "a device" if stat.S_ISCHR(st.st_mode)
                or stat.S_ISBLK(st.st_mode) else "a socket" if stat.S_ISSOCK(st.st_mode) else "a folder"
                if stat.S_ISDIR(st.st_mode) else "not a regular file")
        raise InputError(f"{path}: {kind}, not a regular file; refusing to read it")
    return st
