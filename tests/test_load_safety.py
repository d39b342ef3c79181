"""Load executes nothing, the execution allowlist, and budgets computed before decoding (issue 14).

The attack corpus runs through the CLI in tests/test_attacks.py; these are the in-process checks
of the pieces: no session is ever created by loading a checkpoint or SavedModel, the frozen
values equal the checkpoint's, the allowlist names real ops and accepts every fixture, and the
budget arithmetic refuses bombs without allocating them.
"""
from __future__ import annotations

import glob
import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np
import pytest
import tensorflow as tf
from tensorflow.python.framework import op_def_registry

import bnconvert
from bnconvert import budget, tfproto
from bnconvert.errors import GraphError, InputError, UnsafeGraphError
from bnconvert.safety import SAFE_OPS, check_functions, check_safe

from conftest import FIXTURES


def _no_session(monkeypatch):
    def refuse(*a, **k):
        raise AssertionError("a TensorFlow session was created while loading")

    monkeypatch.setattr(tf.compat.v1, "Session", refuse)
    monkeypatch.setattr(tf.compat.v1, "InteractiveSession", refuse)


@pytest.mark.parametrize("name", ["ckpt_dense", "ckpt_dense/model.meta", "savedmodel_conv"])
def test_checkpoints_and_savedmodels_load_without_a_session(name, monkeypatch):
    _no_session(monkeypatch)
    m = bnconvert.load(os.path.join(FIXTURES, name))
    assert not {n.op for n in m.graph_def.node} & {"VariableV2", "VarHandleOp", "SaveV2", "RestoreV2"}


def test_frozen_values_are_the_checkpoints():
    from tensorflow.python.training import py_checkpoint_reader

    m = bnconvert.load(os.path.join(FIXTURES, "ckpt_dense"))
    reader = py_checkpoint_reader.NewCheckpointReader(os.path.join(FIXTURES, "ckpt_dense", "model"))
    consts = {n.name: n for n in m.graph_def.node if n.op == "Const"}
    keys = reader.get_variable_to_shape_map()
    assert keys
    for key in keys:
        np.testing.assert_array_equal(tfproto.make_ndarray(consts[key].attr["value"].tensor), reader.get_tensor(key))


def test_savedmodel_pbtxt_loads_like_the_pb(tmp_path):
    from google.protobuf import text_format
    from tensorflow.core.protobuf import saved_model_pb2
    import shutil

    src = os.path.join(FIXTURES, "savedmodel_conv")
    dst = tmp_path / "sm"
    shutil.copytree(src, dst)
    sm = saved_model_pb2.SavedModel()
    sm.ParseFromString((dst / "saved_model.pb").read_bytes())
    (dst / "saved_model.pb").unlink()
    (dst / "saved_model.pbtxt").write_text(text_format.MessageToString(sm))
    a, b = bnconvert.load(src), bnconvert.load(str(dst))
    assert a.graph_def == b.graph_def and a.inputs == b.inputs and a.outputs == b.outputs


def test_allowlist_names_real_ops_and_its_stateful_members_are_reviewed():
    assert sorted(o for o in SAFE_OPS if op_def_registry.get(o) is None) == []
    stateful = {o for o in SAFE_OPS if op_def_registry.get(o).is_stateful}
    # each of these keeps no state across runs and touches nothing outside: random ops, asserts and
    # prints to stderr, function calls / control flow (their bodies are checked), TensorArrays
    reviewed = {"Assert", "Case", "CheckNumerics", "CheckNumericsV2", "If", "Multinomial", "Print", "PrintV2",
                "RandomGamma", "RandomPoisson", "RandomPoissonV2", "RandomShuffle", "RandomStandardNormal",
                "RandomUniform", "RandomUniformInt", "StatefulPartitionedCall", "StatelessRandomGetAlg",
                "TensorArrayCloseV3", "TensorArrayConcatV3", "TensorArrayGatherV3", "TensorArrayGradV3",
                "TensorArrayReadV3", "TensorArrayScatterV3", "TensorArraySizeV3", "TensorArraySplitV3",
                "TensorArrayV3", "TensorArrayWriteV3", "TruncatedNormal", "While"}
    assert stateful == reviewed
    for op in ("VariableV2", "VarHandleOp", "QueueDequeueV2", "FIFOQueueV2", "ReadFile", "WriteFile", "PyFunc",
               "Abort", "HashTableV2", "LookupTableFindV2", "DecodeJpeg", "ParseExample", "IteratorGetNext"):
        assert op not in SAFE_OPS, op


