"""Evaluate pure op chains over constants in numpy, and say why a value is not a constant.

:data:`CONST_OPS` maps an op type to ``fn(node, graph, *input_values) -> ndarray``;
:meth:`bnconvert.graph.Graph.const` walks a tensor's ancestors and applies it, in float64 when
asked (``wide=True``).  Nothing is executed in TensorFlow: folding and ``inspect`` never run the
user's graph.  Decisions:

* **Dequantize** follows TensorFlow's kernels (``dequantize_op.cc``, ``quantization_utils.h``) for
  every mode: ``MIN_COMBINED`` (``min + (q - lowest) * (max - min) / (highest - lowest)``),
  ``MIN_FIRST`` (what the ``quantize_weights`` graph transform writes: quint8 ``Const`` plus
  scalar ``min``/``max`` ``Const`` nodes; the range is widened by 256/255 and ``min`` rounded to
  a step), and ``SCALED`` (``q * max(min/lowest, max/highest)``, ``narrow_range``), per-tensor
  or per-``axis``.  Computed in float64 and rounded to the op's ``dtype`` (float32): that is
  the value the graph holds (within an ulp of TensorFlow's kernel); what follows it in the
  chain is evaluated in float64.
* **FakeQuant** (``...WithMinMaxArgs``, ``...WithMinMaxVars``, ``...PerChannel``) of a constant
  is a constant; it is computed in float32 with TensorFlow's kernel's formula (nudged range,
  ``floor(x * inv_scale + 0.5)``), because rounding ties decide which grid point a weight
  lands on: the same grid points as TensorFlow, values within one float32 ulp (of the range) of its kernel's
  (``tests/test_consteval_vs_tf.py``; its final multiply-add rounds differently now and then).
* Elementwise arithmetic, ``Cast``, ``Identity``, ``Reshape``, ``Squeeze``, ``ExpandDims``,
  ``Fill``, ``Pack``, ``ConcatV2``, ``Tile``, ``Transpose``, reductions, ``Range``, ``Slice``,
  ``GatherV2``, ``Shape`` of constants ... are numpy one-liners.

:func:`why_not_constant` names what really stops a value from being a constant: a placeholder,
a variable, a stateful op, a training-mode batch statistic, a run-time ``Switch``, or an op this
table does not evaluate (named, so the message is never a bare "not a constant").
:func:`first_non_finite` names the node where NaN or inf first appears in a constant chain.
"""
from __future__ import annotations

import numpy as np

from . import ops

# ---------------------------------------------------------------------- helpers


def node_attr(node, key, default=None):
    """A NodeDef attribute as a Python value: strings decoded, lists as lists (ints, strings or
    floats), ``default`` when absent.  :meth:`bnconvert.graph.Graph.attr` is this."""
    if key not in node.attr:
        return default
    a = node.attr[key]
    kind = a.WhichOneof("value")
    if kind == "s":
        return a.s.decode()
    if kind == "list":
        lst = a.list
        if lst.i:
            return list(lst.i)
        if lst.s:
            return [x.decode() for x in lst.s]
        return list(lst.f)
    return getattr(a, kind) if kind else default



def _np_dtype(enum_value: int):
    dt = ops.np_dtype(enum_value)
    if dt is None:
        from .tfproto import np_dtype

        dt = np_dtype(enum_value)
    return dt


def plain(v: np.ndarray) -> np.ndarray:
    """TensorFlow returns quantized tensors as numpy records (``[('quint8', 'u1')]``): unwrap."""
    v = np.asarray(v)
    if v.dtype.names:
        v = v[v.dtype.names[0]]
    return v


def _ints(v) -> list[int]:
    return [int(d) for d in np.asarray(v).reshape(-1)]


def _keep_dtype(fn):
    def wrapped(node, g, *vals):
        out = fn(*vals)
        return np.asarray(out).astype(vals[0].dtype, copy=False)

    return wrapped


# ---------------------------------------------------------------------- shapes and copies
def _reshape(node, g, x, shape):
    return np.reshape(x, _ints(shape))


def _cast(node, g, x):
    return plain(x).astype(_np_dtype(node.attr["DstT"].type))


def _squeeze(node, g, x):
    dims = list(node.attr["squeeze_dims"].list.i) if "squeeze_dims" in node.attr else []
    return np.squeeze(x, axis=tuple(dims)) if dims else np.squeeze(x)


