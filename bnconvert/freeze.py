"""Freeze a checkpoint's or SavedModel's graph without running any of it.

Decision (issue 14): a model file is untrusted input, so loading must execute nothing from it.
TensorFlow's usual way to freeze — import the MetaGraph, run the saver's ``restore_all`` op (and
a SavedModel's ``main_op``/``legacy_init_op``), then ``convert_variables_to_constants`` — runs
ops the file's author chose: a ``SaveV2`` chained into ``save/restore_all``, or a ``WriteFile``
as ``main_op``, writes wherever they like.  Instead:

1. the sub-graph that computes the wanted outputs is cut out of the GraphDef (by name, no
   TensorFlow graph is built and no session is created);
2. each variable node on it (``VariableV2``, ``Variable``, ``VarHandleOp``) is mapped to its
   checkpoint key: the saver's ``SaveV2``/``Save`` node lists the keys (``tensor_names``) in the
   order of the tensors it saves, so key *i* belongs to the variable behind saved tensor *i*
   (through ``Identity``/``ReadVariableOp``); a variable the saver does not list keeps its own
   name as its key;
3. the value is read from the checkpoint bundle (``.index`` + ``.data-*``) by key with
   TensorFlow's checkpoint reader — reading a file, not running an op — after checking its
   declared size against the memory budget, its dtype and its shape against the variable's;
4. the variable node becomes a ``Const`` with that value; ``ReadVariableOp`` becomes
   ``Identity``; resource assignments left on the path (``AssignVariableOp``…) become ``NoOp``s
   keeping their control edges.  Reference-typed updates (``Assign``, ``AssignSub``…) are left to
   :func:`bnconvert.load.repair_ref_ops`.

Anything else that consumes a variable on the kept path (``ResourceGather``, …), a partitioned
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
    """Every node that is not saver, initializer or training-update machinery."""
    scopes = {n.name.split("/")[0] for n in graph_def.node if n.op in _SAVE_OPS + ("RestoreV2", "Restore")}
    if saver_scope:
        scopes.add(saver_scope)
    keep = []
    for n in graph_def.node:
        if n.name.split("/")[0] in scopes or n.op in ("NoOp", "SaveV2", "RestoreV2", "MergeV2Checkpoints"):
            continue
        if n.name.endswith("/Assign") or n.op.startswith(_TRAINING_PREFIXES) or n.op in _INIT_CHECKS:
            continue
        if any(part in ("Initializer", "IsInitialized") for part in n.name.split("/")[1:]):
            continue
        keep.append(n.name)
    return keep


def extract(graph_def, keep: list[str]):
    """The nodes ``keep`` depends on (data and control edges), in the GraphDef's order."""
    from . import tfproto

    by_name = {n.name: n for n in graph_def.node}
    missing = [k for k in keep if k not in by_name]
    if missing:
        raise InputError(f"output '{missing[0]}' is not in the graph")
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
        stack.extend(node_name(s) for s in node.input)
    out = tfproto.new_graph_def()
    out.versions.CopyFrom(graph_def.versions)
    out.library.CopyFrom(graph_def.library)
    out.node.extend(n for n in graph_def.node if n.name in seen)
    return out


def checkpoint_keys(graph_def) -> dict[str, str]:
    """variable node name → checkpoint key, from the saver's ``SaveV2``/``Save`` nodes."""
    from . import tfproto

    by_name = {n.name: n for n in graph_def.node}
    keys: dict[str, str] = {}
    for n in graph_def.node:
        if n.op not in _SAVE_OPS or len(n.input) < 3:
            continue
        names_node = by_name.get(node_name(n.input[1]))
        if names_node is None or names_node.op != "Const":
            continue
        try:
            names = [bytes(x).decode("utf-8") for x in tfproto.make_ndarray(names_node.attr["value"].tensor).ravel()]
        except Exception:  # noqa: BLE001 - a malformed key list: fall back to the variables' names
            continue
        first = 2 if n.op == "Save" else 3
        tensors = [s for s in n.input[first:] if not s.startswith("^")]
        for key, t in zip(names, tensors):
            var = _variable_behind(by_name, node_name(t))
            if var is not None:
                keys.setdefault(var, key)
    return keys


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


def freeze(graph_def, prefix: str, keep: list[str], where: str, limit: int):
    """The sub-graph for ``keep`` with every variable replaced by its checkpoint value."""
    from . import tfproto

    gd = extract(graph_def, keep)
    variables = [n for n in gd.node if n.op in VARIABLE_OPS]
    for n in gd.node:
        n.device = ""
    if not variables:
        return gd
    keys = checkpoint_keys(graph_def)
    _check_partitions(graph_def, keys)
    reader = BundleReader(prefix, where)
    used = 0
    resources: dict[str, int] = {}
    for n in variables:
        dtype = n.attr["dtype"].type if "dtype" in n.attr else None
        shape = _declared(n)
        value = reader.read(keys.get(n.name, n.name), n.name, dtype, shape, limit - used)
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


#: ops that pass a resource handle through unchanged (tf.cond/while_loop route handles via them)
_PASS_THROUGH = ("Identity", "Switch", "Merge", "Enter", "Exit", "NextIteration", "RefSwitch", "RefIdentity")


def _rewrite_resource_users(gd, resources: dict[str, int], where: str) -> None:
    """Handles routed through Identity/Switch/Enter… now carry the value: retype them (T), then
    turn each ReadVariableOp of a handle into Identity."""
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
    for n in gd.node:
        if n.name in resources:
            continue
        data = [s for s in n.input if not s.startswith("^")]
        if not any(node_name(s) in resources for s in data):
            continue
        if n.op == "ReadVariableOp":
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
                             "cannot freeze (only ReadVariableOp and VariableShape are supported)")


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
