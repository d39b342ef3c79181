"""Review of commit 72ae1c4 (TF2 SavedModel inlining, object-graph keys, training checkpoints).

Hostile and unusual inputs for :mod:`bnconvert.inline` and :mod:`bnconvert.freeze`; what broke
and is fixed here:

* a model whose output reads a variable *after* an update of it (a tf.function that does
  ``v.assign_add(...)`` then ``x @ v``; a TF1 ``read_value()`` under ``control_dependencies`` of an
  ``assign_add``, named with --outputs).  Freezing cut the update's control edge and gave the
  checkpoint's value, and ``fold`` verified that against itself: PASS on a wrong model.  Now
  refused in one line (freeze.reads_after_updates); such reads are no default outputs;
* a Keras model with two nested sub-models holding layers of the same names (their variables
  share names, so the object graph's name -> key map is ambiguous): refused with "no value in
  the checkpoint" although the SavedModel's own save function lists every variable's key (now
  read: freeze.checkpoint_keys); an ambiguous object-graph name is no longer guessed;
* a truncated variables data file: reported as "no value in the checkpoint (key 'b' missing)";
* edited ``saved_model.pb`` files: a library function named like a TensorFlow op (TensorFlow
  refuses such a library; inlining gave the op the function's meaning), a malformed tensor
  reference in a function body (an internal error, exit 3; or silently output 0), two body nodes
  of one name (an error without the file's name), a doubling chain of calls to a function holding
  a large constant (node-count bound only: a 4 MB file became a 9 GB process), and a chain of
  thousands of nested calls (names grow with the depth: a 2.6 MB file took 490 s and 9.5 GB).

What held up is kept as guards: recursion, unsafe ops deep in calls, a centered RMSProp + EMA
checkpoint with and without --outputs, moderate nesting.  Models are built in a fresh Python
process per module (TF1 scripts disable v2 behaviour; Keras saves eagerly); the hostile variants
are protobuf edits of the built SavedModel.
"""
import os
import shutil
import sys
import time

import numpy as np
import pytest

import bnconvert
from bnconvert.errors import BNConvertError

from conftest import run_graph_def, build_in_subprocess

_TF2_BUILDER = r'''
import os, sys
import numpy as np
import tensorflow as tf
import tf_keras as keras

root = sys.argv[1]


class Base(tf.Module):
    def __init__(self):
        self.w = tf.Variable(np.arange(4, dtype=np.float32).reshape(2, 2) + 1, name="w")
        self.b = tf.Variable(np.array([0.5, -0.5], np.float32), name="b")

    @tf.function
    def inner(self, x):
        return tf.matmul(x, self.w)

    @tf.function(input_signature=[tf.TensorSpec([None, 2], tf.float32)])
    def __call__(self, x):
        return tf.nn.relu(self.inner(x) + self.b)


m = Base()
tf.saved_model.save(m, os.path.join(root, "base"), signatures=m.__call__)


class UpdateThenRead(tf.Module):
    def __init__(self):
        self.v = tf.Variable(np.ones((2, 2), np.float32), name="v")

    @tf.function(input_signature=[tf.TensorSpec([None, 2], tf.float32)])
    def __call__(self, x):
        self.v.assign_add(tf.ones((2, 2)))
        return tf.matmul(x, self.v)


u = UpdateThenRead()
tf.saved_model.save(u, os.path.join(root, "update_then_read"), signatures=u.__call__)

keras.utils.set_random_seed(0)


def block(name):
    i = keras.Input((6,))
    h = keras.layers.BatchNormalization(name="bn")(keras.layers.Dense(6, name="d")(i))
    return keras.Model(i, keras.layers.ReLU()(h), name=name)


i = keras.Input((6,))
model = keras.Model(i, block("second")(block("first")(i)))
x = np.random.default_rng(0).normal(1.0, 2.0, size=(12, 6)).astype(np.float32)
model.compile("adam", "mse")
model.fit(x, np.zeros((12, 6), np.float32), verbose=0, epochs=2, batch_size=4)
model.save(os.path.join(root, "same_names"))
np.savez(os.path.join(root, "same_names.npz"), x=x[:5], y=model.predict(x[:5], verbose=0))
'''

