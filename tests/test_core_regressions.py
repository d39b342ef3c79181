"""Bugs in the core passes found by the fuzz tests (tests/test_properties.py), one small case each.

Each was found by fuzzing and is fixed; the test keeps it fixed.  Cases that TensorFlow's shape
functions already reject in the loader (parameters of the wrong shape, weights of the wrong
rank, a bias of the wrong shape) were removed with the guards that could never be reached.
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


def test_bn_side_output_in_use_reads_the_moving_mean():
    """A consumer of the fused BN's batch_mean (output 1) reads the moving mean after the fold,
    and the main output matches the original (reached through fold(): the BN is folded)."""
    from conftest import run_graph_def

    gd = conv_bn_graph()
    side = gd.node.add()
    side.name, side.op = "side", "Identity"
    side.input.append("bn/FusedBatchNormV3:1")  # batch_mean: the moving mean in inference mode
    side.attr["T"].type = tf.float32.as_datatype_enum
    r = fold_cleanly(gd, outputs=["out:0", "side:0"])
    assert not isinstance(r, BNConvertError), r
    assert r.report.bn["folded"] == 1
    feeds = {"x:0": np.random.default_rng(1).normal(size=(1, 8, 8, 3)).astype(np.float32)}
    want = run_graph_def(gd, feeds, ["out:0", "side:0"])
    got = run_graph_def(r.graph_def, feeds, ["out:0", "side:0"])
    np.testing.assert_array_equal(got["side:0"], want["side:0"])
    np.testing.assert_allclose(got["out:0"], want["out:0"], rtol=1e-5, atol=1e-5)


def test_bn_reserve_space_output_in_use_is_refused():
    """Reserve-space outputs (3-5) have no inference meaning: a consumer makes the fold refuse."""
    gd = conv_bn_graph()
    side = gd.node.add()
    side.name, side.op = "side", "Identity"
    side.input.append("bn/FusedBatchNormV3:5")
    side.attr["T"].type = tf.float32.as_datatype_enum
    r = fold_cleanly(gd, outputs=["out:0", "side:0"])
    assert isinstance(r, BNConvertError) and "reserve-space output 5" in str(r), r


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
