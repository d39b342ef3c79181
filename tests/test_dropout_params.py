"""Dropout parameters and numeric ``--set`` (bnconvert.inference.find_dropout_params).

The classic TF1 MNIST graph has a ``keep_prob`` placeholder next to ``is_training``: before, it
was taken as a model input of unknown rank and the fold stopped.  Now a float placeholder that
only parameterises a dropout — found by the dropout's structure, not its name — is set for
inference (keep probability 1.0, rate 0.0) and the dropout's uniform draw becomes zeros (every
unit is kept whatever the draw), so the exported models are deterministic and verify.  Any
scalar numeric placeholder can be set with ``--set NAME=NUMBER``.  Real TF/ORT/TFLite runs.
"""
from __future__ import annotations

import json
import os

import numpy as np
import pytest

from conftest import tf1_graph

RUNTIMES = ("tf:folded", "onnx:CPUExecutionProvider", "tflite")


def _tf():
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    import tensorflow as tf

    return tf


def _legacy_dropout(tf, x, keep_prob):
    """TF <= 1.12's nn.dropout, op for op: x / keep_prob * floor(keep_prob + U[0, 1))."""
    with tf.compat.v1.name_scope("dropout"):
        noise = keep_prob + tf.random.uniform(tf.shape(x), 0.0, 1.0)
        return tf.math.divide(x, keep_prob) * tf.floor(noise)


@pytest.fixture(scope="module")
def graphs(tmp_path_factory):
    """name -> .pb: dense -> BN (is_training placeholder) -> relu -> dropout -> dense."""
    tf = _tf()
    folder = tmp_path_factory.mktemp("dropout")

    def build(name, drop, extra=None):
        rs = np.random.RandomState(0)
        g = tf.Graph()
        with g.as_default(), tf1_graph(tf):
            x = tf.compat.v1.placeholder(tf.float32, [None, 6], name="x")
            phase = tf.compat.v1.placeholder(tf.bool, name="phase")
            h = tf.compat.v1.layers.dense(x, 8, kernel_initializer=tf.constant_initializer(rs.randn(6, 8)))
            h = tf.compat.v1.layers.batch_normalization(h, training=phase)
            h = drop(tf, tf.nn.relu(h))
            if extra is not None:
                h = extra(tf, h)
            h = tf.reshape(h, [-1, 8])  # a keep_prob of unknown shape leaves h's shape unknown
            tf.compat.v1.layers.dense(h, 3, kernel_initializer=tf.constant_initializer(rs.randn(8, 3)), name="logits")
            sess = tf.compat.v1.Session(graph=g)
            sess.run(tf.compat.v1.global_variables_initializer())
            gd = tf.compat.v1.graph_util.convert_variables_to_constants(sess, g.as_graph_def(), ["logits/BiasAdd"])
        path = folder / f"{name}.pb"
        path.write_bytes(gd.SerializeToString())
        return str(path)

    def keep(tf, h):  # TF >= 1.13: rate = 1 - keep_prob inside nn.dropout
        return tf.compat.v1.nn.dropout(h, keep_prob=tf.compat.v1.placeholder(tf.float32, name="keep_prob"))

    def rate(tf, h):
        return tf.compat.v1.nn.dropout(h, rate=tf.compat.v1.placeholder(tf.float32, [], name="drop_rate"))

    def legacy(tf, h):
        return _legacy_dropout(tf, h, tf.compat.v1.placeholder(tf.float32, name="kp"))

    def temperature(tf, h):  # a float placeholder that is not a dropout's: never set by itself
        return h / tf.compat.v1.placeholder(tf.float32, [], name="temperature")

    return {"keep": build("keep", keep), "rate": build("rate", rate), "legacy": build("legacy", legacy),
            "temperature": build("temperature", lambda tf, h: h, temperature)}


def _fold(cli, tmp_path, model, *args) -> dict:
    r = cli("fold", model, "-o", tmp_path / "out", "--force", "--json", *args)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout)


@pytest.mark.parametrize("name,flag,value", [("keep", "keep_prob:0", 1.0), ("rate", "drop_rate:0", 0.0),
                                             ("legacy", "kp:0", 1.0)])
def test_a_dropout_parameter_is_set_for_inference_and_verifies(cli, tmp_path, graphs, name, flag, value):
    import onnx

    report = _fold(cli, tmp_path, graphs[name])
    assert report["inputs"] == ["x:0"]
    assert report["training_flags"] == {"phase:0": False, flag: value}
    assert report["inference"]["dropout_draws_zeroed"], report["inference"]
    for runtime in RUNTIMES:
        v = report["verification"][runtime]
        assert v["status"] == "pass", (runtime, v)
    model = onnx.load(os.path.join(tmp_path, "out", f"{name}.onnx"))
    assert not [n.op_type for n in model.graph.node if n.op_type.startswith("Random")]  # deterministic
    assert [i.name for i in model.graph.input] == ["x:0"]


