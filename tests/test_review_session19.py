"""Review of the ONNX verification changes (run_onnx_probes_here's layer rows, compare_runs per
runtime, default outputs of a final multi-output node, ONNX inputs with a default): attacks that
broke them, with real TensorFlow, tf2onnx, onnxruntime and TFLite runs.

- Layer tensors cut to the first rows were computed on those rows alone by some runtimes and on
  the whole run (then cut) by others, each deciding from its own model's batch.  In a graph whose
  rows are not independent (here: a mean over the batch between two BN layers) those differ, so a
  correct model failed: an ONNX with a fixed batch beside an original with a free one, a free
  ONNX beside a fixed original, a fixed original's resizable TFLite.  Now one choice for all
  (``check.layer_head``).
- The power check, run on the first rows of such a graph, compared them with the whole run's
  first rows: every perturbation looked caught (power overstated); now it says it cannot measure.
- A model output that is also a layer probe (a BN as the last op, ``--outputs logits,probs``)
  crashed with an internal KeyError.
- A training flag the converted ONNX gives a default (stock tf2onnx on a
  ``placeholder_with_default(True)`` is_training) was fed false, so the model that runs in
  training mode unless fed said PASS.
"""
import contextlib
import os

import numpy as np
import pytest

TINY = 200  # bytes of layer tensors: less than one row's, so the layers are cut to 1 row


def _tf():
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    import tensorflow as tf

    return tf


@contextlib.contextmanager
def _tf1_graph(tf):
    """Switch/Merge conds, as TF 1.x built them, for the block only."""
    cf = tf.compat.v1.control_flow_v2_enabled()
    tf.compat.v1.disable_control_flow_v2()
    try:
        yield
    finally:
        if cf:
            tf.compat.v1.enable_control_flow_v2()


def _dense_bn(tf, x, units, name, rs):
    """x @ W -> FusedBatchNormV3 (inference) with non-trivial statistics, back to [N, units]."""
    v1 = tf.compat.v1
    h = v1.matmul(x, v1.constant(rs.normal(size=(int(x.shape[-1]), units)).astype(np.float32)), name=name + "/MatMul")
    stats = [v1.constant(a.astype(np.float32)) for a in (rs.uniform(0.5, 2, units), rs.normal(size=units),
                                                         rs.normal(size=units), rs.uniform(0.5, 2, units))]
    y, _, _ = v1.nn.fused_batch_norm(v1.reshape(h, [-1, 1, 1, units]), stats[0], stats[1], stats[2], stats[3],
                                     is_training=False, name=name + "/bn")
    return v1.reshape(y, [-1, units])


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """name -> path of each .pb (and the ONNX models made from them)."""
    tf = _tf()
    v1 = tf.compat.v1
    folder = tmp_path_factory.mktemp("review19")
    out = {}

    def save(name, build):
        g = tf.Graph()
        with g.as_default():
            build(np.random.default_rng(0))
        path = folder / f"{name}.pb"
        path.write_bytes(g.as_graph_def().SerializeToString())
        out[name] = str(path)

    def mixing(batch):
        def build(rs):  # BN -> relu -> minus the batch mean (rows depend on each other) -> BN -> dense
            x = v1.placeholder(tf.float32, [batch, 8], name="x")
            h = tf.nn.relu(_dense_bn(tf, x, 16, "l1", rs))
            h = h - tf.reduce_mean(h, axis=0, keepdims=True)
            h = tf.nn.relu(_dense_bn(tf, h, 16, "l2", rs))
            v1.matmul(h, v1.constant(rs.normal(size=(16, 4)).astype(np.float32)), name="logits")
        return build

    save("mixing", mixing(None))
    save("mixing8", mixing(8))

    def bn_last(rs):
        x = v1.placeholder(tf.float32, [None, 8], name="x")
        h = tf.nn.relu(_dense_bn(tf, x, 16, "l1", rs))
        h = v1.matmul(h, v1.constant(rs.normal(size=(16, 4)).astype(np.float32)))
        v1.nn.fused_batch_norm(v1.reshape(h, [-1, 1, 1, 4]), v1.constant(rs.uniform(0.5, 2, 4).astype(np.float32)),
                               v1.constant(rs.normal(size=4).astype(np.float32)),
                               v1.constant(rs.normal(size=4).astype(np.float32)),
                               v1.constant(rs.uniform(0.5, 2, 4).astype(np.float32)), is_training=False, name="lastbn")

    def logits_probs(rs):
        x = v1.placeholder(tf.float32, [None, 8], name="x")
        h = tf.nn.relu(_dense_bn(tf, x, 16, "l1", rs))
        logits = v1.matmul(h, v1.constant(rs.normal(size=(16, 4)).astype(np.float32)), name="logits")
        tf.nn.softmax(logits, name="probs")

    save("bn_last", bn_last)
    save("logits_probs", logits_probs)

    # an is_training flag with a default, as TF1 code often wrote it; tf2onnx keeps it an input
    # with that default (an overridable initializer)
    import tf2onnx

    for default in (True, False):
        rs = np.random.RandomState(0)
        g = tf.Graph()
        with g.as_default(), _tf1_graph(tf):
            x = v1.placeholder(tf.float32, [None, 6], name="x")
            flag = v1.placeholder_with_default(default, [], name="is_training")
            h = v1.layers.dense(x, 8, kernel_initializer=v1.constant_initializer(rs.randn(6, 8)))
            h = v1.layers.batch_normalization(h, training=flag, fused=False,
                                              moving_mean_initializer=v1.constant_initializer(rs.randn(8)),
                                              moving_variance_initializer=v1.constant_initializer(
                                                  rs.uniform(0.5, 2, 8)))
            v1.layers.dense(tf.nn.relu(h), 3, kernel_initializer=v1.constant_initializer(rs.randn(8, 3)),
                            name="logits")
            with v1.Session(graph=g) as sess:
                sess.run(v1.global_variables_initializer())
                gd = v1.graph_util.convert_variables_to_constants(sess, g.as_graph_def(), ["logits/BiasAdd"])
        name = f"flag_default_{str(default).lower()}"
        (folder / f"{name}.pb").write_bytes(gd.SerializeToString())
        model, _ = tf2onnx.convert.from_graph_def(gd, input_names=["x:0"], output_names=["logits/BiasAdd:0"])
        (folder / f"{name}.onnx").write_bytes(model.SerializeToString())
        out[name] = str(folder / f"{name}.pb")
        out[name + ".onnx"] = str(folder / f"{name}.onnx")

    # the mixing model's ONNX as bnconvert writes it (batch free), and a copy with batch 8 fixed
    import onnx

    import bnconvert

    rep = bnconvert.convert(out["mixing"], str(folder / "onnx"), to=("onnx",), verify=False)
    out["mixing.onnx"] = rep.files["onnx"]
    m = onnx.load(out["mixing.onnx"])
    for inp in m.graph.input:
        dim = inp.type.tensor_type.shape.dim[0]
        dim.Clear()
        dim.dim_value = 8
    out["mixing_fixed.onnx"] = str(folder / "mixing_fixed.onnx")
    onnx.save(m, out["mixing_fixed.onnx"])
    return out


