"""bnconvert's constant evaluator (numpy, never runs the graph) against TensorFlow's own kernels.

Every case builds a small graph of constants with ``tf.compat.v1``, evaluates one tensor with
:meth:`bnconvert.graph.Graph.const` and with a TensorFlow session, and requires the same values
(exactly for integer and shape results; fake-quantized values on the same grid points within one
float32 ulp of the range — TensorFlow's final multiply-add rounds differently now and then; dequantized ones
within a few float32 ulps of the range).  The attributes cover the ones folding meets in real TF1 files:
negative axes, ``squeeze_dims``, ``shrink_axis_mask``, every ``Dequantize`` mode with and without
``narrow_range`` and ``axis``, FakeQuant with 4–8 bits and narrow ranges.
"""
import numpy as np
import pytest

from bnconvert.graph import Graph
from bnconvert.tfproto import tf as _tf

RNG = np.random.default_rng(7)


def _compare(build, exact=True, ulps=None):
    tf = _tf()
    g = tf.Graph()
    with g.as_default():
        out = build(tf)
    gd = g.as_graph_def()
    with tf.compat.v1.Session(graph=g) as sess:
        want = sess.run(out)
    got = Graph(gd).const(out.name)
    assert got is not None, out.name
    got = np.asarray(got)
    assert got.shape == np.shape(want), (got.shape, np.shape(want))
    if ulps is not None:  # the same grid points; the final multiply-add may round differently
        w = np.asarray(want, np.float32)
        # an ulp of the range: q * scale + nudged_min cancels, so the error is the range's, not the value's
        step = np.spacing(np.float32(np.abs(w).max()))
        assert np.all(np.abs(got.astype(np.float32) - w) <= ulps * step), (np.abs(got - w).max(), step)
    elif exact:
        np.testing.assert_array_equal(got.astype(np.asarray(want).dtype), want)
    else:
        # TensorFlow's kernel computes in float32 in its own order: within a few ulps of the range
        np.testing.assert_allclose(got, want, rtol=0, atol=4 * np.finfo(np.float32).eps * 4)


def _x(*shape):
    return RNG.standard_normal(shape).astype(np.float32)


@pytest.mark.parametrize("dims", [[1], [-1], [1, 3], []])
def test_squeeze(dims):
    _compare(lambda tf: tf.squeeze(tf.constant(_x(2, 1, 3, 1)[:, :, :, :]), axis=dims or None, name="out"))


@pytest.mark.parametrize("axis", [0, 1, -1, -2])
def test_concat_v2(axis):
    _compare(lambda tf: tf.concat([tf.constant(_x(2, 3)), tf.constant(_x(2, 3))], axis=axis, name="out"))


@pytest.mark.parametrize("axis", [0, 1, -1])
def test_concat_v1(axis):
    def build(tf):
        return tf.raw_ops.Concat(concat_dim=tf.constant(axis), values=[tf.constant(_x(2, 3)), tf.constant(_x(2, 3))],
                                 name="out")
    _compare(build)


@pytest.mark.parametrize("begin,end,strides,shrink", [([0, 1], [2, 3], [1, 1], 0), ([1, 0], [2, 3], [1, 2], 1),
                                                      ([0, 2], [2, 3], [1, 1], 2), ([1, 1], [2, 2], [1, 1], 3)])
def test_strided_slice(begin, end, strides, shrink):
    def build(tf):
        return tf.raw_ops.StridedSlice(input=tf.constant(_x(2, 3)), begin=tf.constant(begin), end=tf.constant(end),
                                       strides=tf.constant(strides), shrink_axis_mask=shrink, name="out")
    _compare(build)


# narrow_range applies to SCALED only; TensorFlow's MIN_FIRST kernel takes quint8
@pytest.mark.parametrize("mode,qtype,narrow", [
    ("MIN_COMBINED", "quint8", False), ("MIN_COMBINED", "qint8", False), ("MIN_FIRST", "quint8", False),
    ("SCALED", "quint8", False), ("SCALED", "qint8", False), ("SCALED", "qint8", True)])
def test_dequantize(mode, qtype, narrow):

    def build(tf):
        dt = getattr(tf, qtype)
        lo, hi = (0, 255) if qtype == "quint8" else (-128, 127)
        q = tf.constant(RNG.integers(lo, hi + 1, (4, 5)).astype(np.uint8 if qtype == "quint8" else np.int8), dtype=dt)
        mn, mx = (-1.7, 2.3) if mode != "SCALED" or qtype == "qint8" else (0.0, 2.3)
        return tf.raw_ops.Dequantize(input=q, min_range=tf.constant(mn), max_range=tf.constant(mx), mode=mode,
                                     narrow_range=narrow, name="out")
    _compare(build, exact=False)


def test_dequantize_per_axis():
    def build(tf):
        q = tf.constant(RNG.integers(-128, 128, (3, 4)).astype(np.int8), dtype=tf.qint8)
        return tf.raw_ops.Dequantize(input=q, min_range=tf.constant([-1.0, -2.0, -0.5, -3.0]),
                                     max_range=tf.constant([1.0, 2.5, 0.5, 3.0]), mode="SCALED", axis=1, name="out")
    _compare(build, exact=False)


@pytest.mark.parametrize("bits", [4, 7, 8])
@pytest.mark.parametrize("narrow", [False, True])
def test_fake_quant_args_and_vars(bits, narrow):
    x = _x(6, 7) * 2

    def args(tf):
        return tf.quantization.fake_quant_with_min_max_args(tf.constant(x), min=-1.3, max=2.1, num_bits=bits,
                                                            narrow_range=narrow, name="out")

    def vars_(tf):
        return tf.quantization.fake_quant_with_min_max_vars(tf.constant(x), tf.constant(-0.7), tf.constant(1.9),
                                                            num_bits=bits, narrow_range=narrow, name="out")
    _compare(args, ulps=1)
    _compare(vars_, ulps=1)


@pytest.mark.parametrize("narrow", [False, True])
def test_fake_quant_per_channel(narrow):
    x = _x(5, 3) * 2

    def build(tf):
        return tf.quantization.fake_quant_with_min_max_vars_per_channel(
            tf.constant(x), tf.constant([-1.0, -0.2, -2.0]), tf.constant([1.0, 0.3, 2.5]), num_bits=8,
            narrow_range=narrow, name="out")
    _compare(build, ulps=1)


def test_fake_quant_range_above_zero_nudges_the_zero_point():
    """A range that excludes 0 (min > 0): the zero point is clamped to the grid's low end."""
    _compare(lambda tf: tf.quantization.fake_quant_with_min_max_vars(
        tf.constant(_x(4, 4) + 1.5), tf.constant(0.4), tf.constant(2.9), num_bits=8, name="out"), ulps=1)


@pytest.mark.parametrize("dtype", ["int32", "float32"])
def test_div_truncates_integers(dtype):
    """TensorFlow's ``Div`` of integers rounds toward zero (C++ division), not down."""
    a = np.array([[7, -7, 9], [5, -3, 2]], dtype=dtype)
    b = np.array([[2, 2, -4], [3, 2, 7]], dtype=dtype)
    _compare(lambda tf: tf.raw_ops.Div(x=tf.constant(a), y=tf.constant(b), name="out"))
