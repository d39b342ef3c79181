"""Fixtures shaped like the TF 1.x files users actually have (issue 9): while loops,
several heads, a training checkpoint.

    python tools/fixtures_realtf1.py [--out fixtures/realtf1] [--only NAME ...]

They use make_fixtures' machinery (``build_fixture``, the json/npz convention) but are written
into their own folder, ``fixtures/realtf1/``, because the generic per-fixture tests
(tests/test_convert_fixtures.py) demand a TFLite file and TFLite's converter cannot take TF1
while loops with TensorArrays.  ``tools/make_fixtures.py`` calls :func:`main` after its own
fixtures.  Tests: tests/test_loops_outputs.py.

  crnn_gru_ctc     conv -> tf.layers BN (fused, is_training placeholder) -> relu -> pool ->
                   reshape -> tf.compat.v1.nn.dynamic_rnn(GRUCell) (a TF1 while frame:
                   Enter/Merge/Switch/LoopCond/NextIteration/Exit, TensorArrayV3) -> dense ->
                   ctc_greedy_decoder -> sparse_to_dense; outputs "decoded" and "log_prob"
  crnn_lstm_ctc    the same with an LSTMCell, a decomposed BN (fused=False) and the sequence
                   lengths fed through an int32 placeholder "seq_len" (as most CRNN readers do)
  rnn_bn_cell      a BN inside the loop body (dense -> tf.layers BN in a dynamic_rnn cell)
  crnn_train_ckpt  the CRNN's training checkpoint (ctc_loss, sparse labels, GradientDescent)
  two_heads        conv + BN trunk, two heads that end in BiasAdd (heatmaps, keypoints), no
                   Identity at the end: both are outputs
  mnist_train_ckpt the classic MNIST training checkpoint: x, labels, dense -> contrib
                   batch_norm (is_training placeholder) -> relu -> dense logits, softmax
                   cross-entropy, accuracy, summaries, GradientDescent minimize under
                   UPDATE_OPS, tf.compat.v1.train.Saver folder; the output is the logits
"""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import make_fixtures as mf  # noqa: E402

FIXTURES: dict[str, mf.Fixture] = {}
T_STEPS = 16  # time steps of the CRNN fixtures (image width after pooling)


def fixture(name, description, **kw):
    def deco(fn):
        FIXTURES[name] = mf.Fixture(name, description, fn, **kw)
        return fn
    return deco


def _crnn_trunk(net, bn):
    """x [N,8,32,1] -> conv 3x3x8 -> BN -> relu -> 2x2 max pool -> [N, T=16, 32] features."""
    tf = mf.tf
    x = net.input([None, 8, 2 * T_STEPS, 1], [3, 8, 2 * T_STEPS, 1])
    phase = net.phase("is_training")
    h = bn(mf.conv2d(x, 8, scope="conv1"), phase)
    h = tf.nn.max_pool2d(tf.nn.relu(h), 2, 2, "VALID")          # [N, 4, 16, 8]
    h = tf.transpose(h, [0, 2, 1, 3])                              # [N, 16, 4, 8]
    return x, tf.reshape(h, [-1, T_STEPS, 4 * 8], name="features")


def _crnn_head(net, rnn_out, seq_len):
    tf = mf.tf
    logits = tf.compat.v1.layers.dense(rnn_out, 8, name="logits")  # Tensordot: MatMul inside
    logits_tm = tf.transpose(logits, [1, 0, 2], name="time_major")
    decoded, log_prob = tf.nn.ctc_greedy_decoder(logits_tm, seq_len)
    dense = tf.compat.v1.sparse_to_dense(decoded[0].indices, decoded[0].dense_shape,
                                         decoded[0].values, default_value=-1)
    net.output(dense, "decoded")
    net.output(log_prob, "log_prob")
    net.channel_axis = 0  # per batch item: every decoded row and log-prob varies
    net.extra["note"] = ("TF1 while frame from dynamic_rnn; TFLite's converter is not expected "
                         "to take it (convert with --to pb,onnx).")


@fixture("crnn_gru_ctc", "CRNN: conv -> tf.layers BN (fused, is_training placeholder) -> relu "
         "-> pool -> reshape -> dynamic_rnn GRU (TF1 while frame, TensorArrayV3) -> dense -> "
         "ctc_greedy_decoder -> sparse_to_dense; outputs decoded and log_prob")