def test_the_dropout_is_identity_in_the_folded_graph(cli, tmp_path, graphs):
    """The folded model equals the original run with keep_prob = 1 — the dropout keeps every unit."""
    tf = _tf()
    report = _fold(cli, tmp_path, graphs["keep"])
    x = np.random.default_rng(0).normal(size=(5, 6)).astype(np.float32)
    outs = {}
    for key, path, feeds in (("orig", graphs["keep"], {"phase:0": False, "keep_prob:0": 1.0}),
                             ("folded", os.path.join(tmp_path, "out", "keep.folded.pb"), {})):
        gd = tf.compat.v1.GraphDef()
        with open(path, "rb") as f:
            gd.ParseFromString(f.read())
        g = tf.Graph()
        with g.as_default():
            tf.compat.v1.import_graph_def(gd, name="")
        with tf.compat.v1.Session(graph=g) as s:
            outs[key] = [s.run("logits/BiasAdd:0", {"x:0": x, **feeds}) for _ in range(2)]
    np.testing.assert_array_equal(outs["folded"][0], outs["folded"][1])
    np.testing.assert_allclose(outs["folded"][0], outs["orig"][0], rtol=1e-5, atol=1e-5)
    assert report["verification"]["tf:folded"]["status"] == "pass"


def test_a_float_placeholder_that_is_no_dropout_is_left_alone(cli, tmp_path, graphs):
    report = _fold(cli, tmp_path, graphs["temperature"])
    assert report["inputs"] == ["x:0", "temperature:0"] and "temperature:0" not in report["training_flags"]
    report = _fold(cli, tmp_path, graphs["temperature"], "--set", "temperature=2.5")
    assert report["inputs"] == ["x:0"]
    assert report["training_flags"] == {"phase:0": False, "temperature:0": 2.5}
    assert "dropout_draws_zeroed" not in report["inference"]
    assert all(report["verification"][rt]["status"] == "pass" for rt in RUNTIMES)


def test_set_checks_the_value_against_the_placeholder(cli, tmp_path, graphs):
    r = cli("fold", graphs["keep"], "-o", tmp_path / "o1", "--set", "phase=0.5")
    assert r.returncode == 2 and "bool placeholder" in r.stderr, r.stderr
    r = cli("fold", graphs["keep"], "-o", tmp_path / "o2", "--set", "keep_prob=abc")
    assert r.returncode == 2 and "finite number" in r.stderr, r.stderr
    r = cli("fold", graphs["keep"], "-o", tmp_path / "o3", "--set", "x=1.0")
    assert r.returncode == 2 and "not a scalar placeholder" in r.stderr, r.stderr


def test_a_draw_that_is_not_a_dropout_keep_mask_stays_random():
    """``noise > rate`` (strict) is not always true at rate 0 for a zero draw, and a normal draw
    is no dropout: neither placeholder is taken as a dropout parameter."""
    tf = _tf()
    from bnconvert.graph import Graph
    from bnconvert.inference import find_dropout_params

    g = tf.Graph()
    with g.as_default():
        x = tf.compat.v1.placeholder(tf.float32, [None, 4], name="x")
        r1 = tf.compat.v1.placeholder(tf.float32, [], name="r1")
        r2 = tf.compat.v1.placeholder(tf.float32, [], name="r2")
        strict = tf.cast(tf.random.uniform(tf.shape(x)) > r1, tf.float32)
        normal = tf.cast(tf.random.normal(tf.shape(x)) >= r2, tf.float32)
        tf.identity(x * strict * normal, name="y")
    assert find_dropout_params(Graph(g.as_graph_def())) == {}


def test_verify_feeds_the_dropout_parameter_a_stock_converter_left_an_input(graphs, tmp_path):
    """tf2onnx as users run it keeps ``phase`` and ``keep_prob`` as inputs (and the random
    draw): ``bnconvert.compare`` feeds them their inference values, each in its own type."""
    tf = _tf()
    import tf2onnx

    import bnconvert

    gd = tf.compat.v1.GraphDef()
    with open(graphs["keep"], "rb") as f:
        gd.ParseFromString(f.read())
    model, _ = tf2onnx.convert.from_graph_def(gd, input_names=["x:0", "phase:0", "keep_prob:0"],
                                              output_names=["logits/BiasAdd:0"])
    path = tmp_path / "stock.onnx"
    path.write_bytes(model.SerializeToString())
    result = bnconvert.compare(graphs["keep"], str(path))
    v = result["onnx:CPUExecutionProvider"]
    assert v["ok"], v
    assert "keep_prob:0=1.0" in v["note"] and "phase:0=false" in v["note"], v["note"]
