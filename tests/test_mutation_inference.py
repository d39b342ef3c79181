"""Tests written to kill mutants of the inference-mode pass that survived the rest of the suite
(tools/mutate.py, docs/MUTATION.md): raw ``Switch``/``Merge`` conds whose live input is either
one (``Merge:1``, the value index, is an output), a predicate read through an Identity with a
control input, and ``--set`` values.  Folds are checked against TensorFlow with the same flag.
"""
from __future__ import annotations

import json
import os

import numpy as np
import pytest

import bnconvert
from conftest import FIXTURES, run_graph_def
from test_mutation_fold import X_SHAPE, _bn, _producer, ops

tf = pytest.importorskip("tensorflow")
v1 = tf.compat.v1


def cond_graph(train_first: bool):
    """x → conv → Switch(is_training) → {train: y * 2, infer: BN(y)} → Merge → Relu ``out``;
    ``vi`` = Cast(Merge:1).  ``train_first`` puts the training branch at Merge input 0."""
    rng = np.random.default_rng(20)
    g = tf.Graph()
    with g.as_default():
        x = v1.placeholder(tf.float32, X_SHAPE["NHWC"], name="x")
        flag = v1.placeholder_with_default(False, [], name="is_training")
        y, c = _producer("NHWC", x, rng)
        with tf.control_dependencies([tf.no_op(name="before")]):
            pred = tf.identity(flag, name="cond/pred_id")
        off, on = tf.raw_ops.Switch(data=y, pred=pred, name="cond/Switch")
        train = tf.multiply(on, 2.0, name="cond/train")
        infer = _bn("NHWC", off, c, "fused", rng)
        merged, index = tf.raw_ops.Merge(inputs=[train, infer] if train_first else [infer, train], name="cond/Merge")
        tf.nn.relu(merged, name="out")
        tf.cast(index, tf.float32, name="vi")
    return g.as_graph_def(), {"x:0": rng.normal(size=X_SHAPE["NHWC"]).astype(np.float32)}


@pytest.mark.parametrize("flag", [False, True])
@pytest.mark.parametrize("train_first", [False, True])
def test_switch_merge_value_index(train_first, flag):
    gd, feeds = cond_graph(train_first)
    outputs = ["out:0", "vi:0"]
    # False is the default: the flag must then be found through the Identity with a control input
    res = bnconvert.fold(gd, inputs=["x:0"], outputs=outputs, set_flags={"is_training": True} if flag else None)
    assert res.report.training_flags == {"is_training:0": flag}
    # one dead branch op (the training Mul, or the BN), one control edge (the pred_id's)
    assert res.report.inference == {"switches_resolved": 1, "merges_resolved": 1, "dead_nodes_removed": 1,
                                    "control_deps_dropped": 1}
    assert res.report.bn["found"] == (0 if flag else 1)
    assert not {"Switch", "Merge"} & set(ops(res.graph_def))
    ref = run_graph_def(gd, feeds, outputs, {"is_training:0": flag})
    got = run_graph_def(res.graph_def, feeds, outputs)
    assert float(got["vi:0"]) == float(ref["vi:0"]) == float(train_first != flag)
    np.testing.assert_allclose(got["out:0"], ref["out:0"], rtol=1e-5, atol=1e-5 * np.abs(ref["out:0"]).max())


@pytest.mark.parametrize("value,expect", [("off", False), ("0", False), ("no", False), ("false", False)])
def test_set_values_through_the_cli(value, expect, capsys):
    from bnconvert.cli.main import main

    rc = main(["inspect", os.path.join(FIXTURES, "fused_v3_conv.pb"), "--set", f"phase={value}", "--json"])
    assert rc == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["training_flags"] == {"phase:0": expect}


def test_set_unknown_name_is_an_input_error():
    from bnconvert.errors import InputError

    gd, _ = cond_graph(False)
    with pytest.raises(InputError, match="no node named 'nosuch'"):
        bnconvert.fold(gd, inputs=["x:0"], outputs=["out:0"], set_flags={"nosuch": False})