@pytest.mark.parametrize("path", sorted(glob.glob(os.path.join(FIXTURES, "*.pb"))),
                         ids=lambda p: os.path.basename(p))
def test_every_fixture_is_allowed(path):
    check_safe(bnconvert.load(path).graph_def, what=path)


def test_while_loop_and_tensor_array_graphs_are_allowed():
    g = tf.Graph()
    with g.as_default():
        x = tf.compat.v1.placeholder(tf.float32, [3], name="x")
        ta = tf.TensorArray(tf.float32, size=3)
        _, ta = tf.while_loop(lambda i, t: i < 3, lambda i, t: (i + 1, t.write(i, x * tf.cast(i, tf.float32))),
                              [tf.constant(0), ta])
        tf.identity(ta.stack(), name="out")
    check_safe(g.as_graph_def())


def test_unknown_stateful_op_is_refused_by_name():
    g = tf.Graph()
    with g.as_default():
        x = tf.compat.v1.placeholder(tf.float32, [1, 4], name="x")
        q = tf.queue.FIFOQueue(4, [tf.float32], shapes=[[1, 4]], name="q")
        tf.identity(x + q.dequeue(name="dequeue"), name="out")
    with pytest.raises(UnsafeGraphError, match=r"FIFOQueueV2 \(node 'q'\).*QueueDequeueV2.*--allow-unsafe-ops"):
        check_safe(g.as_graph_def(), what="q.pb")
    check_safe(g.as_graph_def(), allow_unsafe=True)


def test_recursion_through_a_while_body_is_refused():
    from tensorflow.core.framework import graph_pb2

    gd = graph_pb2.GraphDef()
    f = gd.library.function.add()
    f.signature.name = "body"
    n = f.node_def.add()
    n.name, n.op = "loop", "While"
    n.attr["body"].func.name = "body"
    n.attr["cond"].func.name = "cond"
    gd.library.function.add().signature.name = "cond"
    with pytest.raises(GraphError, match="'body' calls itself"):
        check_functions(gd, "w.pb")
    with pytest.raises(GraphError, match="calls itself"):
        check_safe(gd, allow_unsafe=True)  # a crash is refused whatever the user allows


def _bomb(dims, dtype=1, **vals):
    from tensorflow.core.framework import tensor_pb2

    t = tensor_pb2.TensorProto(dtype=dtype, **vals)
    for d in dims:
        t.tensor_shape.dim.add().size = d
    return t


def test_decoded_sizes_come_from_the_declared_shape():
    assert budget.tensor_bytes(_bomb([1 << 20, 1 << 20], float_val=[1.0])) == 4 << 40
    assert budget.tensor_bytes(_bomb([2, 3], tensor_content=b"\0" * 24)) == 24
    assert budget.tensor_bytes(_bomb([4], dtype=7, string_val=[b"ab", b"c"])) == 4 * 16 + 2 + 1 + 2 * 1
    assert budget.tensor_bytes(_bomb([], dtype=2, double_val=[1.0])) == 8


def test_make_ndarray_refuses_a_bomb_before_allocating():
    with pytest.raises(InputError, match="memory budget"):
        tfproto.make_ndarray(_bomb([1 << 20, 1 << 20], float_val=[1.0]), "bomb")
    assert tfproto.make_ndarray(_bomb([2, 2], float_val=[1.0])).tolist() == [[1.0, 1.0], [1.0, 1.0]]


