#!/usr/bin/env python
"""Generate the TF1 batch-norm fixture graphs that bnconvert's tests run on.

    python tools/make_fixtures.py [--out fixtures] [--only NAME ...] [--list]

Every fixture NAME is written as
  NAME.pb (or NAME.pbtxt, NAME/ for checkpoint and SavedModel fixtures)
      the graph as a TF 1.x user would have it: frozen with
      tf.compat.v1.graph_util.convert_variables_to_constants, training flags still
      in the graph as bool placeholders;
  NAME.json
      name, description, inputs, outputs, training_flags ({tensor: value for
      inference}), bn_count, expect {folded, scale_shift}, data, input_shapes,
      plus: format, graph (path relative to the fixtures folder), bns (one entry
      per BN layer: scope, form, producer, expect), forms, producers,
      op_histogram (BN-related op types in the written graph), expected_from
      ("file": outputs computed by importing the written file into a fresh
      graph; "session": computed in the building session because the file
      cannot be imported), and case-specific notes (tf_env, import_error, ...);
  NAME.npz
      input_0.. (seeded inputs, in the order of "inputs") and output_0.. (the
      ORIGINAL graph's outputs with every training flag fed its inference value).

How the fixtures map to the TF 1.15 source paths (see /work/shared/TF1_GRAPHS.md):
  path A  contrib layers._fused_batch_norm: rank 2 reshaped to [-1,1,1,C], smart_cond
          {nn.fused_batch_norm training / inference} -> FusedBatchNormV3 x2 in a cond,
          Reshape back with Shape(original input); updates in a further cond
          (_delay_updates) or, with updates_collections=None, in a cond whose true
          branch has control deps on the AssignMovingAvg ops (_force_updates).
          Rebuilt here by contrib_batch_norm(); fused=None, rank 2 or non-default
          updates_collections.
            contrib_fused_dense, mlp_contrib_fused, facenet_updates_none (conv BN)
  path B  core layer tf.compat.v1.layers.batch_normalization (tf_keras legacy layer,
          TF_USE_LEGACY_KERAS=1): 4-D -> FusedBatchNormV3 in cond (+Merge_1/_2);
          2-D or fused=False -> moments + cond(mean) + cond_1(variance) +
          nn.batch_normalization.
            fused_v3_conv, conv_nobias_fused, depthwise_fused, conv_transpose_fused,
            conv3d_fused (5-D fused: TF 2.x only), nchw_fused_conv, float16_conv,
            shared_weights, shared_output, bn_after_relu, resnet_like,
            decomp_gamma_beta_conv (fused=False), decomp_beta_only_conv
            (contrib defaults center=True scale=False, fused=False),
            dense_bias_decomp, dense_nobias_decomp, dense_transpose_b, conv3d_decomp
            (fused=False, as TF 1.15 did for 5-D), mlp_moments, pbtxt_dense,
            ckpt_dense, savedmodel_conv
  path C  contrib legacy decomposed (fused=False with non-default updates_collections):
          moments, cond{(mean,var) | (moving_mean,moving_variance)} -> one cond with
          Merge/Merge_1; NCHW: moments keep_dims + Reshape [-1], params Reshape
          [1,C,1,1]; ops under BatchNorm/batchnorm_1/.
            decomp_contrib_scope, decomp_gamma_only_conv, decomp_add_v1_conv,
            decomp_plain_conv (is_training=False python bool: no cond),
            nchw_decomp_conv, facenet_updates_none (dense BN, updates_collections=None)
  old ops (TF <= 1.4 graphs; TF 2.21 no longer emits them): raw ops / NodeDef edits
            fused_v1_conv (FusedBatchNorm), fused_v2_conv (FusedBatchNormV2),
            bnwgn_conv, bnwgn_noscale_conv (BatchNormWithGlobalNormalization,
            GraphDef producer 8: TF 2.21 runs the op only in graphs older than v9)

Environment notes found while building these with TF 2.21 (tensorflow-cpu, AVX2 host):
  * NCHW Conv2D / DepthwiseConv2dNative / Conv2DBackpropInput do not run on the
    default CPU kernels ("The Conv2D op currently only supports the NHWC tensor
    format on the CPU"); RewriterConfig.cpu_layout_conversion=NCHW_TO_NHWC does not
    help.  They DO run with oneDNN enabled (TF_ENABLE_ONEDNN_OPTS=1, which TF leaves
    off on CPUs without AVX-512).  FusedBatchNormV3 NCHW runs on plain CPU.  The NCHW
    fixtures are therefore generated in a child process with TF_ENABLE_ONEDNN_OPTS=1
    and their json carries "tf_env": {"TF_ENABLE_ONEDNN_OPTS": "1"}.
  * FusedBatchNorm (V1) and FusedBatchNormV2 still run.
  * BatchNormWithGlobalNormalization refuses to be created or imported in a graph
    with producer >= 9; the fixtures set versions.producer = 8 and then TF runs it.
  * facenet_updates_none: convert_variables_to_constants leaves RefSwitch/AssignSub on
    the frozen constants, so tf.import_graph_def fails (recorded in its json).
"""
from __future__ import annotations

import argparse
import collections
import dataclasses
import io
import json
import os
import subprocess
import sys
import zipfile
import zlib
from typing import Callable

import numpy as np

ONEDNN_ENV = "TF_ENABLE_ONEDNN_OPTS"
BN_OPS = ("FusedBatchNorm", "FusedBatchNormV2", "FusedBatchNormV3",
          "BatchNormWithGlobalNormalization", "Rsqrt", "Switch", "RefSwitch", "Merge",
          "AssignSub")
EPS = 1e-3
MEAN_SCALE = 0.5  # moving_mean ~ N(0,1) * MEAN_SCALE
MAX_DRAWS = 100

tf = None  # imported lazily by _import_tf()


def _import_tf():
    global tf
    if tf is None:
        os.environ["TF_USE_LEGACY_KERAS"] = "1"
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        import tensorflow as _tf
        _tf.compat.v1.disable_v2_behavior()
        _tf.get_logger().setLevel("ERROR")
        tf = _tf
    return tf


# --------------------------------------------------------------------------- registry

@dataclasses.dataclass(frozen=True)
class Fixture:
    name: str
    description: str
    build: Callable
    format: str = "pb"          # pb | pbtxt | checkpoint | saved_model
    onednn: bool = False        # needs TF_ENABLE_ONEDNN_OPTS=1 to run on CPU


FIXTURES: dict[str, Fixture] = {}


def fixture(name, description, **kw):
    def deco(fn):
        FIXTURES[name] = Fixture(name, description, fn, **kw)
        return fn
    return deco


class Net:
    """What a builder declares about the graph it built."""

    def __init__(self):
        self.inputs = []        # (tensor, data_shape, kind)
        self.outputs = []
        self.flags = {}         # tensor -> inference value
        self.bns = []
        self.keep = []          # extra node names to keep when freezing
        self.transform = None   # GraphDef -> GraphDef, applied after freezing
        self.extra = {}
        self.channel_axis = -1  # of the outputs, for the liveness check

    def input(self, shape, data_shape, name="x", dtype=None, kind="normal"):
        x = tf.compat.v1.placeholder(dtype or tf.float32, shape, name=name)
        self.inputs.append((x, list(data_shape), kind))
        return x

    def phase(self, name="phase", with_default=False):
        if with_default:
            p = tf.compat.v1.placeholder_with_default(False, [], name=name)
        else:
            p = tf.compat.v1.placeholder(tf.bool, [], name=name)
        self.flags[p] = False
        return p

    def output(self, t, name="out"):
        t = tf.identity(t, name=name)
        self.outputs.append(t)
        return t

    def bn(self, scope, form, producer, expect="folded"):
        self.bns.append({"scope": scope, "form": form, "producer": producer,
                         "expect": expect})


