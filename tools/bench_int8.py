#!/usr/bin/env python
"""Why folding matters for int8: quantize the same model with and without folding.

For each model — the three MNIST fixtures and a MobileNet-v1-style network (an ImageNet-class
architecture: 3×3 conv, 13 depthwise-separable blocks, every conv followed by a fused
``tf.compat.v1.layers.batch_normalization(training=phase)``, ReLU6, global average pool,
dense; width multiplier 0.25, 32×32×3 input) trained here for a few hundred steps on real MNIST
digits (padded to 32×32, grey copied to 3 channels) so that its BN statistics are real — it
writes, with bnconvert's own stages:

- **folded**: ``bnconvert fold --quantize int8`` (BN inside the conv/matmul weights);
- **unfolded**: the same with ``--no-fold``: the training flag is still set false and the conds
  pruned, but each BN stays as separate ops (one ``Mul`` and one ``Add`` after its conv/matmul),
  as tf2onnx emits a BN it does not fold; then the same int8 quantizers (onnxruntime's
  ``quantize_static`` with ``quant_pre_process``, whose onnxruntime graph optimizations may fuse
  a Mul/Add into a Conv themselves, and TensorFlow's TFLite converter, which fuses some too);
- **unfolded, no pre-processing**: the unfolded ONNX quantized without ``quant_pre_process`` —
  what a pipeline that neither folds nor lets onnxruntime fuse gets.

For every file: accuracy on held-out digits (1,000 MNIST test digits; never used for training
or calibration), top-1 agreement / cosine / SQNR against the original graph in TensorFlow
(bnconvert.verify.quant's metrics), file size, op count, and batch-1 latency (median of
``--runs`` single-threaded runs: onnxruntime ``intra_op_num_threads=1``, TFLite
``num_threads=1``). ``--thresholds`` also measures broken int8 conversions of the folded
models (8-bit ONNX weights on this CPU, one layer's weight scales ×4, random calibration): the
numbers behind bnconvert.verify.quant's defaults.

    python tools/bench_int8.py [--quick] [--thresholds] [--md docs/BENCHMARKS.md]

``--md`` replaces the section between ``<!-- bench_int8 -->`` markers in that file (appends
it the first time). Nothing here is hard-coded: every number printed is measured by the run.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

FIXTURES = ["mnist_mlp_moments", "mnist_mlp_contrib_fused", "mnist_conv"]
START, END = "<!-- bench_int8 start -->", "<!-- bench_int8 end -->"


# ------------------------------------------------------------------------ MobileNet (built in a subprocess)

def mobilenet_images(x784: np.ndarray) -> np.ndarray:
    """[N,784] digits → [N,32,32,3] (2-pixel zero border, grey in every channel)."""
    x = x784.reshape(-1, 28, 28, 1)
    x = np.pad(x, ((0, 0), (2, 2), (2, 2), (0, 0)))
    return np.repeat(x, 3, axis=3).astype(np.float32)


def build_mobilenet(out_pb: str, steps: int, seed: int = 0) -> dict:
    """Train the MobileNet-v1-style net TF1-style (graph mode, ``phase`` placeholder) and freeze it."""
    import tensorflow as tf

    from bnconvert.mnist import load_mnist

    tf.config.experimental.enable_op_determinism()  # the same weights on every run
    tf.compat.v1.disable_v2_behavior()
    tf.compat.v1.reset_default_graph()
    tf.compat.v1.set_random_seed(seed)
    digits = load_mnist()
    xtr, ytr = mobilenet_images(digits.x_train), digits.y_train
    x = tf.compat.v1.placeholder(tf.float32, [None, 32, 32, 3], name="input")
    y = tf.compat.v1.placeholder(tf.int64, [None], name="labels")
    phase = tf.compat.v1.placeholder(tf.bool, [], name="phase")
    layers = tf.compat.v1.layers
    alpha = 0.25

    def bn_relu6(h, name):
        h = layers.batch_normalization(h, training=phase, momentum=0.9, name=f"{name}/bn")
        return tf.nn.relu6(h, name=f"{name}/relu6")

    h = bn_relu6(layers.conv2d(x, int(32 * alpha), 3, padding="same", use_bias=False, name="conv0"), "conv0")
    blocks = [(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2)] + [(512, 1)] * 5 + [(1024, 2), (1024, 1)]
    for i, (filters, stride) in enumerate(blocks, 1):
        c = h.shape[-1]
        with tf.compat.v1.variable_scope(f"block{i}/dw"):
            k = tf.compat.v1.get_variable("depthwise_kernel", [3, 3, c, 1])
        h = tf.nn.depthwise_conv2d(h, k, [1, stride, stride, 1], "SAME", name=f"block{i}/dw/depthwise")
        h = bn_relu6(h, f"block{i}/dw")
        h = bn_relu6(layers.conv2d(h, int(filters * alpha), 1, use_bias=False, name=f"block{i}/pw"), f"block{i}/pw")
    h = tf.reduce_mean(h, axis=[1, 2], name="avgpool")
    logits = layers.dense(h, 10, name="logits")
    loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=logits))
    with tf.control_dependencies(tf.compat.v1.get_collection(tf.compat.v1.GraphKeys.UPDATE_OPS)):
        train = tf.compat.v1.train.AdamOptimizer(2e-3).minimize(loss)
    updates = tf.compat.v1.get_collection(tf.compat.v1.GraphKeys.UPDATE_OPS)
    rng = np.random.default_rng(seed)
    t0 = time.perf_counter()
    with tf.compat.v1.Session() as s:
        s.run(tf.compat.v1.global_variables_initializer())
        for _ in range(steps):
            idx = rng.integers(0, len(xtr), 64)
            s.run(train, {x: xtr[idx], y: ytr[idx], phase: True})
        for _ in range(100):  # weights fixed: moving statistics of the final weights (0.9^100 < 1e-4)
            idx = rng.integers(0, len(xtr), 64)
            s.run(updates, {x: xtr[idx], phase: True})
        frozen = tf.compat.v1.graph_util.convert_variables_to_constants(s, s.graph.as_graph_def(), [logits.op.name])
    with open(out_pb, "wb") as f:
        f.write(frozen.SerializeToString())
    return {"output": logits.name, "train_s": time.perf_counter() - t0, "steps": steps}


# ------------------------------------------------------------------------ measurements

def latency_ms(kind: str, path: str, feed: dict, runs: int) -> float:
    """Median batch-1 latency, single thread."""
    if kind == "onnx":
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads = so.inter_op_num_threads = 1
        so.log_severity_level = 3
        sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
        name = sess.get_inputs()[0].name
        x = next(iter(feed.values()))

        def once():
            sess.run(None, {name: x})
    else:
        from ai_edge_litert.interpreter import Interpreter

        it = Interpreter(model_path=path, num_threads=1)
        it.allocate_tensors()
        d = it.get_input_details()[0]
        x = next(iter(feed.values()))
        if np.issubdtype(d["dtype"], np.integer):
            sc, zp = d["quantization"]
            x = np.clip(np.round(x / sc) + zp, -128, 127).astype(d["dtype"])

        def once():
            it.set_tensor(d["index"], x)
            it.invoke()
    for _ in range(5):
        once()
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        once()
        times.append(time.perf_counter() - t)
    return 1000 * statistics.median(times)


def evaluate(kind: str, path: str, feeds: dict, outputs: list[str], ref: dict, labels, runs: int) -> dict:
    from bnconvert.verify.quant import compare_int8, run_in_batches, run_tflite_q, thresholds
    from bnconvert.verify.runners import run_onnx

    if kind == "onnx":
        fn = lambda f: run_onnx(path, f, outputs)  # noqa: E731
    else:
        fn = lambda f: run_tflite_q(path, f, outputs)  # noqa: E731
    cand = run_in_batches(fn, feeds, 250, outputs)
    (row,) = compare_int8(ref, cand, thresholds(), labels=labels)
    one = {k: v[:1] for k, v in feeds.items()}
    ops = _ops(kind, path)
    return {"file": os.path.basename(path), "size": os.path.getsize(path), "accuracy": row.get("accuracy"),
            "reference_accuracy": row.get("reference_accuracy"), "top1": row.get("top1_agreement"),
            "cosine": row.get("cosine"), "sqnr_db": row.get("sqnr_db"), "ok": row["ok"],
            "latency_ms": latency_ms(kind, path, one, runs), "ops": ops}


def _ops(kind: str, path: str) -> dict:
    if kind == "onnx":
        import onnx

        from bnconvert.export.onnx import count_ops

        return dict(count_ops(onnx.load(path).graph))
    from bnconvert.verify.runners import tflite_interpreter

    out: dict[str, int] = {}
    for op in tflite_interpreter(path)._get_ops_details():  # noqa: SLF001
        out[op["op_name"]] = out.get(op["op_name"], 0) + 1
    return out


def corrupt_scales(src: str, dst: str, factor: float = 4.0) -> str:
    """Multiply the scales of the first weight DequantizeLinear (an int8 initializer of rank ≥ 2)."""
    import onnx
    from onnx import numpy_helper

    m = onnx.load(src)
    inits = {i.name: i for i in m.graph.initializer}
    for n in m.graph.node:
        if n.op_type == "DequantizeLinear" and n.input[0] in inits and len(inits[n.input[0]].dims) >= 2:
            sc = inits[n.input[1]]
            sc.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(sc) * np.float32(factor), sc.name))
            onnx.save(m, dst)
            return n.name
    raise RuntimeError("no weight DequantizeLinear found")


def bench_model(name: str, path: str, calibration: str, feeds: dict, labels, work: str, runs: int,
                thresholds_too: bool) -> dict:
    import bnconvert
    from bnconvert.quantize.onnx_int8 import quantize_onnx
    from bnconvert.verify.runners import run_tf

    res: dict = {"model": name, "variants": {}}
    common = dict(force=True, verify=False, quantize="int8", calibration=calibration, calibration_samples=200)
    t = time.perf_counter()
    rep = bnconvert.convert(path, os.path.join(work, name, "folded"), **common)
    res["convert_s"] = time.perf_counter() - t
    rep_u = bnconvert.convert(path, os.path.join(work, name, "unfolded"), mode="scale_shift", to="onnx,tflite",
                              **common)
    outs = rep.outputs
    orig = bnconvert.load(path)
    ref = {o: np.concatenate([run_tf(orig.graph_def, {k: v[i:i + 250] for k, v in feeds.items()}, [o],
                                     flags=rep.training_flags)[o] for i in range(0, len(labels), 250)])
           for o in outs}
    res["float_accuracy"] = float(np.mean(ref[outs[0]].argmax(-1) == labels))
    res["bn_layers"] = rep.bn["found"]
    # unfolded, no quant_pre_process
    from bnconvert.quantize.calibration import load_calibration
    from bnconvert.tfproto import np_dtype  # noqa: F401 - ensures TF env is set like the CLI's

    cal = load_calibration(calibration, rep.inputs, rep.input_shapes, {i: np.float32 for i in rep.inputs}, 200)
    raw = os.path.join(work, name, "unfolded", "raw.int8.onnx")
    quantize_onnx(rep_u.files["onnx"], raw, rep_u.exports["onnx"]["onnx_names"], rep.inputs, cal.calib,
                  preprocess=False)
    v = res["variants"]
    for label, r in (("folded", rep), ("unfolded", rep_u)):
        v[f"{label} float onnx"] = evaluate("onnx", r.files["onnx"], feeds, outs, ref, labels, runs)
        v[f"{label} int8 onnx"] = evaluate("onnx", r.files["int8_onnx"], feeds, outs, ref, labels, runs)
        v[f"{label} float tflite"] = evaluate("tflite", r.files["tflite"], feeds, outs, ref, labels, runs)
        v[f"{label} int8 tflite"] = evaluate("tflite", r.files["int8_tflite"], feeds, outs, ref, labels, runs)
    v["unfolded (no pre-processing) int8 onnx"] = evaluate("onnx", raw, feeds, outs, ref, labels, runs)
    if thresholds_too:
        b: dict = {}
        f8 = os.path.join(work, name, "folded", "w8.int8.onnx")
        quantize_onnx(rep.files["onnx"], f8, rep.exports["onnx"]["onnx_names"], rep.inputs, cal.calib,
                      reduce_range=False)
        b["8-bit ONNX weights (reduce_range off)"] = evaluate("onnx", f8, feeds, outs, ref, labels, 3)
        bad = os.path.join(work, name, "folded", "scales.int8.onnx")
        layer = corrupt_scales(rep.files["int8_onnx"], bad)
        b[f"weight scales ×4 ({layer.split('_DequantizeLinear')[0]})"] = evaluate("onnx", bad, feeds, outs, ref,
                                                                                   labels, 3)
        rr = bnconvert.convert(path, os.path.join(work, name, "random"), **{**common, "calibration": "random"})
        b["random calibration, onnx"] = evaluate("onnx", rr.files["int8_onnx"], feeds, outs, ref, labels, 3)
        b["random calibration, tflite"] = evaluate("tflite", rr.files["int8_tflite"], feeds, outs, ref, labels, 3)
        res["broken"] = b
    return res


# ------------------------------------------------------------------------ report

def _f(x, fmt):
    return "-" if x is None else format(x, fmt)


def markdown(results: list[dict], meta: dict) -> str:
    lines = [START, "", "## int8: folded vs unfolded quantization (`tools/bench_int8.py`)", "",
             f"Generated by `{meta['command']}` on {meta['date']}; the run took {meta['minutes']:.1f} min. "
             "Every number below was measured by that run; rerun the command to refresh this section.", "",
             f"- machine: {meta['machine']}; load average (1 min) {meta['load_before']:.2f} before, "
             f"{meta['load_after']:.2f} after (other processes share the cores: latencies include their interference)",
             f"- versions: {meta['versions']}",
             "- accuracy: 1,000 held-out MNIST test digits (never used for training or calibration); calibration: "
             "200 train digits (`--calibration mnist`; the MobileNet: an .npz of 200 train digits at 32×32×3)",
             "- top-1 / cosine / SQNR: against the original graph run in TensorFlow (training flag false), "
             "as `bnconvert.verify.quant` computes them; latency: batch 1, one thread, median of "
             f"{meta['runs']} runs", "",
             "*folded*: `bnconvert fold --quantize int8`. *unfolded*: the same with `--no-fold` (BN as a separate "
             "Mul + Add after each conv/matmul, training flag constant false), then the same quantizers. "
             "*no pre-processing*: the unfolded ONNX quantized without `quant_pre_process` (no onnxruntime "
             "fusion before quantization).", ""]
    lines += ["Summary (computed from the tables below): int8 ONNX, folded vs unfolded without pre-processing, "
              "and the TFLite int8 file's size against the float one:", ""]
    for r in results:
        f, u = r["variants"]["folded int8 onnx"], r["variants"]["unfolded (no pre-processing) int8 onnx"]
        ft, qt = r["variants"]["folded float tflite"], r["variants"]["folded int8 tflite"]
        lines.append(f"- {r['model']}: accuracy {100 * f['accuracy']:.2f}% vs {100 * u['accuracy']:.2f}%, SQNR "
                     f"{f['sqnr_db']:.1f} vs {u['sqnr_db']:.1f} dB, {sum(f['ops'].values())} vs "
                     f"{sum(u['ops'].values())} ops, latency {f['latency_ms']:.3f} vs {u['latency_ms']:.3f} ms; "
                     f"int8 .tflite {100 * qt['size'] / ft['size']:.0f}% of the float .tflite")
    lines.append("")
    for r in results:
        lines += [f"### {r['model']} ({r['bn_layers']} BN layers; float original {100 * r['float_accuracy']:.2f}%)", "",
                  "| variant | accuracy | top-1 agr. | cosine | SQNR dB | size KiB | ops | latency ms |",
                  "|---|---|---|---|---|---|---|---|"]
        for name, v in r["variants"].items():
            ops = sum(v["ops"].values())
            lines.append(f"| {name} | {_f(v['accuracy'] and 100 * v['accuracy'], '.2f')}% | "
                         f"{_f(v['top1'] and 100 * v['top1'], '.1f')}% | {_f(v['cosine'], '.5f')} | "
                         f"{_f(v['sqnr_db'], '.1f')} | {v['size'] / 1024:.1f} | {ops} | {v['latency_ms']:.3f} |")
        lines.append("")
    broken = [r for r in results if "broken" in r]
    from bnconvert.verify.quant import thresholds

    th = thresholds()
    if broken:
        lines += ["### Broken int8 conversions (what verification must reject)", "",
                  "The folded models' int8 files with one thing wrong; the verdict is bnconvert's, with its "
                  f"default thresholds (top-1 ≥ {100 * th['min_top1']:g}%, cosine ≥ {th['min_cosine']:g}, SQNR ≥ "
                  f"{th['min_sqnr_db']:g} dB, accuracy drop ≤ {th['max_accuracy_drop_pp']:g} point).", "",
                  "| model | conversion | accuracy | top-1 agr. | cosine | SQNR dB | verdict |", "|---|---|---|---|---|---|---|"]
        for r in broken:
            good = r["variants"]["folded int8 onnx"], r["variants"]["folded int8 tflite"]
            for label, v in [("good: int8 onnx", good[0]), ("good: int8 tflite", good[1])] + list(r["broken"].items()):
                lines.append(f"| {r['model']} | {label} | {_f(v['accuracy'] and 100 * v['accuracy'], '.2f')}% | "
                             f"{_f(v['top1'] and 100 * v['top1'], '.1f')}% | {_f(v['cosine'], '.5f')} | "
                             f"{_f(v['sqnr_db'], '.1f')} | {'PASS' if v['ok'] else 'FAIL'} |")
        lines.append("")
    lines.append(END)
    return "\n".join(lines)


def write_md(path: str, section: str) -> None:
    text = open(path).read() if os.path.exists(path) else "# bnconvert benchmarks\n"
    if START in text and END in text:
        text = text[: text.index(START)] + section + text[text.index(END) + len(END):]
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    with open(path, "w") as f:
        f.write(text)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="mnist_conv only, MobileNet with 30 steps, 20 runs")
    p.add_argument("--thresholds", action="store_true", help="also measure broken int8 conversions")
    p.add_argument("--steps", type=int, default=400, help="MobileNet training steps (default 400)")
    p.add_argument("--runs", type=int, default=200, help="latency runs per file (default 200)")
    p.add_argument("--md", help="write the markdown section into this file")
    p.add_argument("--json", help="write the raw results here")
    p.add_argument("--build-mobilenet", nargs=2, metavar=("OUT_PB", "STEPS"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.build_mobilenet:
        print(json.dumps(build_mobilenet(args.build_mobilenet[0], int(args.build_mobilenet[1]))))
        return 0
    t0 = time.perf_counter()
    load_before = os.getloadavg()[0]
    runs = 20 if args.quick else args.runs
    steps = 30 if args.quick else args.steps
    from bnconvert.mnist import load_mnist

    digits = load_mnist()
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-int8-") as work:
        for name in (["mnist_conv"] if args.quick else FIXTURES):
            path = os.path.join(ROOT, "fixtures", f"{name}.pb")
            shape = [28, 28, 1] if name == "mnist_conv" else [784]
            feeds = {"x:0": digits.x_test.reshape([-1] + shape)}
            print(f"{name} ...", file=sys.stderr, flush=True)
            results.append(bench_model(name, path, "mnist", feeds, digits.y_test, work, runs, args.thresholds))
        mb = os.path.join(work, "mobilenet_v1_025.pb")
        print(f"mobilenet: training {steps} steps ...", file=sys.stderr, flush=True)
        info = json.loads(subprocess.run([sys.executable, os.path.abspath(__file__), "--build-mobilenet", mb, str(steps)],
                                         check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1])
        cal = os.path.join(work, "mobilenet_calibration.npz")
        idx = np.linspace(0, len(digits.x_train) - 1, 200).round().astype(int)
        np.savez(cal, input=mobilenet_images(digits.x_train[idx]))
        feeds = {"input:0": mobilenet_images(digits.x_test)}
        print("mobilenet ...", file=sys.stderr, flush=True)
        r = bench_model(f"MobileNet-v1 0.25 ({info['steps']} steps)", mb, cal, feeds, digits.y_test, work, runs,
                        args.thresholds)
        r["train_s"] = info["train_s"]
        results.append(r)
    import onnxruntime
    import tensorflow as tf

    meta = {"command": "python tools/bench_int8.py" + (" " + " ".join(argv or sys.argv[1:])).rstrip(),
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "minutes": (time.perf_counter() - t0) / 60, "runs": runs, "load_before": load_before,
            "load_after": os.getloadavg()[0],
            "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores",
            "versions": f"Python {platform.python_version()}, TensorFlow {tf.__version__}, "
                        f"onnxruntime {onnxruntime.__version__}, numpy {np.__version__}"}
    try:
        model = [ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")][0]
        meta["machine"] = f"{model}, {os.cpu_count()} CPU cores"
    except (OSError, IndexError):
        pass
    section = markdown(results, meta)
    print(section)
    if args.md:
        write_md(args.md, section)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"meta": meta, "results": results}, f, indent=1, default=float)
    return 0


if __name__ == "__main__":
    sys.exit(main())
