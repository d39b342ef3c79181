"""Review of the dropout-parameter rule (bnconvert.inference.find_dropout_params, to_inference,
numeric ``--set``): graphs where setting keep_prob = 1 / zeroing the draw would change the model,
placeholders that are not only a dropout's parameter, ``--set`` values the placeholder's type
cannot hold, a keep_prob of shape [1], and dropouts inside while loops (DropoutWrapper)."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest

from conftest import tf1_graph


def _tf():
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    import tensorflow as tf

    return tf


def _graph(body, dtype="float32"):
    """x [None, 6] -> matmul -> batch norm -> body(tf, h) (which names its output "y"): a Graph."""
    tf = _tf()
    from bnconvert.graph import Graph

    g = tf.Graph()
    with g.as_default(), tf1_graph(tf):
        body(tf, _dense_bn(tf, tf.compat.v1.placeholder(dtype, [None, 6], name="x")))
    return Graph(g.as_graph_def())


def _dense_bn(tf, x):
    """x [None, 6] -> matmul -> a batch norm (tf.nn.batch_normalization, constants): [None, 8]."""
    rs = np.random.RandomState(0)
    c = lambda v: tf.constant(v, x.dtype)  # noqa: E731
    h = tf.matmul(x, c(rs.randn(6, 8)))
    return tf.nn.batch_normalization(h, c(rs.randn(8)), c(rs.rand(8) + 0.5), c(rs.randn(8)), c(rs.rand(8) + 0.5), 1e-3)


def _ops(g) -> set[str]:
    return {n.op for n in g.nodes.values()}


def _run(gd, feeds, out="y:0", times=1):
    tf = _tf()
    g = tf.Graph()
    with g.as_default():
        tf.compat.v1.import_graph_def(gd, name="")
    with tf.compat.v1.Session(graph=g) as s:
        return [s.run(out, feeds) for _ in range(times)]


# --- a draw with another reader is not the dropout's alone -------------------------------------


def test_a_draw_that_also_feeds_the_output_stays_random():
    """``y = dropout(h) + u`` with the dropout's own draw ``u``: keep_prob is still set to 1, but
    zeroing ``u`` would make ``y = h`` where the model computes ``h + u``."""
    from bnconvert.inference import to_inference

    def body(tf, h):
        kp = tf.compat.v1.placeholder(tf.float32, name="keep_prob")
        u = tf.random.uniform(tf.shape(h))
        mask = tf.cast(u >= 1 - kp, tf.float32)
        tf.identity(h / kp * mask + u, name="y")

    g = _graph(body)
    res = to_inference(g)
    assert res.flags == {"keep_prob:0": 1.0}
    assert res.dropout_draws_removed == []
    assert "RandomUniform" in _ops(g)


def test_a_draw_shared_by_two_dropouts_is_zeroed_only_when_both_keep_every_unit():
    """One draw, two keep masks (rates r1, r2).  With ``--set r2=0.3`` the draw must stay random:
    zeroed, ``0 >= 0.3`` would drop every unit of the second dropout."""
    from bnconvert.inference import to_inference

    def body(tf, h):
        r1 = tf.compat.v1.placeholder(tf.float32, [], name="r1")
        r2 = tf.compat.v1.placeholder(tf.float32, [], name="r2")
        u = tf.random.uniform(tf.shape(h))
        a = tf.where(u >= r1, h / (1 - r1), tf.zeros_like(h))
        b = tf.where(u >= r2, h / (1 - r2), tf.zeros_like(h))
        tf.identity(a + 2 * b, name="y")

    g = _graph(body)
    res = to_inference(g, {"r2": 0.3})
    assert res.flags == {"r1:0": 0.0, "r2:0": pytest.approx(0.3)}
    assert res.dropout_draws_removed == [] and "RandomUniform" in _ops(g)
    g = _graph(body)
    res = to_inference(g)  # both at rate 0: every draw keeps every unit of both
    assert res.flags == {"r1:0": 0.0, "r2:0": 0.0}
    assert res.dropout_draws_removed == ["random_uniform/RandomUniform"]


def test_a_draw_also_compared_with_a_constant_rate_stays_random():
    from bnconvert.inference import to_inference

    def body(tf, h):
        r = tf.compat.v1.placeholder(tf.float32, [], name="r")
        u = tf.random.uniform(tf.shape(h))
        a = tf.where(u >= r, h / (1 - r), tf.zeros_like(h))
        b = tf.where(u >= 0.5, h / 0.5, tf.zeros_like(h))  # a fixed-rate dropout on the same draw
        tf.identity(a + 2 * b, name="y")

    g = _graph(body)
    res = to_inference(g)
    assert res.dropout_draws_removed == [] and "RandomUniform" in _ops(g)


def test_the_folded_model_with_a_shared_draw_equals_the_original(cli, tmp_path):
    """End to end: the draw also feeds the output; with a fixed seed the original (keep_prob 1)
    and the folded graph draw the same numbers, so they must agree exactly."""
    tf = _tf()

    g = tf.Graph()
    with g.as_default():
        tf.compat.v1.set_random_seed(1)
        h = _dense_bn(tf, tf.compat.v1.placeholder(tf.float32, [None, 6], name="x"))
        kp = tf.compat.v1.placeholder(tf.float32, name="keep_prob")
        u = tf.random.uniform(tf.shape(h), seed=2)
        tf.identity(h / kp * tf.cast(u >= 1 - kp, tf.float32) + u, name="y")
    path = tmp_path / "shared.pb"
    path.write_bytes(g.as_graph_def().SerializeToString())
    r = cli("fold", path, "-o", tmp_path / "out", "--force", "--json", "--no-verify")
    assert r.returncode == 0, r.stderr[-3000:]
    report = json.loads(r.stdout)
    assert "dropout_draws_zeroed" not in report["inference"]
    gd = tf.compat.v1.GraphDef()
    gd.ParseFromString((tmp_path / "out" / "shared.folded.pb").read_bytes())
    xv = np.random.default_rng(0).normal(size=(3, 6)).astype(np.float32)
    orig = _run(g.as_graph_def(), {"x:0": xv, "keep_prob:0": 1.0})[0]
    folded = _run(gd, {"x:0": xv})[0]
    np.testing.assert_allclose(folded, orig, rtol=1e-5, atol=1e-5)


# --- placeholders that are not only a dropout's parameter --------------------------------------


def test_a_uniform_threshold_that_is_no_dropout_mask_is_left_alone():
    """Epsilon-greedy: ``where(uniform >= epsilon, greedy, random action)`` compares a uniform
    draw with a float placeholder, but picks between two values (no unit is dropped to zero):
    epsilon is a model input the user feeds, not a dropout rate to set to 0."""
    from bnconvert.graph import Graph
    from bnconvert.inference import find_dropout_params

    tf = _tf()
    g = tf.Graph()
    with g.as_default():
        q = tf.compat.v1.placeholder(tf.float32, [None, 4], name="q")
        eps = tf.compat.v1.placeholder(tf.float32, [], name="epsilon")
        greedy = tf.argmax(q, 1)
        rand = tf.random.uniform(tf.shape(greedy), 0, 4, dtype=tf.int64)
        tf.where(tf.random.uniform(tf.shape(greedy)) >= eps, greedy, rand, name="action")
    assert find_dropout_params(Graph(g.as_graph_def())) == {}


@pytest.mark.parametrize("use", ["mul_logits", "divide_by_rate", "mul_rate"])
def test_a_placeholder_read_elsewhere_is_no_dropout_parameter(use):
    """The rule: every other reader may only be the dropout's own scaling (``x / keep_prob``,
    ``1 / (1 - rate)``).  A keep_prob that also scales the logits, or a rate something else
    divides by or multiplies with, has another role in the model: it is not set by itself."""
    from bnconvert.inference import find_dropout_params

    def body(tf, h):
        if use == "mul_logits":
            kp = tf.compat.v1.placeholder(tf.float32, [], name="p")
            tf.identity(tf.compat.v1.nn.dropout(h, keep_prob=kp) * kp, name="y")
        else:
            rate = tf.compat.v1.placeholder(tf.float32, [], name="p")
            d = tf.nn.dropout(h, rate=rate)
            tf.identity(d / rate if use == "divide_by_rate" else d + 3.0 * rate, name="y")

    assert find_dropout_params(_graph(body)) == {}


def test_the_dropout_forms_tensorflow_writes_are_still_found():
    """The tightened rule keeps every real dropout: tf.nn.dropout (rate / keep_prob, noise_shape,
    seeded), stateless_dropout, TF <= 1.12's floor(keep_prob + u), TF 1.13's ``x * (1 / keep)
    * cast(mask)``, drop connect, a draw scaled to [0, 0.5), in float32 and float16; their draws are
    all zeroed."""
    from bnconvert.inference import find_dropout_params, to_inference

    def body(tf, h):
        ps = {n: tf.compat.v1.placeholder(h.dtype, [], name=n) for n in "abcdefg"}
        outs = [tf.compat.v1.nn.dropout(h, keep_prob=ps["a"], noise_shape=[1, 8], seed=4),
                tf.nn.dropout(h, rate=ps["b"]),
                tf.nn.experimental.stateless_dropout(h, rate=ps["c"], seed=[1, 2]),
                tf.math.divide(h, ps["d"]) * tf.floor(ps["d"] + tf.random.uniform(tf.shape(h), dtype=h.dtype))]
        rate = 1 - ps["e"]  # TF 1.13-1.15's dropout_v2
        outs.append(h * (1 / (1 - rate)) * tf.cast(tf.random.uniform(tf.shape(h), dtype=h.dtype) >= rate, h.dtype))
        outs.append(h * tf.cast(tf.random.uniform(tf.shape(h), dtype=h.dtype) >= ps["f"], h.dtype))  # drop connect
        u = tf.random.uniform(tf.shape(h), 0.0, 0.5, dtype=h.dtype)  # the draw's own arithmetic: u * 0.5 + 0
        outs.append(tf.where(u >= ps["g"], h / (1 - ps["g"]), tf.zeros_like(h)))
        tf.identity(tf.add_n(outs), name="y")

    for dtype in ("float32", "float16"):
        g = _graph(body, dtype)
        found = find_dropout_params(g)
        assert {k: v for k, (v, _) in found.items()} == {"a": 1.0, "b": 0.0, "c": 0.0, "d": 1.0, "e": 1.0, "f": 0.0,
                                                         "g": 0.0}
        assert all(len(draws) == 1 for _, draws in found.values()), found
        res = to_inference(g)
        assert len(res.dropout_draws_removed) == 7 and not _ops(g) & {"RandomUniform", "StatelessRandomUniformV2"}


# --- --set values the placeholder cannot hold ---------------------------------------------------


@pytest.mark.parametrize("dtype,value", [("uint8", 300.0), ("uint8", -1.0), ("int32", 1e30), ("float16", 1e6),
                                         ("float32", 1e300)])
def test_set_rejects_a_value_out_of_the_placeholders_range(dtype, value):
    """``--set n=300`` on a uint8 placeholder stopped with 'internal error: OverflowError';
    ``--set t=1e6`` on a float16 one became inf silently.  Both are one clear input error."""
    from bnconvert.errors import InputError
    from bnconvert.inference import to_inference

    def body(tf, h):
        n = tf.compat.v1.placeholder(dtype, [], name="n")
        tf.identity(h * tf.cast(n, tf.float32), name="y")

    with pytest.raises(InputError, match=f"'n' is a placeholder of type {dtype}: .* is out of its range"):
        to_inference(_graph(body), {"n": value})


def test_set_within_range_still_works():
    from bnconvert.inference import to_inference

    def body(tf, h):
        n = tf.compat.v1.placeholder(tf.uint8, [], name="n")
        t = tf.compat.v1.placeholder(tf.float16, [], name="t")
        tf.identity(h * tf.cast(n, tf.float32) * tf.cast(t, tf.float32), name="y")

    res = to_inference(_graph(body), {"n": 255.0, "t": 65504.0})
    assert res.flags == {"n:0": 255, "t:0": 65504.0}


# --- keep_prob of shape [1] ---------------------------------------------------------------------


def test_a_keep_prob_of_shape_one_folds_and_verifies(cli, tmp_path):
    """A keep_prob placeholder declared ``[1]``: verification fed the original a scalar 1.0 and
    stopped with 'Cannot feed value of shape () for Tensor keep_prob:0, which has shape (1,)'."""
    tf = _tf()
    g = tf.Graph()
    with g.as_default():
        h = _dense_bn(tf, tf.compat.v1.placeholder(tf.float32, [None, 6], name="x"))
        kp = tf.compat.v1.placeholder(tf.float32, [1], name="keep_prob")
        tf.identity(h / kp * tf.cast(tf.random.uniform(tf.shape(h)) >= 1 - kp, tf.float32), name="y")
    path = tmp_path / "kp1.pb"
    path.write_bytes(g.as_graph_def().SerializeToString())
    r = cli("fold", path, "-o", tmp_path / "out", "--force", "--json")
    assert r.returncode == 0, r.stderr[-3000:]
    report = json.loads(r.stdout)
    assert report["training_flags"] == {"keep_prob:0": 1.0}
    assert all(v["status"] == "pass" for v in report["verification"].values()), report["verification"]


# --- dropouts inside while loops ----------------------------------------------------------------


@pytest.mark.parametrize("kind", ["while_loop", "dropout_wrapper_variational"])
def test_a_dropout_inside_a_while_loop_is_set_for_inference(cli, tmp_path, kind):
    """keep_prob reaches the dropout through the loop's ``Enter`` (a while_loop body's
    nn.dropout; DropoutWrapper(input/output/state_keep_prob=kp, variational_recurrent=True), whose
    noise is drawn outside the loop and added to keep_prob inside).  The fold stopped with
    "input 'keep_prob:0' has unknown rank"; now keep_prob is 1, the draws are zeros (a zero draw
    inside the loop is placed in the loop's frame) and every runtime verifies."""
    tf = _tf()
    import onnx

    rs = np.random.RandomState(0)
    g = tf.Graph()
    with g.as_default(), tf1_graph(tf):
        x = tf.compat.v1.placeholder(tf.float32, [None, 5, 4], name="x")
        kp = tf.compat.v1.placeholder(tf.float32, name="keep_prob")
        if kind == "while_loop":
            def step(i, acc):
                return i + 1, acc + tf.compat.v1.nn.dropout(x[:, i], keep_prob=kp)

            _, h = tf.compat.v1.while_loop(lambda i, a: i < 5, step, [tf.constant(0), tf.zeros_like(x[:, 0])])
        else:
            cell = tf.compat.v1.nn.rnn_cell.BasicRNNCell(6)
            cell = tf.compat.v1.nn.rnn_cell.DropoutWrapper(
                cell, input_keep_prob=kp, output_keep_prob=kp, state_keep_prob=kp, variational_recurrent=True,
                input_size=4, dtype=tf.float32)
            out, _ = tf.compat.v1.nn.dynamic_rnn(cell, x, dtype=tf.float32)
            h = out[:, -1]
        phase = tf.compat.v1.placeholder(tf.bool, name="phase")
        h = tf.compat.v1.layers.batch_normalization(h, training=phase)
        h = tf.reshape(h, [-1, int(h.shape[-1])])
        w = rs.randn(int(h.shape[-1]), 3)
        tf.identity(tf.compat.v1.layers.dense(h, 3, kernel_initializer=tf.constant_initializer(w)), name="y")
        sess = tf.compat.v1.Session(graph=g)
        sess.run(tf.compat.v1.global_variables_initializer())
        gd = tf.compat.v1.graph_util.convert_variables_to_constants(sess, g.as_graph_def(), ["y"])
    path = tmp_path / f"{kind}.pb"
    path.write_bytes(gd.SerializeToString())
    r = cli("fold", path, "-o", tmp_path / "out", "--force", "--json")
    assert r.returncode == 0, r.stderr[-3000:]
    report = json.loads(r.stdout)
    assert report["inputs"] == ["x:0"]
    assert report["training_flags"] == {"phase:0": False, "keep_prob:0": 1.0}
    assert report["inference"]["dropout_draws_zeroed"]
    assert all(v["status"] == "pass" for v in report["verification"].values()), report["verification"]
    model = onnx.load(str(tmp_path / "out" / f"{kind}.onnx"))
    assert not [n.op_type for n in model.graph.node if n.op_type.startswith("Random")]
    xv = np.random.default_rng(0).normal(size=(3, 5, 4)).astype(np.float32)
    folded = tf.compat.v1.GraphDef()
    folded.ParseFromString((tmp_path / "out" / f"{kind}.folded.pb").read_bytes())
    np.testing.assert_allclose(_run(folded, {"x:0": xv})[0],
                               _run(gd, {"x:0": xv, "keep_prob:0": 1.0, "phase:0": False})[0], rtol=1e-4, atol=1e-4)


def test_one_keep_prob_for_many_dropouts_is_found():
    """A keep_prob shared by 40 dropouts (a deep stack, each ``nn.dropout(keep_prob=kp)``): the walk
    gave up after 64 tensors and the fold stopped with 'keep_prob:0 has unknown rank'."""
    from bnconvert.inference import find_dropout_params

    def body(tf, h):
        kp = tf.compat.v1.placeholder(tf.float32, name="keep_prob")
        for _ in range(40):
            h = tf.nn.relu(tf.compat.v1.nn.dropout(h, keep_prob=kp))
        tf.identity(h, name="y")

    found = find_dropout_params(_graph(body))
    assert list(found) == ["keep_prob"] and found["keep_prob"][0] == 1.0 and len(found["keep_prob"][1]) == 40


# --- a dropout parameter inside a training cond -------------------------------------------------


def _fold_cond_graph(cli, tmp_path, name, branch):
    """x -> dense+BN -> tf.cond(phase, branch(h), h) -> y, folded with verification."""
    tf = _tf()
    g = tf.Graph()
    with g.as_default(), tf1_graph(tf):
        h = _dense_bn(tf, tf.compat.v1.placeholder(tf.float32, [None, 6], name="x"))
        phase = tf.compat.v1.placeholder(tf.bool, [], name="phase")
        tf.identity(branch(tf, h, phase), name="y")
    path = tmp_path / f"{name}.pb"
    path.write_bytes(g.as_graph_def().SerializeToString())
    return cli("fold", path, "-o", tmp_path / "out", "--force", "--json")


def test_a_rate_placeholder_of_tf_layers_dropout_in_a_training_cond(cli, tmp_path):
    """``tf.layers.dropout(h, rate=rate, training=phase)`` (and contrib's keep_prob form): the rate
    reaches the dropout through the cond's ``Switch``.  It was not found, the phase flag pruned
    the branch, and verification stopped: 'You must feed a value for placeholder tensor rate'
    (TensorFlow computes a ``Switch``'s input even for the branch not taken)."""
    def branch(tf, h, phase):
        rate = tf.compat.v1.placeholder(tf.float32, [], name="rate")
        return tf.compat.v1.layers.dropout(h, rate=rate, training=phase)

    r = _fold_cond_graph(cli, tmp_path, "layers_dropout", branch)
    assert r.returncode == 0, r.stderr[-3000:]
    report = json.loads(r.stdout)
    assert report["inputs"] == ["x:0"] and report["training_flags"] == {"phase:0": False, "rate:0": 0.0}
    assert all(v["status"] == "pass" for v in report["verification"].values()), report["verification"]


def test_a_float_placeholder_read_only_in_a_pruned_training_branch(cli, tmp_path):
    """Not a dropout: a float placeholder read only inside a training branch is no model input
    once the flag prunes the branch, but TensorFlow still wants it fed to run the original; the
    reference run feeds it a dead zero (prepare._idle_placeholders)."""
    def branch(tf, h, phase):
        std = tf.compat.v1.placeholder(tf.float32, [], name="noise_std")
        return tf.cond(phase, lambda: h + std * tf.random.normal(tf.shape(h)), lambda: h)

    r = _fold_cond_graph(cli, tmp_path, "orphan", branch)
    assert r.returncode == 0, r.stderr[-3000:]


def test_a_zeroed_draw_inside_a_while_loop_runs_in_the_loops_frame():
    """to_inference's own graph runs: the zero constant of a draw inside a while body is placed in
    the body's frame (without, TensorFlow stopped: 'GreaterEqual has inputs from different
    frames'; the CLI hid it only because later passes re-placed the constant)."""
    tf = _tf()
    from bnconvert.graph import Graph
    from bnconvert.inference import to_inference

    g = tf.Graph()
    with g.as_default(), tf1_graph(tf):
        x = tf.compat.v1.placeholder(tf.float32, [None, 5, 4], name="x")
        kp = tf.compat.v1.placeholder(tf.float32, name="keep_prob")

        def step(i, acc):
            return i + 1, acc + tf.compat.v1.nn.dropout(x[:, i], keep_prob=kp)

        _, h = tf.compat.v1.while_loop(lambda i, a: i < 5, step, [tf.constant(0), tf.zeros_like(x[:, 0])])
        tf.identity(h, name="y")
    graph = Graph(g.as_graph_def())
    res = to_inference(graph)
    assert res.dropout_draws_removed == ["while/dropout/random_uniform/RandomUniform"]
    xv = np.random.default_rng(0).normal(size=(2, 5, 4)).astype(np.float32)
    np.testing.assert_allclose(_run(graph.to_graph_def(), {"x:0": xv})[0], xv.sum(axis=1), rtol=1e-5, atol=1e-5)


def test_api_set_flags_with_an_int_beyond_float_range_is_an_input_error():
    """``set_flags={"keep_prob": 10**400}`` stopped with 'internal error: OverflowError'."""
    import bnconvert
    from bnconvert.errors import InputError

    with pytest.raises(InputError, match="finite number"):
        bnconvert.fold("no-such-model.pb", set_flags={"keep_prob": 10 ** 400})  # checked before loading


def _keep_prob_scaling_the_logits(tmp_path):
    """A .pb whose keep_prob drives a dropout and also scales the output: no dropout parameter."""
    tf = _tf()
    g = tf.Graph()
    with g.as_default():
        h = _dense_bn(tf, tf.compat.v1.placeholder(tf.float32, [None, 6], name="x"))
        kp = tf.compat.v1.placeholder(tf.float32, name="keep_prob")
        tf.identity(tf.compat.v1.nn.dropout(h, keep_prob=kp) * kp, name="y")
    path = tmp_path / "kp.pb"
    path.write_bytes(g.as_graph_def().SerializeToString())
    return path


def test_an_unrecognised_keep_prob_of_unknown_rank_is_told_about_set(cli, tmp_path):
    """A keep_prob that also scales the logits is no dropout parameter (left as an input); its
    unknown rank stops the fold with one line that names ``--set`` beside ``--input-shape``."""
    path = _keep_prob_scaling_the_logits(tmp_path)
    r = cli("fold", path, "-o", tmp_path / "out")
    assert r.returncode == 2 and "--set keep_prob=VALUE" in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_set_keep_prob_1_on_an_unrecognised_dropout_verifies(cli, tmp_path):
    """``--set keep_prob=1`` where bnconvert does not recognise the dropout (keep_prob also scales
    the logits): the draw stays in the model, its mask keeps every unit, the outputs agree — and
    the TFLite layer check compared the draw itself ('layer dropout/random_uniform/RandomUniform:
    max abs error 0.78, although the outputs agree'), failing a correct model."""
    path = _keep_prob_scaling_the_logits(tmp_path)
    r = cli("fold", path, "-o", tmp_path / "out", "--force", "--json", "--set", "keep_prob=1")
    assert r.returncode == 0, r.stderr[-3000:]
    report = json.loads(r.stdout)
    assert report["inputs"] == ["x:0"] and report["training_flags"] == {"keep_prob:0": 1.0}
    assert "dropout_draws_zeroed" not in report["inference"]
    assert set(report["verification"]) == {"tf:folded", "onnx:CPUExecutionProvider", "tflite"}
    assert all(v["status"] == "pass" for v in report["verification"].values()), report["verification"]