# --------------------------------------------------------------------------- layers

def _v(name, shape, dtype=None):
    return tf.compat.v1.get_variable(name, shape, dtype=dtype or tf.float32,
                                     initializer=tf.compat.v1.zeros_initializer(),
                                     use_resource=False)


def conv2d(x, cout, k=3, stride=1, bias=True, scope="Conv", data_format="NHWC",
           weights=None):
    """contrib/slim-style conv: scope/weights, scope/Conv2D, scope/BiasAdd."""
    nchw = data_format == "NCHW"
    cin = int(x.shape[1] if nchw else x.shape[-1])
    strides = [1, 1, stride, stride] if nchw else [1, stride, stride, 1]
    with tf.compat.v1.variable_scope(scope):
        w = weights if weights is not None else _v("weights", [k, k, cin, cout], x.dtype)
        y = tf.nn.conv2d(x, w, strides, "SAME", data_format=data_format)
        if bias:
            y = tf.nn.bias_add(y, _v("biases", [cout], x.dtype), data_format=data_format)
    return y


def dense(x, n, bias=True, scope="fc", transpose_b=False):
    cin = int(x.shape[-1])
    with tf.compat.v1.variable_scope(scope):
        w = _v("weights", [n, cin] if transpose_b else [cin, n])
        y = tf.matmul(x, w, transpose_b=transpose_b)
        if bias:
            y = tf.nn.bias_add(y, _v("biases", [n]))
    return y


def layer_bn(x, training, scope, axis=-1, fused=None, center=True, scale=True):
    """Path B: the core layer (tf.layers.batch_normalization)."""
    return tf.compat.v1.layers.batch_normalization(
        x, axis=axis, training=training, fused=fused, center=center, scale=scale,
        epsilon=EPS, momentum=0.99, name=scope)


def smart_cond(pred, true_fn, false_fn):
    if isinstance(pred, bool):
        return true_fn() if pred else false_fn()
    return tf.compat.v1.cond(pred, true_fn, false_fn)


def contrib_batch_norm(inputs, is_training, scope="BatchNorm", center=True, scale=False,
                       epsilon=EPS, decay=0.999, updates_collections="UPDATE_OPS",
                       fused=None, data_format="NHWC", bn_name=None):
    """tf.contrib.layers.batch_norm of TF 1.15, paths A and C (B: use layer_bn).

    updates_collections: "UPDATE_OPS" (default), None, or another collection name.
    """
    from tensorflow.python.training import moving_averages
    default_coll = updates_collections == "UPDATE_OPS"
    coll = tf.compat.v1.GraphKeys.UPDATE_OPS if default_coll else updates_collections
    fused = True if fused is None else fused
    rank = inputs.shape.ndims
    nchw = data_format == "NCHW"
    if fused and rank in (2, 4) and (rank == 2 or not default_coll):
        return _contrib_fused(inputs, is_training, scope, center, scale, epsilon, decay,
                              coll, nchw, moving_averages)
    assert not default_coll, "path B: use layer_bn"
    with tf.compat.v1.variable_scope(scope):
        if nchw:
            axes = [0] + list(range(2, rank))
            c = int(inputs.shape[1])
            bshape = [1, c] + [1] * (rank - 2)
        else:
            axes = list(range(rank - 1))
            c = int(inputs.shape[-1])
            bshape = None
        beta = _v("beta", [c]) if center else None
        gamma = _v("gamma", [c]) if scale else None
        moving_mean = _v("moving_mean", [c])
        moving_variance = _v("moving_variance", [c])
        need_moments = not (isinstance(is_training, bool) and not is_training)
        if need_moments:
            if nchw:
                mean, variance = tf.nn.moments(inputs, axes, keepdims=True)
                mean = tf.reshape(mean, [-1])
                variance = tf.reshape(variance, [-1])
            else:
                mean, variance = tf.nn.moments(inputs, axes)
            moving_vars_fn = lambda: (moving_mean, moving_variance)  # noqa: E731
            if coll is None:
                def _force_updates():
                    um = moving_averages.assign_moving_average(moving_mean, mean, decay,
                                                               zero_debias=False)
                    uv = moving_averages.assign_moving_average(moving_variance, variance,
                                                               decay, zero_debias=False)
                    with tf.control_dependencies([um, uv]):
                        return tf.identity(mean), tf.identity(variance)
                mean, variance = smart_cond(is_training, _force_updates, moving_vars_fn)
            else:
                def _delay_updates():
                    um = moving_averages.assign_moving_average(moving_mean, mean, decay,
                                                               zero_debias=False)
                    uv = moving_averages.assign_moving_average(moving_variance, variance,
                                                               decay, zero_debias=False)
                    return um, uv
                um, uv = smart_cond(is_training, _delay_updates, moving_vars_fn)
                tf.compat.v1.add_to_collections(coll, um)
                tf.compat.v1.add_to_collections(coll, uv)
                mean, variance = smart_cond(is_training, lambda: (mean, variance),
                                            moving_vars_fn)
        else:
            mean, variance = moving_mean, moving_variance
        if nchw:
            mean = tf.reshape(mean, bshape)
            variance = tf.reshape(variance, bshape)
            if beta is not None:
                beta = tf.reshape(beta, bshape)
            if gamma is not None:
                gamma = tf.reshape(gamma, bshape)
        return tf.nn.batch_normalization(inputs, mean, variance, beta, gamma, epsilon,
                                         name=bn_name)


def _contrib_fused(inputs, is_training, scope, center, scale, epsilon, decay, coll,
                   nchw, moving_averages):
    data_format = "NCHW" if nchw else "NHWC"
    with tf.compat.v1.variable_scope(scope):
        original_inputs = inputs
        original_rank = inputs.shape.ndims
        if original_rank == 2:
            c = int(inputs.shape[-1])
            inputs = tf.reshape(inputs, [-1, c, 1, 1] if nchw else [-1, 1, 1, c])
        c = int(inputs.shape[1] if nchw else inputs.shape[-1])
        beta = _v("beta", [c]) if center else tf.constant(0.0, shape=[c])
        gamma = _v("gamma", [c]) if scale else tf.constant(1.0, shape=[c])
        moving_mean = _v("moving_mean", [c])
        moving_variance = _v("moving_variance", [c])

        def _training():
            return tf.compat.v1.nn.fused_batch_norm(inputs, gamma, beta, epsilon=epsilon,
                                                    data_format=data_format)

        def _inference():
            return tf.compat.v1.nn.fused_batch_norm(
                inputs, gamma, beta, mean=moving_mean, variance=moving_variance,
                epsilon=epsilon, is_training=False, data_format=data_format)
        outputs, mean, variance = smart_cond(is_training, _training, _inference)
        need_updates = not (isinstance(is_training, bool) and not is_training)
        if need_updates:
            if coll is None:
                def _force_updates():
                    um = moving_averages.assign_moving_average(moving_mean, mean, decay,
                                                               zero_debias=False)
                    uv = moving_averages.assign_moving_average(moving_variance, variance,
                                                               decay, zero_debias=False)
                    with tf.control_dependencies([um, uv]):
                        return tf.identity(outputs)
                outputs = smart_cond(is_training, _force_updates, lambda: outputs)
            else:
                def _delay_updates():
                    um = moving_averages.assign_moving_average(moving_mean, mean, decay,
                                                               zero_debias=False)
                    uv = moving_averages.assign_moving_average(moving_variance, variance,
                                                               decay, zero_debias=False)
                    return um, uv
                um, uv = smart_cond(is_training, _delay_updates,
                                    lambda: (moving_mean, moving_variance))
                tf.compat.v1.add_to_collections(coll, um)
                tf.compat.v1.add_to_collections(coll, uv)
        if original_rank == 2:
            outputs = tf.reshape(outputs, tf.shape(original_inputs))
        return outputs


