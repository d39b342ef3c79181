#!/usr/bin/env python
"""Fixtures for computed BN parameters, quantization-aware graphs and pass-through shapes.

Hooked into tools/make_fixtures.py by :func:`register` (those fixtures go to ``fixtures/`` and
join every parametrized fixture test); ``python tools/fixtures_forms.py`` also writes the
fixtures that only a dedicated test checks into ``fixtures/forms/`` (SEPARATE below).

* ``quantized_weights_ssd``: what TF's ``quantize_weights`` graph transform writes (OpenCV's SSD
  face detector ships this way): every float ``Const`` of 2+ elements becomes
  ``name_quantized_const`` (quint8) + ``name_quantized_min``/``_max`` (float scalars) +
  ``Dequantize`` named ``name`` (mode MIN_FIRST) — conv weights and BN parameters alike.  The
  quantization follows quantize_weights.cc (range widened to include 0, FloatToQuantized).
* ``conv1d_bn`` / SEPARATE ``conv1d_bn_nchw`` (TFLite's converter fails on the original):
  ``tf.compat.v1.layers.conv1d`` (ExpandDims -> Conv2D ->
  Squeeze -> BiasAdd) then a BN over the 3-D output, channels last and first.
* SEPARATE ``qat_dense_conv`` (tf2onnx's FakeQuant differs from TF's by one step on the
  original already): Keras/tfmot-style quantization-aware graph: FakeQuantWithMinMaxVars on the
  weights before MatMul/Conv2D, BN after, FakeQuant on the activations after the ReLU; and a
  conv whose *output* is fake-quantized before its BN (kept as scale-shift: not exact).
* SEPARATE ``contrib_quantize_eval``: ``tf.contrib.quantize.create_eval_graph`` output (rebuilt
  after fold_batch_norms.py / quantize.py of TF 1.15): ``Conv2D_Fold(x, weights_quant/
  FakeQuantWithMinMaxVars(mul_fold = W * gamma * rsqrt(var + eps)))`` + ``add_fold`` bias
  ``beta - mean * multiplier``, ``act_quant`` after Relu6.  The BN is already folded; the
  Rsqrt chain is a constant expression bnconvert reports (never "0 found").
"""
from __future__ import annotations

import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
# checked by tests/test_fold_forms.py only: a converter (not the fold) cannot take them whole
SEPARATE = ("contrib_quantize_eval", "conv1d_bn_nchw", "qat_dense_conv")


def quantize_min_first(v: np.ndarray):
    """quantize_weights.cc: range includes 0, min != max, FloatTensorToQuantized<quint8>."""
    v = np.asarray(v, np.float32)
    mn, mx = min(float(v.min()), 0.0), max(float(v.max()), 0.0)
    if mn == mx:
        mx = mn + 1.0 if abs(mn) < 1e-6 else (2 * mn if mn > 0 else mn / 2)
    steps = 256
    rng = (mx - mn) * (steps / (steps - 1.0))
    scale = steps / rng
    q = np.round(v.astype(np.float64) * scale) - np.round(mn * scale)
    return np.clip(q, 0, 255).astype(np.uint8), np.float32(mn), np.float32(mx)


def dq_const(tf, name: str, value: np.ndarray):
    """The three Consts + Dequantize that quantize_weights writes for one float Const."""
    q, mn, mx = quantize_min_first(value)
    qc = tf.constant(q, dtype=tf.quint8, name=name + "_quantized_const")
    mnc = tf.constant(mn, name=name + "_quantized_min")
    mxc = tf.constant(mx, name=name + "_quantized_max")
    return tf.raw_ops.Dequantize(input=qc, min_range=mnc, max_range=mxc, mode="MIN_FIRST", name=name)


