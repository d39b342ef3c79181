"""Export a folded, frozen GraphDef to a float32 TFLite model with TensorFlow's converter.

Every input placeholder is given its concrete shape (or an unknown batch), then the GraphDef is
handed to ``tf.compat.v1.lite.TFLiteConverter`` as it is; where that path cannot be used, the
graph is imported into a ``tf.compat.v1`` session and converted with ``from_session`` (see
:func:`_convert`; ``from_concrete_functions`` on a ``wrap_function`` also works but takes TF's
deprecated path). TFLite keeps TF names without the ``":0"``: ``"x:0"`` → ``"x"``,
``"split:1"`` → ``"split:1"``; the mapping is returned.
"""
from __future__ import annotations

import re

from bnconvert.errors import InputError, UnsupportedError
from bnconvert.export.onnx import check_tensors, write_atomic
from bnconvert.graph import split_input

_PLACEHOLDERS = ("Placeholder", "PlaceholderWithDefault", "PlaceholderV2")


def _one_line(e: BaseException, limit: int = 300) -> str:
    """The converter's messages span pages: keep the first line that names an error."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    ops = [ln.split(":", 1)[1].strip() for ln in lines if re.match(r"(TF Select|Custom) ops:", ln)]
    if ops:
        return f"ops not among TFLite's builtins: {', '.join(ops)}"
    pick = next((ln for ln in lines if re.search(r"error:|not supported|neither a custom op", ln)), None)
    text = pick or (lines[0] if lines else type(e).__name__)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _concrete(name: str, shape) -> list[int]:
    if shape is None:
        raise InputError(f"TFLite export needs a concrete shape for input '{name}' (--input-shape)")
    dims = list(shape)
    if any(d is None or int(d) < 0 for d in dims):
        raise InputError(f"TFLite export needs a concrete shape for input '{name}', got {dims} (--input-shape)")
    return [int(d) for d in dims]


def export_tflite(graph_def, inputs, outputs, path, input_shapes: dict[str, list[int]],
                  dynamic_batch: bool = True, configure=None) -> dict:
    """Convert to float32 TFLite, write ``path`` atomically.

    ``configure(converter, tf)``, if given, sets converter options before converting (the int8
    export of :mod:`bnconvert.quantize` sets its representative dataset there).

    Every input must be a placeholder with a concrete shape in ``input_shapes``. Returns
    ``{"ops": {builtin op: count}, "input_shapes", "inputs", "outputs", "tflite_names",
    "batch"}``.

    ``batch`` is ``"dynamic"`` when every input's batch dimension is unknown in the graph and a
    model converted with it unknown can be resized at run time (``resize_tensor_input`` to
    another batch, then allocate and invoke, on the same interpreter as verification: LiteRT
    with XNNPACK); its default shape is then batch 1. Otherwise ``"fixed"`` to the batch of
    ``input_shapes`` (``batch_note`` says why): graphs whose reshapes bake the batch in refuse
    the resize.
    """
    inputs, outputs = list(inputs), list(outputs)
    check_tensors(graph_def, inputs, "input")
    check_tensors(graph_def, outputs, "output")
    shapes = {n: _concrete(n, (input_shapes or {}).get(n)) for n in inputs}

    from bnconvert.tfproto import tf as _tf

    tf = _tf()
    gd, widened = graph_def, None  # _convert restores what it changes
    if _has_narrow_floats(graph_def):
        gd = tf.compat.v1.GraphDef()
        gd.CopyFrom(graph_def)
        widened = widen_to_float32(gd)
    flat, batch, note = None, "fixed", _dynamic_refused(gd, inputs, shapes) if dynamic_batch else "not asked for"
    if note is None:
        free = {n: [None] + s[1:] for n, s in shapes.items()}
        try:
            flat = _convert(tf, gd, inputs, outputs, free, configure)
            note = _resize_refused(flat, inputs, outputs, shapes)
        except (InputError, UnsupportedError) as e:
            note = f"the converter refused an unknown batch: {e}"
        if note is None:
            batch = "dynamic"
        else:
            flat = None
    if flat is None:
        flat = _convert(tf, gd, inputs, outputs, shapes, configure)
    write_atomic(path, flat)

    from bnconvert.verify.runners import tflite_interpreter, tflite_name_map

    interp = tflite_interpreter(bytes(flat))
    ops: dict[str, int] = {}
    for op in interp._get_ops_details():  # noqa: SLF001 - the only op listing the interpreter offers
        ops[op["op_name"]] = ops.get(op["op_name"], 0) + 1
    names = tflite_name_map(interp, inputs, outputs)
    return {
        "ops": dict(sorted(ops.items())),
        "input_shapes": shapes,
        "batch": batch,
        **({"batch_note": note} if batch == "fixed" else {}),
        "interpreter": type(interp).__module__.split(".")[0],
        "inputs": [{"name": d["name"], "shape": [int(x) for x in d["shape"]],
                    "shape_signature": [int(x) for x in d.get("shape_signature", d["shape"])],
                    "dtype": str(d["dtype"].__name__)} for d in interp.get_input_details()],
        "outputs": [{"name": d["name"], "shape": [int(x) for x in d["shape"]], "dtype": str(d["dtype"].__name__)}
                    for d in interp.get_output_details()],
        "tflite_names": names,
        **({"widened_to_float32_from": widened} if widened else {}),
    }


def _convert(tf, gd, inputs, outputs, shapes, configure=None) -> bytes:
    """The TFLite flatbuffer of ``gd`` with each input placeholder set to ``shapes`` (None: an
    unknown dim); ``gd``'s placeholders are changed while converting and restored afterwards.

    Decision (measured on ResNet-50, 103 MB): the converter is given the GraphDef itself
    (:func:`_convert_graph_def`): 3.3 s and 0.69 GB above the start, where the session path
    (``from_session``: the graph imported into TensorFlow, frozen again into a GraphDef, run
    through grappler) takes 6.1 s and 1.18 GB, for a bit-identical model.  The session path stays
    for what the GraphDef path cannot take: a converter that is configured (int8: its
    representative dataset), outputs other than a node's first, and a graph the GraphDef path
    fails on.
    """
    by_name = {n.name: n for n in gd.node}
    for name in inputs:
        node = by_name[name.split(":")[0]]
        if node.op not in _PLACEHOLDERS:
            raise UnsupportedError(f"TFLite export feeds placeholders only; input '{name}' is a {node.op}")
    saved = {}
    try:
        for name in inputs:
            node = by_name[name.split(":")[0]]
            if node.name not in saved:
                saved[node.name] = type(node)()
                saved[node.name].CopyFrom(node)
            if node.op != "Placeholder":  # a fed PlaceholderWithDefault: drop its default
                node.op = "Placeholder"
                del node.input[:]
            node.attr["shape"].shape.CopyFrom(tf.TensorShape(shapes[name]).as_proto())
        if configure is None and all(split_input(o)[1] == 0 for o in outputs):
            try:
                return _convert_graph_def(tf, gd, inputs, outputs, shapes)
            except Exception:  # noqa: BLE001 - the session path below decides, with its own message
                pass
        return _convert_session(tf, gd, inputs, outputs, configure)
    finally:
        for name, node in saved.items():
            by_name[name].CopyFrom(node)


def _convert_graph_def(tf, gd, inputs, outputs, shapes) -> bytes:
    with_shape = [(n.split(":")[0], [-1 if d is None else int(d) for d in shapes[n]]) for n in inputs]
    converter = tf.compat.v1.lite.TFLiteConverter(gd, None, None, input_arrays_with_shape=with_shape,
                                                  output_arrays=[o.split(":")[0] for o in outputs])
    return converter.convert()


def _convert_session(tf, gd, inputs, outputs, configure=None) -> bytes:
    graph = tf.Graph()
    with graph.as_default():
        try:
            tf.compat.v1.import_graph_def(gd, name="")
        except ValueError as e:
            raise InputError(f"input shapes do not fit the graph: {_one_line(e)}") from None
    with tf.compat.v1.Session(graph=graph) as sess:
        in_t = [graph.get_tensor_by_name(n) for n in inputs]
        out_t = [graph.get_tensor_by_name(n) for n in outputs]
        try:
            converter = tf.compat.v1.lite.TFLiteConverter.from_session(sess, in_t, out_t)
            if configure is not None:
                configure(converter, tf)
            return converter.convert()
        except Exception as e:  # noqa: BLE001 - ConverterError, ValueError, ...
            raise UnsupportedError(f"the TFLite converter failed: {_one_line(e)}") from None


def _dynamic_refused(gd, inputs, shapes) -> str | None:
    """Why the batch cannot be left unknown (None: it can be tried)."""
    by_name = {n.name: n for n in gd.node}
    for name in inputs:
        node = by_name[name.split(":")[0]]
        if "shape" not in node.attr:  # (reading a missing map key would add it to the caller's graph)
            return f"input '{name}' has no declared shape"
        shape = node.attr["shape"].shape
        if shape.unknown_rank or not shape.dim:
            return f"input '{name}' has no declared batch dimension"
        if shape.dim[0].size >= 0:
            return f"the graph fixes the batch of input '{name}' to {shape.dim[0].size}"
    return None


def _resize_refused(flat: bytes, inputs, outputs, shapes) -> str | None:
    """Resize every input to another batch and run once; the reason it fails, or None."""
    import numpy as np

    from bnconvert.verify.runners import tflite_interpreter

    interp = tflite_interpreter(bytes(flat))
    details = interp.get_input_details()
    batch = max(s[0] for s in shapes.values()) + 3
    try:
        for d in details:
            interp.resize_tensor_input(d["index"], [batch] + [int(x) for x in d["shape"][1:]])
        interp.allocate_tensors()
        for d in interp.get_input_details():
            interp.set_tensor(d["index"], np.zeros(d["shape"], d["dtype"]))
        interp.invoke()
    except (RuntimeError, ValueError) as e:
        return f"resizing the batch to {batch} fails at run time ({_one_line(e, 120)})"
    return None


_NARROW = {19: "float16", 14: "bfloat16"}  # DT_HALF, DT_BFLOAT16
_DT_FLOAT = 1


def _has_narrow_floats(gd) -> bool:
    """Whether :func:`widen_to_float32` would change anything in ``gd``."""
    for n in gd.node:
        for a in n.attr.values():
            kind = a.WhichOneof("value")
            if (kind == "type" and a.type in _NARROW) or (kind == "list" and any(t in _NARROW for t in a.list.type)) \
                    or (kind == "tensor" and a.tensor.dtype in _NARROW):
                return True
    return False


def widen_to_float32(gd) -> str | None:
    """Make a float16/bfloat16 graph float32 in place (TFLite's builtin kernels are float32).

    Every type attr and Const of a narrow float type becomes float32; a Cast between two types
    that both became float32 is harmless.  Returns the narrow type's name, or None if there
    was none.  The weights keep exactly their float16 values (widening is exact).
    """
    from bnconvert.tfproto import make_ndarray, make_tensor_proto

    found = None
    for n in gd.node:
        for key in list(n.attr):
            a = n.attr[key]
            kind = a.WhichOneof("value")
            if kind == "type" and a.type in _NARROW:
                found = found or _NARROW[a.type]
                a.type = _DT_FLOAT
            elif kind == "list" and any(t in _NARROW for t in a.list.type):
                found = found or next(_NARROW[t] for t in a.list.type if t in _NARROW)
                types = [_DT_FLOAT if t in _NARROW else t for t in a.list.type]
                del a.list.type[:]
                a.list.type.extend(types)
            elif kind == "tensor" and a.tensor.dtype in _NARROW:
                found = found or _NARROW[a.tensor.dtype]
                a.tensor.CopyFrom(make_tensor_proto(make_ndarray(a.tensor).astype("float32")))
    return found