def rename_ops(mapping, only=None):
    """GraphDef transform: change op types (e.g. AddV2 -> Add of TF <= 1.14)."""
    def transform(gd):
        for n in gd.node:
            if n.op in mapping and (only is None or only(n)):
                n.op = mapping[n.op]
        return gd
    return transform


# --------------------------------------------------------------------------- 1. forms

FUSED_COND = "FusedBatchNormV3 in cond (core layer, path B)"


@fixture("fused_v3_conv", "Conv2D+BiasAdd -> tf.layers.batch_normalization(training=phase): "
         "FusedBatchNormV3 x2 inside a Switch/Merge cond -> Relu")
def _fused_v3_conv(net):
    x = net.input([None, 8, 8, 3], [2, 8, 8, 3])
    phase = net.phase()
    y = conv2d(x, 4)
    y = layer_bn(y, phase, "batch_normalization")
    net.bn("batch_normalization", FUSED_COND, "Conv2D+BiasAdd")
    net.output(tf.nn.relu(y))


def _old_fused(net, op):
    x = net.input([None, 8, 8, 3], [2, 8, 8, 3])
    y = conv2d(x, 4)
    with tf.compat.v1.variable_scope("BatchNorm"):
        g, b, m, v = (_v(n, [4]) for n in ("gamma", "beta", "moving_mean", "moving_variance"))
        fn = getattr(tf.raw_ops, op)
        y = fn(x=y, scale=g, offset=b, mean=m, variance=v, epsilon=EPS, is_training=False,
               name=op)[0]
    net.bn("BatchNorm", f"{op} is_training=False, no cond", "Conv2D+BiasAdd")
    net.output(tf.nn.relu(y))


@fixture("fused_v1_conv", "Conv2D+BiasAdd -> FusedBatchNorm (V1, is_training=False, no "
         "cond; TF <= 1.4 graphs) -> Relu")
def _fused_v1_conv(net):
    _old_fused(net, "FusedBatchNorm")


@fixture("fused_v2_conv", "Conv2D+BiasAdd -> FusedBatchNormV2 (is_training=False, no cond; "
         "TF 1.5-1.12 graphs; the TFLite converter rejects this op) -> Relu")
def _fused_v2_conv(net):
    _old_fused(net, "FusedBatchNormV2")


def _bnwgn(net, scale_after):
    """Built with FusedBatchNormV3 (gamma = ones when not scale_after), rewritten after
    freezing into BatchNormWithGlobalNormalization(t, m, v, beta, gamma)."""
    x = net.input([None, 8, 8, 3], [2, 8, 8, 3])
    y = conv2d(x, 4)
    with tf.compat.v1.variable_scope("BatchNorm"):
        g, b, m, v = (_v(n, [4]) for n in ("gamma", "beta", "moving_mean", "moving_variance"))
        scale = g if scale_after else tf.ones([4], name="unit_scale")
        y = tf.compat.v1.nn.fused_batch_norm(y, scale, b, m, v, epsilon=EPS,
                                             is_training=False, name="batchnorm")[0]
    net.bn("BatchNorm", "BatchNormWithGlobalNormalization scale_after_normalization="
           f"{scale_after}", "Conv2D+BiasAdd")
    net.output(tf.nn.relu(y))
    net.keep.append("BatchNorm/gamma/read")  # BNwGN always has a gamma input

    def transform(gd):
        keep = []
        for n in gd.node:
            if n.name == "BatchNorm/batchnorm":
                t = n.input[0]
                attr_t = n.attr["T"].type
                n.Clear()
                n.name, n.op = "BatchNorm/batchnorm", "BatchNormWithGlobalNormalization"
                n.input.extend([t, "BatchNorm/moving_mean/read",
                                "BatchNorm/moving_variance/read", "BatchNorm/beta/read",
                                "BatchNorm/gamma/read"])
                n.attr["T"].type = attr_t
                n.attr["variance_epsilon"].f = EPS
                n.attr["scale_after_normalization"].b = scale_after
            if not n.name.startswith("BatchNorm/unit_scale"):
                keep.append(n)
        del gd.node[:]
        gd.node.extend(keep)
        gd.versions.producer = 8
        return gd
    net.transform = transform
    net.extra["graphdef_producer"] = 8
    net.extra["note"] = ("BatchNormWithGlobalNormalization was removed at GraphDef version 9; "
                         "TF 2.21 imports and runs it only because versions.producer = 8 "
                         "(as in the 2015 Inception graphs). gamma is random and is an input "
                         "even when scale_after_normalization is False (then it must be "
                         "ignored).")


@fixture("bnwgn_conv", "Conv2D+BiasAdd -> BatchNormWithGlobalNormalization "
         "(scale_after_normalization=True, GraphDef producer 8) -> Relu")
def _bnwgn_conv(net):
    _bnwgn(net, True)


@fixture("bnwgn_noscale_conv", "Conv2D+BiasAdd -> BatchNormWithGlobalNormalization "
         "(scale_after_normalization=False: the random gamma input must be ignored) -> Relu")
def _bnwgn_noscale_conv(net):
    _bnwgn(net, False)


DECOMP_B = "decomposed nn.batch_normalization, moments + cond/cond_1 (core layer, path B)"
DECOMP_C = "decomposed nn.batch_normalization, moments + one cond (contrib path C)"


@fixture("decomp_gamma_beta_conv", "Conv2D+BiasAdd -> tf.layers.batch_normalization(fused="
         "False): moments, cond (mean) / cond_1 (variance), add/Rsqrt/mul/mul_1/mul_2/sub/"
         "add_1 with gamma and beta through /read -> Relu")
def _decomp_gamma_beta_conv(net):
    x = net.input([None, 8, 8, 3], [2, 8, 8, 3])
    phase = net.phase()
    y = layer_bn(conv2d(x, 4), phase, "batch_normalization", fused=False)
    net.bn("batch_normalization", DECOMP_B + ", gamma+beta", "Conv2D+BiasAdd")
    net.output(tf.nn.relu(y))


@fixture("decomp_contrib_scope", "Conv2D+BiasAdd -> contrib batch_norm path C (fused=False, "
         "updates_collections='bn_updates', scale=True): ops named BatchNorm/batchnorm_1/*, "
         "one cond with Merge/Merge_1, update ops in a separate cond -> Relu")
def _decomp_contrib_scope(net):
    x = net.input([None, 8, 8, 3], [2, 8, 8, 3])
    phase = net.phase()
    y = contrib_batch_norm(conv2d(x, 4), phase, scope="BatchNorm", scale=True, fused=False,
                           updates_collections="bn_updates", bn_name="batchnorm_1")
    net.bn("BatchNorm", DECOMP_C + ", gamma+beta, scope BatchNorm/batchnorm_1", "Conv2D+BiasAdd")
    net.output(tf.nn.relu(y))


@fixture("decomp_gamma_only_conv", "Conv2D (no bias) -> contrib path C with center=False, "
         "scale=True: no beta, so Neg(mul_2) instead of sub -> Relu")
def _decomp_gamma_only_conv(net):
    x = net.input([None, 8, 8, 3], [2, 8, 8, 3])
    phase = net.phase()
    y = contrib_batch_norm(conv2d(x, 4, bias=False), phase, center=False, scale=True,
                           fused=False, updates_collections="bn_updates")
    net.bn("BatchNorm", DECOMP_C + ", gamma only (Neg)", "Conv2D")
    net.output(tf.nn.relu(y))


@fixture("decomp_beta_only_conv", "Conv2D+BiasAdd -> contrib batch_norm defaults center=True, "
         "scale=False with fused=False (core layer, decomposed): beta only, no gamma mul -> Relu")
