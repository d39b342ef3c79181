"""Training checkpoints of every common optimizer, and SavedModels written by Keras ``model.save``.

The models are built here, each kind in one fresh Python process (a TF1 script runs with
``disable_v2_behavior``; Keras saves eagerly — neither setting may leak into this process):

* TF1 training checkpoints (``tf.compat.v1.train.Saver``): conv -> ``tf.compat.v1.layers.
  batch_normalization(training=phase)`` (a bool placeholder) -> relu -> mean -> dense, trained a
  few steps under the UPDATE_OPS control dependency with Adam, Momentum or GradientDescent, with
  reference variables (``disable_resource_variables``) and with resource variables.  Adam with
  reference variables failed with "…expected float_ref": Adam's beta-power updates (kept: plain
  ``Mul`` nodes) carry control edges to every ``ApplyAdam``, which freezing left fed by a constant.
* Keras SavedModels (tf_keras, ``model.save(path)``): a functional Dense -> BatchNormalization
  model and a Sequential Conv2D -> BN -> Dense -> BN one.  They were refused with "variable
  'dense_1/bias' has no value in the checkpoint": the graph is a call of library functions and the
  bundle keys variables by object path, not by name.

Each fold is verified in every runtime (TensorFlow, onnxruntime, TFLite), and the frozen graph is
checked against outputs the building process computed itself (its own session, Keras' predict).
"""
import hashlib
import json
import os
import re
import sys

import numpy as np
import pytest

import bnconvert
from bnconvert.errors import BNConvertError, UnsafeGraphError

from conftest import run_graph_def, build_in_subprocess

OPTIMIZERS = ("adam", "momentum", "sgd")
MODES = ("ref", "resource")