def _scaled(src: str, dst: str, factor: float = 1.01) -> str:
    """``src`` with column 0 of the second layer's folded weights scaled by ``factor``."""
    import onnx
    from onnx import numpy_helper

    m = onnx.load(src)
    init = next(t for t in m.graph.initializer if t.name.startswith("l2/") and len(t.dims) == 2)
    w = numpy_helper.to_array(init).copy()
    w[:, 0] *= factor
    init.CopyFrom(numpy_helper.from_array(w.astype(np.float32), init.name))
    onnx.save(m, dst)
    return dst


def _layers_ok(v: dict) -> list:
    return [(ly["name"], ly["max_rel"]) for ly in v["layers"] if not ly["ok"]]


# ------------------------------------------------------------------ layer rows: one choice for all

def test_fixed_batch_onnx_beside_a_free_original_layers_agree(models):
    """The original's batch is free, the ONNX's fixed at 8: its layers come from the whole run,
    so the reference's must too (they came from the first row alone: layer l2/bn FAILed)."""
    import bnconvert

    result = bnconvert.compare(models["mixing"], models["mixing_fixed.onnx"], layer_budget=TINY,
                               raise_on_failure=False)
    v = result["onnx:CPUExecutionProvider"]
    assert v["layers"] and all(ly["reference_shape"][0] == 2 for ly in v["layers"]), v["layers"]  # 2 runs x 1 row
    assert not _layers_ok(v), v["layers"]
    assert v["ok"], v


def test_free_onnx_beside_a_fixed_original_layers_agree(models):
    """The original's batch is fixed at 8, the ONNX's free: run_onnx_probes_here cut its layer
    run to the first row while the reference ran the whole batch (false FAIL, new with the
    first-rows ONNX layer pass)."""
    import bnconvert

    result = bnconvert.compare(models["mixing8"], models["mixing.onnx"], layer_budget=TINY, raise_on_failure=False)
    v = result["onnx:CPUExecutionProvider"]
    assert v["layers"] and not _layers_ok(v), v["layers"]
    assert v["ok"], v


def test_fold_of_a_fixed_batch_original_tflite_layers_agree(models, tmp_path):
    """A fixed-batch original: the reference computes its layers on the whole batch; TFLite,
    which can be resized, ran its layer pass on the first row (false FAIL at layer Mean)."""
    import bnconvert

    rep = bnconvert.convert(models["mixing8"], str(tmp_path), to=("tflite",), layer_budget=TINY)
    v = rep.verification["tflite"]
    assert v["layers"] and not _layers_ok(v), v["layers"]
    assert v["ok"], v


@pytest.mark.parametrize("onnx_name", ["mixing.onnx", "mixing_fixed.onnx"])
def test_a_wrong_weight_still_fails_with_the_rows_cut(models, tmp_path, onnx_name):
    import bnconvert

    bad = _scaled(models[onnx_name], str(tmp_path / "bad.onnx"))
    result = bnconvert.compare(models["mixing"], bad, layer_budget=TINY, raise_on_failure=False)
    v = result["onnx:CPUExecutionProvider"]
    assert not v["ok"] and any(not o["ok"] for o in v["outputs"]), v


