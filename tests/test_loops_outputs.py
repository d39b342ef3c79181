"""Issue 9 (loops, several outputs, training graphs) and issue 15 (Merge ports, Graph caches) on
graphs shaped like real TF1 files (fixtures/realtf1/, built by tools/fixtures_realtf1.py).

Each fixture is converted once (module-scoped, ``--to pb,onnx``) and its files are checked
against the ORIGINAL graph's outputs recorded in the fixture's .npz, in TensorFlow and
onnxruntime, independently of bnconvert.verify.
"""
import json
import os

import numpy as np
import pytest

import bnconvert
from bnconvert.analysis import analyze
from bnconvert.graph import Graph

from conftest import FIXTURES, run_graph_def

REAL = os.path.join(FIXTURES, "realtf1")
LOOP_OPS = {"Enter", "Exit", "NextIteration", "LoopCond", "TensorArrayV3"}


def _spec(name):
    with open(os.path.join(REAL, name + ".json")) as f:
        spec = json.load(f)
    spec["path"] = os.path.join(REAL, spec["graph"] if spec["format"] != "checkpoint" else name)
    d = np.load(os.path.join(REAL, spec["data"]))
    spec["feeds"] = {t: d[f"input_{i}"] for i, t in enumerate(spec["inputs"])}
    spec["expected"] = {t: d[f"output_{i}"] for i, t in enumerate(spec["outputs"])}
    return spec


def _convert(name, tmp_path_factory):
    spec = _spec(name)
    out = tmp_path_factory.mktemp(name)
    # verify=False: _check_files checks both files against the recorded original outputs
    report = bnconvert.convert(spec["path"], str(out), to=("pb", "onnx"), verify=False)
    return spec, report


@pytest.fixture(scope="module")
def crnn_gru(tmp_path_factory):
    return _convert("crnn_gru_ctc", tmp_path_factory)


@pytest.fixture(scope="module")
def crnn_lstm(tmp_path_factory):
    return _convert("crnn_lstm_ctc", tmp_path_factory)


@pytest.fixture(scope="module")
def rnn_bn(tmp_path_factory):
    return _convert("rnn_bn_cell", tmp_path_factory)


@pytest.fixture(scope="module")
def two_heads(tmp_path_factory):
    return _convert("two_heads", tmp_path_factory)


@pytest.fixture(scope="module")
def train_ckpt(tmp_path_factory):
    return _convert("mnist_train_ckpt", tmp_path_factory)


def _assert_close(got, ref, name):
    ref = np.asarray(ref)
    if ref.dtype.kind in "iub":
        np.testing.assert_array_equal(got, ref, err_msg=name)
        return
    err = np.abs(np.asarray(got, np.float64) - ref.astype(np.float64)).max()
    assert err <= 1e-5 * max(np.abs(ref).max(), 1e-12), (name, err)


def _check_files(spec, report):
    """The folded .pb (TensorFlow) and the .onnx (onnxruntime) give the original's outputs."""
    import onnxruntime as ort

    assert report.ok and report.outputs == spec["outputs"]
    folded = bnconvert.load(report.files["pb"]).graph_def
    got = run_graph_def(folded, spec["feeds"], spec["outputs"])
    for name, ref in spec["expected"].items():
        _assert_close(got[name], ref, "tf:" + name)
    sess = ort.InferenceSession(report.files["onnx"], providers=["CPUExecutionProvider"])
    feeds = {i.name: spec["feeds"][i.name] for i in sess.get_inputs()}
    names = [o.name for o in sess.get_outputs()]
    for name, val in zip(names, sess.run(names, feeds)):
        _assert_close(val, spec["expected"][name], "onnx:" + name)
    return Graph(folded)