_TF1_BUILDER = r'''
import json, os, sys
import numpy as np
import tensorflow as tf

tf.compat.v1.disable_v2_behavior()
root = sys.argv[1]
rng = np.random.default_rng(0)
x_ref = rng.normal(size=(5, 6, 6, 3)).astype(np.float32)
OPT = {"adam": lambda: tf.compat.v1.train.AdamOptimizer(1e-2),
       "momentum": lambda: tf.compat.v1.train.MomentumOptimizer(1e-2, 0.9),
       "sgd": lambda: tf.compat.v1.train.GradientDescentOptimizer(1e-1)}


def save(g, folder, fetch, feed):
    with g.as_default():
        saver = tf.compat.v1.train.Saver()
    with tf.compat.v1.Session(graph=g) as s:
        s.run(g.get_operation_by_name("init"))
        for op, batch in TRAIN.get(folder, []):
            s.run(op, batch)
        ref = s.run(fetch, feed)
        saver.save(s, os.path.join(root, folder, "model"))
    np.save(os.path.join(root, folder, "expected.npy"), ref)


TRAIN = {}
for mode in ("ref", "resource"):
    for opt in OPT:
        (tf.compat.v1.disable_resource_variables if mode == "ref" else tf.compat.v1.enable_resource_variables)()
        g = tf.Graph()
        with g.as_default():
            tf.compat.v1.set_random_seed(1)
            x = tf.compat.v1.placeholder(tf.float32, [None, 6, 6, 3], name="x")
            y = tf.compat.v1.placeholder(tf.int64, [None], name="labels")
            phase = tf.compat.v1.placeholder(tf.bool, [], name="phase")
            h = tf.compat.v1.layers.conv2d(x, 4, 3, padding="same", name="conv")
            h = tf.compat.v1.layers.batch_normalization(h, training=phase, name="bn")
            h = tf.reduce_mean(tf.nn.relu(h), [1, 2])
            logits = tf.compat.v1.layers.dense(h, 3, name="logits")
            loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=logits))
            with tf.control_dependencies(tf.compat.v1.get_collection(tf.compat.v1.GraphKeys.UPDATE_OPS)):
                train = OPT[opt]().minimize(loss, name="train")
            tf.compat.v1.global_variables_initializer()
        folder = f"{opt}-{mode}"
        TRAIN[folder] = [(train, {x: rng.normal(1.0, 2.0, size=(8, 6, 6, 3)).astype(np.float32),
                                  y: rng.integers(0, 3, 8), phase: True}) for _ in range(4)]
        save(g, folder, logits, {x: x_ref, phase: False})

# sparse gradients (an embedding), a global step and an ExponentialMovingAverage of the weights
for mode in ("ref", "resource"):
    (tf.compat.v1.disable_resource_variables if mode == "ref" else tf.compat.v1.enable_resource_variables)()
    g = tf.Graph()
    with g.as_default():
        tf.compat.v1.set_random_seed(1)
        ids = tf.compat.v1.placeholder(tf.int32, [None, 4], name="ids")
        y = tf.compat.v1.placeholder(tf.int64, [None], name="labels")
        phase = tf.compat.v1.placeholder(tf.bool, [], name="phase")
        emb = tf.compat.v1.get_variable("emb", [20, 6])
        h = tf.compat.v1.layers.dense(tf.reduce_mean(tf.nn.embedding_lookup(emb, ids), 1), 8, name="dense")
        h = tf.nn.relu(tf.compat.v1.layers.batch_normalization(h, training=phase, name="bn"))
        logits = tf.compat.v1.layers.dense(h, 3, name="logits")
        loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=logits))
        step = tf.compat.v1.train.get_or_create_global_step()
        with tf.control_dependencies(tf.compat.v1.get_collection(tf.compat.v1.GraphKeys.UPDATE_OPS)):
            train = tf.compat.v1.train.AdamOptimizer(1e-2).minimize(loss, global_step=step, name="train")
        with tf.control_dependencies([train]):
            train = tf.compat.v1.train.ExponentialMovingAverage(0.9).apply(tf.compat.v1.trainable_variables())
        tf.compat.v1.global_variables_initializer()
    folder = f"embed-{mode}"
    TRAIN[folder] = [(train, {ids: rng.integers(0, 20, (8, 4)), y: rng.integers(0, 3, 8), phase: True})
                     for _ in range(4)]
    save(g, folder, logits, {ids: np.arange(20).reshape(5, 4) % 20, phase: False})

# a variable initialized from another's initialized_value() (ExponentialMovingAverage does this)
tf.compat.v1.disable_resource_variables()
g = tf.Graph()
with g.as_default():
    x = tf.compat.v1.placeholder(tf.float32, [None, 4], name="x")
    w1 = tf.compat.v1.Variable(rng.normal(size=(4, 3)).astype(np.float32), name="w1")
    w2 = tf.compat.v1.Variable(w1.initialized_value() * 2.0, name="w2")
    out = tf.identity(tf.matmul(x, w1 + w2), name="out")
    tf.compat.v1.global_variables_initializer()
save(g, "init_value", out, {x: x_ref[:, 0, :4, 0]})

# an update whose result is read: cannot be frozen
g = tf.Graph()
with g.as_default():
    x = tf.compat.v1.placeholder(tf.float32, [None, 2], name="x")
    v = tf.compat.v1.Variable(np.ones((2, 2), np.float32), name="v")
    upd = tf.compat.v1.scatter_update(v, [0], [[2.0, 3.0]], name="scatter")
    tf.identity(tf.matmul(x, upd), name="out")
    tf.compat.v1.global_variables_initializer()
save(g, "scatter_read", x, {x: np.ones((1, 2), np.float32)})
np.save(os.path.join(root, "x_ref.npy"), x_ref)
'''

