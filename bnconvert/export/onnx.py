"""Export a folded, frozen GraphDef to ONNX with tf2onnx, and inspect the result.

The ONNX graph's inputs and outputs keep their TF tensor names (``"x:0"``). tf2onnx (and with
it TensorFlow) is imported inside :func:`export_onnx` only; :func:`onnx_bn_leftovers` needs
the ``onnx`` package alone.
"""
from __future__ import annotations

import contextlib
import os
import re
from collections import Counter

from bnconvert.errors import InputError, OutputError, UnsupportedError

#: ONNX op types that betray an unfolded batch norm (or an unpruned training switch)
BN_LEFTOVER_OPS = frozenset({"BatchNormalization", "If", "Sqrt", "Reciprocal"})


def _one_line(e: BaseException, limit: int = 300) -> str:
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    text = lines[0] if lines else type(e).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _op_name(tensor: str) -> str:
    return tensor.split(":")[0]


def check_tensors(graph_def, names, role: str) -> None:
    """Raise :class:`InputError` unless every ``name`` ("x:0") is an output of a node in the graph."""
    nodes = {n.name for n in graph_def.node}
    for name in names:
        if not re.fullmatch(r"[^:^]+:\d+", name):
            raise InputError(f"{role} '{name}' is not a tensor name like 'x:0'")
        if _op_name(name) not in nodes:
            raise InputError(f"{role} tensor '{name}' is not in the graph")