# ---------------------------------------------------------------------- loops and frames
@pytest.mark.parametrize("which", ["crnn_gru", "crnn_lstm", "rnn_bn"])
def test_loop_graph_folds_and_runs(which, request):
    """Issue 9: the folded .pb of a dynamic_rnn (TF1 while frame) graph imports and runs in
    TensorFlow and exports to ONNX; the BN before the loop — or inside its body — is folded,
    the loop is kept."""
    spec, report = request.getfixturevalue(which)
    assert report.bn == {"found": 1, "folded": 1, "scale_shift": 0, "refused": 0}
    g = _check_files(spec, report)
    ops = g.op_histogram()
    assert LOOP_OPS <= set(ops), ops
    assert not {"FusedBatchNormV3", "Rsqrt"} & set(ops), ops
    # every Switch left is a loop's (its predicate is a LoopCond): the BN conds are resolved
    for n in g.nodes.values():
        if n.op == "Switch":
            assert g.node(g.inputs(n)[1]).op == "LoopCond", n.name
    # constants inside the loop body keep the control edge that puts them into the frame
    placed = [n for n in g.nodes.values() if n.op == "Const" and g.control_inputs(n)]
    assert placed and all("while" in c for n in placed for c in g.control_inputs(n))


def test_seq_len_placeholder_is_an_input(crnn_lstm):
    spec, report = crnn_lstm
    assert report.inputs == ["x:0", "seq_len:0"] == spec["inputs"]


def test_constant_branches_of_an_unresolved_cond_stay_in_their_branch():
    """A cond on a computed predicate (not a training flag) is left alone, and so are the control
    edges from its pivots: each branch constant stays in its branch, so the Merge gets exactly
    one live input (dropping them made both constants live: a wrong Merge)."""
    import tensorflow as tf

    g = tf.Graph()
    with g.as_default():
        x = tf.compat.v1.placeholder(tf.float32, [None, 3], name="x")
        w = tf.constant(np.arange(6, dtype=np.float32).reshape(3, 2) - 2.0)
        h = tf.matmul(x, w)
        pred = tf.greater(tf.reduce_sum(h), 0.0)
        sw_f, sw_t = tf.raw_ops.Switch(data=pred, pred=pred)
        pivot_f, pivot_t = tf.identity(sw_f, name="switch_f"), tf.identity(sw_t, name="switch_t")
        with g.control_dependencies([pivot_t]):
            c_t = tf.constant(3.0, name="c_t")
        with g.control_dependencies([pivot_f]):
            c_f = tf.constant(-7.0, name="c_f")
        m, _ = tf.raw_ops.Merge(inputs=[c_f, c_t])
        tf.multiply(h, m, name="out")
    res = bnconvert.fold(g.as_graph_def())
    assert res.report.outputs == ["out:0"]
    for sign in (1.0, -1.0):
        xv = sign * np.ones((2, 3), np.float32)
        ref = run_graph_def(g.as_graph_def(), {"x:0": xv}, ["out:0"])["out:0"]
        got = run_graph_def(res.graph_def, {"x:0": xv}, ["out:0"])["out:0"]
        np.testing.assert_array_equal(got, ref)


# ---------------------------------------------------------------------- Merge ports
def _merge_graph(order):
    """x -> Switch(flag) -> (x*2 | x+1) -> Merge(order) -> out, and Cast(Merge:1) -> which."""
    import tensorflow as tf

    g = tf.Graph()
    with g.as_default():
        x = tf.compat.v1.placeholder(tf.float32, [None, 2], name="x")
        w = tf.constant(np.array([[1.0, 2.0], [3.0, -1.0]], np.float32))
        flag = tf.compat.v1.placeholder(tf.bool, [], name="flag")
        f, t = tf.raw_ops.Switch(data=tf.matmul(x, w), pred=flag)
        branches = {"f": f * 2.0, "t": t + 1.0}
        value, index = tf.raw_ops.Merge(inputs=[branches[k] for k in order])
        tf.identity(value, name="out")
        tf.cast(index, tf.float32, name="which")
    return g.as_graph_def()