def _decomp_beta_only_conv(net):
    x = net.input([None, 8, 8, 3], [2, 8, 8, 3])
    phase = net.phase()
    y = layer_bn(conv2d(x, 4), phase, "BatchNorm", fused=False, scale=False)
    net.bn("BatchNorm", DECOMP_B + ", beta only", "Conv2D+BiasAdd")
    net.output(tf.nn.relu(y))


@fixture("decomp_plain_conv", "Conv2D (no bias) -> contrib path C with is_training=False as a "
         "Python bool (no cond, no moments), center=False, scale=False: x*rsqrt(var+eps) + "
         "(-mean*rsqrt) with neither gamma nor beta -> Relu")
def _decomp_plain_conv(net):
    x = net.input([None, 8, 8, 3], [2, 8, 8, 3])
    y = contrib_batch_norm(conv2d(x, 4, bias=False), False, center=False, scale=False,
                           fused=False, updates_collections="bn_updates")
    net.bn("BatchNorm", "decomposed nn.batch_normalization, moving stats only, no gamma, "
           "no beta", "Conv2D")
    net.output(tf.nn.relu(y))


@fixture("decomp_add_v1_conv", "Conv2D+BiasAdd -> contrib path C (gamma+beta, phase cond) "
         "with every AddV2 rewritten to Add, as TF <= 1.14 wrote it (the only form TF's "
         "optimize_for_inference matches) -> Relu")
def _decomp_add_v1_conv(net):
    x = net.input([None, 8, 8, 3], [2, 8, 8, 3])
    phase = net.phase()
    y = contrib_batch_norm(conv2d(x, 4), phase, scale=True, fused=False,
                           updates_collections="bn_updates")
    net.bn("BatchNorm", DECOMP_C + ", gamma+beta, op Add (not AddV2)", "Conv2D+BiasAdd")
    net.output(tf.nn.relu(y))
    net.transform = rename_ops({"AddV2": "Add"})


# --------------------------------------------------------------------------- 5. NCHW

NCHW_NOTE = ("NCHW Conv2D has no default CPU kernel in TF 2.21 ('The Conv2D op currently only "
             "supports the NHWC tensor format on the CPU'); it runs with oneDNN: set "
             "TF_ENABLE_ONEDNN_OPTS=1 before importing TensorFlow to run this graph on CPU.")


@fixture("nchw_fused_conv", "NCHW: Conv2D(NCHW)+BiasAdd(NCHW) -> tf.layers.batch_normalization"
         "(axis=1, training=phase): FusedBatchNormV3 data_format NCHW in cond -> Relu",
         onednn=True)
def _nchw_fused_conv(net):
    x = net.input([None, 3, 8, 8], [2, 3, 8, 8])
    phase = net.phase()
    net.channel_axis = 1
    y = layer_bn(conv2d(x, 4, data_format="NCHW"), phase, "batch_normalization", axis=1)
    net.bn("batch_normalization", FUSED_COND + ", NCHW", "Conv2D+BiasAdd (NCHW)")
    net.output(tf.nn.relu(y))
    net.extra["tf_env"] = {ONEDNN_ENV: "1"}
    net.extra["note"] = NCHW_NOTE


@fixture("nchw_decomp_conv", "NCHW: Conv2D(NCHW)+BiasAdd -> contrib path C NCHW: moments("
         "keep_dims) + Reshape[-1], cond, mean/var/gamma/beta Reshape [1,C,1,1] -> Relu",
         onednn=True)
def _nchw_decomp_conv(net):
    x = net.input([None, 3, 8, 8], [2, 3, 8, 8])
    phase = net.phase()
    net.channel_axis = 1
    y = contrib_batch_norm(conv2d(x, 4, data_format="NCHW"), phase, scale=True, fused=False,
                           updates_collections="bn_updates", data_format="NCHW")
    net.bn("BatchNorm", DECOMP_C + ", NCHW params reshaped [1,C,1,1]", "Conv2D+BiasAdd (NCHW)")
    net.output(tf.nn.relu(y))
    net.extra["tf_env"] = {ONEDNN_ENV: "1"}
    net.extra["note"] = NCHW_NOTE


# --------------------------------------------------------------------------- 6. path A

FUSED_A = "contrib path A rank 2: Reshape [-1,1,1,C] -> cond{FusedBatchNormV3 x2} -> Reshape"


@fixture("contrib_fused_dense", "MatMul+BiasAdd -> contrib 1.15 batch_norm on rank 2 (path A, "
         "defaults: gamma = Const ones): Reshape[-1,1,1,C] -> cond{FusedBatchNormV3 training / "
         "FusedBatchNormV3_1 inference} -> Reshape(Shape(BiasAdd)) -> Relu")
def _contrib_fused_dense(net):
    x = net.input([None, 16], [8, 16])
    phase = net.phase()
    y = contrib_batch_norm(dense(x, 8), phase)
    net.bn("BatchNorm", FUSED_A + ", scale=False (gamma Const 1)", "MatMul+BiasAdd")
    net.output(tf.nn.relu(y))
    net.extra["note"] = ("The final Reshape takes tf.shape(BiasAdd) as in contrib: the BiasAdd "
                         "has two consumers (Reshape and Shape); Shape does not read values.")


# --------------------------------------------------------------------------- 7. producers

@fixture("conv_nobias_fused", "Conv2D without bias -> tf.layers.batch_normalization (fused, "
         "phase cond) -> Relu")
def _conv_nobias_fused(net):
    x = net.input([None, 8, 8, 3], [2, 8, 8, 3])
    phase = net.phase()
    y = layer_bn(conv2d(x, 4, bias=False), phase, "batch_normalization")
    net.bn("batch_normalization", FUSED_COND, "Conv2D")
    net.output(tf.nn.relu(y))


@fixture("depthwise_fused", "DepthwiseConv2dNative (channel multiplier 2, 3->6) + BiasAdd -> "
         "fused BN (phase cond) -> Relu")
def _depthwise_fused(net):
    x = net.input([None, 8, 8, 3], [2, 8, 8, 3])
    phase = net.phase()
    with tf.compat.v1.variable_scope("SeparableConv"):
        w = _v("depthwise_weights", [3, 3, 3, 2])
        y = tf.nn.depthwise_conv2d(x, w, [1, 1, 1, 1], "SAME")
        y = tf.nn.bias_add(y, _v("biases", [6]))
    y = layer_bn(y, phase, "batch_normalization")
    net.bn("batch_normalization", FUSED_COND, "DepthwiseConv2dNative+BiasAdd (multiplier 2)")
    net.output(tf.nn.relu(y))


@fixture("dense_bias_decomp", "MatMul+BiasAdd -> tf.layers.batch_normalization on rank 2 "
         "(decomposed: moments, cond, cond_1) -> Relu")
def _dense_bias_decomp(net):
    x = net.input([None, 16], [8, 16])
    phase = net.phase()
    y = layer_bn(dense(x, 8), phase, "batch_normalization")
    net.bn("batch_normalization", DECOMP_B + ", gamma+beta", "MatMul+BiasAdd")
    net.output(tf.nn.relu(y))


@fixture("dense_nobias_decomp", "MatMul without bias -> tf.layers.batch_normalization rank 2 "
         "(decomposed) -> Relu")
def _dense_nobias_decomp(net):
    x = net.input([None, 16], [8, 16])
    phase = net.phase()
    y = layer_bn(dense(x, 8, bias=False), phase, "batch_normalization")
    net.bn("batch_normalization", DECOMP_B + ", gamma+beta", "MatMul")
    net.output(tf.nn.relu(y))


@fixture("dense_transpose_b", "MatMul(transpose_b=True, weights [out,in]) + BiasAdd -> "
         "tf.layers.batch_normalization rank 2 (decomposed) -> Relu")