_TF1_BUILDER = r'''
import os, sys
import numpy as np
import tensorflow as tf

tf.compat.v1.disable_v2_behavior()
root = sys.argv[1]


def save(g, folder, fetch, feed, train=()):
    os.makedirs(os.path.join(root, folder))
    with g.as_default():
        saver = tf.compat.v1.train.Saver()
        init = tf.compat.v1.global_variables_initializer()
    with tf.compat.v1.Session(graph=g) as s:
        s.run(init)
        for op, batch in train:
            s.run(op, batch)
        saver.save(s, os.path.join(root, folder, "model"))
        np.save(os.path.join(root, folder, "expected.npy"), s.run(fetch, feed))


# out = x @ v.read_value() under a control dependency on assign_add(v, 1): TensorFlow reads v + 1
for mode in ("ref", "resource"):
    (tf.compat.v1.disable_resource_variables if mode == "ref" else tf.compat.v1.enable_resource_variables)()
    g = tf.Graph()
    with g.as_default():
        x = tf.compat.v1.placeholder(tf.float32, [None, 2], name="x")
        v = tf.compat.v1.get_variable("v", initializer=np.ones((2, 2), np.float32))
        bump = tf.compat.v1.assign_add(v, np.ones((2, 2), np.float32), name="bump")
        with tf.control_dependencies([bump]):
            tf.matmul(x, v.read_value(), name="out")
    save(g, f"read_after_update-{mode}", "out:0", {"x:0": np.ones((1, 2), np.float32)})

# a centered RMSProp training checkpoint, an ExponentialMovingAverage and a global step
tf.compat.v1.disable_resource_variables()
rng = np.random.default_rng(0)
g = tf.Graph()
with g.as_default():
    tf.compat.v1.set_random_seed(1)
    x = tf.compat.v1.placeholder(tf.float32, [None, 6, 6, 3], name="x")
    y = tf.compat.v1.placeholder(tf.int64, [None], name="labels")
    phase = tf.compat.v1.placeholder_with_default(False, [], name="phase")
    h = tf.compat.v1.layers.conv2d(x, 4, 3, padding="same", name="conv")
    h = tf.compat.v1.layers.batch_normalization(h, training=phase, name="bn")
    logits = tf.compat.v1.layers.dense(tf.reduce_mean(tf.nn.relu(h), [1, 2]), 3, name="logits")
    tf.nn.softmax(logits, name="probs")
    loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=logits))
    step = tf.compat.v1.train.get_or_create_global_step()
    with tf.control_dependencies(tf.compat.v1.get_collection(tf.compat.v1.GraphKeys.UPDATE_OPS)):
        train = tf.compat.v1.train.RMSPropOptimizer(1e-2, momentum=0.9, centered=True).minimize(
            loss, global_step=step, name="train")
    with tf.control_dependencies([train]):
        train = tf.compat.v1.train.ExponentialMovingAverage(0.9).apply(tf.compat.v1.trainable_variables())
x_ref = rng.normal(size=(5, 6, 6, 3)).astype(np.float32)
batches = [(train, {"x:0": rng.normal(1.0, 2.0, size=(8, 6, 6, 3)).astype(np.float32),
                    "labels:0": rng.integers(0, 3, 8), "phase:0": True}) for _ in range(3)]
save(g, "rmsprop", "probs:0", {"x:0": x_ref}, batches)
np.save(os.path.join(root, "rmsprop", "x.npy"), x_ref)
'''


@pytest.fixture(scope="module")
def tf2(tmp_path_factory):
    return build_in_subprocess(_TF2_BUILDER, tmp_path_factory.mktemp("review_tf2"))


@pytest.fixture(scope="module")
def tf1(tmp_path_factory):
    return build_in_subprocess(_TF1_BUILDER, tmp_path_factory.mktemp("review_tf1"))


def _one_line(e) -> str:
    msg = str(e.value)
    assert "\n" not in msg, msg
    assert "internal error" not in msg, msg
    return msg


X = np.array([[1.0, 2.0], [-3.0, 0.5]], np.float32)


# ---------------------------------------------------------------------- reads after updates
def test_savedmodel_output_reading_a_variable_after_its_update_is_refused(tf2, tmp_path, cli):
    """``v.assign_add(1); return x @ v``: TensorFlow computes ``x @ (v + 1)``; freezing cut the
    update and gave ``x @ v``, and ``fold`` verified that against itself: PASS on a wrong model."""
    folder = os.path.join(tf2, "update_then_read")
    with pytest.raises(BNConvertError) as e:
        bnconvert.load(folder)
    msg = _one_line(e)
    assert "'v'" in msg and "AssignAddVariableOp" in msg, msg
    r = cli("fold", folder, "-o", tmp_path / "out", "-q")
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "PASS" not in r.stdout


