"""Load a TF1 model as a frozen GraphDef.

Accepted: a binary GraphDef (``.pb``), a text GraphDef (``.pbtxt``/``.txt``), a TF1 checkpoint
(``.meta`` plus its variables, or a folder holding a ``checkpoint`` file), and a SavedModel
folder (tag ``serve``; the signature ``serving_default`` — or the only one — names inputs and
outputs), TF1's or one written by TensorFlow 2 (tf_keras ``model.save``, ``tf.saved_model.save``:
its function calls are inlined, :mod:`bnconvert.inline`).  Checkpoints and SavedModels are
frozen on load (variables become constants; a training checkpoint's optimizer updates and slot
variables are left out, :func:`bnconvert.freeze.extract`).

Every loaded graph is checked: it must parse, hold at least one node, name only inputs that
exist, use ops TensorFlow knows and contain no cycle.  Reference-typed ops left behind by
freezing a graph whose update ops sit on the output path (contrib ``updates_collections=None``;
TensorFlow refuses it with "…was passed float … expected float_ref") are rewritten to their
value-typed twins — RefSwitch→Switch, AssignSub→Sub, AssignAdd→Add, Assign→Identity — which
compute the same outputs.  The file itself is only read.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field

from . import budget, tfproto
from .errors import GraphError, InputError
from .graph import Graph
from .safety import check_functions

#: Protocol buffers cannot hold more than 2 GiB; bigger files are refused before parsing.
MAX_PROTO_BYTES = 2**31 - 1

_REF_TWINS = {
    "RefSwitch": "Switch",
    "RefMerge": "Merge",
    "RefIdentity": "Identity",
    "RefEnter": "Enter",
    "RefExit": "Exit",
    "RefNextIteration": "NextIteration",
    "RefSelect": "Select",
    "AssignSub": "Sub",
    "AssignAdd": "Add",
    "Assign": "Identity",
}
_DROP_ATTRS = ("use_locking", "validate_shape")


@dataclass
class Model:
    """A loaded, frozen model: the GraphDef plus what the file said about it."""

    graph_def: object
    path: str
    format: str
    inputs: list[str] | None = None  # from a SavedModel signature
    outputs: list[str] | None = None
    repairs: dict[str, int] = field(default_factory=dict)
    sha256: str = ""

    @property
    def stem(self) -> str:
        base = os.path.basename(os.path.normpath(self.path))
        for ext in (".pbtxt", ".pb", ".meta", ".txt"):
            if base.endswith(ext):
                return base[: -len(ext)]
        return base


def load(path: str, outputs: list[str] | None = None, allow_unsafe: bool = False,
         max_memory: int | str | None = None) -> Model:
    """Read ``path`` (any supported format) into a checked, frozen :class:`Model`.

    Nothing from the file is executed: checkpoints and SavedModels are frozen by reading each
    variable's value from the checkpoint bundle by name (:mod:`bnconvert.freeze`), never by
    running their restore, init or ``main_op`` ops, and no TensorFlow session is created.
    ``outputs`` only matters for checkpoints: it names what to freeze (default: every node that
    is not saver, initializer or training machinery, pruned later to the inference path).
    ``max_memory`` (bytes or "4G") bounds the decoded constants (default: :mod:`bnconvert.budget`).
    A frozen checkpoint or SavedModel that still holds file, network or Python-callback ops is
    refused unless ``allow_unsafe``.  Only regular files are opened (a named pipe or a device is
    refused, never read); paths may be ``bytes`` or any ``os.PathLike`` (non-UTF-8 names work).
    """
    path = os.fsdecode(os.fspath(path))
    limit = budget.parse_size(max_memory) if max_memory is not None else budget.limit()
    if not os.path.lexists(path):
        raise InputError(f"{path}: no such file or directory")
    if os.path.isdir(path):
        if any(os.path.lexists(os.path.join(path, f)) for f in ("saved_model.pb", "saved_model.pbtxt")):
            model = _load_saved_model(path, allow_unsafe, limit)
        elif os.path.lexists(os.path.join(path, "checkpoint")):
            model = _load_checkpoint(_latest_meta(path), outputs, allow_unsafe, limit)
        else:
            raise InputError(f"{path}: a folder that is neither a SavedModel (no saved_model.pb) nor a checkpoint folder")
    elif path.endswith(".meta"):
        model = _load_checkpoint(path, outputs, allow_unsafe, limit)
    else:
        model = _load_graph_file(path)
    gd, repairs = repair_ref_ops(model.graph_def)
    model.graph_def = gd
    model.repairs = repairs
    check_graph(model.graph_def, path, limit)
    return model


def _read_bytes(path: str) -> bytes:
    """The bytes of a regular file (a FIFO or a device is refused before it can block)."""
    import stat

    from .freeze import require_regular

    st = require_regular(path)
    if st.st_size > MAX_PROTO_BYTES:
        raise InputError(f"{path}: {st.st_size} bytes is over protobuf's 2 GiB limit; split the model or export it as a SavedModel")
    if st.st_size == 0:
        raise InputError(f"{path}: empty file")
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0))
    except OSError as e:
        raise InputError(f"{path}: cannot read ({e.strerror})") from e
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):  # swapped after the stat
            raise InputError(f"{path}: not a regular file; refusing to read it")
        with os.fdopen(fd, "rb") as f:
            fd = None
            # read(n) allocates n bytes up front: ask for the file's size, not the 2 GiB limit (a
            # stage child's data segment is capped by the memory budget, bnconvert.isolate)
            return f.read(min(os.fstat(f.fileno()).st_size, MAX_PROTO_BYTES) + 1)
    except OSError as e:
        raise InputError(f"{path}: cannot read ({e.strerror})") from e
    finally:
        if fd is not None:
            os.close(fd)


def _load_graph_file(path: str) -> Model:
    data = _read_bytes(path)
    text = path.endswith((".pbtxt", ".txt"))
    if text:
        _text(data, path, "GraphDef")  # refuse deep nesting before importing TensorFlow
    gd = tfproto.new_graph_def()
    fmt = "pbtxt" if text else "pb"
    if text:
        _parse_text(data, gd, path)
    else:
        try:
            gd.ParseFromString(data)
        except Exception as e:  # google.protobuf.message.DecodeError and friends
            raise InputError(f"{path}: not a binary GraphDef ({_short(e)})") from e
    if not gd.node:
        raise InputError(f"{path}: holds no graph nodes (not a TensorFlow GraphDef?)")
    return Model(gd, path, fmt, sha256=hashlib.sha256(data).hexdigest())


#: deepest message nesting accepted in a text proto (TensorFlow's own graphs nest < 20 deep)
MAX_TEXT_NESTING = 100


def _parse_text(data: bytes, gd, path: str, what: str = "GraphDef") -> None:
    """Parse a text proto; nesting deeper than :data:`MAX_TEXT_NESTING` is refused before parsing
    (protobuf's Python parser recurses once per level and would hit Python's recursion limit)."""
    from google.protobuf import text_format

    text = _text(data, path, what)
    try:
        text_format.Merge(text, gd)
    except text_format.ParseError as e:
        raise InputError(f"{path}: text {what} syntax error at {_short(e)}") from e
    except RecursionError:
        raise InputError(f"{path}: text {what} nests too deep; refusing to parse it") from None


def _text(data: bytes, path: str, what: str) -> str:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise InputError(f"{path}: not a text {what} (not UTF-8 text)") from e
    depth = _max_nesting(text)
    if depth > MAX_TEXT_NESTING:
        raise InputError(f"{path}: text {what} nests {depth} levels deep (more than {MAX_TEXT_NESTING}); refusing to parse it")
    return text


def _max_nesting(text: str) -> int:
    """Deepest ``{``/``<`` nesting outside quoted strings and comments (an upper bound is fine)."""
    import re

    stripped = re.sub(r'"(?:[^"\\\n]|\\.)*"|\'(?:[^\'\\\n]|\\.)*\'|#[^\n]*', "", text)
    depth = best = 0
    for ch in re.findall(r"[{}<>]", stripped):
        if ch in "{<":
            depth += 1
            best = max(best, depth)
        else:
            depth -= 1
    return best


def _short(e: Exception) -> str:
    msg = " ".join(str(e).split()) or type(e).__name__
    return msg[:200]


def check_graph(graph_def, path: str = "graph", max_memory: int | None = None) -> None:
    """Structural checks that need no execution: names, inputs, known ops, no cycle, no
    self-calling function, and constants whose decoded size fits the memory budget — all
    before TensorFlow imports the graph (its shape inference decodes some constants)."""
    g = Graph(graph_def, copy_nodes=False)  # read-only: no copy of the weights
    for n in g.nodes.values():
        if not n.op:
            raise GraphError(f"{path}: node '{n.name}' has no op type (corrupt GraphDef?)")
    budget.check_constants(graph_def, path, max_memory)
    check_functions(graph_def, path)
    _check_inputs(g, path)
    lib_ops = {f.signature.name for f in graph_def.library.function}
    for n in g.nodes.values():
        if n.op not in lib_ops and not tfproto.op_registered(n.op):
            raise GraphError(f"{path}: unknown op '{n.op}' (node '{n.name}')")
    _check_signatures(g, path)
    try:
        g.topo_order()
    except GraphError as e:
        raise GraphError(f"{path}: {e}") from None
    _check_imports(graph_def, path)


def _check_imports(graph_def, path: str) -> None:
    """TensorFlow's own import (shape inference, no execution) must accept the graph."""
    tf = tfproto.tf()
    try:
        with tf.Graph().as_default():
            tf.compat.v1.import_graph_def(graph_def, name="")
    except Exception as e:  # InvalidArgumentError, ValueError, ...
        raise GraphError(f"{path}: TensorFlow rejects the graph: {_short(e)}") from None


def _check_signatures(g: Graph, path: str) -> None:
    """Every node agrees with its op's registered signature, so later passes may index inputs.

    Checks the number of data inputs, the type attributes, that no input names an output its
    producer does not have, and that each Const's tensor decodes to its declared shape.  A
    corrupt or hand-edited GraphDef fails here with one line naming the node, rather than deep
    inside matching or folding.
    """
    from tensorflow.python.framework import op_def_registry

    n_outputs: dict[str, int] = {}
    for n in g.nodes.values():
        op_def = op_def_registry.get(n.op)
        if op_def is None:  # a library function: TensorFlow checks its calls on import
            continue
        where = f"{path}: node '{n.name}' ({n.op})"
        for key, a in n.attr.items():
            if a.WhichOneof("value") == "type" and not _valid_dtype(a.type):
                raise GraphError(f"{where}: attribute '{key}' holds no valid data type ({a.type})")
        for spec in op_def.attr:  # e.g. FusedBatchNormV3's T must be half, bfloat16 or float
            allowed = spec.allowed_values.list.type if spec.type == "type" else ()
            if allowed and spec.name in n.attr and n.attr[spec.name].type not in allowed:
                raise GraphError(f"{where}: attribute '{spec.name}' is {_dtype_name(n.attr[spec.name].type)}, "
                                 f"which the op does not accept")
        want = _arg_count(op_def, op_def.input_arg, n)
        outs = _arg_count(op_def, op_def.output_arg, n)
        if want is None or outs is None:
            raise GraphError(f"{where}: a required attribute is missing")
        have = sum(1 for s in n.input if not s.startswith("^"))
        if have != want:
            raise GraphError(f"{where}: has {have} data input(s), the op takes {want}")
        n_outputs[n.name] = outs
        if n.op == "Const":
            _check_const(n, where)
    for n in g.nodes.values():
        for s in n.input:
            if s.startswith("^"):
                continue
            src, _, idx = s.partition(":")
            k = n_outputs.get(src)
            if k is not None and idx and (not idx.isdigit() or int(idx) >= k):
                raise GraphError(f"{path}: node '{n.name}' reads '{s}', but '{src}' has {k} output(s)")


def _attr_value(op_def, n, name: str):
    if name in n.attr:
        return n.attr[name]
    for a in op_def.attr:
        if a.name == name and a.HasField("default_value"):
            return a.default_value
    return None


def _arg_count(op_def, args, n) -> int | None:
    """How many tensors ``args`` (an OpDef's input_arg or output_arg) stand for in node ``n``."""
    total = 0
    for arg in args:
        if arg.number_attr:
            a = _attr_value(op_def, n, arg.number_attr)
            if a is None or a.WhichOneof("value") != "i" or a.i < 0:
                return None
            total += a.i
        elif arg.type_list_attr:
            a = _attr_value(op_def, n, arg.type_list_attr)
            if a is None:
                return None
            total += len(a.list.type)
        else:
            total += 1
    return total


def _dtype_name(enum: int) -> str:
    from tensorflow.core.framework import types_pb2

    return types_pb2.DataType.Name(enum)[3:].lower() if _valid_dtype(enum) else str(enum)


def _valid_dtype(enum: int) -> bool:
    from tensorflow.core.framework import types_pb2

    return enum != 0 and enum in types_pb2.DataType.values()


_NO_ITEMSIZE = {7, 20, 21}  # DT_STRING, DT_RESOURCE, DT_VARIANT


def _check_const(n, where: str) -> None:
    import numpy as np

    if "value" not in n.attr or n.attr["value"].WhichOneof("value") != "tensor":
        raise GraphError(f"{where}: a Const without a tensor value")
    t = n.attr["value"].tensor
    if not _valid_dtype(t.dtype):
        raise GraphError(f"{where}: the constant holds no valid data type ({t.dtype})")
    if "dtype" in n.attr and n.attr["dtype"].type != t.dtype:
        raise GraphError(f"{where}: the constant's tensor type ({t.dtype}) differs from its dtype attribute "
                         f"({n.attr['dtype'].type})")
    dims = [d.size for d in t.tensor_shape.dim]
    if any(d < 0 for d in dims):
        raise GraphError(f"{where}: the constant has a negative dimension {dims}")
    count = int(np.prod(dims, dtype=np.float64)) if dims else 1
    if t.tensor_content:
        if t.dtype in _NO_ITEMSIZE:
            return
        itemsize = np.dtype(tfproto.tf().as_dtype(t.dtype).as_numpy_dtype).itemsize
        if len(t.tensor_content) != count * itemsize:
            raise GraphError(f"{where}: the constant holds {len(t.tensor_content)} bytes, its shape {dims} "
                             f"needs {count * itemsize}")
        return
    n_vals = max((len(v) for f, v in t.ListFields() if f.name.endswith("_val")), default=0)
    if t.dtype in (8, 18):  # complex64/128: two numbers per element
        n_vals = (n_vals + 1) // 2
    if n_vals > count:
        raise GraphError(f"{where}: the constant holds {n_vals} values, its shape {dims} has room for {count}")


def _check_inputs(g: Graph, path: str) -> None:
    try:
        g.check_inputs_exist()
    except GraphError as e:
        raise GraphError(f"{path}: {e}") from None


def repair_ref_ops(graph_def):
    """Rewrite reference-typed ops to value-typed twins; returns (new GraphDef, counts)."""
    counts: dict[str, int] = {}
    if not any(n.op in _REF_TWINS or _has_ref_type(n) for n in graph_def.node):
        return graph_def, counts
    gd = tfproto.new_graph_def()
    gd.CopyFrom(graph_def)
    for n in gd.node:
        if n.op in _REF_TWINS:
            counts[n.op] = counts.get(n.op, 0) + 1
            if n.op == "Assign":  # Assign(ref, value) returns the new value
                data = [s for s in n.input if not s.startswith("^")]
                ctrl = [s for s in n.input if s.startswith("^")]
                del n.input[:]
                n.input.extend(data[1:2] + ctrl)
            n.op = _REF_TWINS[n.op]
            for a in _DROP_ATTRS:
                if a in n.attr:
                    del n.attr[a]
        for key in list(n.attr):
            a = n.attr[key]
            if a.WhichOneof("value") == "type" and a.type > 100:
                a.type -= 100
    return gd, counts


def _has_ref_type(n) -> bool:
    return any(a.WhichOneof("value") == "type" and a.type > 100 for a in n.attr.values())


# ---------------------------------------------------------------------- checkpoints
def _latest_meta(folder: str) -> str:
    """The .meta named by ``folder/checkpoint``, confined to ``folder``.

    The ``checkpoint`` file is parsed here (not by TensorFlow) and only the base name of its
    ``model_checkpoint_path`` is used: a checkpoint folder that was moved still loads, and a
    ``checkpoint`` file naming a path elsewhere (``/etc/...``, ``../..``) never makes bnconvert read
    outside the folder.
    """
    from google.protobuf import text_format

    cfile = os.path.join(folder, "checkpoint")
    data = _read_bytes(cfile)
    tfproto.tf()
    from tensorflow.python.training import checkpoint_state_pb2

    state = checkpoint_state_pb2.CheckpointState()
    try:
        text_format.Merge(data.decode("utf-8"), state)
    except (UnicodeDecodeError, text_format.ParseError, RecursionError) as e:
        raise InputError(f"{cfile}: not a TensorFlow checkpoint state file ({_short(e)})") from None
    named = state.model_checkpoint_path
    base = os.path.basename(named.rstrip("/\\"))
    if not base or base in (".", ".."):
        raise InputError(f"{cfile}: names no checkpoint (model_checkpoint_path is empty)")
    prefix = os.path.join(folder, base)
    if not os.path.lexists(prefix + ".meta"):
        raise InputError(f"{folder}: checkpoint folder without a readable .meta graph ({base}.meta missing)")
    return prefix + ".meta"


def _check_outside(graph_def, where: str, allow_unsafe: bool) -> None:
    """Refuse a frozen checkpoint/SavedModel graph that still holds ops reaching outside the process.

    Freezing runs nothing, so this is not about loading; it keeps an author's file or network op
    that is wired into the kept graph from being carried on (pass --allow-unsafe-ops to keep it).
    """
    if allow_unsafe:
        return
    from .errors import UnsafeGraphError
    from .safety import find_outside_ops

    found = find_outside_ops(graph_def)
    if found:
        name, op = found[0]
        raise UnsafeGraphError(f"{where}: holds op {op} (node '{name}') that reads or writes outside the process; "
                               "refusing to load it (pass --allow-unsafe-ops to load it anyway)")


def _load_checkpoint(meta_path: str, outputs: list[str] | None, allow_unsafe: bool = False,
                     limit: int | None = None) -> Model:
    tfproto.tf()
    from tensorflow.core.protobuf import meta_graph_pb2

    from .freeze import default_keep, freeze

    data = _read_bytes(meta_path)
    meta = meta_graph_pb2.MetaGraphDef()
    try:
        meta.ParseFromString(data)
    except Exception as e:
        raise InputError(f"{meta_path}: not a TF1 MetaGraphDef ({_short(e)})") from e
    prefix = meta_path[: -len(".meta")]
    if not (os.path.lexists(prefix + ".index") or os.path.lexists(prefix)):
        raise InputError(f"{meta_path}: no variables beside it ({os.path.basename(prefix)}.index missing)")
    gd = meta.graph_def
    check_functions(gd, meta_path)
    keep = sorted({o.split(":")[0] for o in outputs}) if outputs else default_keep(gd, _saver_scope(meta))
    frozen = freeze(gd, prefix, keep, meta_path, budget.limit() if limit is None else limit)
    _check_outside(frozen, meta_path, allow_unsafe)
    return Model(frozen, meta_path, "checkpoint", sha256=hashlib.sha256(data).hexdigest())


def _saver_scope(meta) -> str | None:
    if not meta.HasField("saver_def"):
        return None
    return meta.saver_def.filename_tensor_name.split("/")[0] or None


def _load_saved_model(folder: str, allow_unsafe: bool = False, limit: int | None = None) -> Model:
    """A SavedModel (``saved_model.pb`` or ``saved_model.pbtxt``), frozen from its variables bundle.

    The meta graph tagged ``serve`` and its signature ``serving_default`` (or the only/first one)
    give the graph, inputs and outputs; the sub-graph for them is frozen from
    ``variables/variables`` by :func:`bnconvert.freeze.freeze`.  ``main_op``, ``legacy_init_op``,
    table initializers and assets are never run.

    Decision: a TF2 SavedModel — tf_keras ``model.save(path)``, ``tf.saved_model.save`` — is in
    scope and folded, not refused.  Its serving graph differs from a TF1 one only in keeping the
    computation in library functions (the signature's output is a ``StatefulPartitionedCall``) and
    in keying its variables by object path; the calls are inlined by rewriting the GraphDef
    (:mod:`bnconvert.inline`, nothing runs) and the keys come from the bundle's object graph, after
    which the graph is an ordinary resource-variable graph.  What cannot be inlined or frozen
    (list-typed function arguments, a variable read inside ``If``/``While`` bodies) is refused in
    one line that says to freeze the model with TensorFlow and pass the ``.pb``.
    """
    tfproto.tf()
    from tensorflow.core.protobuf import saved_model_pb2

    from .freeze import freeze

    sm = saved_model_pb2.SavedModel()
    pb = os.path.join(folder, "saved_model.pb")
    if os.path.lexists(pb):
        data = _read_bytes(pb)
        try:
            sm.ParseFromString(data)
        except Exception as e:
            raise InputError(f"{folder}: saved_model.pb is not a SavedModel ({_short(e)})") from e
    else:
        pb = os.path.join(folder, "saved_model.pbtxt")
        data = _read_bytes(pb)
        _parse_text(data, sm, pb, "SavedModel")
    graphs = [mg for mg in sm.meta_graphs if "serve" in mg.meta_info_def.tags]
    if not graphs:
        tags = sorted({t for mg in sm.meta_graphs for t in mg.meta_info_def.tags})
        raise InputError(f"{folder}: no meta graph with tag 'serve' (tags: {', '.join(tags) or 'none'})")
    mg = graphs[0]
    sigs = dict(mg.signature_def)
    if not sigs:
        raise InputError(f"{folder}: SavedModel has no signature")
    sig = sigs.get("serving_default") or sigs[sorted(sigs)[0]]
    inputs = [v.name for _, v in sorted(sig.inputs.items())]
    outputs = [v.name for _, v in sorted(sig.outputs.items())]
    if not outputs:
        raise InputError(f"{folder}: the signature names no outputs")
    gd = mg.graph_def
    check_functions(gd, folder)
    prefix = os.path.join(folder, "variables", "variables")
    keep = sorted({t.split(":")[0] for t in outputs + inputs})
    frozen = freeze(gd, prefix, keep, folder, budget.limit() if limit is None else limit, signature=True)
    _check_outside(frozen, folder, allow_unsafe)
    return Model(frozen, folder, "savedmodel", inputs=inputs, outputs=outputs, sha256=hashlib.sha256(data).hexdigest())