_KERAS_BUILDER = r'''
import os, sys
import numpy as np
import tensorflow as tf
import tf_keras as keras

root = sys.argv[1]
keras.utils.set_random_seed(0)
rng = np.random.default_rng(0)


def fit_save(m, name, x):
    m.compile("adam", "mse")
    ys = [np.zeros((len(x),) + tuple(o.shape[1:]), np.float32) for o in m.outputs]
    m.fit(x, ys if len(ys) > 1 else ys[0], verbose=0, epochs=3, batch_size=4)
    m.save(os.path.join(root, name))
    pred = m.predict(x[:5], verbose=0)
    np.savez(os.path.join(root, name + ".npz"), x=x[:5], *(pred if isinstance(pred, list) else [pred]))


i = keras.Input((16,))
h = keras.layers.BatchNormalization()(keras.layers.Dense(8)(i))
fit_save(keras.Model(i, keras.layers.Dense(3)(keras.layers.Activation("relu")(h))), "functional",
         rng.normal(1.0, 2.0, size=(12, 16)).astype(np.float32))

fit_save(keras.Sequential([keras.Input((6, 6, 2)), keras.layers.Conv2D(4, 3), keras.layers.BatchNormalization(),
                           keras.layers.ReLU(), keras.layers.Flatten(), keras.layers.Dense(5),
                           keras.layers.BatchNormalization(), keras.layers.Dense(3)]), "sequential",
         rng.normal(1.0, 2.0, size=(12, 6, 6, 2)).astype(np.float32))

i = keras.Input((6, 6, 2))
h = keras.layers.ReLU()(keras.layers.BatchNormalization()(keras.layers.Conv2D(4, 3, padding="same")(i)))
fit_save(keras.Model(i, [keras.layers.Dense(3, name="a")(keras.layers.GlobalAveragePooling2D()(h)),
                         keras.layers.Conv2D(2, 1, name="b")(h)]), "two_outputs",
         rng.normal(size=(12, 6, 6, 2)).astype(np.float32))


class Evil(tf.Module):
    def __init__(self):
        self.w = tf.Variable(np.ones((2, 2), np.float32))

    @tf.function(input_signature=[tf.TensorSpec([None, 2], tf.float32)])
    def __call__(self, x):
        tf.io.write_file(os.path.join(root, "pwned.txt"), "written at load")
        return tf.matmul(x, self.w)


evil = Evil()
tf.saved_model.save(evil, os.path.join(root, "evil"), signatures=evil.__call__)


class Branchy(tf.Module):
    def __init__(self):
        self.w = tf.Variable(np.ones((2, 2), np.float32))

    @tf.function(input_signature=[tf.TensorSpec([None, 2], tf.float32)])
    def __call__(self, x):
        return tf.cond(tf.reduce_sum(x) > 0, lambda: tf.matmul(x, self.w), lambda: x - tf.reduce_sum(self.w))


branchy = Branchy()
tf.saved_model.save(branchy, os.path.join(root, "branchy"), signatures=branchy.__call__)
'''


@pytest.fixture(scope="module")
def tf1(tmp_path_factory):
    return build_in_subprocess(_TF1_BUILDER, tmp_path_factory.mktemp("tf1_ckpts"))


@pytest.fixture(scope="module")
def keras_sm(tmp_path_factory):
    return build_in_subprocess(_KERAS_BUILDER, tmp_path_factory.mktemp("keras_savedmodels"))


def _digest(folder: str) -> dict[str, str]:
    out = {}
    for base, _, files in os.walk(folder):
        for f in files:
            p = os.path.join(base, f)
            with open(p, "rb") as fh:
                out[os.path.relpath(p, folder)] = hashlib.sha256(fh.read()).hexdigest()
    return out


def _convert_verified(model: str, out, **options):
    """Fold to all three formats and verify them; the input folder is left as it was and only
    ``out`` is written."""
    before = _digest(model)
    report = bnconvert.convert(model, str(out), **options)
    assert _digest(model) == before
    assert report.ok, report.summary()
    assert set(report.verification) >= {"tf:folded", "tflite"} and any(r.startswith("onnx:") for r in report.verification)
    assert all(v["ok"] for v in report.verification.values()), report.verification
    assert {os.path.dirname(p) for p in report.files.values()} == {str(out)}
    return report


def _frozen_consts(model) -> set[str]:
    return {n.name for n in model.graph_def.node if n.op == "Const"}


