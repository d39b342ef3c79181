"""Tests written to kill mutants of the constant evaluator that survived run 7 (tools/mutate.py,
docs/MUTATION.md): attributes left at their default, which GraphDefs written with
``strip_default_attrs`` (``export_meta_graph(..., strip_default_attrs=True)``, SavedModels) leave
out, so the evaluator's defaults must be TensorFlow's; a masked ``StridedSlice`` (not evaluated,
never evaluated wrongly); ``SCALED`` dequantization of an unsigned type; and the reason a value
is not a constant.  Each value is compared with a TensorFlow session running the same graph.

(Through :func:`bnconvert.load` the defaults are not reached today: its TensorFlow import check
writes them back into the GraphDef, a side effect of ``import_graph_def``.  :class:`Graph` is
used on GraphDefs that never went through the loader, and must not depend on that.)
"""
from __future__ import annotations

import numpy as np
import pytest

from bnconvert.graph import Graph

tf = pytest.importorskip("tensorflow")
RNG = np.random.default_rng(60)


def _strip_defaults(gd) -> int:
    """Remove every attribute whose value is its op's default; returns how many."""
    from tensorflow.python.framework import op_def_registry

    removed = 0
    for n in gd.node:
        for a in op_def_registry.get(n.op).attr:
            if a.HasField("default_value") and a.name in n.attr and n.attr[a.name] == a.default_value:
                del n.attr[a.name]
                removed += 1
    return removed


def _both(build, strip=True):
    """(bnconvert's value, TensorFlow's value) of ``out:0`` in the graph ``build`` makes."""
    g = tf.Graph()
    with g.as_default():
        build()
    gd = g.as_graph_def()
    if strip:
        assert _strip_defaults(gd) > 0
    got = Graph(gd).const("out:0")  # first: TensorFlow's import writes the defaults back into gd
    g2 = tf.Graph()
    with g2.as_default():
        tf.compat.v1.import_graph_def(gd, name="")
        with tf.compat.v1.Session(graph=g2) as sess:
            want = sess.run("out:0")
    return got, want


def _same(got, want, ulps=None):
    assert got is not None
    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape and got.dtype == want.dtype, (got.shape, want.shape, got.dtype, want.dtype)
    if ulps is None:
        np.testing.assert_array_equal(got, want)
    else:  # FakeQuant: the same grid points; TF's final multiply-add may round by an ulp of the range
        step = np.spacing(np.float32(np.abs(want).max()))
        assert np.all(np.abs(got - want) <= ulps * step), np.abs(got - want).max()


def _x(*shape, scale=4.0):
    return (RNG.standard_normal(shape) * scale).astype(np.float32)


# ---------------------------------------------------------------------- default attributes
def test_strided_slice_without_masks_attributes():
    def build():
        tf.raw_ops.StridedSlice(input=tf.constant(_x(3, 4)), begin=tf.constant([0, 1]), end=tf.constant([2, 3]),
                                strides=tf.constant([1, 1]), name="out")
    _same(*_both(build))


def test_fake_quant_args_all_defaults():
    """min -6, max 6, 8 bits, not narrow: values beyond 6 clamp, the grid step is 12/255."""
    x = np.concatenate([_x(40), np.float32([-7.5, -6.0, 0.0, 5.99, 6.0, 9.0])])
    _same(*_both(lambda: tf.raw_ops.FakeQuantWithMinMaxArgs(inputs=tf.constant(x), name="out")), ulps=1)


def test_fake_quant_vars_default_bits_and_range():
    x = _x(50)
    _same(*_both(lambda: tf.raw_ops.FakeQuantWithMinMaxVars(inputs=tf.constant(x), min=tf.constant(-2.5),
                                                            max=tf.constant(3.0), name="out")), ulps=1)


def test_fake_quant_per_channel_default_bits_and_range():
    x = _x(6, 3)
    _same(*_both(lambda: tf.raw_ops.FakeQuantWithMinMaxVarsPerChannel(
        inputs=tf.constant(x), min=tf.constant([-1.0, -0.3, -5.0]), max=tf.constant([1.0, 0.2, 4.0]), name="out")),
        ulps=1)


def test_dequantize_default_mode():
    q = RNG.integers(0, 256, (3, 5)).astype(np.uint8)
    _same(*_both(lambda: tf.raw_ops.Dequantize(input=tf.constant(q, dtype=tf.quint8), min_range=tf.constant(-1.5),
                                               max_range=tf.constant(2.5), name="out")), ulps=4)


@pytest.mark.parametrize("op", ["squeeze", "sum", "pack", "shape", "size", "expand_dims"])
def test_shape_ops_default_attributes(op):
    x = _x(2, 1, 3)

    def build():
        c = tf.constant(x)
        if op == "squeeze":
            tf.raw_ops.Squeeze(input=c, name="out")
        elif op == "sum":
            tf.raw_ops.Sum(input=c, axis=tf.constant([0, 2]), name="out")
        elif op == "pack":
            tf.raw_ops.Pack(values=[c, c * 2.0], name="out")
        elif op == "shape":
            tf.raw_ops.Shape(input=c, name="out")
        elif op == "size":
            tf.raw_ops.Size(input=c, name="out")
        else:
            tf.raw_ops.ExpandDims(input=c, axis=tf.constant([-2]), name="out")
    got, want = _both(build, strip=op not in ("expand_dims",))
    if op == "sum":
        np.testing.assert_allclose(got, want, rtol=1e-6)
        assert np.shape(got) == np.shape(want)
    else:
        _same(got, want)


# ---------------------------------------------------------------------- masks
@pytest.mark.parametrize("mask", ["begin_mask", "end_mask", "new_axis_mask", "ellipsis_mask"])
def test_masked_strided_slice_is_never_evaluated_wrongly(mask):
    """bnconvert evaluates only the plain form; a masked slice is not a constant to it (or, if
    it ever is, it must hold TensorFlow's value)."""
    def build():
        tf.raw_ops.StridedSlice(input=tf.constant(_x(3, 4)), begin=tf.constant([1, 1]), end=tf.constant([2, 3]),
                                strides=tf.constant([1, 1]), name="out", **{mask: 1})
    got, want = _both(build, strip=False)
    if got is not None:
        _same(got, want)


def test_dequantize_scaled_unsigned_narrow_ignores_min_range():
    """SCALED of an unsigned type scales by ``max_range / 255`` whatever ``min_range`` and
    ``narrow_range`` say (only signed types narrow their lowest value)."""
    q = RNG.integers(0, 256, (4, 5)).astype(np.uint8)
    _same(*_both(lambda: tf.raw_ops.Dequantize(input=tf.constant(q, dtype=tf.quint8), min_range=tf.constant(0.5),
                                               max_range=tf.constant(2.3), mode="SCALED", narrow_range=True,
                                               name="out"), strip=False), ulps=4)


# ---------------------------------------------------------------------- why not a constant
def test_why_not_constant_names_the_op_that_could_not_be_evaluated():
    from bnconvert.consteval import why_not_constant

    g = tf.Graph()
    with g.as_default():
        s = tf.raw_ops.StridedSlice(input=tf.constant(_x(3, 4)), begin=tf.constant([1, 1]), end=tf.constant([2, 3]),
                                    strides=tf.constant([1, 1]), begin_mask=1, name="sliced")
        tf.identity(s * 2.0, name="out")
    graph = Graph(g.as_graph_def())
    assert graph.const("out:0") is None
    assert why_not_constant(graph, "out:0") == "StridedSlice 'sliced' could not be evaluated from its constant inputs"