def _dense_transpose_b(net):
    x = net.input([None, 16], [8, 16])
    phase = net.phase()
    y = layer_bn(dense(x, 8, transpose_b=True), phase, "batch_normalization")
    net.bn("batch_normalization", DECOMP_B + ", gamma+beta", "MatMul(transpose_b)+BiasAdd")
    net.output(tf.nn.relu(y))


@fixture("conv_transpose_fused", "Conv2DBackpropInput (tf.compat.v1.nn.conv2d_transpose, "
         "stride 2, weights [h,w,out,in]) + BiasAdd -> fused BN (phase cond) -> Relu")
def _conv_transpose_fused(net):
    x = net.input([None, 4, 4, 3], [2, 4, 4, 3])
    phase = net.phase()
    with tf.compat.v1.variable_scope("Conv2d_transpose"):
        w = _v("weights", [3, 3, 4, 3])
        shape = tf.stack([tf.shape(x)[0], 8, 8, 4])
        y = tf.compat.v1.nn.conv2d_transpose(x, w, shape, [1, 2, 2, 1], "SAME")
        y = tf.nn.bias_add(tf.reshape(y, [-1, 8, 8, 4]), _v("biases", [4]))
    y = layer_bn(y, phase, "batch_normalization")
    net.bn("batch_normalization", FUSED_COND, "Conv2DBackpropInput+BiasAdd")
    net.output(tf.nn.relu(y))
    net.extra["note"] = ("conv2d_transpose output gets a static-shape Reshape([-1,8,8,4]) "
                         "between Conv2DBackpropInput and BiasAdd, as Keras/slim code does to "
                         "restore the static shape.")


def _conv3d(net, fused):
    x = net.input([None, 4, 4, 4, 2], [2, 4, 4, 4, 2])
    phase = net.phase()
    with tf.compat.v1.variable_scope("Conv3d"):
        w = _v("weights", [2, 2, 2, 2, 4])
        y = tf.nn.conv3d(x, w, [1, 1, 1, 1, 1], "SAME")
        y = tf.nn.bias_add(y, _v("biases", [4]))
    y = layer_bn(y, phase, "batch_normalization", fused=fused)
    form = (FUSED_COND + ", 5-D NDHWC (TF 2.x only)") if fused else (DECOMP_B + ", 5-D")
    net.bn("batch_normalization", form, "Conv3D+BiasAdd")
    net.output(tf.nn.relu(y))


@fixture("conv3d_decomp", "Conv3D (NDHWC, weights DHWIO) + BiasAdd -> tf.layers."
         "batch_normalization(fused=False): decomposed 5-D, as TF 1.15 did -> Relu")
def _conv3d_decomp(net):
    _conv3d(net, False)


@fixture("conv3d_fused", "Conv3D (NDHWC) + BiasAdd -> tf.layers.batch_normalization: "
         "FusedBatchNormV3 on 5-D (data_format NDHWC; TF 2.x-era v1 graphs) -> Relu")
def _conv3d_fused(net):
    _conv3d(net, None)


# --------------------------------------------------------------------------- 8-10 sharing

@fixture("shared_weights", "one weight variable used by two Conv2D layers in sequence, each "
         "followed by its own fused BN (phase): both foldable if the tool copies the weights")
def _shared_weights(net):
    x = net.input([None, 8, 8, 4], [2, 8, 8, 4])
    phase = net.phase()
    with tf.compat.v1.variable_scope("shared"):
        w = _v("weights", [3, 3, 4, 4])
    y = layer_bn(conv2d(x, 4, bias=False, scope="Conv", weights=w), phase, "bn1")
    y = tf.nn.relu(y)
    y = layer_bn(conv2d(y, 4, bias=False, scope="Conv_1", weights=w), phase, "bn2")
    net.bn("bn1", FUSED_COND, "Conv2D (shared weights)")
    net.bn("bn2", FUSED_COND, "Conv2D (shared weights)")
    net.output(tf.nn.relu(y))
    net.extra["shared_weights"] = ["shared/weights"]


@fixture("shared_output", "Conv2D+BiasAdd whose output feeds the BN and also a skip Add "
         "(out = relu(BN(c)) + c): folding into the conv would change the skip, so the BN "
         "must stay a scale-shift")
def _shared_output(net):
    x = net.input([None, 8, 8, 3], [2, 8, 8, 3])
    phase = net.phase()
    c = conv2d(x, 4)
    y = tf.nn.relu(layer_bn(c, phase, "batch_normalization"))
    net.bn("batch_normalization", FUSED_COND, "Conv2D+BiasAdd (output also used by Add)",
           expect="scale_shift")
    net.output(y + c)


@fixture("bn_after_relu", "Conv2D+BiasAdd -> Relu -> fused BN (phase): no linear producer, "
         "expect a scale-shift")
def _bn_after_relu(net):
    x = net.input([None, 8, 8, 3], [2, 8, 8, 3])
    phase = net.phase()
    y = layer_bn(tf.nn.relu(conv2d(x, 4)), phase, "batch_normalization")
    net.bn("batch_normalization", FUSED_COND, "Relu (not linear)", expect="scale_shift")
    net.output(y)


# --------------------------------------------------------------------------- 11-15 real

def _mlp(net, bn_fn, form, hidden=100, n_in=784, loss=True):
    x = net.input([None, n_in], [8, n_in], kind="uniform")
    phase = net.phase()
    h = x
    for i in (1, 2):
        h = tf.compat.v1.layers.dense(h, hidden, name=f"dense_{i}")
        h = bn_fn(h, phase, f"bn_{i}")
        net.bn(f"bn_{i}", form, "MatMul+BiasAdd")
        h = tf.nn.relu(h)
    logits = net.output(tf.compat.v1.layers.dense(h, 10, name="dense_3"), "logits")
    if not loss:
        return x, phase, logits
    y = tf.compat.v1.placeholder(tf.int64, [None], name="y")
    xent = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y,
                                                                         logits=logits),
                          name="loss")
    tf.reduce_mean(tf.cast(tf.equal(tf.argmax(logits, 1), y), tf.float32), name="accuracy")
    update_ops = tf.compat.v1.get_collection(tf.compat.v1.GraphKeys.UPDATE_OPS)
    with tf.control_dependencies(update_ops):
        tf.compat.v1.train.GradientDescentOptimizer(0.1).minimize(xent, name="train")
    net.keep += ["loss", "accuracy"]
    net.extra["other_tensors"] = {"labels": "y:0", "loss": "loss:0", "accuracy": "accuracy:0"}
    net.extra["note"] = ("Training graph with y, softmax cross-entropy loss, accuracy and a "
                         "GradientDescent 'train' op under control_dependencies(UPDATE_OPS). "
                         "Frozen with output nodes logits, loss, accuracy: y/loss/accuracy stay "
                         "in the file, the train op (ref-variable updates) is dropped by "
                         "freezing as it would be for any user.")
    return x, phase, logits


@fixture("mlp_moments", "MNIST MLP 784-100-100-10, tf.layers.batch_normalization on rank 2 "
         "(decomposed, moments + cond/cond_1) after each hidden dense; y, loss, accuracy in "
         "the graph; output logits")
def _mlp_moments(net):
    _mlp(net, lambda h, p, s: layer_bn(h, p, s), DECOMP_B + ", gamma+beta")


@fixture("mlp_contrib_fused", "MNIST MLP 784-100-100-10 with contrib 1.15 batch_norm(center="
         "True, scale=True) on rank 2 = path A (Reshape -> cond{FusedBatchNormV3 x2} -> "
         "Reshape); y, loss, accuracy in the graph; output logits")
def _mlp_contrib_fused(net):
    _mlp(net, lambda h, p, s: contrib_batch_norm(h, p, scope=s, scale=True),
         FUSED_A + ", center+scale")