def test_layer_head_is_one_choice():
    from bnconvert.verify.check import layer_head

    shapes = {"x:0": [8, 8], "k:0": []}
    assert layer_head({"x:0": -1, "k:0": None}, ["x:0", "k:0"], shapes)
    assert not layer_head({"x:0": 8}, ["x:0"], shapes)  # the original fixes it
    assert not layer_head({"x:0": -1}, ["x:0"], shapes, fixed_batch=8)  # the exported ONNX does
    assert not layer_head({"x:0": -1}, ["x:0"], shapes, onnx_inputs=[{"shape": [8, 8], "dtype": "float"}])
    assert layer_head({"x:0": -1}, ["x:0"], shapes, onnx_inputs=[{"shape": ["N", 8], "dtype": "float"},
                                                               {"shape": [], "dtype": "bool"}])


def test_power_is_not_overstated_on_the_first_rows_of_a_batch_mixing_graph(models, tmp_path):
    """The power check ran on the first row alone and compared it with the whole run's first
    row: the unchanged graph already 'differed', so every perturbation was 'caught' (outputs
    alone down to 0.1% where every row gives 1%).  It now says it cannot measure.  (A graph
    whose rows are independent still measures on the first rows: test_layer_budget.py.)"""
    import bnconvert

    full = bnconvert.convert(models["mixing"], str(tmp_path / "full"), to=("pb",)).verification_power
    cut = bnconvert.convert(models["mixing"], str(tmp_path / "cut"), to=("pb",), layer_budget=TINY).verification_power
    assert "error" not in full and full["layers"], full
    assert set(cut) == {"error"} and "disagrees with the reference" in cut["error"], cut


# ------------------------------------------------------------------ outputs that are layer probes

def test_a_bn_that_is_the_output_does_not_crash(models, tmp_path):
    import bnconvert

    rep = bnconvert.convert(models["bn_last"], str(tmp_path), to=("onnx",), layer_budget=TINY)
    assert rep.outputs == ["lastbn:0"]
    v = rep.verification["onnx:CPUExecutionProvider"]
    assert v["ok"] and [ly["name"] for ly in v["layers"]] == ["l1/bn"], v


def test_logits_and_probs_both_outputs_do_not_crash(models, tmp_path):
    import bnconvert

    rep = bnconvert.convert(models["logits_probs"], str(tmp_path), to=("onnx",), outputs=["logits", "probs"])
    v = rep.verification["onnx:CPUExecutionProvider"]
    assert v["ok"], v
    result = bnconvert.compare(models["logits_probs"], rep.files["onnx"], outputs=["logits", "probs"],
                               layer_budget=TINY)
    assert result["onnx:CPUExecutionProvider"]["ok"]


# ------------------------------------------------------------------ a training flag with a default

def test_a_flag_defaulting_to_training_is_not_fed_so_the_model_fails(models):
    """Stock tf2onnx on is_training = placeholder_with_default(True): run as shipped (nobody
    feeds the optional input) the ONNX normalises with batch statistics.  Feeding it false made
    verify PASS."""
    import bnconvert

    result = bnconvert.compare(models["flag_default_true"], models["flag_default_true.onnx"], raise_on_failure=False)
    v = result["onnx:CPUExecutionProvider"]
    assert not v["ok"], v
    assert "is_training:0 not fed" in v["note"] and "=false" not in v["note"], v["note"]


def test_a_flag_defaulting_to_inference_verifies(models):
    import bnconvert

    result = bnconvert.compare(models["flag_default_false"], models["flag_default_false.onnx"])
    v = result["onnx:CPUExecutionProvider"]
    assert v["ok"] and "is_training:0 not fed" in v["note"], v


# ------------------------------------------------------------------ default outputs

def test_an_op_without_outputs_is_no_default_output():
    """``tf.print`` left in a graph ends it with a PrintV2, which has no output tensor: it was
    the default output ``pr:0`` (the count 0 was taken as 1), a tensor that does not exist
    (``fold --to tflite``: an internal error).  Now the outputs are asked for."""
    tf = _tf()
    from bnconvert.endpoints import find_outputs
    from bnconvert.errors import InputError
    from bnconvert.graph import Graph

    def graph(other: bool):
        g = tf.Graph()
        with g.as_default():
            x = tf.compat.v1.placeholder(tf.float32, [None, 8], name="x")
            h = tf.identity(_dense_bn(tf, x, 4, "l1", np.random.default_rng(0)), name="out")
            tf.print(h, name="pr")
            if other:
                tf.identity(_dense_bn(tf, x, 4, "l2", np.random.default_rng(1)), name="other")
        return g.as_graph_def()

    gd = graph(False)
    assert next(n for n in gd.node if n.name == "pr").op == "PrintV2"
    with pytest.raises(InputError, match="pass --outputs"):
        find_outputs(Graph(gd), ["x:0"])
    assert find_outputs(Graph(graph(True)), ["x:0"]).tensors == ["other:0"]  # a sink beside it stays one