# ---------------------------------------------------------------------- TF1 training checkpoints
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("opt", OPTIMIZERS)
def test_training_checkpoint_freezes_without_optimizer_state(tf1, opt, mode):
    """Every optimizer, reference or resource variables: the checkpoint loads, its frozen graph
    gives what the training session gave with phase false, and no optimizer slot (Adam's m and v,
    Momentum's accumulator, the beta powers) or update is left in it."""
    folder = os.path.join(tf1, f"{opt}-{mode}")
    model = bnconvert.load(folder)
    ops = {n.op for n in model.graph_def.node}
    assert not {o for o in ops if "Apply" in o}, ops
    assert not {c for c in _frozen_consts(model) if c.endswith(("/Adam", "/Adam_1", "/Momentum"))}
    x = np.load(os.path.join(tf1, "x_ref.npy"))
    got = run_graph_def(model.graph_def, {"x:0": x, "phase:0": False}, ["logits/BiasAdd:0"])["logits/BiasAdd:0"]
    np.testing.assert_allclose(got, np.load(os.path.join(folder, "expected.npy")), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("opt", OPTIMIZERS)
def test_training_checkpoint_folds_and_verifies(tf1, opt, mode, tmp_path):
    report = _convert_verified(os.path.join(tf1, f"{opt}-{mode}"), tmp_path / "out")
    assert report.outputs == ["logits/BiasAdd:0"] and report.inputs == ["x:0"]
    assert report.bn["found"] == report.bn["folded"] == 1


def test_adam_reference_checkpoint_needs_no_float_ref(tf1, tmp_path, cli):
    """The reported failure, through the command line: exit 0, no "float_ref"."""
    r = cli("fold", os.path.join(tf1, "adam-ref"), "-o", tmp_path / "out", "--to", "pb", "-q")
    assert r.returncode == 0, r.stderr
    assert "float_ref" not in r.stderr + r.stdout


@pytest.mark.parametrize("mode", MODES)
def test_sparse_adam_global_step_and_moving_average(tf1, mode):
    """Adam's sparse update of an embedding (its ScatterAdd results feed further update math), a
    global step (nodes colocated with it) and an ExponentialMovingAverage: the checkpoint loads, and
    the embedding lookup of a resource variable (ResourceGather) freezes to a GatherV2."""
    folder = os.path.join(tf1, f"embed-{mode}")
    model = bnconvert.load(folder)
    ops = {n.op for n in model.graph_def.node}
    assert not {o for o in ops if "Apply" in o or o.startswith(("Scatter", "Resource", "Assign"))}, ops
    ids = np.arange(20).reshape(5, 4) % 20
    got = run_graph_def(model.graph_def, {"ids:0": ids, "phase:0": False}, ["logits/BiasAdd:0"])["logits/BiasAdd:0"]
    np.testing.assert_allclose(got, np.load(os.path.join(folder, "expected.npy")), rtol=1e-5, atol=1e-6)


def test_initialized_value_check_is_answered(tf1):
    """``var.initialized_value()`` leaves IsVariableInitialized(var) in a cond on the kept graph; a
    frozen variable is initialized (TensorFlow refused the float input of the check)."""
    model = bnconvert.load(os.path.join(tf1, "init_value"))
    assert "IsVariableInitialized" not in {n.op for n in model.graph_def.node}
    x = np.load(os.path.join(tf1, "x_ref.npy"))[:, 0, :4, 0]
    got = run_graph_def(model.graph_def, {"x:0": x}, ["out:0"])["out:0"]
    np.testing.assert_allclose(got, np.load(os.path.join(tf1, "init_value", "expected.npy")), rtol=1e-6)


def test_update_whose_result_is_read_is_refused_in_one_line(tf1, tmp_path, cli):
    """out = x @ scatter_update(v, …): a value computed by an update is training machinery (no
    default output), and named as the output it is refused naming the update, not with
    TensorFlow's "expected float_ref"."""
    folder = os.path.join(tf1, "scatter_read")
    with pytest.raises(BNConvertError) as e:
        bnconvert.load(folder, outputs=["out:0"])
    msg = str(e.value)
    assert "\n" not in msg and "'scatter' (ScatterUpdate)" in msg and "--outputs" in msg
    assert "float_ref" not in msg
    r = cli("fold", folder, "-o", tmp_path / "out", "-q")
    assert r.returncode == 2 and "float_ref" not in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr


# ---------------------------------------------------------------------- Keras SavedModels
@pytest.mark.parametrize("name,n_bn", [("functional", 1), ("sequential", 2), ("two_outputs", 1)])
def test_keras_savedmodel_freezes_to_what_keras_predicts(keras_sm, name, n_bn):
    model = bnconvert.load(os.path.join(keras_sm, name))
    assert model.format == "savedmodel"
    assert not model.graph_def.library.function  # every call inlined; save/restore functions gone
    ops = {n.op for n in model.graph_def.node}
    assert not ops & {"StatefulPartitionedCall", "PartitionedCall", "VarHandleOp", "ReadVariableOp"}
    d = np.load(os.path.join(keras_sm, name + ".npz"))
    got = run_graph_def(model.graph_def, {model.inputs[0]: d["x"]}, model.outputs)
    for i, out in enumerate(model.outputs):
        np.testing.assert_allclose(got[out], d[f"arr_{i}"], rtol=1e-5, atol=1e-6, err_msg=out)


@pytest.mark.parametrize("name,n_bn", [("functional", 1), ("sequential", 2), ("two_outputs", 1)])
def test_keras_savedmodel_folds_and_verifies(keras_sm, name, n_bn, tmp_path):
    report = _convert_verified(os.path.join(keras_sm, name), tmp_path / "out")
    assert report.bn["found"] == report.bn["folded"] == n_bn
    # the BNs keep their Keras names (inlined nodes are not prefixed with the call's name)
    assert all(re.match(r"(model|sequential)(_\d+)?/batch_normalization(_\d+)?$", r["name"]) for r in report.layers), \
        report.layers
    with open(report.files["report"]) as f:
        assert json.load(f)["ok"] is True


def test_savedmodel_with_a_file_op_in_its_function_is_still_refused(keras_sm):
    """Inlining brings a function's ops into the graph, where the load-time check refuses a file
    writer as before; nothing is run."""
    with pytest.raises(UnsafeGraphError, match="WriteFile"):
        bnconvert.load(os.path.join(keras_sm, "evil"))
    assert not os.path.exists(os.path.join(keras_sm, "pwned.txt"))


def test_variable_read_inside_functional_cond_is_refused_with_what_to_do(keras_sm):
    """A tf.cond inside a tf.function is an If whose branches read the variable: not frozen here,
    refused in one line that says how to get a model bnconvert takes."""
    with pytest.raises(BNConvertError) as e:
        bnconvert.load(os.path.join(keras_sm, "branchy"))
    msg = str(e.value)
    assert "\n" not in msg and "(If)" in msg and "convert_variables_to_constants_v2" in msg and ".pb" in msg


def test_inlining_refuses_a_call_bomb(monkeypatch):
    """Nested calls multiply; past MAX_NODES the graph is refused in one line, not built."""
    from tensorflow.core.framework import graph_pb2

    from bnconvert import inline

    gd = graph_pb2.GraphDef()
    for level in range(12):
        f = gd.library.function.add()
        f.signature.name = f"f{level}"
        a = f.signature.input_arg.add()
        a.name, a.type = "x", 1
        o = f.signature.output_arg.add()
        o.name, o.type = "y", 1
        prev = "x"
        for k in range(2):
            n = f.node_def.add()
            n.name, n.input[:] = f"c{k}", [prev]
            if level < 11:
                n.op = "PartitionedCall"
                n.attr["f"].func.name = f"f{level + 1}"
                n.attr["Tin"].list.type.append(1)
                n.attr["Tout"].list.type.append(1)
                prev = f"c{k}:output:0"
            else:
                n.op, n.attr["T"].type = "Identity", 1
                prev = f"c{k}:output:0"
        f.ret["y"] = prev
    x = gd.node.add()
    x.name, x.op = "x", "Placeholder"
    x.attr["dtype"].type = 1
    call = gd.node.add()
    call.name, call.op, call.input[:] = "call", "PartitionedCall", ["x"]
    call.attr["f"].func.name = "f0"
    call.attr["Tin"].list.type.append(1)
    call.attr["Tout"].list.type.append(1)
    small, _ = inline.inline_calls(gd, "bomb")  # 2**12 nodes: fine
    assert {n.op for n in small.node} == {"Placeholder", "Identity"} and not small.library.function
    monkeypatch.setattr(inline, "MAX_NODES", 1000)
    with pytest.raises(BNConvertError, match="more than 1000 nodes"):
        inline.inline_calls(gd, "bomb")