@fixture("facenet_updates_none", "FaceNet setup: contrib batch_norm(updates_collections=None, "
         "decay=0.995) with placeholder phase; conv BN = path A (cond FusedBatchNormV3 + "
         "_force_updates cond), dense BN = path C fused=False (moments, _force_updates cond); "
         "AssignMovingAvg (AssignSub on RefSwitch of ref variables) on the output path. The "
         "frozen file does not import; expected outputs come from the unfrozen session")
def _facenet_updates_none(net):
    x = net.input([None, 8, 8, 3], [2, 8, 8, 3])
    phase = net.phase()
    y = conv2d(x, 4, stride=2, bias=False, scope="Conv2d_1a_3x3")
    y = contrib_batch_norm(y, phase, scope="Conv2d_1a_3x3/BatchNorm", decay=0.995,
                           updates_collections=None)
    y = tf.nn.relu(y)
    y = tf.reshape(y, [-1, 4 * 4 * 4])
    y = dense(y, 8, bias=False, scope="Bottleneck")
    y = contrib_batch_norm(y, phase, scope="Bottleneck/BatchNorm", decay=0.995,
                           updates_collections=None, fused=False)
    net.bn("Conv2d_1a_3x3/BatchNorm", "contrib path A 4-D, FusedBatchNormV3 cond + "
           "_force_updates cond (updates_collections=None)", "Conv2D")
    net.bn("Bottleneck/BatchNorm", "contrib path C decomposed, _force_updates cond "
           "(updates_collections=None)", "MatMul")
    net.output(tf.nn.l2_normalize(y, 1, 1e-10), "embeddings")


@fixture("float16_conv", "float16 net: Conv2D(half)+BiasAdd(half) -> tf.layers."
         "batch_normalization: FusedBatchNormV3 with T=half x, U=float32 params, in cond -> "
         "Relu -> Conv2D(half) -> fused BN -> output half")
def _float16_conv(net):
    x = net.input([None, 8, 8, 3], [2, 8, 8, 3], dtype=tf.float16)
    phase = net.phase()
    y = tf.nn.relu(layer_bn(conv2d(x, 4), phase, "bn1"))
    y = layer_bn(conv2d(y, 4, scope="Conv_1"), phase, "bn2")
    net.bn("bn1", FUSED_COND + ", x float16, params float32", "Conv2D+BiasAdd (float16)")
    net.bn("bn2", FUSED_COND + ", x float16, params float32", "Conv2D+BiasAdd (float16)")
    net.output(tf.nn.relu(y))
    net.extra["dtype"] = "float16"


@fixture("resnet_like", "ResNet-50 topology in miniature (4-8 channels, input [1,8,8,3]): stem "
         "conv-BN-relu, 16 bottleneck blocks (1x1-3x3-1x1, each conv-BN) in stages [3,4,6,3], "
         "projection shortcut conv-BN per stage: 53 fused BNs, one phase placeholder")
def _resnet_like(net):
    x = net.input([None, 8, 8, 3], [1, 8, 8, 3])
    phase = net.phase()
    n = [0]

    def conv_bn(h, cout, k, stride=1, relu=True):
        n[0] += 1
        i = n[0]
        h = tf.compat.v1.layers.conv2d(h, cout, k, stride, "same", use_bias=False,
                                       name=f"conv{i}")
        h = layer_bn(h, phase, f"bn{i}")
        net.bn(f"bn{i}", FUSED_COND, "Conv2D")
        return tf.nn.relu(h) if relu else h

    h = conv_bn(x, 8, 3)
    for stage, (blocks, width, out_c) in enumerate([(3, 4, 8), (4, 4, 8), (6, 6, 8),
                                                    (3, 8, 8)]):
        for b in range(blocks):
            stride = 2 if (b == 0 and stage in (1, 2)) else 1
            with tf.compat.v1.variable_scope(f"stage{stage + 1}/block{b + 1}"):
                shortcut = conv_bn(h, out_c, 1, stride, relu=False) if b == 0 else h
                r = conv_bn(h, width, 1, stride)
                r = conv_bn(r, width, 3)
                r = conv_bn(r, out_c, 1, relu=False)
                h = tf.nn.relu(r + shortcut)
    net.output(tf.reduce_mean(h, [1, 2]))


# --------------------------------------------------------------------------- 16 formats

def _small_dense(net):
    x = net.input([None, 16], [8, 16])
    phase = net.phase()
    y = layer_bn(dense(x, 8), phase, "batch_normalization")
    net.bn("batch_normalization", DECOMP_B + ", gamma+beta", "MatMul+BiasAdd")
    y = dense(tf.nn.relu(y), 3, scope="logits")
    net.output(y)
    return x, y


@fixture("pbtxt_dense", "text GraphDef (.pbtxt), frozen: MatMul+BiasAdd -> tf.layers BN "
         "rank 2 (decomposed, phase) -> Relu -> MatMul+BiasAdd", format="pbtxt")
def _pbtxt_dense(net):
    _small_dense(net)


@fixture("ckpt_dense", "TF1 checkpoint (unfrozen: model.meta + model.index + model.data-*), "
         "full training graph: MatMul+BiasAdd -> tf.layers BN rank 2 (phase) -> Relu -> "
         "MatMul+BiasAdd, loss, GradientDescent train op with UPDATE_OPS", format="checkpoint")
def _ckpt_dense(net):
    _, y = _small_dense(net)
    labels = tf.compat.v1.placeholder(tf.int64, [None], name="y")
    loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels,
                                                                        logits=y), name="loss")
    with tf.control_dependencies(tf.compat.v1.get_collection(
            tf.compat.v1.GraphKeys.UPDATE_OPS)):
        tf.compat.v1.train.GradientDescentOptimizer(0.1).minimize(loss, name="train")
    net.extra["other_tensors"] = {"labels": "y:0", "loss": "loss:0", "train_op": "train"}


@fixture("savedmodel_conv", "TF1 SavedModel (tag serve, signature serving_default x -> out, "
         "variables unfrozen): Conv2D+BiasAdd -> fused BN whose training flag is "
         "placeholder_with_default(False) -> Relu", format="saved_model")
def _savedmodel_conv(net):
    x = net.input([None, 8, 8, 3], [2, 8, 8, 3])
    phase = net.phase(with_default=True)
    y = layer_bn(conv2d(x, 4), phase, "batch_normalization")
    net.bn("batch_normalization", FUSED_COND + ", placeholder_with_default flag",
           "Conv2D+BiasAdd")
    net.output(tf.nn.relu(y))
    net.extra["note"] = ("The training flag is a PlaceholderWithDefault (default False), not in "
                         "the signature.")


sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fixtures_forms import register as _register_forms  # noqa: E402  (computed params, QAT, Conv1D)
_register_forms(sys.modules[__name__])
import fixtures_verify  # noqa: E402  (verification fixtures, issue 10)

fixtures_verify.register(sys.modules[__name__])


# --------------------------------------------------------------------------- machinery

def _seed(name):
    return zlib.crc32(name.encode()) & 0x7FFFFFFF