def _fill(node, g, dims, value):
    return np.full(_ints(dims), value, dtype=np.asarray(value).dtype)


def _pack(node, g, *vals):
    return np.stack(vals, axis=int(node_attr(node, "axis", 0)))


def _concat_v2(node, g, *vals):
    return np.concatenate(vals[:-1], axis=int(np.asarray(vals[-1]).reshape(-1)[0]))


def _concat(node, g, axis, *vals):
    return np.concatenate(vals, axis=int(np.asarray(axis).reshape(-1)[0]))


def _reduce(fn):
    def wrapped(node, g, x, axes):
        axis = tuple(_ints(axes))
        out = fn(x, axis=axis, keepdims=bool(node_attr(node, "keep_dims", False)))
        return np.asarray(out).astype(x.dtype, copy=False)

    return wrapped


def _slice(node, g, x, begin, size):
    idx = tuple(slice(b, None if s == -1 else b + s) for b, s in zip(_ints(begin), _ints(size)))
    return x[idx]


def _strided_slice(node, g, x, begin, end, strides):
    """Only the plain form (no masks): what constant shape arithmetic uses."""
    masks = [node_attr(node, k, 0) for k in ("begin_mask", "end_mask", "ellipsis_mask", "new_axis_mask")]
    if any(masks):
        raise ValueError("masked StridedSlice")
    shrink = int(node_attr(node, "shrink_axis_mask", 0))
    idx = []
    for i, (b, e, s) in enumerate(zip(_ints(begin), _ints(end), _ints(strides))):
        idx.append(b if shrink >> i & 1 else slice(b, e, s))
    return np.asarray(x[tuple(idx)])


def _gather_v2(node, g, params, indices, axis):
    return np.take(params, indices, axis=int(np.asarray(axis).reshape(-1)[0]))


def _shape(node, g, x):
    return np.asarray(np.shape(x), dtype=_np_dtype(node_attr(node, "out_type", ops.DT.INT32)))


def _range(node, g, start, limit, delta):
    return np.arange(start, limit, delta).astype(np.asarray(start).dtype)


# ---------------------------------------------------------------------- quantization
def _int_range(t_enum: int, narrow: bool) -> tuple[int, int]:
    info = np.iinfo(ops.NUMPY[ops.DT(t_enum)])
    lo = info.min + 1 if narrow and info.min < 0 else info.min
    return int(lo), int(info.max)


def _per_axis(v: np.ndarray, rng, axis: int, ndim: int) -> np.ndarray:
    rng = np.asarray(rng, np.float64)
    if axis < 0 or rng.size == 1:
        return rng.reshape(())
    shape = [1] * ndim
    shape[axis] = -1
    return rng.reshape(shape)


def _dequantize(node, g, q, min_range, max_range):
    """TensorFlow's Dequantize in float64 (see the module docstring)."""
    t = node.attr["T"].type
    mode = node_attr(node, "mode", "MIN_COMBINED")
    narrow = bool(node_attr(node, "narrow_range", False))
    axis = int(node_attr(node, "axis", -1))
    q = plain(q).astype(np.float64)
    lo, hi = _int_range(t, False)
    mn = _per_axis(q, min_range, axis, q.ndim)
    mx = _per_axis(q, max_range, axis, q.ndim)
    if mode == "MIN_COMBINED":
        out = mn + (q - lo) * (mx - mn) / (hi - lo)
    elif mode == "MIN_FIRST":
        steps = float(hi - lo + 1)
        scale = (mx - mn) * (steps / (steps - 1.0)) / steps
        s32 = scale.astype(np.float32)  # TF rounds min to a step in float32
        min_rounded = (_round_away((mn.astype(np.float32) / s32).astype(np.float32)) * s32).astype(np.float64)
        out = np.where(mn == mx, mn, min_rounded + (q - lo) * scale)
    elif mode == "SCALED":
        lo_n, hi_n = _int_range(t, narrow)
        factor = mx / hi_n if lo_n == 0 else np.maximum(mn / lo_n, mx / hi_n)
        out = q * factor
    else:
        raise ValueError(f"Dequantize mode {mode}")
    # the graph holds the op's float32 result: the wide evaluation goes on from that value
    return out.astype(_np_dtype(node_attr(node, "dtype", ops.DT.FLOAT)))


