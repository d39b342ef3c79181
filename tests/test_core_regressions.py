"""Bugs in the core passes found by the fuzz tests (tests/test_properties.py), one small case each.

Each was found by fuzzing and is fixed; the test keeps it fixed.
Every case must end promptly in a fold or a :class:`BNConvertError`: never another exception,
never a hang (each run is bounded by SIGALRM).
"""
from __future__ import annotations

import os
import sys

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np
import pytest
import tensorflow as tf

import bnconvert
from bnconvert.errors import BNConvertError
from conftest import time_limit  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tools"))
from make_bad_inputs import conv_bn_graph  # noqa: E402


def fold_cleanly(gd, **kw):
    """fold() must return or raise BNConvertError within 10 s (these graphs fold in milliseconds)."""
    with time_limit(10), np.errstate(all="ignore"):
        try:
            return bnconvert.fold(gd, **kw)
        except BNConvertError as e:
            return e


def node(gd, name):
    return next(n for n in gd.node if n.name == name)


def test_bn_side_output_in_use_does_not_hang():
    gd = conv_bn_graph()
    side = gd.node.add()
    side.name, side.op = "side", "Identity"
    side.input.append("bn/FusedBatchNormV3:1")  # batch_mean: the moving mean in inference mode
    side.attr["T"].type = tf.float32.as_datatype_enum
    fold_cleanly(gd, outputs=["out:0", "side:0"])


def test_bn_parameters_of_the_wrong_shape_are_refused():
    gd = conv_bn_graph()
    shape = node(gd, "bn/moving_mean").attr["value"].tensor.tensor_shape
    shape.dim.add().size = 1  # [4] -> [4, 1], same bytes
    r = fold_cleanly(gd, outputs=["out:0"])
    if not isinstance(r, BNConvertError):
        with tf.Graph().as_default():
            tf.compat.v1.import_graph_def(r.graph_def, name="")  # the folded graph must at least be valid


def test_producer_weights_of_the_wrong_rank_are_not_folded():
    gd = conv_bn_graph()
    node(gd, "Conv/Conv2D").input[1] = "bn/beta"  # a 1-D constant as the conv filter
    fold_cleanly(gd, outputs=["out:0"])


def test_default_outputs_do_not_silently_drop_layers():
    gd = conv_bn_graph(params="placeholder")
    r = fold_cleanly(gd, inputs=["x:0"])
    # expected: the graph's real end ('out:0') and a refusal of the unfrozen BN, or an error
    assert isinstance(r, BNConvertError) or r.report.outputs == ["out:0"], r.report.outputs


def test_merge_value_index_in_use_is_handled():
    from tensorflow.core.framework import graph_pb2

    path = os.path.join(ROOT, "fixtures", "decomp_contrib_scope.pb")
    if not os.path.exists(path):
        pytest.skip("fixture missing")
    gd = graph_pb2.GraphDef()
    with open(path, "rb") as f:
        gd.ParseFromString(f.read())
    cast = gd.node.add()  # a valid graph: Cast(Merge_1:1 int32 -> float) as a second output
    cast.name, cast.op = "value_index", "Cast"
    cast.input.append("BatchNorm/cond_1/Merge_1:1")
    cast.attr["SrcT"].type, cast.attr["DstT"].type = tf.int32.as_datatype_enum, tf.float32.as_datatype_enum
    outs = [n.name + ":0" for n in gd.node if n.name == "out"] or None
    fold_cleanly(gd, outputs=(outs or []) + ["value_index:0"])


def test_bias_of_the_wrong_shape_is_not_folded():
    gd = conv_bn_graph()
    bias = gd.node.add()
    bias.name, bias.op = "Conv/BiasAdd", "BiasAdd"
    bias.input.extend(["Conv/Conv2D", "Conv/weights"])  # the 4-D filter as the bias
    bias.attr["T"].type = tf.float32.as_datatype_enum
    bias.attr["data_format"].s = b"NHWC"
    node(gd, "bn/FusedBatchNormV3").input[0] = "Conv/BiasAdd"
    r = fold_cleanly(gd, outputs=["out:0"])
    if not isinstance(r, BNConvertError):
        with tf.Graph().as_default():
            tf.compat.v1.import_graph_def(r.graph_def, name="")