@pytest.mark.parametrize("mode", ["ref", "resource"])
def test_checkpoint_output_reading_a_variable_after_its_update_is_refused(tf1, mode):
    """TF1: ``with control_dependencies([assign_add(v, 1)]): out = x @ v.read_value()`` asked for
    with --outputs: the frozen graph would read the checkpoint's ``v``, TensorFlow ``v + 1``."""
    folder = os.path.join(tf1, f"read_after_update-{mode}")
    with pytest.raises(BNConvertError) as e:
        bnconvert.load(folder, outputs=["out:0"])
    msg = _one_line(e)
    assert "'v'" in msg and "AssignAdd" in msg and "--outputs" in msg, msg
    assert mode == "resource" or "'bump'" in msg, msg


def test_rmsprop_ema_checkpoint_with_and_without_explicit_outputs(tf1):
    """Held up (a guard for the reads-after-updates refusal): a centered RMSProp + EMA + global
    step checkpoint loads with default outputs and with ``--outputs probs``, its EMA updates
    (which read the weights after the optimizer's updates) left out, and computes what the
    training session computed."""
    folder = os.path.join(tf1, "rmsprop")
    x = np.load(os.path.join(folder, "x.npy"))
    for outputs in (None, ["probs:0"]):
        model = bnconvert.load(folder, outputs=outputs)
        ops = {n.op for n in model.graph_def.node}
        assert not {o for o in ops if "Apply" in o or o.startswith(("Assign", "Resource"))}, ops
        got = run_graph_def(model.graph_def, {"x:0": x}, ["probs:0"])["probs:0"]
        np.testing.assert_allclose(got, np.load(os.path.join(folder, "expected.npy")), rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------- checkpoint keys
def test_keras_sub_models_with_the_same_layer_names(tf2, tmp_path):
    """Two nested sub-models, each with a Dense 'd' and a BatchNormalization 'bn': four pairs of
    variables with one name each (d/kernel, bn/gamma…).  The object graph cannot tell them apart;
    the SavedModel's save function lists each variable's key, and the model must compute what
    Keras predicts (a swap of the two blocks' kernels would not)."""
    folder = os.path.join(tf2, "same_names")
    model = bnconvert.load(folder)
    d = np.load(os.path.join(tf2, "same_names.npz"))
    got = run_graph_def(model.graph_def, {model.inputs[0]: d["x"]}, model.outputs)[model.outputs[0]]
    np.testing.assert_allclose(got, d["y"], rtol=1e-5, atol=1e-5)
    report = bnconvert.convert(folder, str(tmp_path / "out"), to=["pb"])
    assert report.ok and report.bn["found"] == report.bn["folded"] == 2, report.summary()


def test_truncated_variables_data_says_it_cannot_read_them(tf2, tmp_path):
    """A truncated ``variables.data-*``: the message says the checkpoint cannot be read, not that
    a key is missing (the unreadable object graph was ignored and the variables' names tried)."""
    folder = _copy(tf2, tmp_path, "truncated")
    data = os.path.join(folder, "variables", "variables.data-00000-of-00001")
    os.truncate(data, 5)
    with pytest.raises(BNConvertError) as e:
        bnconvert.load(folder)
    msg = _one_line(e)
    assert "no value" not in msg and "cannot read" in msg, msg


# ---------------------------------------------------------------------- edited saved_model.pb
F, S = 1, 7  # DT_FLOAT, DT_STRING


def _copy(tf2, tmp_path, name) -> str:
    dst = os.path.join(str(tmp_path), name)
    shutil.copytree(os.path.join(tf2, "base"), dst)
    return dst


def _edit(tf2, tmp_path, name, edit) -> str:
    """A copy of the base SavedModel whose signature's result goes through ``PartitionedCall(f=evil)``
    (or whatever ``edit(graph_def, wrapper, hook)`` makes of it)."""
    from tensorflow.core.protobuf import saved_model_pb2

    folder = _copy(tf2, tmp_path, name)
    pb = os.path.join(folder, "saved_model.pb")
    sm = saved_model_pb2.SavedModel()
    with open(pb, "rb") as f:
        sm.ParseFromString(f.read())
    gd = sm.meta_graphs[0].graph_def
    wrapper = next(f for f in gd.library.function if f.signature.name.startswith("__inference_signature_wrapper"))
    hook = _call(wrapper, "hook", "evil", ["StatefulPartitionedCall:output:0"])
    next(n for n in wrapper.node_def if n.name == "Identity").input[0] = "hook:output:0"
    edit(gd, wrapper, hook)
    with open(pb, "wb") as f:
        f.write(sm.SerializeToString())
    return folder


def _func(gd, name, ins=(("x", F),), outs=(("y", F),)):
    f = gd.library.function.add()
    f.signature.name = name
    for a, t in ins:
        arg = f.signature.input_arg.add()
        arg.name, arg.type = a, t
    for a, t in outs:
        arg = f.signature.output_arg.add()
        arg.name, arg.type = a, t
    return f


def _node(f, name, op, inputs=(), T=None):
    n = f.node_def.add()
    n.name, n.op = name, op
    n.input.extend(inputs)
    if T is not None:
        n.attr["T"].type = T
    return n


def _const(f, name, value):
    from tensorflow.python.framework import tensor_util

    n = _node(f, name, "Const")
    n.attr["value"].tensor.CopyFrom(tensor_util.make_tensor_proto(value))
    n.attr["dtype"].type = n.attr["value"].tensor.dtype
    return n


def _call(f, name, target, inputs):
    n = _node(f, name, "PartitionedCall", inputs)
    n.attr["f"].func.name = target
    n.attr["Tin"].list.type.append(F)
    n.attr["Tout"].list.type.append(F)
    return n


def test_base_model_loads(tf2):
    """Held up: the unedited nested tf.functions inline to relu(x @ w + b)."""
    model = bnconvert.load(os.path.join(tf2, "base"))
    got = run_graph_def(model.graph_def, {model.inputs[0]: X}, model.outputs)[model.outputs[0]]
    np.testing.assert_allclose(got, [[7.5, 9.5], [0.0, 0.0]])


def test_function_named_like_an_op_is_refused(tf2, tmp_path):
    """A library function named 'Sigmoid', called as op 'Sigmoid': TensorFlow refuses to import
    such a library ("an op with the same name already exists"); inlining gave 'Sigmoid' the
    function's meaning (x * 100) and the model loaded."""
    def edit(gd, wrapper, hook):
        hook.op = "Sigmoid"
        hook.ClearField("attr")
        hook.attr["T"].type = F
        next(n for n in wrapper.node_def if n.name == "Identity").input[0] = "hook:y:0"
        f = _func(gd, "Sigmoid")
        _const(f, "k", np.float32(100))
        _node(f, "m", "Mul", ["x", "k:output:0"], T=F)
        f.ret["y"] = "m:z:0"

    with pytest.raises(BNConvertError) as e:
        bnconvert.load(_edit(tf2, tmp_path, "shadow", edit))
    assert "Sigmoid" in _one_line(e)


@pytest.mark.parametrize("ref", ["i:output:x", "i:output:0:junk", "i:output:-1"])
def test_malformed_tensor_reference_in_a_function_is_an_input_error(tf2, tmp_path, ref):
    """'i:output:x' raised ValueError (an internal error, exit 3); 'i:output:0:junk' was read as
    output 0.  Both are refused in one line naming the function."""
    def edit(gd, wrapper, hook):
        f = _func(gd, "evil")
        _node(f, "i", "Identity", ["x"], T=F)
        f.ret["y"] = ref

    with pytest.raises(BNConvertError) as e:
        bnconvert.load(_edit(tf2, tmp_path, "badref", edit))
    msg = _one_line(e)
    assert "evil" in msg and "badref" in msg, msg


def test_two_body_nodes_of_one_name_are_refused_naming_the_function(tf2, tmp_path):
    def edit(gd, wrapper, hook):
        f = _func(gd, "evil")
        _const(f, "k", np.float32(5))
        _const(f, "k", np.float32(7))
        _node(f, "m", "Mul", ["x", "k:output:0"], T=F)
        f.ret["y"] = "m:z:0"

    with pytest.raises(BNConvertError) as e:
        bnconvert.load(_edit(tf2, tmp_path, "dup", edit))
    msg = _one_line(e)
    assert "evil" in msg and "'k'" in msg and "dup" in msg, msg


def _doubling(levels: int, leaf):
    """evil -> evil1 (twice) -> ... -> evil{levels}: 2**levels copies of the leaf's body."""
    def edit(gd, wrapper, hook):
        for i in range(levels):
            f = _func(gd, "evil" if i == 0 else f"evil{i}")
            _call(f, "c0", f"evil{i + 1}", ["x"])
            _call(f, "c1", f"evil{i + 1}", ["c0:output:0"])
            f.ret["y"] = "c1:output:0"
        leaf(_func(gd, f"evil{levels}"))
    return edit


def _big_constant_leaf(f):
    big = _const(f, "big", np.zeros(1 << 16, np.float32))  # 256 KiB
    _const(f, "ax", np.array([0], np.int32))
    s = _node(f, "s", "Sum", ["big:output:0", "ax:output:0"], T=F)
    s.attr["Tidx"].type = 3
    _node(f, "a", "AddV2", ["x", "s:output:0"], T=F)
    f.ret["y"] = "a:z:0"
    return big


def test_inlining_is_bounded_by_bytes_not_only_nodes(tf2, tmp_path):
    """256 calls of a function holding a 256 KiB constant: 64 MiB of graph from a 256 KiB file
    (at 2**9 calls of 4 MiB, a 4 MB file made a 9 GB process).  With a 16 MiB budget inlining
    stops before building it, saying so in one line."""
    folder = _edit(tf2, tmp_path, "bomb", _doubling(8, _big_constant_leaf))
    assert os.path.getsize(os.path.join(folder, "saved_model.pb")) < 1 << 20
    from bnconvert import budget

    try:
        with pytest.raises(BNConvertError) as e:
            bnconvert.load(folder, max_memory="16M")
    finally:
        budget.configure(None)  # max_memory= sets the process-wide budget: not for the next tests
    msg = _one_line(e)
    assert "inlin" in msg and "function calls" in msg, msg


def test_inline_calls_takes_a_byte_bound():
    from tensorflow.core.framework import graph_pb2

    from bnconvert import inline

    gd = graph_pb2.GraphDef()
    _doubling(6, _big_constant_leaf)(gd, None, None)
    x = gd.node.add()
    x.name, x.op = "x", "Placeholder"
    x.attr["dtype"].type = F
    call = gd.node.add()
    call.name, call.op = "call", "PartitionedCall"
    call.input.append("x")
    call.attr["f"].func.name = "evil"
    call.attr["Tin"].list.type.append(F)
    call.attr["Tout"].list.type.append(F)
    out, n = inline.inline_calls(gd, "bomb", max_bytes=64 << 20)  # 64 x 256 KiB: fits
    assert n == 127 and sum(nd.op == "Const" and nd.name.endswith("big") for nd in out.node) == 64
    with pytest.raises(BNConvertError, match="more than"):
        inline.inline_calls(gd, "bomb", max_bytes=4 << 20)


def _call_chain(gd, depth: int) -> None:
    """Functions ``evil``, ``evil1`` … each calling the next, ``depth`` calls deep; the last is Identity."""
    for i in range(depth):
        f = _func(gd, "evil" if i == 0 else f"evil{i}")
        _call(f, "c", f"evil{i + 1}", ["x"])
        f.ret["y"] = "c:output:0"
    f = _func(gd, f"evil{depth}")
    _node(f, "i", "Identity", ["x"], T=F)
    f.ret["y"] = "i:output:0"


def test_deeply_nested_calls_are_refused_quickly(tf2, tmp_path):
    """3,000 functions each calling the next: every level's node names carry the enclosing call's
    name, so the graph grows with the square of the depth (20,000 levels: a 2.6 MB file took 490 s
    and 9.5 GB).  Refused in one line, quickly."""
    def edit(gd, wrapper, hook):
        _call_chain(gd, 3000)

    folder = _edit(tf2, tmp_path, "deep", edit)
    t = time.monotonic()
    with pytest.raises(BNConvertError) as e:
        bnconvert.load(folder)
    assert "nested" in _one_line(e)
    assert time.monotonic() - t < 20


def test_moderate_nesting_still_inlines(tf2, tmp_path):
    """Held up: 40 nested calls (deeper than any Keras model) inline to the same function."""
    def edit(gd, wrapper, hook):
        _call_chain(gd, 40)

    model = bnconvert.load(_edit(tf2, tmp_path, "deep40", edit))
    got = run_graph_def(model.graph_def, {model.inputs[0]: X}, model.outputs)[model.outputs[0]]
    np.testing.assert_allclose(got, [[7.5, 9.5], [0.0, 0.0]])


def test_reads_after_updates_through_a_cycle_and_not_before():
    """The reachability behind the refusal: a read reached from an update through a cycle (a while
    loop's NextIteration) counts, a read of the same variable before the update or of another
    variable does not; thousands of variables on a long chain stay linear (bit sets)."""
    from tensorflow.core.framework import graph_pb2

    from bnconvert.freeze import reads_after_updates

    gd = graph_pb2.GraphDef()

    def add(name, op, inputs=(), **types):
        n = gd.node.add()
        n.name, n.op = name, op
        n.input.extend(inputs)
        for k, v in types.items():
            n.attr[k].type = v

    add("c", "Const", dtype=F)
    for v in ("v", "w"):
        add(v, "VarHandleOp", dtype=F)
    add("early", "ReadVariableOp", ["v"], dtype=F)
    add("u", "AssignVariableOp", ["v", "early"], dtype=F)
    add("m", "Merge", ["c", "n"], T=F, N=2)  # m -> i -> n -> m: a cycle the update enters
    add("i", "Identity", ["m:0", "^u"], T=F)
    add("n", "NextIteration", ["i"], T=F)
    add("late", "ReadVariableOp", ["v", "^m"], dtype=F)
    add("other", "ReadVariableOp", ["w", "^m"], dtype=F)
    assert reads_after_updates(gd) == [("late", "v", ["u"])]
    assert reads_after_updates(gd, {"early", "other"}) == []

    chain = graph_pb2.GraphDef()
    prev = "c0"
    n = chain.node.add()
    n.name, n.op = prev, "Placeholder"
    for i in range(1, 20000):
        n = chain.node.add()
        n.name, n.op, n.input[:] = f"c{i}", "Identity", [prev]
        prev = n.name
    for j in range(2000):
        for name, op, inputs in ((f"v{j}", "VarHandleOp", []), (f"u{j}", "AssignVariableOp", [f"v{j}", "c0"]),
                                 (f"r{j}", "ReadVariableOp", [f"v{j}", f"^{prev}"])):
            n = chain.node.add()
            n.name, n.op, n.input[:] = name, op, inputs
        chain.node[1 + (j * 7) % 19000].input.append(f"^u{j}")
    t = time.monotonic()
    assert len(reads_after_updates(chain)) == 2000
    assert time.monotonic() - t < 30  # per-variable searches took minutes at 10x this size


def test_recursion_and_file_ops_deep_in_calls_still_refused(tf2, tmp_path):
    """Held up: mutually recursive functions are refused before inlining; a WriteFile three calls
    deep (wired only as a control output, as tf.function does) is inlined and refused, unrun."""
    from bnconvert.errors import GraphError, UnsafeGraphError

    def recursive(gd, wrapper, hook):
        for me, other in (("evil", "evil2"), ("evil2", "evil")):
            f = _func(gd, me)
            _call(f, "c", other, ["x"])
            f.ret["y"] = "c:output:0"

    with pytest.raises(GraphError, match="calls itself"):
        bnconvert.load(_edit(tf2, tmp_path, "recursive", recursive))

    target = os.path.join(str(tmp_path), "PWNED")

    def writer(gd, wrapper, hook):
        for i in range(3):
            f = _func(gd, "evil" if i == 0 else f"evil{i}")
            _call(f, "c", f"evil{i + 1}", ["x"])
            f.ret["y"] = "c:output:0"
            f.signature.control_output.append("c")
            f.control_ret["c"] = "c"
        f = _func(gd, "evil3")
        _const(f, "fn", np.array(target.encode(), dtype=object))
        _const(f, "ct", np.array(b"pwned", dtype=object))
        _node(f, "wf", "WriteFile", ["fn:output:0", "ct:output:0"])
        _node(f, "i", "Identity", ["x"], T=F)
        f.ret["y"] = "i:output:0"
        f.signature.control_output.append("wf")
        f.control_ret["wf"] = "wf"

    with pytest.raises(UnsafeGraphError, match="WriteFile"):
        bnconvert.load(_edit(tf2, tmp_path, "writer", writer))
    assert not os.path.exists(target)