def _randomize_variables(sess, rng):
    """Every variable from numpy, by role: BN statistics random and non-trivial."""
    assigns, feeds = [], {}
    for v in sorted(tf.compat.v1.global_variables(), key=lambda v: v.op.name):
        leaf = v.op.name.rsplit("/", 1)[-1]
        shape = v.shape.as_list()
        dtype = v.dtype.base_dtype.as_numpy_dtype
        if leaf == "moving_mean":
            val = rng.standard_normal(shape) * MEAN_SCALE
        elif leaf == "moving_variance":
            val = rng.uniform(0.2, 3.0, shape)
        elif leaf == "gamma":
            val = rng.uniform(0.5, 1.5, shape)
        elif leaf == "beta":
            val = rng.standard_normal(shape)
        elif leaf in ("weights", "kernel", "depthwise_weights"):
            fan_in = max(1, int(np.prod(shape)) // shape[-1])
            if leaf == "depthwise_weights":
                fan_in = shape[0] * shape[1]
            val = rng.standard_normal(shape) / np.sqrt(fan_in)
        elif leaf in ("biases", "bias"):
            val = rng.standard_normal(shape) * 0.5
        else:
            continue
        ph = tf.compat.v1.placeholder(v.dtype.base_dtype, shape)
        assigns.append(tf.compat.v1.assign(v, ph))
        feeds[ph] = val.astype(dtype)
    if assigns:
        sess.run(assigns, feeds)


def _make_inputs(net, rng):
    out = []
    for t, shape, kind in net.inputs:
        dt = t.dtype.as_numpy_dtype
        if kind == "uniform":
            a = rng.uniform(0.0, 1.0, shape)
        else:
            a = rng.standard_normal(shape)
        out.append(a.astype(dt))
    return out


def _run_graph_def(gd, input_names, data, flags, output_names):
    g = tf.Graph()
    with g.as_default():
        tf.import_graph_def(gd, name="")
    feed = dict(zip(input_names, data))
    feed.update(flags)
    with tf.compat.v1.Session(graph=g) as s:
        return s.run(output_names, feed)


def _histogram(gd):
    c = collections.Counter(n.op for n in gd.node if n.op in BN_OPS)
    return dict(sorted(c.items()))


def _write_npz(path, arrays):
    """np.savez, but with fixed zip timestamps so the bytes are reproducible."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for key, arr in arrays.items():
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.asarray(arr), allow_pickle=False)
            info = zipfile.ZipInfo(key + ".npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            zf.writestr(info, buf.getvalue())


def _repair_ref_ops(gd):
    """What a loader must do to the facenet file (used here only to self-check it)."""
    from tensorflow.core.framework import graph_pb2
    out = graph_pb2.GraphDef()
    out.CopyFrom(gd)
    for n in out.node:
        if n.op == "RefSwitch":
            n.op = "Switch"
        elif n.op in ("AssignSub", "AssignAdd"):
            n.op = "Sub" if n.op == "AssignSub" else "Add"
            n.attr.pop("use_locking", None)
        elif n.op == "Assign":
            n.op = "Identity"
            vals = [i for i in n.input if not i.startswith("^")]
            ctrl = [i for i in n.input if i.startswith("^")]
            del n.input[:]
            n.input.extend([vals[1]] + ctrl)
            n.attr.pop("use_locking", None)
            n.attr.pop("validate_shape", None)
    return out


def _channels_alive(out, axis):
    a = np.moveaxis(np.asarray(out, np.float64), axis, -1)
    a = a.reshape(-1, a.shape[-1])
    if a.shape[0] == 1:
        return bool(np.all(a != 0))
    return bool(np.all(a.std(axis=0) > 0))


def _close(a, b, dtype):
    tol = 2e-2 if dtype == np.float16 else 1e-4
    return np.allclose(np.asarray(a, np.float64), np.asarray(b, np.float64), rtol=tol,
                       atol=tol)


def build_fixture(fx: Fixture, out_dir: str) -> dict:
    _import_tf()
    seed = _seed(fx.name)
    rng = np.random.default_rng(seed)
    g = tf.Graph()
    net = Net()
    meta = {"name": fx.name, "description": fx.description}
    with g.as_default():
        tf.compat.v1.set_random_seed(seed)
        fx.build(net)
        in_names = [t.name for t, _, _ in net.inputs]
        out_names = [t.name for t in net.outputs]
        flags = {t.name: v for t, v in net.flags.items()}
        sess = tf.compat.v1.Session(graph=g)
        sess.run(tf.compat.v1.global_variables_initializer())
        # Draw weights, statistics and inputs until every output channel varies: a
        # channel that a final Relu kills everywhere would hide a wrong fold.
        for attempt in range(1, MAX_DRAWS + 1):
            _randomize_variables(sess, rng)
            data = _make_inputs(net, rng)
            feed = dict(zip(in_names, data))
            feed.update(flags)
            session_out = sess.run(out_names, feed)
            if all(_channels_alive(o, net.channel_axis) for o in session_out):
                break
        else:
            raise RuntimeError(f"{fx.name}: some output channel is constant after "
                               f"{MAX_DRAWS} draws")
        meta["draws"] = attempt
        keep = [t.op.name for t in net.outputs] + net.keep
        expected_from = "file"
        if fx.format in ("pb", "pbtxt"):
            frozen = tf.compat.v1.graph_util.convert_variables_to_constants(
                sess, g.as_graph_def(), keep)
            if net.transform:
                frozen = net.transform(frozen)
            if fx.format == "pb":
                graph_file = fx.name + ".pb"
                with open(os.path.join(out_dir, graph_file), "wb") as f:
                    f.write(frozen.SerializeToString(deterministic=True))
            else:
                graph_file = fx.name + ".pbtxt"
                tf.io.write_graph(frozen, out_dir, graph_file, as_text=True)
            hist_gd = _reload(os.path.join(out_dir, graph_file))
            try:
                outputs = _run_graph_def(hist_gd, in_names, data, flags, out_names)
            except Exception as e:  # the facenet hazard
                msg = str(e).strip().splitlines()[0]
                meta["import_error"] = f"{type(e).__name__}: {msg}"
                outputs = session_out
                expected_from = "session"
                repaired = _run_graph_def(_repair_ref_ops(hist_gd), in_names, data, flags,
                                          out_names)
                ok = all(_close(a, b, a.dtype) for a, b in zip(repaired, session_out))
                meta["ref_repair_matches_session"] = bool(ok)
                if not ok:
                    raise RuntimeError(f"{fx.name}: repaired graph differs from session")
        elif fx.format == "checkpoint":
            ckpt_dir = os.path.join(out_dir, fx.name)
            os.makedirs(ckpt_dir, exist_ok=True)
            for old in os.listdir(ckpt_dir):
                os.remove(os.path.join(ckpt_dir, old))
            saver = tf.compat.v1.train.Saver(save_relative_paths=True)
            saver.save(sess, os.path.join(ckpt_dir, "model"))
            from tensorflow.core.protobuf import meta_graph_pb2
            _reserialize(os.path.join(ckpt_dir, "model.meta"), meta_graph_pb2.MetaGraphDef())
            graph_file = fx.name + "/model.meta"
            outputs = _run_checkpoint(ckpt_dir, in_names, data, flags, out_names)
            hist_gd = g.as_graph_def()
        elif fx.format == "saved_model":
            import shutil
            sm_dir = os.path.join(out_dir, fx.name)
            if os.path.exists(sm_dir):
                shutil.rmtree(sm_dir)
            builder = tf.compat.v1.saved_model.builder.SavedModelBuilder(sm_dir)
            sig = tf.compat.v1.saved_model.signature_def_utils.predict_signature_def(
                inputs={"x": net.inputs[0][0]}, outputs={"out": net.outputs[0]})
            builder.add_meta_graph_and_variables(
                sess, ["serve"], signature_def_map={"serving_default": sig})
            builder.save()
            from tensorflow.core.protobuf import saved_model_pb2
            _reserialize(os.path.join(sm_dir, "saved_model.pb"), saved_model_pb2.SavedModel())
            graph_file = fx.name
            outputs = _run_saved_model(sm_dir, in_names, data, flags, out_names)
            hist_gd = g.as_graph_def()
            meta["tags"] = ["serve"]
            meta["signature"] = {"name": "serving_default", "inputs": {"x": "x:0"},
                                 "outputs": {"out": "out:0"}}
        sess.close()
    for name, a, b in zip(out_names, outputs, session_out):
        if not _close(a, b, a.dtype):
            raise RuntimeError(f"{fx.name}: {name} from the file differs from the session")
        if not np.all(np.isfinite(a)) or np.std(a) == 0:
            raise RuntimeError(f"{fx.name}: {name} is degenerate")
    arrays = {f"input_{i}": a for i, a in enumerate(data)}
    arrays.update({f"output_{i}": np.asarray(a) for i, a in enumerate(outputs)})
    _write_npz(os.path.join(out_dir, fx.name + ".npz"), arrays)
    folded = sum(b["expect"] == "folded" for b in net.bns)
    meta.update({
        "format": fx.format,
        "graph": graph_file,
        "inputs": in_names,
        "outputs": out_names,
        "training_flags": flags,
        "bn_count": len(net.bns),
        "expect": {"folded": folded, "scale_shift": len(net.bns) - folded},
        "data": fx.name + ".npz",
        "input_shapes": {n: list(a.shape) for n, a in zip(in_names, data)},
        "input_dtypes": {n: str(a.dtype) for n, a in zip(in_names, data)},
        "expected_from": expected_from,
        "forms": sorted({b["form"] for b in net.bns}),
        "producers": sorted({b["producer"] for b in net.bns}),
        "bns": net.bns,
        "op_histogram": _histogram(hist_gd),
        "seed": seed,
        "tf_version": tf.__version__,
    })
    meta.update(net.extra)
    with open(os.path.join(out_dir, fx.name + ".json"), "w") as f:
        json.dump(meta, f, indent=2)
        f.write("\n")
    return meta


def _reserialize(path, message):
    """Rewrite a MetaGraphDef/SavedModel file TF wrote with deterministic map order
    (including the CondContextDef protos stored as bytes in the cond_context
    collection)."""
    from tensorflow.core.protobuf import control_flow_pb2
    with open(path, "rb") as f:
        message.ParseFromString(f.read())
    metas = message.meta_graphs if hasattr(message, "meta_graphs") else [message]
    for mg in metas:
        for key, proto in (("cond_context", control_flow_pb2.CondContextDef),
                           ("while_context", control_flow_pb2.WhileContextDef)):
            if key in mg.collection_def:
                values = mg.collection_def[key].bytes_list.value
                for i, raw in enumerate(values):
                    ctx = proto()
                    ctx.ParseFromString(raw)
                    values[i] = ctx.SerializeToString(deterministic=True)
    with open(path, "wb") as f:
        f.write(message.SerializeToString(deterministic=True))


def _reload(path):
    """Read a written graph back the way a user would."""
    gd = tf.compat.v1.GraphDef()
    if path.endswith(".pbtxt"):
        from google.protobuf import text_format
        with open(path) as f:
            text_format.Parse(f.read(), gd)
    else:
        with open(path, "rb") as f:
            gd.ParseFromString(f.read())
    return gd


def _run_checkpoint(ckpt_dir, in_names, data, flags, out_names):
    g = tf.Graph()
    with g.as_default(), tf.compat.v1.Session(graph=g) as s:
        saver = tf.compat.v1.train.import_meta_graph(os.path.join(ckpt_dir, "model.meta"))
        saver.restore(s, tf.train.latest_checkpoint(ckpt_dir))
        feed = dict(zip(in_names, data))
        feed.update(flags)
        return s.run(out_names, feed)


def _run_saved_model(sm_dir, in_names, data, flags, out_names):
    g = tf.Graph()
    with g.as_default(), tf.compat.v1.Session(graph=g) as s:
        mg = tf.compat.v1.saved_model.loader.load(s, ["serve"], sm_dir)
        sig = mg.signature_def["serving_default"]
        feed = {sig.inputs["x"].name: data[0]}
        feed.update(flags)
        return s.run([sig.outputs["out"].name], feed)


# --------------------------------------------------------------------------- driver

def write_readme(out_dir):
    lines = ["# bnconvert test fixtures", "",
             "Generated by `python tools/make_fixtures.py` (deterministic; do not edit by "
             "hand). Each NAME has NAME.json (inputs, outputs, training_flags, bn_count, "
             "expect, forms, producers, op_histogram, ...) and NAME.npz (input_i, output_i: "
             "the original graph's outputs with training flags False).", "",
             "| fixture | what it tests |", "|---|---|"]
    for fx in FIXTURES.values():
        tag = {"pbtxt": " [.pbtxt]", "checkpoint": " [checkpoint dir]",
               "saved_model": " [SavedModel dir]"}.get(fx.format, "")
        env = " [needs TF_ENABLE_ONEDNN_OPTS=1]" if fx.onednn else ""
        lines.append(f"| `{fx.name}`{tag} | {fx.description}{env} |")
    others = []
    for fname in sorted(os.listdir(out_dir)):
        stem = fname[:-len(".json")]
        if not fname.endswith(".json") or stem in FIXTURES:
            continue
        try:
            with open(os.path.join(out_dir, fname)) as f:
                spec = json.load(f)
            if "inputs" in spec and "data" in spec:  # a fixture, not some other json
                others.append((stem, spec.get("description", "")))
        except (OSError, ValueError, AttributeError):
            continue
    if others:
        lines += ["", "Other fixtures in this folder (written by other tools, e.g. "
                  "tools/train_mnist.py; make_fixtures.py neither writes nor deletes them):", "",
                  "| fixture | what it tests |", "|---|---|"]
        lines += [f"| `{stem}` | {desc} |" for stem, desc in others]
    with open(os.path.join(out_dir, "README.md"), "w") as f:
        f.write("\n".join(lines) + "\n")


def print_summary(out_dir, names):
    rows = []
    for name in names:
        with open(os.path.join(out_dir, name + ".json")) as f:
            m = json.load(f)
        hist = " ".join(f"{k}:{v}" for k, v in m["op_histogram"].items())
        rows.append((name, m["format"], str(m["bn_count"]),
                     f'{m["expect"]["folded"]}/{m["expect"]["scale_shift"]}',
                     m["expected_from"], hist))
    head = ("fixture", "format", "bn", "fold/ss", "from", "BN-related ops")
    widths = [max(len(r[i]) for r in rows + [head]) for i in range(5)]
    fmt = "  ".join(f"{{:{w}}}" for w in widths) + "  {}"
    print(fmt.format(*head))
    for r in rows:
        print(fmt.format(*r))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.dirname(
        os.path.abspath(__file__))), "fixtures"))
    ap.add_argument("--only", nargs="+", metavar="NAME")
    ap.add_argument("--list", action="store_true", help="list fixture names and exit")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.list:
        for fx in FIXTURES.values():
            print(f"{fx.name:24} {fx.description}")
        return 0
    names = args.only or list(FIXTURES)
    unknown = [n for n in names if n not in FIXTURES]
    if unknown:
        ap.error(f"unknown fixture(s): {', '.join(unknown)} (see --list)")
    os.makedirs(args.out, exist_ok=True)
    onednn_on = os.environ.get(ONEDNN_ENV) == "1"
    here = [n for n in names if not FIXTURES[n].onednn or onednn_on or args.child]
    deferred = [n for n in names if n not in here]
    # Fixtures that need oneDNN run in a child process with it switched on; the rest
    # run here with TensorFlow's defaults.
    if deferred:
        env = dict(os.environ, **{ONEDNN_ENV: "1"})
        subprocess.run([sys.executable, os.path.abspath(__file__), "--child", "--out",
                        args.out, "--only", *deferred], env=env, check=True)
    if here:
        _import_tf()
        for n in here:
            build_fixture(FIXTURES[n], args.out)
    if args.child:
        return 0
    if not args.only:  # issue 9's real-TF1 shapes (loops, heads, training checkpoint), own folder
        __import__("fixtures_realtf1").main(os.path.join(args.out, "realtf1"))
    write_readme(args.out)
    print_summary(args.out, names)
    return 0


if __name__ == "__main__":
    sys.exit(main())
