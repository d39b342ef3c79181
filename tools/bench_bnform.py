#!/usr/bin/env python
"""Which form should a batch norm that cannot be folded take in the exported ONNX model?

    python tools/bench_bnform.py [--work /tmp/bnform] [--arch densenet121] [--runs 30]

Builds a Keras-applications DenseNet-121 (or ResNet-50) the TF1 way — graph mode, the learning
phase a bool placeholder, random weights and random moving statistics, frozen — then times on
onnxruntime's CPU provider (1 thread, batch 1 and 8):

  handedit  tf2onnx of the graph with the learning phase hand-edited to a constant False
            (BNs after a concat stay as ONNX BatchNormalization, the rest folded by tf2onnx);
  mulAdd    bnconvert's ONNX with the unfoldable BNs as Mul+Add (``--bn-form muladd``);
  bnop      bnconvert's ONNX with them as one BatchNormalization each (the default).

Runs are interleaved (A, B, C, A, B, C, …, the order rotated each round) so load on the machine
hits all models alike; medians are printed with the ratio to ``handedit``, and the median and
interquartile range of the per-round ratios.  A second session of the hand-edited model
(``handedit#2``) runs among them as the noise floor: its ratio should be 1.000.  Also printed:
whether onnxruntime's optimized graph (after its NCHWc layout pass) is op-for-op the same as the
hand-edited model's, and with ``--kernel-runs N`` the sum of each node's median kernel time from
onnxruntime's profiler — the operators' own cost, without the machine's stalls.  Nothing here
is a unit test.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def build(arch: str, path: str, size: int) -> dict:
    """Freeze a Keras-applications model built in TF1 graph mode; returns input/output names."""
    import numpy as np
    import tensorflow as tf

    tf.compat.v1.disable_v2_behavior()
    import tf_keras as keras

    keras.backend.clear_session()
    # in TF1 graph mode the BN layers read keras.backend.learning_phase(): a bool
    # placeholder_with_default(False) named keras_learning_phase, as TF 1.x Keras graphs have it
    ctor = {"densenet121": keras.applications.DenseNet121, "resnet50": keras.applications.ResNet50}[arch]
    model = ctor(weights=None, input_shape=(size, size, 3), classes=1000)
    from tf_keras.src import backend as kb

    sess = kb.get_session()
    rng = np.random.default_rng(0)
    values = []
    for v in model.weights:  # one batched assignment (per-variable sess.run grows the graph)
        name, shape = v.name, v.shape.as_list()
        if "moving_variance" in name:
            values.append(rng.uniform(0.5, 2.0, shape))
        elif "moving_mean" in name:
            values.append(rng.normal(0, 0.2, shape))
        elif "gamma" in name:
            values.append(rng.uniform(0.5, 1.5, shape))
        elif "beta" in name:
            values.append(rng.normal(0, 0.1, shape))
        else:
            values.append(sess.run(v))
    model.set_weights([np.asarray(x, dtype="float32") for x in values])
    out = model.outputs[0].op.name
    gd = tf.compat.v1.graph_util.convert_variables_to_constants(sess, sess.graph.as_graph_def(), [out])
    with open(path, "wb") as f:
        f.write(gd.SerializeToString())
    return {"inputs": [model.inputs[0].name], "outputs": [model.outputs[0].name], "flag": keras.backend.learning_phase().op.name}


def handedit(pb: str, info: dict, out: str) -> None:
    """The learning-phase placeholder replaced by Const False, then plain tf2onnx."""
    import numpy as np
    import tensorflow as tf
    import tf2onnx

    gd = tf.compat.v1.GraphDef()
    with open(pb, "rb") as f:
        gd.ParseFromString(f.read())
    for n in gd.node:
        if n.name == info["flag"]:
            n.op = "Const"
            n.ClearField("input")
            for k in list(n.attr):
                if k not in ("dtype",):
                    del n.attr[k]
            n.attr["value"].tensor.CopyFrom(tf.make_tensor_proto(np.array(False)))
    model, _ = tf2onnx.convert.from_graph_def(gd, input_names=info["inputs"], output_names=info["outputs"], opset=17)
    with open(out, "wb") as f:
        f.write(model.SerializeToString())


CONTROL = "handedit#2"


def latency(paths: dict[str, str], batch: int, size: int, runs: int, threads: int = 1):
    """Median seconds per model, the models run interleaved, the order rotated every round;
    ``threads`` 0: onnxruntime's default (all cores).

    A second session of the hand-edited model (``CONTROL``) runs among them: two sessions of one
    file differ only by noise, so its ratio is the measurement's noise floor.  Returns the
    medians, each model's max |diff| against the first, and the median of the per-round ratios
    to ``handedit`` with its interquartile range."""
    import numpy as np
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    paths = dict(paths, **{CONTROL: paths["handedit"]})
    sessions = {k: ort.InferenceSession(p, so, providers=["CPUExecutionProvider"]) for k, p in paths.items()}
    x = np.random.default_rng(1).normal(size=(batch, size, size, 3)).astype("float32")
    times: dict[str, list[float]] = {k: [] for k in sessions}
    outs = {}
    for k, s in sessions.items():  # warm-up, and the outputs to compare
        outs[k] = s.run(None, {s.get_inputs()[0].name: x})[0]
    order = list(sessions)
    for r in range(runs):
        for k in order[r % len(order):] + order[:r % len(order)]:
            s = sessions[k]
            t = time.perf_counter()
            s.run(None, {s.get_inputs()[0].name: x})
            times[k].append(time.perf_counter() - t)
    ref = outs[next(iter(outs))]
    diffs = {k: float(np.max(np.abs(v - ref))) for k, v in outs.items()}
    base = np.array(times["handedit"])
    paired = {k: [float(q) for q in np.percentile(np.array(v) / base, [25, 50, 75])] for k, v in times.items()}
    return {k: float(np.median(v)) for k, v in times.items()}, diffs, paired


def kernel_ms(paths: dict[str, str], batch: int, size: int, runs: int, threads: int = 1) -> dict[str, float]:
    """Sum over the executed nodes of each node's median kernel time (onnxruntime's profiler),
    in ms: what the operators cost, without the time between them or a busy machine's stalls
    (a stall hits one node's one run, and the median drops it)."""
    import json as _json
    import tempfile

    import numpy as np
    import onnxruntime as ort

    x = np.random.default_rng(1).normal(size=(batch, size, size, 3)).astype("float32")
    sessions = {}
    with tempfile.TemporaryDirectory() as tmp:
        for k, p in paths.items():
            so = ort.SessionOptions()
            so.intra_op_num_threads = threads
            so.inter_op_num_threads = 1
            so.enable_profiling = True
            so.profile_file_prefix = os.path.join(tmp, k)
            sessions[k] = ort.InferenceSession(p, so, providers=["CPUExecutionProvider"])
        for _ in range(runs + 2):
            for s in sessions.values():
                s.run(None, {s.get_inputs()[0].name: x})
        out = {}
        for k, s in sessions.items():
            with open(s.end_profiling()) as f:
                events = _json.load(f)
            per: dict[str, list[float]] = {}
            for e in events:
                if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
                    per.setdefault(e["name"], []).append(e["dur"])
            out[k] = sum(float(np.median(v[2:])) for v in per.values()) / 1e3
    return out


def optimized_signature(path: str, threads: int = 1) -> list[tuple]:
    """The graph onnxruntime executes after its optimizers (NCHWc layout included): each node's
    domain, op type and attributes in order, names and weights left out."""
    import tempfile

    import onnx
    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as tmp:
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.log_severity_level = 3
        so.optimized_model_filepath = os.path.join(tmp, "opt.onnx")
        ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
        model = onnx.load(so.optimized_model_filepath, load_external_data=False)
    return [(n.domain, n.op_type, tuple(sorted((a.name, str(onnx.helper.get_attribute_value(a))) for a in n.attribute)))
            for n in model.graph.node]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--work", default="/tmp/bnform")
    ap.add_argument("--arch", default="densenet121", choices=["densenet121", "resnet50"])
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--batches", default="1,8")
    ap.add_argument("--threads", type=int, default=1, help="onnxruntime intra-op threads (0: all cores)")
    ap.add_argument("--kernel-runs", type=int, default=0,
                    help="also sum each node's median kernel time over this many profiled runs (0: skip)")
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    os.makedirs(args.work, exist_ok=True)
    pb = os.path.join(args.work, f"{args.arch}.pb")
    meta = pb + ".json"
    if not os.path.exists(meta):
        info = build(args.arch, pb, args.size)
        with open(meta, "w") as f:
            json.dump(info, f)
    with open(meta) as f:
        info = json.load(f)
    import bnconvert

    paths = {"handedit": os.path.join(args.work, f"{args.arch}.handedit.onnx")}
    if not os.path.exists(paths["handedit"]):
        handedit(pb, info, paths["handedit"])
    for form in ("muladd", "bnop"):
        out = os.path.join(args.work, form)
        os.makedirs(out, exist_ok=True)
        rep = bnconvert.convert(pb, out, to=("onnx",), verify=False, force=True, bn_form=form)
        paths[form] = rep.files["onnx"]
        print(f"{form}: {rep.bn}", file=sys.stderr)
    sig = {k: optimized_signature(p, args.threads) for k, p in paths.items()}
    same = {k: sig[k] == sig["handedit"] for k in paths}
    print("onnxruntime's optimized graph identical to handedit's (op types, order, attributes): "
          + ", ".join(f"{k} {'yes' if v else 'NO'} ({len(sig[k])} nodes)" for k, v in same.items()))
    rows = []
    for b in [int(x) for x in args.batches.split(",")]:
        med, diffs, paired = latency(paths, b, args.size, args.runs, args.threads)
        kern = kernel_ms(dict(paths, **{CONTROL: paths["handedit"]}), b, args.size, args.kernel_runs, args.threads) if args.kernel_runs else {}
        base = med["handedit"]
        for k, v in med.items():
            q1, q2, q3 = paired[k]
            row = {"arch": args.arch, "batch": b, "threads": args.threads or "all", "model": k,
                   "median_ms": 1e3 * v, "ratio": v / base, "paired_ratio_median": q2,
                   "paired_ratio_iqr": [q1, q3], "max_abs_vs_handedit": diffs[k],
                   "optimized_graph_as_handedit": same.get(k, True)}
            if k in kern:
                row["kernel_ms"] = kern[k]
                row["kernel_ratio"] = kern[k] / kern["handedit"]
            rows.append(row)
            kr = f"  kernels {kern[k]:8.2f} ms {kern[k] / kern['handedit']:5.3f}x" if k in kern else ""
            print(f"{args.arch:12s} batch {b:2d} threads {args.threads or 'all'}  {k:10s} {1e3 * v:9.2f} ms  {v / base:5.3f}x  "
                  f"per-round {q2:5.3f}x [{q1:5.3f}, {q3:5.3f}]{kr}  max|diff| {diffs[k]:.2e}", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