def test_set_a_bool_placeholder_that_decides_no_cond():
    """``--set`` also fixes a bool placeholder that feeds no Switch (here a Select)."""
    rng = np.random.default_rng(21)
    g = tf.Graph()
    with g.as_default():
        x = v1.placeholder(tf.float32, X_SHAPE["NHWC"], name="x")
        use = v1.placeholder(tf.bool, [], name="use_shift")
        y, c = _producer("NHWC", x, rng)
        z = _bn("NHWC", y, c, "fused", rng)
        tf.where(use, z + 1.0, z, name="out")
    gd = g.as_graph_def()
    feeds = {"x:0": rng.normal(size=X_SHAPE["NHWC"]).astype(np.float32)}
    res = bnconvert.fold(gd, inputs=["x:0"], outputs=["out:0"], set_flags={"use_shift": True})
    assert res.report.training_flags == {"use_shift:0": True}
    ref = run_graph_def(gd, feeds, ["out:0"], {"use_shift:0": True})["out:0"]
    got = run_graph_def(res.graph_def, feeds, ["out:0"])["out:0"]
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5 * np.abs(ref).max())


def test_cond_on_a_computed_predicate_is_left_alone():
    """A Switch whose predicate is computed from the input stays; the BN after it still folds."""
    rng = np.random.default_rng(22)
    g = tf.Graph()
    with g.as_default():
        x = v1.placeholder(tf.float32, X_SHAPE["NHWC"], name="x")
        y, c = _producer("NHWC", x, rng)
        z = tf.nn.relu(_bn("NHWC", y, c, "fused", rng))
        off, on = tf.raw_ops.Switch(data=z, pred=tf.reduce_sum(x) > 0.0)
        merged, _ = tf.raw_ops.Merge(inputs=[off * 3.0, on])
        tf.identity(merged, name="out")
    gd = g.as_graph_def()
    res = bnconvert.fold(gd, inputs=["x:0"], outputs=["out:0"])
    assert res.report.bn["folded"] == 1 and res.report.inference["switches_resolved"] == 0
    for sign in (1.0, -1.0):
        feeds = {"x:0": sign * np.abs(rng.normal(size=X_SHAPE["NHWC"])).astype(np.float32)}
        ref = run_graph_def(gd, feeds, ["out:0"])["out:0"]
        got = run_graph_def(res.graph_def, feeds, ["out:0"])["out:0"]
        np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5 * max(np.abs(ref).max(), 1e-6))


def test_merge_of_a_dead_and_two_live_inputs_keeps_the_live_ones():
    """A 3-input Merge with one dead input keeps its two live inputs, as TensorFlow would see
    them (one mechanism over the real ports, issue 15); the dead one is not left dangling."""
    rng = np.random.default_rng(23)
    g = tf.Graph()
    with g.as_default():
        x = v1.placeholder(tf.float32, X_SHAPE["NHWC"], name="x")
        flag = v1.placeholder_with_default(False, [], name="is_training")
        y, c = _producer("NHWC", x, rng)
        off, on = tf.raw_ops.Switch(data=y, pred=flag)
        merged, _ = tf.raw_ops.Merge(inputs=[on * 2.0, off, y * 0.5], name="merge3")
        tf.identity(merged, name="out")
    folded = bnconvert.fold(g.as_graph_def(), inputs=["x:0"], outputs=["out:0"])
    nodes = {n.name: n for n in folded.graph_def.node}
    merge = nodes["merge3"]
    data = [i for i in merge.input if not i.startswith("^")]
    assert len(data) == 2 and merge.attr["N"].i == 2, list(merge.input)
    assert not any(i.split(":")[0].startswith("mul") and "Switch:1" in i for i in data)
    for n in folded.graph_def.node:  # nothing reads a removed node
        for i in n.input:
            assert i.lstrip("^").split(":")[0] in nodes, (n.name, i)