@pytest.mark.parametrize("order", ["ft", "tf"])
@pytest.mark.parametrize("flag", [False, True])
def test_merge_value_index_gets_the_taken_branch(order, flag):
    """Issue 15: a Merge consumed at :1 (value_index) gets the index of the branch taken."""
    gd = _merge_graph(order)
    res = bnconvert.fold(gd, outputs=["out:0", "which:0"], set_flags={"flag": flag})
    assert not {"Switch", "Merge"} & set(Graph(res.graph_def).op_histogram())
    xv = np.array([[1.0, -2.0], [0.5, 3.0]], np.float32)
    ref = run_graph_def(gd, {"x:0": xv}, ["out:0", "which:0"], flags={"flag:0": flag})
    got = run_graph_def(res.graph_def, {"x:0": xv}, ["out:0", "which:0"])
    assert got["which:0"] == ref["which:0"] == order.index("t" if flag else "f")
    np.testing.assert_array_equal(got["out:0"], ref["out:0"])


# ---------------------------------------------------------------------- several outputs
def test_two_heads_are_two_outputs(two_heads):
    spec, report = two_heads
    assert report.outputs == ["heatmaps/BiasAdd:0", "keypoints/BiasAdd:0"]
    assert not report.outputs_guessed
    _check_files(spec, report)
    assert "heatmaps/BiasAdd:0, keypoints/BiasAdd:0" in report.summary()