def _trunc_div(a, b):
    a, b = np.asarray(a), np.asarray(b)
    q = np.abs(a) // np.abs(b)
    return np.where((a < 0) != (b < 0), -q, q)


def _round_away(v):
    """``std::round``: halves away from zero (numpy's ``round`` goes to even)."""
    v = np.asarray(v)
    return (np.sign(v) * np.floor(np.abs(v) + v.dtype.type(0.5))).astype(v.dtype)


def _nudge(mn: np.ndarray, mx: np.ndarray, num_bits: int, narrow: bool):
    """TensorFlow's ``Nudge`` (fake_quant_ops_functor.h), in float32."""
    f32 = np.float32
    qmin = f32(1 if narrow else 0)
    qmax = f32((1 << num_bits) - 1)
    mn = np.asarray(mn, f32)
    mx = np.asarray(mx, f32)
    scale = (mx - mn) / (qmax - qmin)
    zp_from_min = qmin - mn / scale
    zp = np.where(zp_from_min < qmin, qmin, np.where(zp_from_min > qmax, qmax, _round_away(zp_from_min)))
    zp = zp.astype(f32)
    return ((qmin - zp) * scale).astype(f32), ((qmax - zp) * scale).astype(f32), scale.astype(f32)


def _fake_quant(x, mn, mx, num_bits, narrow):
    f32 = np.float32
    x = np.asarray(x, f32)
    nmin, nmax, scale = _nudge(mn, mx, num_bits, narrow)
    inv = (f32(1.0) / scale).astype(f32)
    clamped = np.minimum(np.maximum(x, nmin), nmax).astype(f32)
    shifted = (clamped - nmin).astype(f32)
    return (np.floor(shifted * inv + f32(0.5)).astype(f32) * scale + nmin).astype(f32)


def _fq_args(node, g, x):
    return _fake_quant(x, node_attr(node, "min", -6.0), node_attr(node, "max", 6.0),
                       int(node_attr(node, "num_bits", 8)), bool(node_attr(node, "narrow_range", False)))


def _fq_vars(node, g, x, mn, mx):
    return _fake_quant(x, np.asarray(mn).reshape(()), np.asarray(mx).reshape(()),
                       int(node_attr(node, "num_bits", 8)), bool(node_attr(node, "narrow_range", False)))


def _fq_per_channel(node, g, x, mn, mx):
    return _fake_quant(x, np.asarray(mn).reshape(-1), np.asarray(mx).reshape(-1),
                       int(node_attr(node, "num_bits", 8)), bool(node_attr(node, "narrow_range", False)))


# ---------------------------------------------------------------------- the table
_same = lambda n, g, x: x  # noqa: E731

CONST_OPS = {
    "Identity": _same,
    "Snapshot": _same,
    "StopGradient": _same,
    "PreventGradient": _same,
    "Reshape": _reshape,
    "Cast": _cast,
    "Squeeze": _squeeze,
    "ExpandDims": lambda n, g, x, a: np.expand_dims(x, int(np.asarray(a).reshape(-1)[0])),
    "Fill": _fill,
    "Pack": _pack,
    "ConcatV2": _concat_v2,
    "Concat": _concat,
    "Tile": lambda n, g, x, m: np.tile(x, _ints(m)),
    "Transpose": lambda n, g, x, p: np.transpose(x, _ints(p)),
    "Slice": _slice,
    "StridedSlice": _strided_slice,
    "GatherV2": _gather_v2,
    "Shape": _shape,
    "Size": lambda n, g, x: np.asarray(np.size(x), _np_dtype(node_attr(n, "out_type", ops.DT.INT32))),
    "Rank": lambda n, g, x: np.asarray(np.ndim(x), np.int32),
    "Range": _range,
    "ZerosLike": lambda n, g, x: np.zeros_like(x),
    "OnesLike": lambda n, g, x: np.ones_like(x),
    "Neg": _keep_dtype(np.negative),
    "Abs": _keep_dtype(np.abs),
    "Square": _keep_dtype(np.square),
    "Exp": _keep_dtype(np.exp),
    "Log": _keep_dtype(np.log),
    "Rsqrt": _keep_dtype(lambda x: 1.0 / np.sqrt(x)),
    "Sqrt": _keep_dtype(np.sqrt),
    "Reciprocal": _keep_dtype(lambda x: 1.0 / x),
    "Inv": _keep_dtype(lambda x: 1.0 / x),
    "Add": _keep_dtype(np.add),
    "AddV2": _keep_dtype(np.add),
    "Sub": _keep_dtype(np.subtract),
    "Mul": _keep_dtype(np.multiply),
    "RealDiv": _keep_dtype(np.divide),
    # TensorFlow's Div of integers is C++ division: toward zero (FloorDiv is the flooring one)
    "Div": _keep_dtype(lambda a, b: _trunc_div(a, b) if np.asarray(a).dtype.kind in "iu" else np.divide(a, b)),
    "Pow": _keep_dtype(np.power),
    "SquaredDifference": _keep_dtype(lambda a, b: np.square(np.subtract(a, b))),
    "Maximum": _keep_dtype(np.maximum),
    "Minimum": _keep_dtype(np.minimum),
    "Sum": _reduce(np.sum),
    "Mean": _reduce(np.mean),
    "Prod": _reduce(np.prod),
    "Max": _reduce(np.max),
    "Min": _reduce(np.min),
    "Dequantize": _dequantize,
    "FakeQuantWithMinMaxArgs": _fq_args,
    "FakeQuantWithMinMaxVars": _fq_vars,
    "FakeQuantWithMinMaxVarsPerChannel": _fq_per_channel,
}