def register(mf) -> None:
    """Add this module's fixtures to make_fixtures' registry (``mf`` is that module)."""
    fixture = mf.fixture

    @fixture("quantized_weights_ssd", "TF quantize_weights output (OpenCV SSD face detector style): conv "
             "weights and FusedBatchNorm / decomposed BN parameters stored as Dequantize(quint8 Const, "
             "min, max) MIN_FIRST")
    def _quantized_weights_ssd(net):
        tf = mf.tf
        rng = np.random.default_rng(7)
        x = net.input([None, 8, 8, 3], [2, 8, 8, 3])
        w1 = dq_const(tf, "conv1_h/kernel", rng.standard_normal((3, 3, 3, 6)) / 4)
        y = tf.nn.conv2d(x, w1, 1, "SAME", name="conv1_h/Conv2D")
        p = {k: dq_const(tf, f"conv1_bn_h/{k}", v) for k, v in (
            ("gamma", rng.uniform(0.5, 1.5, 6)), ("beta", rng.standard_normal(6)),
            ("mean", rng.standard_normal(6) * 0.5), ("variance", rng.uniform(0.2, 3.0, 6)))}
        y = tf.compat.v1.nn.fused_batch_norm(y, p["gamma"], p["beta"], p["mean"], p["variance"],
                                             epsilon=1e-5, is_training=False, name="conv1_bn_h/FusedBatchNorm")[0]
        y = tf.nn.relu(y)
        w2 = dq_const(tf, "conv2/kernel", rng.standard_normal((3, 3, 6, 4)) / 6)
        b2 = dq_const(tf, "conv2/bias", rng.standard_normal(4) * 0.5)
        y = tf.nn.bias_add(tf.nn.conv2d(y, w2, 1, "SAME", name="conv2/Conv2D"), b2, name="conv2/BiasAdd")
        q = {k: dq_const(tf, f"bn2/{k}", v) for k, v in (
            ("mean", rng.standard_normal(4) * 0.5), ("variance", rng.uniform(0.2, 3.0, 4)),
            ("gamma", rng.uniform(0.5, 1.5, 4)), ("beta", rng.standard_normal(4)))}
        y = tf.nn.batch_normalization(y, q["mean"], q["variance"], q["beta"], q["gamma"], 1e-3, name="bn2/batchnorm")
        net.bn("conv1_bn_h", "FusedBatchNormV3 is_training=False, Dequantize parameters", "Conv2D (Dequantize weights)")
        net.bn("bn2", "decomposed, Dequantize parameters", "Conv2D+BiasAdd (Dequantize weights and bias)")
        net.output(tf.nn.relu(y))
        net.extra["note"] = ("Every float Const of 2+ elements is stored the way TF's quantize_weights transform "
                             "writes it (quint8 Const + min/max Consts + Dequantize MIN_FIRST).")

    @fixture("conv1d_bn", "tf.compat.v1.layers.conv1d (ExpandDims -> Conv2D -> Squeeze -> BiasAdd) -> "
             "tf.layers.batch_normalization(training=phase) on the 3-D output (decomposed) -> Relu")
    def _conv1d_bn(net):
        tf = mf.tf
        x = net.input([None, 12, 3], [2, 12, 3])
        phase = net.phase()
        y = tf.compat.v1.layers.conv1d(x, 5, 3, padding="same", name="conv1d")
        y = mf.layer_bn(y, phase, "batch_normalization")
        net.bn("batch_normalization", "decomposed (3-D input) in cond", "Conv2D+Squeeze+BiasAdd (Conv1D)")
        net.output(tf.nn.relu(y))

    fixture = _separate(mf)

    @fixture("conv1d_bn_nchw", "tf.compat.v1.layers.conv1d(channels_first): ExpandDims -> Conv2D(NCHW) -> "
             "Squeeze -> BiasAdd(NCHW) -> tf.layers.batch_normalization(axis=1, training=phase) -> Relu",
             onednn=True)
    def _conv1d_bn_nchw(net):
        tf = mf.tf
        x = net.input([None, 3, 12], [2, 3, 12])
        phase = net.phase()
        net.channel_axis = 1
        y = tf.compat.v1.layers.conv1d(x, 5, 3, padding="same", data_format="channels_first", name="conv1d")
        y = mf.layer_bn(y, phase, "batch_normalization", axis=1)
        net.bn("batch_normalization", "decomposed (3-D input, axis 1) in cond", "Conv2D(NCHW)+Squeeze+BiasAdd (Conv1D)")
        net.output(tf.nn.relu(y))
        net.extra["tf_env"] = {mf.ONEDNN_ENV: "1"}

    @fixture("qat_dense_conv", "quantization-aware (Keras/tfmot style): FakeQuantWithMinMaxVars on the weights of "
             "MatMul and Conv2D, BN after each (phase cond), FakeQuant on the activations after Relu; a second "
             "conv whose output is fake-quantized before its BN (kept as scale-shift)")
    def _qat_dense_conv(net):
        tf = mf.tf
        x = net.input([None, 8, 8, 3], [2, 8, 8, 3])
        phase = net.phase()

        def fq_weights(scope, w, lim):
            with tf.compat.v1.variable_scope(scope):
                mn = tf.compat.v1.get_variable("min", initializer=np.float32(-lim), use_resource=False)
                mx = tf.compat.v1.get_variable("max", initializer=np.float32(lim), use_resource=False)
                return tf.quantization.fake_quant_with_min_max_vars(w, mn, mx, num_bits=8, narrow_range=True)

        def fq_act(scope, t, lo=0.0, hi=6.0):
            with tf.compat.v1.variable_scope(scope):
                mn = tf.compat.v1.get_variable("min", initializer=np.float32(lo), use_resource=False)
                mx = tf.compat.v1.get_variable("max", initializer=np.float32(hi), use_resource=False)
                return tf.quantization.fake_quant_with_min_max_vars(t, mn, mx, num_bits=8)

        with tf.compat.v1.variable_scope("conv1"):
            w = mf._v("weights", [3, 3, 3, 4])
        y = tf.nn.conv2d(x, fq_weights("conv1/weights_quant", w, 1.5), 1, "SAME", name="conv1/Conv2D")
        y = mf.layer_bn(y, phase, "conv1/bn")
        y = fq_act("conv1/act_quant", tf.nn.relu(y))
        with tf.compat.v1.variable_scope("conv2"):
            w2 = mf._v("weights", [3, 3, 4, 4])
        y = tf.nn.conv2d(y, fq_weights("conv2/weights_quant", w2, 1.5), 1, "SAME", name="conv2/Conv2D")
        y = fq_act("conv2/out_quant", y, -8.0, 8.0)  # quantized before the BN: folding would not be exact
        y = mf.layer_bn(y, phase, "conv2/bn")
        y = fq_act("conv2/act_quant", tf.nn.relu(y))
        y = tf.reshape(y, [-1, 8 * 8 * 4])
        with tf.compat.v1.variable_scope("fc"):
            w3 = mf._v("weights", [8 * 8 * 4, 10])
        y = tf.matmul(y, fq_weights("fc/weights_quant", w3, 0.3), name="fc/MatMul")
        y = mf.layer_bn(y, phase, "fc/bn")
        net.bn("conv1/bn", mf.FUSED_COND + ", FakeQuant weights", "Conv2D (FakeQuant weights)")
        net.bn("conv2/bn", mf.FUSED_COND + ", FakeQuant between conv and BN", "Conv2D", expect="scale_shift")
        net.bn("fc/bn", "decomposed (rank 2) in cond, FakeQuant weights", "MatMul (FakeQuant weights)")
        net.output(y)  # no FakeQuant on the output: it would hide errors below one step

    if os.environ.get("BNCONVERT_FORMS_SEPARATE") == "1":
        _register_separate(mf)