def write_atomic(path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise OutputError(f"cannot write {path}: folder {folder} does not exist")
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except OSError as e:
        raise OutputError(f"cannot write {path}: {e.strerror or e}") from None
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _value_info(vi) -> dict:
    t = vi.type.tensor_type
    dims = [d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in t.shape.dim]
    import onnx

    return {"name": vi.name, "shape": dims, "dtype": onnx.TensorProto.DataType.Name(t.elem_type).lower()}


def _all_nodes(graph):
    """Every node of an ONNX graph, subgraphs (If/Loop bodies) included."""
    for node in graph.node:
        yield node
        for attr in node.attribute:
            if attr.HasField("g"):
                yield from _all_nodes(attr.g)
            for g in attr.graphs:
                yield from _all_nodes(g)


def count_ops(graph) -> Counter:
    """op_type → count, subgraphs included."""
    return Counter(n.op_type for n in _all_nodes(graph))


class _Collecting:
    """An optimizer factory that first collects the garbage of the previous optimizer pass."""

    def __init__(self, factory):
        self.factory = factory

    def __call__(self):
        import gc

        gc.collect()
        return self.factory()


def _large(dims, elements: int = 1 << 14) -> bool:
    n = 1
    for d in dims:
        n *= d
    return n >= elements


class _SharingCopy:
    """``copy`` for tf2onnx's optimizer loop: its graph copies share the large constant tensors.

    The copy exists so that an optimizer that fails can be rolled back; tf2onnx replaces a
    constant's value with a new attribute (``Node.set_tensor_value``) rather than editing it, so
    sharing the large ``value`` attributes between the copy and the original keeps the rollback
    intact and spares copying every weight about 25 times.
    """

    def __getattr__(self, name):
        import copy

        return getattr(copy, name)

    @staticmethod
    def deepcopy(x, memo=None):
        import copy

        from tf2onnx.graph import Graph

        if memo is None and isinstance(x, Graph):
            memo = {}
            for node in x.get_nodes():
                a = node.attr.get("value")
                if a is not None and a.HasField("t") and _large(a.t.dims):
                    memo[id(a)] = a
        return copy.deepcopy(x, memo)


@contextlib.contextmanager
def _lean_optimizers():
    """Run tf2onnx's ONNX optimizers without piling up copies of the model.

    tf2onnx's ``optimize_graph`` deep-copies the whole graph, weights included, before each of
    its 12 optimizers, in a loop until nothing changes, and drops the previous copy.  The copies
    are reference cycles (nodes point at their graph), and with few but large objects Python's
    cyclic collector rarely runs: on the 100 MB ResNet-50 of ``tools/bench_real.py`` the dead
    copies piled up to a 6.1 GB peak for the export.  Here each pass first collects the previous
    one's garbage (cheap in a stage child, whose inherited objects are frozen: ``gc.freeze``) and
    the copies share the large constants (:class:`_SharingCopy`): 2.1 GB.

    Within the block, a constant's node protobuf is also not rebuilt after each pass
    (:func:`_const_proto_kept`): each rebuild copied every weight into the node's message again,
    where protobuf's arena keeps the replaced copy allocated until the message dies — which is
    why running without the rollback copies used to be worse (3.8 GB).  ``make_graph`` takes a
    constant's value from the node's attributes, not from that protobuf, and rebuilds every node
    once more at the end, so the model is the same (bit-identical on ResNet-50).  A tf2onnx
    without these internals (``optimizer._optimizers``, ``optimizer.copy``,
    ``graph.Node.update_proto``) runs unchanged.
    """
    from tf2onnx import optimizer

    table = getattr(optimizer, "_optimizers", None)
    if not isinstance(table, dict) or getattr(optimizer, "copy", None) is None:
        yield
        return
    saved, saved_copy = dict(table), optimizer.copy
    table.update({k: _Collecting(v) for k, v in saved.items()})
    optimizer.copy = _SharingCopy()
    try:
        with _const_proto_kept():
            yield
    finally:
        table.clear()
        table.update(saved)
        optimizer.copy = saved_copy


@contextlib.contextmanager
def _const_proto_kept():
    """``Node.update_proto`` skips constants (no subgraphs) within the block; see
    :func:`_lean_optimizers`."""
    try:
        from tf2onnx.graph import Node
    except ImportError:
        yield
        return
    original = getattr(Node, "update_proto", None)
    if not callable(original):
        yield
        return

    def update_proto(self, external_tensor_storage=None):
        if self.type == "Const" and not self.get_body_graphs():
            return None
        return original(self, external_tensor_storage)

    Node.update_proto = update_proto
    try:
        yield
    finally:
        Node.update_proto = original


def _optimize(g):
    """tf2onnx's ``optimize_graph`` with one rollback copy instead of one per optimizer pass.

    The passes run without tf2onnx's own per-pass copies (``catch_errors=False``: ResNet-50's
    export 5.2 s instead of 7.6 s under load, the same model); if one of them fails, the
    optimization starts again from the copy taken first, the tf2onnx way (a failing optimizer is
    skipped with a warning), so the result is what tf2onnx alone would give.
    """
    import logging

    from tf2onnx import optimizer

    spare = optimizer.copy.deepcopy(g)
    try:
        return optimizer.optimize_graph(g, catch_errors=False)
    except Exception as e:  # noqa: BLE001 - an optimizer's failure: tf2onnx's own way decides
        logging.getLogger("bnconvert").info("an ONNX optimizer failed (%s: %s); optimizing again, skipping it",
                                            type(e).__name__, " ".join(str(e).split())[:200])
        del g
        return optimizer.optimize_graph(spare, catch_errors=True)


def _tf2onnx(graph_def, inputs: list[str], outputs: list[str], opset: int, shape_override):
    """tf2onnx's ``from_graph_def`` for a frozen graph, in fewer copies of the model.

    The same steps (grappler's ``tf_optimize``, ``process_tf_graph``, the ONNX optimizers,
    ``make_model``) without what a frozen graph does not need or keeps too long: a session that
    freezes variables (the graph has none, and ``from_graph_def`` discards the result), and the
    TensorFlow graph and optimized GraphDef, released before the optimizers run.  A tf2onnx
    without these functions gets ``from_graph_def``.
    """
    import gc

    import tf2onnx

    try:
        from tf2onnx import optimizer, tf_loader, tfonnx

        lean = all(callable(f) for f in (tf_loader.tf_optimize, tfonnx.process_tf_graph, optimizer.optimize_graph))
    except (ImportError, AttributeError):
        lean = False
    if not lean:
        with _lean_optimizers():
            return tf2onnx.convert.from_graph_def(graph_def, input_names=inputs, output_names=outputs,
                                                  opset=opset, shape_override=shape_override)[0]
    from bnconvert.tfproto import tf as _tf

    tf = _tf()
    # what exists now (TensorFlow's modules: millions of objects) is no garbage of this
    # conversion: frozen, each of the optimizers' collections costs what the conversion allocated
    # (0.3 s each otherwise, ~25 of them); a stage child is frozen already (isolate._child)
    thaw = gc.get_freeze_count() == 0
    gc.freeze()
    try:
        return _tf2onnx_steps(tf, graph_def, inputs, outputs, opset, shape_override)
    finally:
        if thaw:
            gc.unfreeze()


def _tf2onnx_steps(tf, graph_def, inputs, outputs, opset, shape_override):
    import gc

    from tf2onnx import tf_loader, tfonnx

    with tf.device("/cpu:0"), tf.Graph().as_default():  # grappler's meta graph needs graph mode
        frozen = tf_loader.tf_optimize(list(inputs), list(outputs), graph_def)
    with tf.Graph().as_default() as tf_graph:
        tf.import_graph_def(frozen, name="")
        del frozen
        g = tfonnx.process_tf_graph(tf_graph, continue_on_error=True, opset=opset, shape_override=shape_override,
                                    input_names=list(inputs), output_names=list(outputs))
    del tf_graph
    gc.collect()
    with _lean_optimizers():
        g = _optimize(g)
    return g.make_model("converted from unknown")


@contextlib.contextmanager
def _fed_as_placeholders(graph_def, inputs: list[str]):
    """Within the block, each ``PlaceholderWithDefault`` named in ``inputs`` is a plain
    ``Placeholder`` (its default dropped); ``graph_def`` is restored afterwards.

    tf2onnx turns a ``PlaceholderWithDefault`` into a graph input that is also an initializer
    holding the default: an optional input, which onnxruntime does not list among the model's
    inputs (``get_inputs``; it is an "overridable initializer"), so the model seemed to have no
    input ``x:0`` at all and could not be verified.  An input the user feeds is an input: the
    TFLite export drops the default the same way (:func:`bnconvert.export.tflite._convert`)."""
    wanted = {_op_name(t) for t in inputs}
    saved = []
    try:
        for node in graph_def.node:
            if node.name in wanted and node.op == "PlaceholderWithDefault":
                saved.append((node, node.op, list(node.input)))
                node.op = "Placeholder"
                del node.input[:]
        yield
    finally:
        for node, op, inputs_ in saved:
            node.op = op
            del node.input[:]
            node.input.extend(inputs_)


def export_onnx(graph_def, inputs: list[str], outputs: list[str], path: str, opset: int = 17,
                input_shapes: dict[str, list[int]] | None = None, bn_form: str = "bnop") -> dict:
    """Convert with tf2onnx, check with ``onnx.checker``, write ``path`` atomically.

    ``input_shapes`` (optional, TF name → dims, None for a dynamic dim) overrides the
    placeholders' declared shapes; without it unknown dims stay dynamic in the ONNX model.
    ``bn_form``: how BNs kept as scale-shift appear (:mod:`bnconvert.export.bnform`).
    Returns ``{"opset", "ops", "inputs", "outputs", "onnx_names", "bn_ops"}``. tf2onnx failures raise
    :class:`UnsupportedError` (unsupported ops) or :class:`InputError`, one line each.
    """
    inputs, outputs = list(inputs), list(outputs)
    check_tensors(graph_def, inputs, "input")
    check_tensors(graph_def, outputs, "output")
    shape_override = None
    if input_shapes:
        unknown = set(input_shapes) - set(inputs)
        if unknown:
            raise InputError(f"input shape given for '{sorted(unknown)[0]}', which is not an input")
        shape_override = {k: [-1 if d is None else int(d) for d in v] for k, v in input_shapes.items()}

    from bnconvert.tfproto import tf as _tf

    _tf()  # sets TF_USE_LEGACY_KERAS before tf2onnx imports tensorflow
    import onnx
    import tf2onnx

    try:
        with _fed_as_placeholders(graph_def, inputs):
            model = _tf2onnx(graph_def, inputs, outputs, opset, shape_override)
    except Exception as e:  # noqa: BLE001 - tf2onnx raises ValueError/KeyError/RuntimeError/...
        msg = _one_line(e)
        if "nsupported" in msg or "not supported" in msg:
            raise UnsupportedError(f"tf2onnx cannot convert the graph: {msg}") from None
        raise InputError(f"tf2onnx failed on the graph: {msg}") from None
    unconverted = sorted({n.op_type for n in _all_nodes(model.graph)
                          if n.domain in ("", "ai.onnx") and not onnx.defs.has(n.op_type)})
    if unconverted:
        raise UnsupportedError(f"tf2onnx cannot convert TF op(s) {', '.join(unconverted)} "
                               f"(no ONNX equivalent at opset {opset})")
    bn_ops = 0
    if bn_form == "bnop":
        from bnconvert.export.bnform import scale_shift_to_batchnorm

        bn_ops = scale_shift_to_batchnorm(model)
    data = model.SerializeToString()  # once: the checker and the file share it
    try:
        onnx.checker.check_model(data)
    except Exception as e:  # noqa: BLE001 - onnx.checker.ValidationError
        raise UnsupportedError(f"tf2onnx produced an invalid ONNX model: {_one_line(e)}") from None
    write_atomic(path, data)
    del data

    onnx_in = [vi.name for vi in model.graph.input if vi.name not in {i.name for i in model.graph.initializer}]
    onnx_out = [vi.name for vi in model.graph.output]
    names = {}
    for tf_names, onnx_names in ((inputs, onnx_in), (outputs, onnx_out)):
        for i, n in enumerate(tf_names):
            if n in onnx_names:
                names[n] = n
            elif _op_name(n) in onnx_names:
                names[n] = _op_name(n)
            elif len(tf_names) == len(onnx_names):
                names[n] = onnx_names[i]
    return {
        "opset": next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), opset),
        "ops": dict(sorted(count_ops(model.graph).items())),
        "inputs": [_value_info(vi) for vi in model.graph.input if vi.name in onnx_in],
        "outputs": [_value_info(vi) for vi in model.graph.output],
        "onnx_names": names,
        "bn_form": bn_form,
        "scale_shift_as_batchnorm": bn_ops,
    }


def _written_by_bnconvert(node) -> bool:
    """A BatchNormalization bnconvert wrote for a reported scale-shift (:mod:`.bnform`)."""
    return node.op_type == "BatchNormalization" and node.name.endswith("/scale_shift/bn")


def onnx_bn_leftovers(model_or_path) -> list[str]:
    """``"OpType:node_name"`` for every BatchNormalization, If, Sqrt and Reciprocal node that
    bnconvert did not write itself (a reported scale-shift exported as one BatchNormalization).

    Subgraphs (If branches) are searched too. Empty means nothing BN-derived is left.
    """
    import onnx

    model = model_or_path
    if not hasattr(model, "graph"):
        model = onnx.load(os.fspath(model_or_path), load_external_data=False)

    found = [f"{n.op_type}:{n.name}" for n in _all_nodes(model.graph)
             if n.op_type in BN_LEFTOVER_OPS and not _written_by_bnconvert(n)]
    return found