def test_inspect_shows_every_head_and_never_refuses(capsys):
    from bnconvert.cli.main import main

    assert main(["inspect", os.path.join(REAL, "two_heads.pb"), "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["outputs"] == ["heatmaps/BiasAdd:0", "keypoints/BiasAdd:0"] and d["outputs_guessed"] is False
    assert main(["inspect", os.path.join(REAL, "mnist_train_ckpt")]) == 0
    out = capsys.readouterr().out
    assert "logits/BiasAdd:0 (guessed" in out and "candidates: logits/BiasAdd:0, ArgMax:0" in out


def test_compare_uses_the_analysis_and_checks_both_heads(two_heads):
    spec, report = two_heads
    result = bnconvert.compare(spec["path"], report.files["onnx"], data=os.path.join(REAL, spec["data"]))
    (entry,) = result.values()
    assert entry["ok"] and [o["name"] for o in entry["outputs"]] == spec["outputs"]


# ---------------------------------------------------------------------- training graphs
def test_training_checkpoint_output_is_the_logits(train_ckpt):
    """Issue 9: gradient/optimizer/summary/saver consumers make no tensor an output; the
    checkpoint's default output is the logits (it was the first dense layer), marked guessed."""
    spec, report = train_ckpt
    assert report.outputs == ["logits/BiasAdd:0"] == spec["outputs"]
    assert report.inputs == ["x:0"]
    assert report.outputs_guessed and "logits/BiasAdd:0" in report.output_candidates
    assert "guessed" in report.summary().splitlines()[2]
    assert report.bn["folded"] == 1
    _check_files(spec, report)
    with open(report.files["report"]) as f:
        saved = json.load(f)
    assert saved["outputs_guessed"] is True and saved["output_candidates"] == report.output_candidates


def test_crnn_training_checkpoint_outputs_the_decoder(tmp_path_factory):
    """A checkpoint keeps every node: unused loop Exits, zero-state shape arithmetic,
    reduce_min(seq_len), the loss and the edit-distance metric.  None of them is an output; the
    labels (sparse placeholder) are no input; the folded loop graph runs."""
    spec, report = _convert("crnn_train_ckpt", tmp_path_factory)
    assert report.outputs == ["dense_decoded:0"] and report.outputs_guessed
    assert report.inputs == ["x:0", "seq_len:0"] == spec["inputs"]
    assert report.bn["folded"] == 1
    _check_files(spec, report)


def test_training_machinery_is_found_by_structure_not_names():
    """Renaming the gradients scope does not turn gradient ops into output candidates."""
    from bnconvert import endpoints

    model = bnconvert.load(os.path.join(REAL, "mnist_train_ckpt"))
    gd = type(model.graph_def)()
    gd.CopyFrom(model.graph_def)
    rename = {n.name: n.name.replace("gradients", "g") for n in gd.node}
    for n in gd.node:
        n.name = rename[n.name]
        for i, s in enumerate(n.input):
            ctrl, body = s.startswith("^"), s.lstrip("^")
            src, sep, port = body.partition(":")
            n.input[i] = ("^" if ctrl else "") + rename.get(src, src) + sep + port
    a = analyze(gd)
    assert a.outputs == ["logits/BiasAdd:0"] and a.outputs_guessed
    assert any(n.startswith("g/") for n in endpoints.training_machinery(a.graph))


def test_inference_graph_outputs_are_not_guessed():
    a = analyze(bnconvert.load(os.path.join(FIXTURES, "fused_v3_conv.pb")))
    assert a.outputs == ["out:0"] and not a.outputs_guessed and a.flags == {"phase:0": False}


# ---------------------------------------------------------------------- Graph
def test_const_cache_follows_edits():
    """Issue 15: cached constants never go stale after set_input / rewire / remove+add."""
    import tensorflow as tf

    g = tf.Graph()
    with g.as_default():
        a = tf.constant(np.float32(2.0), name="a")
        b = tf.constant(np.float32(5.0), name="b")
        s = tf.add(a, 1.0, name="s")
        tf.multiply(s, 3.0, name="m")
    gr = Graph(g.as_graph_def())
    assert gr.const("m:0") == 9.0
    gr.set_input("s", 0, "b:0")
    assert gr.const("s:0") == 6.0 and gr.const("m:0") == 18.0
    gr.rewire("s:0", "a:0")
    assert gr.const("m:0") == 6.0
    node = gr.nodes["a"]
    gr.remove_node("a")
    assert gr.const("m:0") is None
    node.attr["value"].tensor.float_val[:] = [4.0]
    gr.add_node(node)
    assert gr.const("m:0") == 12.0


def test_output_ports_come_from_the_consumer_index():
    import tensorflow as tf

    g = tf.Graph()
    with g.as_default():
        parts = tf.unstack(tf.constant(np.arange(20, dtype=np.float32)), name="u")
        tf.identity(parts[17], name="p17")
    gr = Graph(g.as_graph_def())
    assert gr.output_tensors("u") == ["u:0", "u:17"] and gr.used_ports("u") == [17]
    gr.remove_node("p17")
    assert gr.output_tensors("u") == ["u:0"]


def test_const_of_incompatible_shapes_is_none():
    import tensorflow as tf

    gd = tf.Graph().as_graph_def()
    g = tf.Graph()
    with g.as_default():
        tf.constant(np.ones(6, np.float32), name="v")
        tf.constant(np.array([4], np.int32), name="shape")
    gd = g.as_graph_def()
    r = gd.node.add()
    r.name, r.op = "r", "Reshape"
    r.input.extend(["v", "shape"])
    r.attr["T"].type, r.attr["Tshape"].type = 1, 3
    assert Graph(gd).const("r:0") is None  # numpy's ValueError: not a constant we can compute


def test_bn_inside_the_loop_body_folds_into_frame_constants(rnn_bn):
    """The cond inside the frame is decided through the Enter that carries the flag in; the
    folded weights enter the frame as loop invariants (Enter is_constant), like TF's own."""
    spec, report = rnn_bn
    assert report.layers[0]["producer"].startswith("rnn/while/") and report.layers[0]["action"] == "fold"
    g = Graph(bnconvert.load(report.files["pb"]).graph_def)
    matmul = g.nodes[report.layers[0]["producer"]]
    weights = g.node(g.inputs(matmul)[1])
    assert weights.op == "Enter" and weights.attr["is_constant"].b
    assert g.const(g.inputs(matmul)[1]) is not None