# ---------------------------------------------------------------------- explanations
def _stateful(op: str) -> bool:
    if op in ops.STATEFUL:
        return True
    try:
        from .tfproto import tf

        tf()
        from tensorflow.python.framework import op_def_registry

        d = op_def_registry.get(op)
        return bool(d is not None and d.is_stateful)
    except Exception:  # no TensorFlow: only the static list
        return False


def why_not_constant(g, tensor: str) -> str:
    """Why ``tensor`` is not computable from constants, naming the node that stops it.

    Walks the ancestors (nearest first).  A placeholder, a variable, a stateful op, a batch
    statistic or a ``Switch`` is the reason; failing those, the first op with constant inputs
    that :data:`CONST_OPS` does not evaluate (or could not: shapes that do not fit).
    """
    from .graph import split_input, tensor_name

    seen: set[str] = set()
    queue = [tensor_name(tensor)]
    unevaluated = None
    while queue:
        t = queue.pop(0)
        node = g.get(t)
        if node is None or node.name in seen:
            continue
        seen.add(node.name)
        if node.op in ops.PLACEHOLDERS:
            return f"fed by placeholder '{node.name}'"
        if node.op in ops.VARIABLES:
            return f"read from unfrozen variable '{node.name}'; freeze the graph first"
        if node.op == "Mean" or "moments" in node.name.split("/"):
            return f"computed from the batch by '{node.name}' (training mode)"
        if node.op in ops.CONTROL_FLOW:
            return f"chosen at run time by {node.op} '{node.name}' (a training flag that is not constant)"
        if node.op == "Const":
            continue
        if _stateful(node.op):
            return f"produced by stateful op {node.op} '{node.name}'"
        ins = g.inputs(node)
        if unevaluated is None and all(g.const(i) is not None for i in ins):
            if node.op not in CONST_OPS:
                unevaluated = f"computed by {node.op} '{node.name}', which bnconvert does not evaluate"
            elif split_input(t)[1] != 0:
                unevaluated = f"output {split_input(t)[1]} of {node.op} '{node.name}' is not evaluated"
            else:
                unevaluated = f"{node.op} '{node.name}' could not be evaluated from its constant inputs"
        queue.extend(ins)
    return unevaluated or "not computable from constants"


def first_non_finite(g, tensor: str) -> str | None:
    """Name of the node nearest the constants whose value first holds NaN or inf, or None."""
    from .graph import tensor_name

    order, seen, stack = [], set(), [tensor_name(tensor)]
    while stack:  # ancestors of the constant chain
        node = g.get(stack.pop())
        if node is None or node.name in seen:
            continue
        seen.add(node.name)
        order.append(node)
        stack.extend(g.inputs(node))
    for node in reversed(order):  # constants first: the first non-finite value is the origin
        v = g.const(f"{node.name}:0", wide=True)
        if v is not None and np.asarray(v).dtype.kind == "f" and not np.all(np.isfinite(v)):
            return node.name
    return None
