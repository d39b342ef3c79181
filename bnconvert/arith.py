"""The fold arithmetic: pure numpy, float64 inside, cast back to the weight dtype.

A batch norm in inference mode is ``y = x * s + t`` per channel with
``s = gamma / sqrt(var + eps)`` (gamma = 1 when absent) and ``t = beta - mean * s``
(beta = 0 when absent).  Folding into a linear producer ``x = W * in + b`` scales W along its
output-channel axis and gives the bias ``b' = b * s + t`` (b = 0 when there is none).
One function per weight layout.
"""
from __future__ import annotations

import numpy as np


def scale_shift(mean, variance, epsilon, gamma=None, beta=None) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel (s, t) in float64.  Statistics must already be validated."""
    mean = np.asarray(mean, dtype=np.float64)
    var = np.asarray(variance, dtype=np.float64)
    s = 1.0 / np.sqrt(var + float(epsilon))
    if gamma is not None:
        s = s * np.asarray(gamma, dtype=np.float64)
    t = -mean * s
    if beta is not None:
        t = t + np.asarray(beta, dtype=np.float64)
    return s, t


def statistics_problem(mean, variance, epsilon, gamma=None, beta=None) -> str | None:
    """Why these statistics cannot be folded, or None when they are fine."""
    named = {"mean": mean, "variance": variance, "gamma": gamma, "beta": beta}
    for key, v in named.items():
        if v is not None and not np.all(np.isfinite(np.asarray(v, dtype=np.float64))):
            return f"{key} holds NaN or inf"
    if not np.isfinite(epsilon):
        return "epsilon is NaN or inf"
    var = np.asarray(variance, dtype=np.float64)
    if np.any(var < 0):
        i = int(np.argmin(var))
        return f"variance is negative (channel {i}: {var.reshape(-1)[i]:.6g})"
    if np.any(var + float(epsilon) <= 0):
        return "variance + epsilon is 0"
    return None


def _cast(w64: np.ndarray, like: np.ndarray) -> np.ndarray:
    return w64.astype(like.dtype)


def _wide(w: np.ndarray) -> np.ndarray:
    return np.asarray(w).astype(np.float64)


def fold_output_axis(w: np.ndarray, s: np.ndarray, axis: int) -> np.ndarray:
    """Scale ``w`` by ``s`` along ``axis`` (the output-channel axis)."""
    shape = [1] * w.ndim
    shape[axis] = -1
    return _cast(_wide(w) * np.asarray(s, np.float64).reshape(shape), w)


def fold_conv2d_hwio(w, s):
    """Conv2D filter [H, W, in, out]."""
    return fold_output_axis(w, s, 3)


def fold_conv3d_dhwio(w, s):
    """Conv3D filter [D, H, W, in, out]."""
    return fold_output_axis(w, s, 4)


def fold_conv2d_transpose_hwoi(w, s):
    """Conv2DBackpropInput filter [H, W, out, in] (out = the transposed conv's output channels)."""
    return fold_output_axis(w, s, 2)


def fold_depthwise_hwim(w, s):
    """DepthwiseConv2dNative filter [H, W, in, multiplier]; output channel c*M + m."""
    h, k, cin, m = w.shape
    return _cast(_wide(w) * np.asarray(s, np.float64).reshape(1, 1, cin, m), w)


def fold_dense(w, s, transpose_b: bool = False):
    """MatMul weight [in, out], or [out, in] with transpose_b."""
    return fold_output_axis(w, s, 0 if transpose_b else 1)


def fold_bias(b, s, t, dtype) -> np.ndarray:
    """New bias ``b * s + t`` (b may be None), in ``dtype``."""
    s = np.asarray(s, np.float64)
    t = np.asarray(t, np.float64)
    out = t if b is None else np.asarray(b, np.float64).reshape(-1) * s + t
    return out.astype(dtype)