def _separate(mf):
    """Register only when writing fixtures/forms/ (tools/fixtures_forms.py)."""
    if os.environ.get("BNCONVERT_FORMS_SEPARATE") == "1":
        return mf.fixture
    return lambda *a, **k: (lambda fn: fn)


def _register_separate(mf) -> None:
    @mf.fixture("contrib_quantize_eval", "tf.contrib.quantize.create_eval_graph output: BN already folded by "
                "fold_batch_norms (Conv2D_Fold with weights FakeQuant(W * gamma * rsqrt(var + eps)), add_fold "
                "bias beta - mean * multiplier), act_quant after Relu6")
    def _contrib_quantize_eval(net):
        tf = mf.tf
        x = net.input([None, 8, 8, 3], [2, 8, 8, 3])
        with tf.compat.v1.variable_scope("Conv"):
            w = mf._v("weights", [3, 3, 3, 4])
            with tf.compat.v1.variable_scope("BatchNorm"):
                gamma, beta, mean, var = (mf._v(n, [4]) for n in ("gamma", "beta", "moving_mean", "moving_variance"))
        with tf.compat.v1.name_scope("Conv/BatchNorm_Fold/"):
            multiplier = gamma * tf.math.rsqrt(var + 1e-3)
            bias = tf.subtract(beta, mean * multiplier, name="bias")
        with tf.compat.v1.name_scope("Conv/"):
            scaled = tf.multiply(w, multiplier, name="mul_fold")
        with tf.compat.v1.variable_scope("Conv/weights_quant"):
            mn = tf.compat.v1.get_variable("min", initializer=np.float32(-3.0), use_resource=False)
            mx = tf.compat.v1.get_variable("max", initializer=np.float32(3.0), use_resource=False)
            wq = tf.quantization.fake_quant_with_min_max_vars(scaled, mn, mx, num_bits=8, narrow_range=True)
        y = tf.nn.conv2d(x, wq, 1, "SAME", name="Conv/Conv2D_Fold")
        y = tf.add(y, bias, name="Conv/add_fold")
        y = tf.nn.relu6(y, name="Conv/Relu6")
        with tf.compat.v1.variable_scope("Conv/act_quant"):
            amn = tf.compat.v1.get_variable("min", initializer=np.float32(0.0), use_resource=False)
            amx = tf.compat.v1.get_variable("max", initializer=np.float32(6.0), use_resource=False)
            y = tf.quantization.fake_quant_with_min_max_vars(y, amn, amx, num_bits=8)
        net.bn("Conv/BatchNorm_Fold", "prefolded by tf.contrib.quantize", "Conv2D_Fold")
        net.output(y)


def main(argv=None) -> int:
    """Write the SEPARATE fixtures into fixtures/forms/ (the others: tools/make_fixtures.py)."""
    os.environ["BNCONVERT_FORMS_SEPARATE"] = "1"
    sys.path.insert(0, HERE)
    import make_fixtures as mf

    out = os.path.join(os.path.dirname(HERE), "fixtures", "forms")
    rc = mf.main(["--out", out, "--only", *SEPARATE] + list(argv or []))
    with open(os.path.join(out, "README.md"), "w") as f:
        f.write("# Fixtures checked by tests/test_fold_forms.py only\n\nWritten by `python tools/fixtures_forms.py` "
                "(see its docstring): " + ", ".join(f"`{n}`" for n in SEPARATE) + ".\n")
    return rc


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
