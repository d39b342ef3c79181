"""The form an unfoldable batch norm takes in the exported ONNX model.

A BN that cannot be folded into weights (after a concat, a ReLU, a pooling, a shared producer
output) leaves the folded TF graph as ``Mul(x, scale)`` + ``AddV2(·, shift)`` with per-channel
constants (``fold.apply_scale_shift``).  onnxruntime's CPU provider runs conv chains in a blocked
(NCHWc) layout; it converts ``BatchNormalization`` inside those chains but not a Mul+Add pair,
which forces layout reorders around each pair (measured on DenseNet-121: tools/bench_bnform.py,
docs/BENCHMARKS.md).  So the ONNX export rewrites each such pair into ONE
``BatchNormalization(x, scale, B=shift, mean=0, var=1, epsilon=0)``, which computes
``(x - 0) / sqrt(1 + 0) * scale + shift`` — exactly ``x * scale + shift`` in IEEE arithmetic
(sqrt(1) and division by 1 are exact).  TFLite keeps Mul+Add (its builtin kernels fuse them).

Only pairs that bnconvert itself wrote are rewritten (their node names end in
``/scale_shift/mul`` and ``/scale_shift/add``, which tf2onnx keeps), and only when the constants
are per-channel along axis 1 of the data (NCHW after tf2onnx's transpose optimizer, or [N, C]);
anything else stays Mul+Add.  ``form="muladd"`` turns the rewrite off.
"""
from __future__ import annotations

import numpy as np

FORMS = ("bnop", "muladd")


def _const(model, name: str, inits: dict):
    from onnx import numpy_helper

    if name in inits:
        return numpy_helper.to_array(inits[name])
    return None


def _channel_vector(v: np.ndarray | None, rank: int | None) -> np.ndarray | None:
    """``v`` as a [C] vector if it broadcasts along axis 1 of a rank-``rank`` tensor, else None."""
    if v is None or v.ndim == 0 or rank is None or rank < 2:
        return None
    shape = list(v.shape)
    if len(shape) == rank:  # [1, C, 1, 1]
        if shape[0] != 1:
            return None
        shape = shape[1:]
    if len(shape) != rank - 1 or any(d != 1 for d in shape[1:]):
        return None
    return v.reshape(-1)


def _ranks(model) -> dict[str, int]:
    import onnx

    inferred = onnx.shape_inference.infer_shapes(model)
    out = {}
    for vi in list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output):
        t = vi.type.tensor_type
        if t.HasField("shape"):
            out[vi.name] = len(t.shape.dim)
    return out


def scale_shift_to_batchnorm(model) -> int:
    """Rewrite bnconvert's Mul+Add scale-shift pairs into BatchNormalization, in place.

    Returns how many pairs were rewritten.
    """
    from onnx import helper, numpy_helper

    g = model.graph
    inits = {i.name: i for i in g.initializer}
    consumers: dict[str, list] = {}
    for n in g.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    ranks = None
    done = 0
    new_nodes = []
    drop = set()
    for mul in g.node:
        if mul.op_type != "Mul" or not mul.name.endswith("/scale_shift/mul") or len(mul.input) != 2:
            continue
        users = consumers.get(mul.output[0], [])
        if len(users) != 1 or users[0].op_type != "Add" or not users[0].name.endswith("/scale_shift/add"):
            continue
        add = users[0]
        if ranks is None:
            ranks = _ranks(model)
        xi = 0 if mul.input[1] in inits else 1
        x = mul.input[xi]
        rank = ranks.get(x)
        s = _channel_vector(_const(model, mul.input[1 - xi], inits), rank)
        si = 0 if add.input[1] == mul.output[0] else 1
        t = _channel_vector(_const(model, add.input[si], inits), rank)
        if s is None or t is None or s.shape != t.shape or s.dtype != t.dtype:
            continue
        base = mul.name[: -len("/mul")]
        names = [f"{base}/bn_{k}" for k in ("scale", "bias", "mean", "var")]
        for nm, v in zip(names, (s, t, np.zeros_like(s), np.ones_like(s))):
            g.initializer.append(numpy_helper.from_array(np.ascontiguousarray(v), nm))
        bn = helper.make_node("BatchNormalization", [x, *names], [add.output[0]], name=f"{base}/bn", epsilon=0.0)
        new_nodes.append((mul, bn))
        drop.update({id(mul), id(add)})
        done += 1
    if not done:
        return 0
    replacement = {id(m): bn for m, bn in new_nodes}
    kept = []
    for n in g.node:
        if id(n) in replacement:
            kept.append(replacement[id(n)])
        elif id(n) not in drop:
            kept.append(n)
    del g.node[:]
    g.node.extend(kept)
    used = {i for n in g.node for i in n.input}
    unused = [i for i in g.initializer if i.name not in used]
    for i in unused:
        g.initializer.remove(i)
    return done
