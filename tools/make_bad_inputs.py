#!/usr/bin/env python
"""Write bnconvert's bad-input corpus into a folder.

    python tools/make_bad_inputs.py OUTDIR [--list]

Every case is a model file (or a missing path, a folder, a bad argument) that
``bnconvert fold`` must refuse with exit code 2 and one line ``bnconvert: error: …`` naming
the file and, where there is one, the node.  OUTDIR receives the files plus ``cases.json``:
a list of ``{"name", "args", "input", "expect", "why"}`` where ``args`` are the arguments after
``bnconvert`` (``{dir}`` stands for OUTDIR, ``{out}`` for the output folder the caller
chooses), ``input`` is the path whose bytes must stay unchanged (or null) and ``expect`` the
strings the error line must contain.

The valid graphs are built with ``tf.compat.v1`` from constants (a tiny conv → batch norm →
relu), then corrupted; nothing here is written by hand.  The corpus is deterministic.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

C = 4  # channels of the small conv

#: every case :func:`write_corpus` writes, in order
CASE_NAMES = (
    "empty", "random_bytes", "truncated", "pbtxt_syntax", "text_not_graph_txt", "text_not_graph_pb",
    "missing_path", "plain_directory", "missing_input", "cycle", "unknown_op", "bn_unfrozen_variable",
    "bn_placeholder_mean", "nan_statistics", "negative_variance", "unknown_output", "unknown_input",
    "conflicting_input_shape", "unwritable_outdir", "existing_outputs",
)


def _tf():
    """TensorFlow, left in its default mode: the graphs are built inside ``tf.Graph()`` with
    ``tf.compat.v1`` ops, so importing this module from a test changes no global TF state."""
    import tensorflow as tf

    return tf


def conv_bn_graph(mean=None, variance=None, params: str = "const", dtype="float32"):
    """x[1,8,8,3] → Conv2D → FusedBatchNormV3(is_training=False) → Relu → ``out``.

    ``params``: "const" (frozen constants), "variable" (an unfrozen ``tf.Variable`` feeds the
    BN's scale) or "placeholder" (the BN's mean is fed).  ``dtype`` is the data's type
    ("float32", "float16", "bfloat16"); the BN parameters stay float32, as TensorFlow wants.
    Returns the GraphDef.
    """
    tf = _tf()
    rng = np.random.default_rng(0)
    dt = tf.as_dtype(dtype)
    mean = rng.normal(size=C) if mean is None else np.asarray(mean, np.float64)
    variance = rng.uniform(0.5, 2.0, size=C) if variance is None else np.asarray(variance, np.float64)
    g = tf.Graph()
    with g.as_default():
        x = tf.compat.v1.placeholder(dt, [1, 8, 8, 3], name="x")
        w = tf.constant(rng.normal(size=(3, 3, 3, C)).astype(np.float32).astype(dt.as_numpy_dtype), dtype=dt,
                        name="Conv/weights")
        y = tf.nn.conv2d(x, w, strides=1, padding="SAME", name="Conv/Conv2D")
        gamma = tf.constant(rng.uniform(0.5, 1.5, size=C).astype(np.float32), name="bn/gamma")
        beta = tf.constant(rng.normal(size=C).astype(np.float32), name="bn/beta")
        m = tf.constant(mean.astype(np.float32), name="bn/moving_mean")
        v = tf.constant(variance.astype(np.float32), name="bn/moving_variance")
        if params == "variable":
            gamma = tf.compat.v1.Variable(rng.uniform(0.5, 1.5, size=C).astype(np.float32), name="bn/gamma_var",
                                          use_resource=False)
        elif params == "placeholder":
            m = tf.compat.v1.placeholder(tf.float32, [C], name="bn/mean_feed")
        z, _, _ = tf.compat.v1.nn.fused_batch_norm(y, gamma, beta, mean=m, variance=v, epsilon=1e-3,
                                                   is_training=False, name="bn/FusedBatchNormV3")
        tf.nn.relu(z, name="out")
    return g.as_graph_def()


def _write(path: str, data: bytes) -> str:
    with open(path, "wb") as f:
        f.write(data)
    return path


def _truncated(data: bytes) -> bytes:
    """The shortest cut of ``data`` (from half its length up) that no longer parses."""
    from google.protobuf.message import DecodeError
    from tensorflow.core.framework import graph_pb2

    for cut in range(len(data) // 2, len(data)):
        try:
            graph_pb2.GraphDef().ParseFromString(data[:cut])
        except DecodeError:
            return data[:cut]
    raise RuntimeError("no truncation of the graph fails to parse")


def write_corpus(folder: str) -> list[dict]:
    """Write every case into ``folder`` (created); returns the manifest, also in cases.json."""
    from google.protobuf import text_format

    os.makedirs(folder, exist_ok=True)
    d = lambda name: os.path.join(folder, name)  # noqa: E731
    cases: list[dict] = []

    def case(name, args, input_path, expect, why):
        cases.append({"name": name, "args": args, "input": input_path, "expect": expect, "why": why})

    good = conv_bn_graph()
    good_bytes = good.SerializeToString()
    valid = _write(d("valid.pb"), good_bytes)

    p = _write(d("empty.pb"), b"")
    case("empty", ["fold", p, "-o", "{out}"], p, [p, "empty"], "an empty file")

    p = _write(d("random.pb"), np.random.default_rng(1).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    case("random_bytes", ["fold", p, "-o", "{out}"], p, [p], "4 KiB of random bytes")

    p = _write(d("truncated.pb"), _truncated(good_bytes))
    case("truncated", ["fold", p, "-o", "{out}"], p, [p], "a valid .pb cut short")

    text = text_format.MessageToString(good)
    broken = text.replace("}", "", 3) + "\nnode { name: \"oops\" op: \n"
    p = _write(d("syntax_error.pbtxt"), broken.encode())
    case("pbtxt_syntax", ["fold", p, "-o", "{out}"], p, [p, "syntax error"], "a .pbtxt with a syntax error")

    p = _write(d("notes.txt"), b"These are my notes about the model.\nNot a graph at all.\n")
    case("text_not_graph_txt", ["fold", p, "-o", "{out}"], p, [p], "a text file that is not a graph")

    p = _write(d("notes.pb"), b"These are my notes about the model.\nNot a graph at all.\n")
    case("text_not_graph_pb", ["fold", p, "-o", "{out}"], p, [p], "a text file named .pb")

    p = d("does_not_exist.pb")
    case("missing_path", ["fold", p, "-o", "{out}"], None, [p, "no such file"], "a path that does not exist")

    p = d("not_a_savedmodel")
    os.makedirs(p, exist_ok=True)
    _write(os.path.join(p, "variables.txt"), b"nothing here\n")
    case("plain_directory", ["fold", p, "-o", "{out}"], os.path.join(p, "variables.txt"), [p, "SavedModel"],
         "a folder that is neither a SavedModel nor a checkpoint folder")

    gd = _copy(good)
    _node(gd, "Conv/Conv2D").input[1] = "Conv/no_such_weights"
    p = _write(d("missing_input.pb"), gd.SerializeToString())
    case("missing_input", ["fold", p, "-o", "{out}"], p, [p, "'Conv/Conv2D'", "Conv/no_such_weights"],
         "a node names an input that does not exist")

    gd = _copy(good)
    _node(gd, "Conv/Conv2D").input[0] = "out"
    p = _write(d("cycle.pb"), gd.SerializeToString())
    case("cycle", ["fold", p, "-o", "{out}"], p, [p, "cycle"], "Conv2D reads the graph's own output")

    gd = _copy(good)
    _node(gd, "Conv/Conv2D").op = "Conv2DThatDoesNotExist"
    p = _write(d("unknown_op.pb"), gd.SerializeToString())
    case("unknown_op", ["fold", p, "-o", "{out}"], p, [p, "Conv2DThatDoesNotExist", "'Conv/Conv2D'"],
         "an op TensorFlow does not know")

    p = _write(d("bn_variable.pb"), conv_bn_graph(params="variable").SerializeToString())
    case("bn_unfrozen_variable", ["fold", p, "-o", "{out}"], p, [p, "bn/FusedBatchNormV3", "bn/gamma_var"],
         "the BN's scale is an unfrozen tf.Variable")

    p = _write(d("bn_placeholder.pb"), conv_bn_graph(params="placeholder").SerializeToString())
    case("bn_placeholder_mean", ["fold", p, "-o", "{out}"], p, [p, "bn/FusedBatchNormV3", "bn/mean_feed"],
         "the BN's mean is a placeholder")

    p = _write(d("nan_mean.pb"), conv_bn_graph(mean=[0.0, np.nan, 0.0, 0.0]).SerializeToString())
    case("nan_statistics", ["fold", p, "-o", "{out}"], p, [p, "bn/FusedBatchNormV3", "NaN"], "a NaN moving mean")

    p = _write(d("neg_variance.pb"), conv_bn_graph(variance=[1.0, -2.0, 1.0, 1.0]).SerializeToString())
    case("negative_variance", ["fold", p, "-o", "{out}"], p, [p, "bn/FusedBatchNormV3", "negative"],
         "a negative moving variance")

    case("unknown_output", ["fold", valid, "-o", "{out}", "--outputs", "logits:0"], valid, [valid, "logits:0"],
         "--outputs names a tensor not in the graph")
    case("unknown_input", ["fold", valid, "-o", "{out}", "--inputs", "images:0"], valid, [valid, "images:0"],
         "--inputs names a tensor not in the graph")
    case("conflicting_input_shape", ["fold", valid, "-o", "{out}", "--input-shape", "x:0=1,16,16,3"], valid,
         [valid, "x:0", "--input-shape"], "--input-shape contradicts the placeholder's declared shape")

    blocker = _write(d("a_regular_file"), b"not a folder\n")
    case("unwritable_outdir", ["fold", valid, "-o", os.path.join(blocker, "sub")], valid, [blocker],
         "the output folder would have to be created under a regular file")

    case("existing_outputs", ["fold", valid, "-o", "{out}"], valid, ["valid.folded.pb", "--force"],
         "the output folder already holds valid.folded.pb (the caller writes it first)")

    assert tuple(c["name"] for c in cases) == CASE_NAMES
    with open(os.path.join(folder, "cases.json"), "w") as f:
        json.dump(cases, f, indent=1)
    return cases


def _copy(gd):
    from tensorflow.core.framework import graph_pb2

    out = graph_pb2.GraphDef()
    out.CopyFrom(gd)
    return out


def _node(gd, name):
    return next(n for n in gd.node if n.name == name)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("outdir")
    ap.add_argument("--list", action="store_true", help="print the cases written")
    args = ap.parse_args(argv)
    cases = write_corpus(args.outdir)
    if args.list:
        for c in cases:
            print(f"{c['name']:26s} {c['why']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
