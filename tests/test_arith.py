"""The fold arithmetic per weight layout, against a float64 reference of BN(layer(x)).

Each layer is computed in numpy from its definition (no TensorFlow), in float64; the folded
weights must reproduce BN(layer(x) + b) for random, non-trivial statistics.
"""
import numpy as np
import pytest

from bnconvert import arith

rng = np.random.default_rng(1234)


def _stats(c):
    return dict(mean=rng.normal(size=c) * 2, variance=rng.uniform(0.2, 3.0, size=c), epsilon=1e-3,
                gamma=rng.uniform(0.5, 1.5, size=c), beta=rng.normal(size=c))


def _bn(y, st, axis=-1):
    shape = [1] * y.ndim
    shape[axis] = -1
    r = lambda v: np.asarray(v).reshape(shape)  # noqa: E731
    return (y - r(st["mean"])) / np.sqrt(r(st["variance"]) + st["epsilon"]) * r(st["gamma"]) + r(st["beta"])


def conv2d_hwio(x, w):  # NHWC, VALID, stride 1
    n, h, wd, c = x.shape
    kh, kw, _, o = w.shape
    out = np.zeros((n, h - kh + 1, wd - kw + 1, o))
    for i in range(kh):
        for j in range(kw):
            out += np.einsum("nhwc,co->nhwo", x[:, i:i + h - kh + 1, j:j + wd - kw + 1, :], w[i, j])
    return out


def depthwise_hwim(x, w):
    n, h, wd, c = x.shape
    kh, kw, _, m = w.shape
    out = np.zeros((n, h - kh + 1, wd - kw + 1, c, m))
    for i in range(kh):
        for j in range(kw):
            out += np.einsum("nhwc,cm->nhwcm", x[:, i:i + h - kh + 1, j:j + wd - kw + 1, :], w[i, j])
    return out.reshape(n, h - kh + 1, wd - kw + 1, c * m)


def conv2d_transpose_hwoi(x, w, stride=2):
    n, h, wd, c = x.shape
    kh, kw, o, _ = w.shape
    out = np.zeros((n, (h - 1) * stride + kh, (wd - 1) * stride + kw, o))
    for a in range(h):
        for b in range(wd):
            out[:, a * stride:a * stride + kh, b * stride:b * stride + kw, :] += np.einsum("nc,ijoc->nijo", x[:, a, b], w)
    return out


def conv3d_dhwio(x, w):
    n, d, h, wd, c = x.shape
    kd, kh, kw, _, o = w.shape
    out = np.zeros((n, d - kd + 1, h - kh + 1, wd - kw + 1, o))
    for q in range(kd):
        for i in range(kh):
            for j in range(kw):
                out += np.einsum("ndhwc,co->ndhwo", x[:, q:q + d - kd + 1, i:i + h - kh + 1, j:j + wd - kw + 1], w[q, i, j])
    return out


CASES = {
    "conv2d_hwio": (lambda: rng.normal(size=(2, 6, 6, 3)), lambda: rng.normal(size=(3, 3, 3, 5)), conv2d_hwio,
                    arith.fold_conv2d_hwio, 5),
    "depthwise_hwim": (lambda: rng.normal(size=(2, 6, 6, 3)), lambda: rng.normal(size=(3, 3, 3, 2)), depthwise_hwim,
                       arith.fold_depthwise_hwim, 6),
    "dense_io": (lambda: rng.normal(size=(4, 7)), lambda: rng.normal(size=(7, 5)), lambda x, w: x @ w,
                 arith.fold_dense, 5),
    "dense_transpose_b": (lambda: rng.normal(size=(4, 7)), lambda: rng.normal(size=(5, 7)), lambda x, w: x @ w.T,
                          lambda w, s: arith.fold_dense(w, s, transpose_b=True), 5),
    "conv2d_transpose_hwoi": (lambda: rng.normal(size=(2, 3, 3, 4)), lambda: rng.normal(size=(3, 3, 5, 4)),
                              conv2d_transpose_hwoi, arith.fold_conv2d_transpose_hwoi, 5),
    "conv3d_dhwio": (lambda: rng.normal(size=(1, 4, 4, 4, 2)), lambda: rng.normal(size=(2, 2, 2, 2, 3)), conv3d_dhwio,
                     arith.fold_conv3d_dhwio, 3),
}


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("with_bias", [False, True])
def test_fold_matches_float64_reference(case, with_bias):
    make_x, make_w, layer, fold, c = CASES[case]
    x, w = make_x(), make_w()
    b = rng.normal(size=c) if with_bias else None
    st = _stats(c)
    y = layer(x, w) + (b if b is not None else 0)
    expected = _bn(y, st)
    s, t = arith.scale_shift(st["mean"], st["variance"], st["epsilon"], st["gamma"], st["beta"])
    got = layer(x, fold(w, s)) + arith.fold_bias(b, s, t, np.float64)
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)


def test_wrong_axis_would_show():
    """The reference is sensitive: scaling the input axis instead of the output axis fails."""
    x, w = rng.normal(size=(2, 6, 6, 5)), rng.normal(size=(3, 3, 5, 5))
    st = _stats(5)
    s, t = arith.scale_shift(st["mean"], st["variance"], st["epsilon"], st["gamma"], st["beta"])
    wrong = arith.fold_output_axis(w, s, 2)
    assert not np.allclose(conv2d_hwio(x, wrong) + t, _bn(conv2d_hwio(x, w), st))


def test_dtype_is_kept_and_math_is_float64():
    w = rng.normal(size=(3, 4)).astype(np.float16)
    s = np.full(4, 1.0 / 3.0)
    out = arith.fold_dense(w, s)
    assert out.dtype == np.float16
    np.testing.assert_array_equal(out, (w.astype(np.float64) * s).astype(np.float16))


def test_scale_shift_without_gamma_beta():
    s, t = arith.scale_shift([1.0, -2.0], [4.0, 0.25], 0.0)
    np.testing.assert_allclose(s, [0.5, 2.0])
    np.testing.assert_allclose(t, [-0.5, 4.0])


@pytest.mark.parametrize("kw,needle", [
    (dict(mean=[np.nan], variance=[1.0], epsilon=1e-3), "mean holds NaN"),
    (dict(mean=[0.0], variance=[np.inf], epsilon=1e-3), "variance holds NaN or inf"),
    (dict(mean=[0.0], variance=[-0.5], epsilon=1e-3), "negative"),
    (dict(mean=[0.0], variance=[0.0], epsilon=0.0), "variance + epsilon is 0"),
    (dict(mean=[0.0], variance=[1.0], epsilon=1e-3, gamma=[np.nan]), "gamma"),
])
def test_statistics_problems(kw, needle):
    assert needle in arith.statistics_problem(**kw)


def test_good_statistics_pass():
    assert arith.statistics_problem([0.0, 1.0], [1.0, 2.0], 1e-3, [1.0, 1.0], [0.0, 0.0]) is None