def _crnn_gru_ctc(net):
    tf = mf.tf
    _, feats = _crnn_trunk(net, lambda h, p: mf.layer_bn(h, p, "bn1"))
    net.bn("bn1", "FusedBatchNormV3 in cond", "Conv2D+BiasAdd")
    cell = tf.compat.v1.nn.rnn_cell.GRUCell(16, name="gru")
    out, _ = tf.compat.v1.nn.dynamic_rnn(cell, feats, dtype=tf.float32)
    seq_len = tf.fill([tf.shape(feats)[0]], T_STEPS, name="seq_len")
    _crnn_head(net, out, seq_len)


@fixture("crnn_lstm_ctc", "CRNN: conv -> tf.layers BN (fused=False: moments + cond) -> relu -> "
         "pool -> dynamic_rnn LSTM with sequence_length from an int32 placeholder seq_len -> "
         "dense -> ctc_greedy_decoder; outputs decoded and log_prob")
def _crnn_lstm_ctc(net):
    tf = mf.tf
    _, feats = _crnn_trunk(net, lambda h, p: mf.layer_bn(h, p, "bn1", fused=False))
    net.bn("bn1", "decomposed (moments + cond)", "Conv2D+BiasAdd")
    seq_len = tf.compat.v1.placeholder(tf.int32, [None], name="seq_len")
    net.inputs.append((seq_len, [3], "seq_len"))
    cell = tf.compat.v1.nn.rnn_cell.LSTMCell(16, name="lstm")
    out, _ = tf.compat.v1.nn.dynamic_rnn(cell, feats, sequence_length=seq_len, dtype=tf.float32)
    _crnn_head(net, out, seq_len)


@fixture("rnn_bn_cell", "a BN inside a while-loop body: dynamic_rnn over a cell whose input "
         "projection is dense -> tf.layers BN (rank 2: moments + cond on an is_training "
         "placeholder entering the frame) -> + recurrent dense -> tanh")
def _rnn_bn_cell(net):
    tf = mf.tf
    x = net.input([None, 6, 4], [3, 6, 4])
    phase = net.phase("is_training")

    class BNCell(tf.compat.v1.nn.rnn_cell.RNNCell):
        state_size = output_size = 5

        def __call__(self, inp, state, scope=None):
            with tf.compat.v1.variable_scope("bncell", reuse=tf.compat.v1.AUTO_REUSE):
                h = mf.layer_bn(tf.compat.v1.layers.dense(inp, 5, name="proj"), phase, "bn")
                out = tf.tanh(h + tf.compat.v1.layers.dense(state, 5, name="rec", use_bias=False))
            return out, out

    outs, _ = tf.compat.v1.nn.dynamic_rnn(BNCell(), x, dtype=tf.float32)
    net.bn("rnn/while/bncell/bn", "decomposed (moments + cond) inside a while frame", "MatMul+BiasAdd")
    net.output(outs)


@fixture("two_heads", "conv + tf.layers BN trunk, two heads ending in BiasAdd (no Identity): "
         "heatmaps (1x1 conv) and keypoints (pool -> dense); both are outputs")
def _two_heads(net):
    tf = mf.tf
    x = net.input([None, 8, 8, 3], [2, 8, 8, 3])
    phase = net.phase()
    h = tf.nn.relu(mf.layer_bn(mf.conv2d(x, 8, scope="trunk"), phase, "trunk_bn"))
    net.bn("trunk_bn", "FusedBatchNormV3 in cond", "Conv2D+BiasAdd")
    heat = mf.conv2d(h, 4, k=1, scope="heatmaps")
    kp = mf.dense(tf.reduce_mean(h, [1, 2]), 6, scope="keypoints")
    net.outputs += [heat, kp]


@fixture("mnist_train_ckpt", "MNIST training checkpoint folder (tf.compat.v1.train.Saver): x, "
         "labels, dense -> contrib batch_norm (rank 2, is_training placeholder) -> relu -> dense "
         "logits, softmax cross-entropy, accuracy, summaries, GradientDescent minimize under "
         "UPDATE_OPS; the output is the logits", format="checkpoint")