def test_max_memory_parsing_and_default():
    assert budget.parse_size("4G") == 4 << 30 and budget.parse_size("512M") == 512 << 20
    assert budget.parse_size("1.5GiB") == 3 << 29 and budget.parse_size(1000) == 1000
    for bad in ("0", "-1G", "lots"):
        with pytest.raises(InputError):
            budget.parse_size(bad)
    assert budget.default_limit() == min(8 << 30, budget.physical_memory() // 2)


def test_load_max_memory_names_the_constant(tmp_path):
    p = os.path.join(FIXTURES, "fused_v3_conv.pb")
    with pytest.raises(InputError, match=r"constant '.*' decodes to .*over the memory budget of 100 bytes"):
        bnconvert.load(p, max_memory=100)
    try:
        assert bnconvert.load(p, max_memory="1G").graph_def.node
    finally:
        from bnconvert import budget

        budget.configure(None)  # max_memory= sets the process-wide budget: not for the next tests


def test_a_whole_conversion_fits_a_small_memory_budget(tmp_path):
    """--max-memory caps every stage child's data segment: a small model still converts and
    verifies under 300 MiB (the loader once asked read() for a 2 GiB buffer and failed)."""
    import subprocess
    import sys

    model = os.path.join(FIXTURES, "mnist_conv.pb")
    p = subprocess.run([sys.executable, "-m", "bnconvert.cli.main", "fold", model, "-o", str(tmp_path / "o"),
                        "--max-memory", "300M", "-q"], capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr
    assert sorted(os.listdir(tmp_path / "o")) == ["mnist_conv.folded.pb", "mnist_conv.onnx", "mnist_conv.report.json",
                                                  "mnist_conv.tflite"]


def test_npz_headers_are_checked_before_loading(tmp_path):
    ok = tmp_path / "ok.npz"
    np.savez(ok, x=np.zeros((2, 3), np.float32))
    assert budget.check_npz(str(ok)) == 24
    with pytest.raises(InputError, match="memory budget"):
        budget.check_npz(str(ok), budget=10)


def test_resource_variables_behind_a_cond_and_an_optimizer(tmp_path, monkeypatch):
    """Resource variables in a TF1 graph: handles pass through cond Switches, gradients read
    VariableShape, Adam updates hang on control edges; freezing still gives the session's output.
    (A functional If/While taking a handle is refused in one line: not covered here.)"""
    from tensorflow.python.ops import control_flow_util

    monkeypatch.setattr(control_flow_util, "ENABLE_CONTROL_FLOW_V2", False)  # TF1's Switch/Merge cond
    g = tf.Graph()
    with g.as_default():
        x = tf.compat.v1.placeholder(tf.float32, [None, 8, 8, 3], name="x")
        t = tf.compat.v1.placeholder_with_default(False, [], name="is_training")
        with tf.compat.v1.variable_scope("net", use_resource=True):
            w = tf.compat.v1.get_variable("w", initializer=np.random.default_rng(0).normal(size=(3, 3, 3, 4))
                                          .astype(np.float32))
            y = tf.nn.conv2d(x, w, 1, "SAME")
            mean = tf.compat.v1.get_variable("mean", initializer=np.full(4, 0.3, np.float32))
            y = tf.cond(t, lambda: y - tf.reduce_mean(y, [0, 1, 2]), lambda: y - mean.read_value())
        out = tf.identity(tf.nn.relu(y), name="out")
        tf.compat.v1.train.AdamOptimizer().minimize(tf.reduce_mean(out))
        saver = tf.compat.v1.train.Saver()
        xv = np.random.default_rng(1).normal(size=(2, 8, 8, 3)).astype(np.float32)
        with tf.compat.v1.Session() as s:
            s.run(tf.compat.v1.global_variables_initializer())
            ref = s.run(out, {x: xv})
            saver.save(s, str(tmp_path / "model"))
    from bnconvert.verify import run_tf

    m = bnconvert.load(str(tmp_path / "model.meta"), outputs=["out:0"])
    np.testing.assert_array_equal(run_tf(m.graph_def, {"x:0": xv}, ["out:0"], flags={"is_training": False})["out:0"], ref)
    assert bnconvert.load(str(tmp_path)).graph_def.node  # no outputs: the training graph freezes too