def _mnist_train_ckpt(net):
    tf = mf.tf
    x = net.input([None, 784], [4, 784], kind="uniform")
    labels = tf.compat.v1.placeholder(tf.int64, [None], name="labels")
    phase = net.phase("is_training")
    h = tf.compat.v1.layers.dense(x, 32, name="dense")
    h = mf.contrib_batch_norm(h, phase, scope="BatchNorm", scale=True)
    net.bn("BatchNorm", "FusedBatchNormV3 in cond (contrib path A, rank 2)", "MatMul+BiasAdd")
    logits = tf.compat.v1.layers.dense(tf.nn.relu(h), 10, name="logits")
    net.outputs.append(logits)
    loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels,
                                                                         logits=logits), name="loss")
    correct = tf.equal(tf.argmax(logits, 1), labels)
    accuracy = tf.reduce_mean(tf.cast(correct, tf.float32), name="accuracy")
    tf.compat.v1.summary.scalar("loss", loss)
    tf.compat.v1.summary.scalar("accuracy", accuracy)
    tf.compat.v1.summary.histogram("logits", logits)
    tf.compat.v1.summary.merge_all()
    with tf.control_dependencies(tf.compat.v1.get_collection(tf.compat.v1.GraphKeys.UPDATE_OPS)):
        tf.compat.v1.train.GradientDescentOptimizer(0.1).minimize(loss, name="train")
    net.extra["other_tensors"] = {"labels": "labels:0", "loss": "loss:0", "accuracy": "accuracy:0",
                                  "train_op": "train"}


@fixture("crnn_train_ckpt", "CRNN training checkpoint folder: images, seq_len placeholder, "
         "sparse labels placeholder, conv -> tf.layers BN (is_training) -> dynamic_rnn GRU -> "
         "dense, ctc_loss, ctc_greedy_decoder -> sparse_to_dense 'dense_decoded', edit-distance "
         "error rate, loss summary, GradientDescent minimize under UPDATE_OPS; every node kept by "
         "the checkpoint (unused loop Exits, zero-state shapes, reduce_min(seq_len))",
         format="checkpoint")
def _crnn_train_ckpt(net):
    tf = mf.tf
    _, feats = _crnn_trunk(net, lambda h, p: mf.layer_bn(h, p, "bn1"))
    net.bn("bn1", "FusedBatchNormV3 in cond", "Conv2D+BiasAdd")
    seq_len = tf.compat.v1.placeholder(tf.int32, [None], name="seq_len")
    net.inputs.append((seq_len, [3], "seq_len"))
    labels = tf.compat.v1.sparse_placeholder(tf.int32, name="labels")
    out, _ = tf.compat.v1.nn.dynamic_rnn(tf.compat.v1.nn.rnn_cell.GRUCell(16, name="gru"), feats,
                                         sequence_length=seq_len, dtype=tf.float32)
    logits = tf.transpose(tf.compat.v1.layers.dense(out, 8, name="logits"), [1, 0, 2], name="time_major")
    loss = tf.reduce_mean(tf.compat.v1.nn.ctc_loss(labels, logits, seq_len), name="loss")
    decoded, _ = tf.nn.ctc_greedy_decoder(logits, seq_len)
    dense = tf.compat.v1.sparse_to_dense(decoded[0].indices, decoded[0].dense_shape, decoded[0].values,
                                         default_value=-1, name="dense_decoded")
    tf.reduce_mean(tf.edit_distance(tf.cast(decoded[0], tf.int32), labels), name="label_error_rate")
    tf.compat.v1.summary.scalar("loss", loss)
    with tf.control_dependencies(tf.compat.v1.get_collection(tf.compat.v1.GraphKeys.UPDATE_OPS)):
        tf.compat.v1.train.GradientDescentOptimizer(0.01).minimize(loss, name="train")
    net.outputs.append(dense)
    net.channel_axis = 0


def _make_inputs(net, rng, _orig=mf._make_inputs):
    """make_fixtures' inputs, plus kind "seq_len": full-length sequences (T_STEPS)."""
    out = _orig(net, rng)
    for i, (t, shape, kind) in enumerate(net.inputs):
        if kind == "seq_len":
            out[i] = np.full(shape, T_STEPS, dtype=t.dtype.as_numpy_dtype)
    return out


def main(out_dir: str | None = None, only=None) -> int:
    out_dir = out_dir or os.path.join(os.path.dirname(HERE), "fixtures", "realtf1")
    os.makedirs(out_dir, exist_ok=True)
    mf._make_inputs = _make_inputs
    mf._import_tf()
    for name in only or FIXTURES:
        meta = mf.build_fixture(FIXTURES[name], out_dir)
        print(f"{name:18} outputs={meta['outputs']} histogram={meta['op_histogram']}")
    return 0


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out")
    ap.add_argument("--only", nargs="+")
    a = ap.parse_args()
    sys.exit(main(a.out, a.only))
