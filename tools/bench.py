#!/usr/bin/env python
"""Benchmark bnconvert on generated TF1 batch-norm graphs and write docs/BENCHMARKS.md.

    python tools/bench.py                        # full run: 10, 50, 200, 1000 BN layers
                                                 # -> docs/BENCHMARKS.md
    python tools/bench.py --quick                # 10 and 50 BN layers, few latency runs; prints
    python tools/bench.py --quick --out b.md     # ... and writes the report to b.md

Options: --sizes 10,50  --archs resnet,mlp  --graphs DIR (graph cache)  --rebuild
         --workdir DIR --keep  --runs N (latency runs)  --timeout S (per conversion)

What it measures.  Every heavy step runs in a child process of this script (``--child``), so
that its peak memory is its own and a hung converter can be stopped.

graphs   TF 1.x-style frozen graphs built with ``tf.compat.v1.layers`` (TF_USE_LEGACY_KERAS=1,
         v2 behaviour off): a ResNet-like conv stack (Conv2D 3x3, 4 channels, 8x8 input, fused
         BN, residual add every two layers, ReLU) and a deep MLP (Dense 16, decomposed BN with
         ``moments``, tanh), each with a bool ``phase`` placeholder as ``training``, random
         moving statistics, gamma and beta, frozen with ``convert_variables_to_constants``;
         and the same architectures without any BN (biases instead), the latency floor.
         Graphs are cached in --graphs (default ~/.cache/bnconvert-bench) because TF takes
         minutes to build a 1,000-layer graph; the build time is recorded when they are built.
stages   bnconvert's load, inference mode (flags set, Switch/Merge pruned), match
         (``find_bns`` alone), match+fold (``fold_all``, which matches again), write .pb, ONNX
         export, TFLite export and verification (original TF graph against the folded .pb, the
         ONNX in onnxruntime and the .tflite): wall time and peak RSS per stage (VmHWM after
         resetting it through /proc/self/clear_refs).  ``bnconvert.fold`` is also timed as a
         whole; its ``report.timings["match_fold"]`` is the number target 1 is about.
peers    tf2onnx on the unfolded graph as users run it (``phase`` kept as an input, fed False),
         tf2onnx after replacing ``phase`` by a constant False, and TF's
         ``optimize_for_inference``: conversion time, ops left, BN-derived ops left, and
         whether outputs match the original graph (bnconvert's rule: max_abs <= 1e-5 +
         1e-4 * max|reference|).
cli      ``bnconvert fold --to onnx --no-verify`` against ``python -m tf2onnx.convert`` on the
         same unfolded graph: wall time of the whole command, Python start-up included.
latency  onnxruntime, CPU, ORT_ENABLE_ALL: median latency of bnconvert's ONNX, tf2onnx's ONNX of
         the unfolded graph (and with ``phase`` constant) and of the BN-free floor, with 1 thread
         and all threads, batch 1 and 100; models are interleaved run by run.
"""
from __future__ import annotations

import argparse
import datetime
import gc
import json
import math
import os
import platform
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUILDER_VERSION = 1  # bump when the generated graphs change (invalidates the cache)
ARCHS = ("resnet", "mlp")
FULL_SIZES = (10, 50, 200, 1000)
QUICK_SIZES = (10, 50)
INPUT_SHAPE = {"resnet": [8, 8, 4], "mlp": [16]}  # without the batch dim
CHANNELS = {"resnet": 4, "mlp": 16}
REF_BATCH = 8
ATOL, RTOL = 1e-5, 1e-4  # bnconvert.verify.compare defaults
ENV = {"TF_CPP_MIN_LOG_LEVEL": "3", "TF_USE_LEGACY_KERAS": "1", "TF_ENABLE_ONEDNN_OPTS": "1",
       "PYTHONWARNINGS": "ignore", "CUDA_VISIBLE_DEVICES": ""}

# BN-derived op types (ONNX and TF); Mul/Add chains after a linear op are counted separately
ONNX_BN_OPS = ("BatchNormalization", "If", "Sqrt", "Reciprocal")
TF_BN_OPS = ("FusedBatchNorm", "FusedBatchNormV2", "FusedBatchNormV3", "BatchNormWithGlobalNormalization",
             "Switch", "Merge", "Rsqrt", "Sqrt", "Reciprocal")
ONNX_LINEAR = ("Conv", "MatMul", "Gemm")
TF_LINEAR = ("Conv2D", "MatMul", "DepthwiseConv2dNative", "Conv2DBackpropInput", "Conv3D")
CONST_OPS = ("Const", "Constant", "Placeholder", "PlaceholderWithDefault")


# =============================================================== memory and timing helpers
def _status_kb(key: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def _reset_peak() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0); False where that is not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def measure(fn, stages: list | None = None, name: str = ""):
    """Run ``fn()``; return (result, seconds, peak RSS MiB during it, RSS MiB before it)."""
    gc.collect()
    before = _status_kb("VmRSS") / 1024
    clean = _reset_peak()
    t = time.perf_counter()
    out = fn()
    dt = time.perf_counter() - t
    peak = _status_kb("VmHWM") / 1024
    if stages is not None:
        stages.append({"stage": name, "s": dt, "peak_mb": peak, "before_mb": before, "clean_peak": clean})
    return out, dt, peak, before


class Alarm:
    """Raise TimeoutError in the main thread after ``seconds`` (Python-level code only)."""

    def __init__(self, seconds: float):
        self.seconds = seconds

    def _fire(self, *_):
        raise TimeoutError(f"took longer than {self.seconds:.0f} s")

    def __enter__(self):
        if self.seconds and hasattr(signal, "SIGALRM"):
            self.old = signal.signal(signal.SIGALRM, self._fire)
            signal.setitimer(signal.ITIMER_REAL, self.seconds)
        return self

    def __exit__(self, *exc):
        if self.seconds and hasattr(signal, "SIGALRM"):
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, self.old)
        return False


def _one_line(e: BaseException) -> str:
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    text = f"{type(e).__name__}: {lines[0] if lines else ''}"
    return text if len(text) < 160 else text[:157] + "..."


# ====================================================================== graph generation
def _tf():
    os.environ.update({k: v for k, v in ENV.items() if k not in os.environ})
    import warnings

    warnings.filterwarnings("ignore")
    from bnconvert.tfproto import tf as _bn_tf

    tf = _bn_tf()
    tf.get_logger().setLevel("ERROR")
    return tf


def build_graph(arch: str, n: int, with_bn: bool, seed: int = 0):
    """A frozen TF1 graph: (graph_def, {graph_s, init_s, freeze_s}).

    resnet: n conv layers in n/2 residual blocks ``relu(x + bn(conv(relu(bn(conv(x))))))``;
    mlp: n ``tanh(bn(dense(x)))`` layers; both end in global mean (resnet) and a dense 10 named
    ``out``.  Weights and BN statistics come from ``numpy`` with ``seed``; the last BN of each
    residual block gets a small gamma (as ResNets initialise it) so 1,000 layers stay finite.
    """
    import numpy as np

    tf = _tf()
    tf.compat.v1.disable_v2_behavior()  # v1 control flow: tf.cond -> Switch/Merge, as in TF 1.x
    rng = np.random.default_rng(seed + 1000 * n + (0 if arch == "resnet" else 1))
    L = tf.compat.v1.layers
    c = CHANNELS[arch]

    def init(a):
        return tf.compat.v1.constant_initializer(np.asarray(a, np.float32))

    g = tf.Graph()
    t0 = time.perf_counter()
    with g.as_default():
        x = tf.compat.v1.placeholder(tf.float32, [None] + INPUT_SHAPE[arch], name="x")
        phase = tf.compat.v1.placeholder(tf.bool, [], name="phase") if with_bn else None

        def layer(h, i, small_gamma=False):
            if arch == "resnet":
                k = rng.normal(0, math.sqrt(2 / (9 * c)), (3, 3, c, c))
                h = L.conv2d(h, c, 3, padding="same", use_bias=not with_bn, name=f"conv{i}",
                             kernel_initializer=init(k), bias_initializer=init(rng.normal(0, 0.1, c)))
            else:
                k = rng.normal(0, math.sqrt(1 / c), (c, c))
                h = L.dense(h, c, use_bias=not with_bn, name=f"dense{i}",
                            kernel_initializer=init(k), bias_initializer=init(rng.normal(0, 0.1, c)))
            if with_bn:
                gamma = rng.uniform(0.05, 0.2, c) if small_gamma else rng.uniform(0.5, 1.5, c)
                h = L.batch_normalization(
                    h, training=phase, name=f"bn{i}", gamma_initializer=init(gamma),
                    beta_initializer=init(rng.normal(0, 0.1, c)),
                    moving_mean_initializer=init(rng.normal(0, 0.5, c)),
                    moving_variance_initializer=init(rng.uniform(0.5, 2.0, c)))
            return h

        h = x
        if arch == "resnet":
            for b in range(n // 2):
                y = tf.nn.relu(layer(h, 2 * b))
                y = layer(y, 2 * b + 1, small_gamma=True)
                h = tf.nn.relu(h + y)
            h = tf.reduce_mean(h, [1, 2])
        else:
            for i in range(n):
                h = tf.nn.tanh(layer(h, i))
        tf.identity(L.dense(h, 10, name="logits", kernel_initializer=init(rng.normal(0, 0.3, (c, 10))),
                            bias_initializer=init(rng.normal(0, 0.1, 10))), name="out")
        t1 = time.perf_counter()
        with tf.compat.v1.Session(graph=g) as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            t2 = time.perf_counter()
            frozen = tf.compat.v1.graph_util.convert_variables_to_constants(sess, g.as_graph_def(), ["out"])
        t3 = time.perf_counter()
    return frozen, {"graph_s": t1 - t0, "init_s": t2 - t1, "freeze_s": t3 - t2}


def weight_bytes(graph_def) -> int:
    """Bytes of floating-point constants (the model's weights and BN parameters)."""
    from bnconvert.tfproto import make_ndarray

    total = 0
    for node in graph_def.node:
        if node.op == "Const":
            v = make_ndarray(node.attr["value"].tensor)
            if v.dtype.kind == "f":
                total += v.nbytes
    return total


def run_tf(graph_def, feeds: dict, outputs: list[str]):
    tf = _tf()
    g = tf.Graph()
    with g.as_default():
        tf.compat.v1.import_graph_def(graph_def, name="")
        with tf.compat.v1.Session(graph=g) as s:
            return s.run(outputs, feeds)


def task_build(specs: list[dict]) -> dict:
    """Build every spec ``{arch, n, bn, path}``: writes path (.pb), .json (facts) and .npz (reference)."""
    import numpy as np

    for spec in specs:
        t = time.perf_counter()
        gd, times = build_graph(spec["arch"], spec["n"], spec["bn"])
        data = gd.SerializeToString()
        with open(spec["path"] + ".tmp", "wb") as f:
            f.write(data)
        os.replace(spec["path"] + ".tmp", spec["path"])
        x = np.random.default_rng(7).standard_normal([REF_BATCH] + INPUT_SHAPE[spec["arch"]]).astype(np.float32)
        feeds = {"x:0": x}
        if spec["bn"]:
            feeds["phase:0"] = False
        (out,) = run_tf(gd, feeds, ["out:0"])
        np.savez(spec["path"][:-3] + ".npz", x=x, out=out)
        facts = dict(spec, **times, build_s=time.perf_counter() - t, nodes=len(gd.node), bytes=len(data),
                     weight_bytes=weight_bytes(gd), ops=_hist(gd.node), out_absmax=float(np.abs(out).max()),
                     tensorflow=_tf().__version__, builder_version=BUILDER_VERSION,
                     built=datetime.datetime.now().isoformat(timespec="seconds"))
        with open(spec["path"][:-3] + ".json", "w") as f:
            json.dump(facts, f, indent=1)
    return {"built": len(specs)}


def _hist(nodes) -> dict:
    out: dict[str, int] = {}
    for n in nodes:
        op = getattr(n, "op", None) or n.op_type
        out[op] = out.get(op, 0) + 1
    return dict(sorted(out.items()))


# ====================================================================== op counting
def onnx_counts(model) -> dict:
    """Ops left (nodes other than Constant, subgraphs included) and BN-derived ops left."""
    from bnconvert.export.onnx import _all_nodes

    nodes = list(_all_nodes(model.graph))
    consts = {i.name for i in model.graph.initializer}
    producer, consumers = {}, {}
    for nd in nodes:
        if nd.op_type == "Constant":
            consts.update(nd.output)
        for o in nd.output:
            producer[o] = nd
        for i in nd.input:
            consumers.setdefault(i, []).append(nd)
    bn = {op: sum(nd.op_type == op for nd in nodes) for op in ONNX_BN_OPS}
    chain = 0
    for nd in nodes:
        if nd.op_type != "Mul" or len(nd.input) != 2 or sum(i in consts for i in nd.input) != 1:
            continue
        x = next(i for i in nd.input if i not in consts)
        prod = producer.get(x)
        users = consumers.get(nd.output[0], [])
        if prod is None or prod.op_type not in ONNX_LINEAR or len(users) != 1:
            continue
        add = users[0]
        if add.op_type == "Add" and sum(i in consts for i in add.input) == 1:
            chain += 2
    bn["Mul+Add after linear"] = chain
    bn = {k: v for k, v in bn.items() if v}
    return {"ops_left": sum(nd.op_type != "Constant" for nd in nodes), "bn_left": sum(bn.values()),
            "bn_detail": bn, "ops": _hist(nodes)}


def tf_counts(graph_def) -> dict:
    """The same counts for a TF GraphDef (Const and Placeholder nodes are not ops)."""
    nodes = list(graph_def.node)
    by_name = {n.name: n for n in nodes}

    def src(s):
        return by_name.get(s.lstrip("^").split(":")[0])

    def is_const(s):
        n = src(s)
        while n is not None and n.op == "Identity":
            n = src(n.input[0])
        return n is not None and n.op == "Const"

    consumers = {}
    for n in nodes:
        for s in n.input:
            consumers.setdefault(s.split(":")[0] if ":0" in s else s, []).append(n)
    bn = {op: sum(n.op == op for n in nodes) for op in TF_BN_OPS}
    chain = 0
    for n in nodes:
        if n.op != "Mul" or sum(is_const(s) for s in n.input) != 1:
            continue
        x = next(s for s in n.input if not is_const(s))
        prod = src(x)
        if prod is not None and prod.op == "BiasAdd":
            prod = src(prod.input[0])
        users = consumers.get(n.name, [])
        if prod is None or prod.op not in TF_LINEAR or len(users) != 1:
            continue
        if users[0].op in ("Add", "AddV2") and sum(is_const(s) for s in users[0].input) == 1:
            chain += 2
    bn["Mul+Add after linear"] = chain
    bn = {k: v for k, v in bn.items() if v}
    return {"ops_left": sum(n.op not in CONST_OPS for n in nodes), "bn_left": sum(bn.values()),
            "bn_detail": bn, "ops": _hist(nodes)}


def compare(ref, cand) -> dict:
    import numpy as np

    ref = np.asarray(ref, np.float64)
    cand = np.asarray(cand, np.float64)
    if ref.shape != cand.shape:
        return {"ok": False, "max_abs": None, "max_rel": None, "why": f"shape {cand.shape} != {ref.shape}"}
    max_abs = float(np.max(np.abs(ref - cand)))
    scale = float(np.max(np.abs(ref))) or 1.0
    return {"ok": bool(max_abs <= ATOL + RTOL * scale), "max_abs": max_abs, "max_rel": max_abs / scale}


def run_onnx(path: str, x, phase: bool | None = None):
    import numpy as np
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    s = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    feeds = {}
    for i in s.get_inputs():
        feeds[i.name] = np.array(bool(phase)) if i.name.startswith("phase") else x
    return s.run(None, feeds)[0]


# ====================================================================== child tasks
def _imports():
    """Import everything a child needs up front, so stages measure work, not imports."""
    _tf()
    import onnx  # noqa: F401
    import onnxruntime  # noqa: F401
    import tf2onnx  # noqa: F401

    import bnconvert  # noqa: F401
    from bnconvert import api, endpoints, fold, graph, inference, match  # noqa: F401
    from bnconvert.export import onnx as _o, tflite as _t  # noqa: F401
    from bnconvert.verify import compare as _c, inputs as _i, runners as _r  # noqa: F401


def task_pipeline(arch: str, n: int, path: str, ref: str, workdir: str) -> dict:
    """bnconvert stage by stage, with wall time and peak RSS per stage."""
    import numpy as np
    import onnx

    from bnconvert import api, endpoints, inference
    from bnconvert.export.onnx import export_onnx
    from bnconvert.export.tflite import export_tflite
    from bnconvert.fold import fold_all
    from bnconvert.graph import Graph, node_of
    from bnconvert.match import find_bns
    from bnconvert.verify.inputs import resolve_shapes

    _imports()
    gc.collect()
    baseline = _status_kb("VmRSS") / 1024
    ins, outs = ["x:0"], ["out:0"]
    stages: list[dict] = []
    model, *_ = measure(lambda: api.load(path), stages, "load")

    def to_inference():
        g = Graph(model.graph_def)
        inf = inference.to_inference(g, None)
        g.invalidate()
        endpoints.check_tensors(g, ins, "input")
        endpoints.check_tensors(g, outs, "output")
        g.prune(outs, keep=[node_of(t) for t in ins])
        return g, inf

    (g, inf), *_ = measure(to_inference, stages, "inference mode")
    matches, *_ = measure(lambda: find_bns(g), stages, "match")

    def match_fold():
        r = fold_all(g, outs)
        g.prune(outs, keep=[node_of(t) for t in ins])
        return r

    fr, *_ = measure(match_fold, stages, "match+fold")
    del g, matches, fr
    folded, api_s, api_peak, _ = measure(lambda: api.fold(model, inputs=ins, outputs=outs))
    rep = folded.report
    os.makedirs(workdir, exist_ok=True)
    stem = os.path.join(workdir, f"{arch}{n}")
    staged = {"pb": stem + ".folded.pb", "onnx": stem + ".bnconvert.onnx", "tflite": stem + ".tflite"}
    measure(lambda: api.write_graph_def(folded.graph_def, staged["pb"]), stages, "write .pb")
    measure(lambda: export_onnx(folded.graph_def, ins, outs, staged["onnx"], opset=17), stages, "ONNX export")
    shapes = resolve_shapes(folded.graph_def, ins, None, batch=1)
    rep.input_shapes = shapes
    measure(lambda: export_tflite(folded.graph_def, ins, outs, staged["tflite"], shapes), stages, "TFLite export")
    measure(lambda: api._verify_all(folded, staged, rep, None, ("cpu",), None, None, False, 0), stages,
            "verification")
    d = np.load(ref)
    onnx_model = onnx.load(staged["onnx"])
    counts = onnx_counts(onnx_model)
    match = compare(d["out"], run_onnx(staged["onnx"], d["x"]))
    by = {s["stage"]: s for s in stages}
    return {
        "baseline_mb": baseline, "stages": stages, "clean_peak": all(s["clean_peak"] for s in stages),
        "api_fold_s": api_s, "api_fold_peak_mb": api_peak, "api_timings": dict(rep.timings),
        "bn": rep.bn, "flags": rep.training_flags, "inference": rep.inference,
        "nodes_before": len(model.graph_def.node), "nodes_after": len(folded.graph_def.node),
        "weight_bytes": weight_bytes(model.graph_def), "file_bytes": os.path.getsize(path),
        "verification": {k: {"ok": v.get("ok"), "max_rel": max((o.get("max_rel") or 0) for o in v.get("outputs", [{}]))}
                         for k, v in rep.verification.items()},
        "onnx": staged["onnx"], "onnx_counts": counts, "onnx_match": match,
        "to_onnx_s": by["load"]["s"] + api_s + by["ONNX export"]["s"],
    }


def task_peer(tool: str, path: str, ref: str, out: str | None, timeout: float) -> dict:
    """One peer conversion: time, ops left, BN-derived ops left, outputs against the original."""
    import numpy as np

    _imports()
    import onnx
    import tf2onnx

    tf = _tf()
    gd = tf.compat.v1.GraphDef()
    with open(path, "rb") as f:
        gd.ParseFromString(f.read())
    d = np.load(ref) if ref else None
    res: dict = {"tool": tool}
    baseline = _status_kb("VmRSS") / 1024
    try:
        with Alarm(timeout):
            if tool in ("tf2onnx", "tf2onnx_const", "tf2onnx_floor"):
                names = ["x:0"]
                if tool == "tf2onnx":
                    names.append("phase:0")
                elif tool == "tf2onnx_const":
                    gd = _phase_to_const(gd, tf)
                model, s, peak, _ = measure(lambda: tf2onnx.convert.from_graph_def(
                    gd, input_names=names, output_names=["out:0"], opset=17)[0])
                onnx.save(model, out)
                res.update(onnx_counts(model))
                res["onnx"] = out
                if d is not None:
                    res["match"] = compare(d["out"], run_onnx(out, d["x"], phase=False))
            elif tool == "optimize_for_inference":
                from tensorflow.python.tools import optimize_for_inference_lib as ofi

                model, s, peak, _ = measure(lambda: ofi.optimize_for_inference(
                    gd, ["x"], ["out"], tf.float32.as_datatype_enum))
                res.update(tf_counts(model))
                feeds = {"x:0": d["x"]}
                if any(nd.name == "phase" and nd.op.startswith("Placeholder") for nd in model.node):
                    feeds["phase:0"] = False
                res["match"] = compare(d["out"], run_tf(model, feeds, ["out:0"])[0])
            else:
                raise ValueError(f"unknown peer tool {tool}")
        res.update(s=s, peak_mb=peak, baseline_mb=baseline)
    except Exception as e:  # noqa: BLE001 - a peer failing is a result, not a crash
        res["error"] = _one_line(e)
    res.pop("ops", None)
    return res


def _phase_to_const(gd, tf):
    out = tf.compat.v1.GraphDef()
    out.CopyFrom(gd)
    for nd in out.node:
        if nd.name == "phase":
            nd.op = "Const"
            nd.ClearField("attr")
            nd.attr["dtype"].type = tf.bool.as_datatype_enum
            nd.attr["value"].tensor.CopyFrom(tf.make_tensor_proto(False))
    return out


def task_latency(arch: str, models: dict, batches: list, threads: list, warmup: int, runs: int,
                 budget_s: float) -> list[dict]:
    """Median latency per model; models are interleaved run by run so drift hits all alike."""
    import numpy as np
    import onnxruntime as ort

    rows = []
    for t in threads:
        sessions = {}
        for name, path in models.items():
            so = ort.SessionOptions()
            so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            so.intra_op_num_threads = t
            so.log_severity_level = 3
            sessions[name] = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
        for b in batches:
            x = np.random.default_rng(3).standard_normal([b] + INPUT_SHAPE[arch]).astype(np.float32)
            feeds = {name: {i.name: (np.array(False) if i.name.startswith("phase") else x)
                            for i in s.get_inputs()} for name, s in sessions.items()}
            for name, s in sessions.items():
                for _ in range(warmup):
                    s.run(None, feeds[name])
            times: dict[str, list[float]] = {name: [] for name in sessions}
            start = time.perf_counter()
            for r in range(runs):
                for name, s in sessions.items():
                    t0 = time.perf_counter()
                    s.run(None, feeds[name])
                    times[name].append(time.perf_counter() - t0)
                if r >= 4 and time.perf_counter() - start > budget_s:
                    break
            rows.append({"threads": t, "batch": b, "runs": len(times[next(iter(times))]),
                         "median_ms": {k: 1000 * float(np.median(v)) for k, v in times.items()}})
    return rows


TASKS = {"build": task_build, "pipeline": task_pipeline, "peer": task_peer, "latency": task_latency}


def child_main(job_file: str) -> int:
    with open(job_file) as f:
        jobs = json.load(f)
    for job in jobs:  # several jobs share one process (imports paid once) where asked
        try:
            result = {"ok": True, **TASKS[job["task"]](**job["args"])} if job["task"] != "latency" else \
                {"ok": True, "rows": task_latency(**job["args"])}
        except Exception as e:  # noqa: BLE001
            import traceback

            traceback.print_exc()
            result = {"ok": False, "error": _one_line(e)}
        result["rusage_maxrss_mb"] = _ru_maxrss_mb()
        with open(job["result"], "w") as f:
            json.dump(result, f)
    return 0


def _ru_maxrss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ====================================================================== parent side
def run_proc(cmd: list[str], timeout: float, log: str | None = None, cwd: str = ROOT) -> dict:
    """Run ``cmd``; wall time, exit code and the child's own peak RSS (wait4's ru_maxrss)."""
    env = dict(os.environ, **ENV)
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    with open(log or os.devnull, "ab") as out:
        t0 = time.perf_counter()
        p = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=cwd)
        timed_out = False
        while True:
            pid, status, ru = os.wait4(p.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() - t0 > timeout:
                p.kill()
                pid, status, ru = os.wait4(p.pid, 0)
                timed_out = True
                break
            time.sleep(0.002)
        wall = time.perf_counter() - t0
    p.returncode = os.waitstatus_to_exitcode(status)
    return {"rc": p.returncode, "wall_s": wall, "maxrss_mb": ru.ru_maxrss / 1024, "timed_out": timed_out}


class Runner:
    def __init__(self, workdir: str, verbose: bool = True):
        self.workdir = workdir
        self.log = os.path.join(workdir, "children.log")
        self.count = 0
        self.verbose = verbose

    def say(self, msg: str) -> None:
        if self.verbose:
            print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)

    def jobs(self, jobs: list[tuple[str, dict]], timeout: float) -> list[dict]:
        """Run jobs in one child process; one result dict per job (``ok`` False on failure)."""
        self.count += 1
        spec = []
        for i, (task, args) in enumerate(jobs):
            spec.append({"task": task, "args": args, "result": os.path.join(self.workdir, f"r{self.count}_{i}.json")})
        job_file = os.path.join(self.workdir, f"job{self.count}.json")
        with open(job_file, "w") as f:
            json.dump(spec, f)
        with open(self.log, "a") as f:
            f.write(f"\n==== job {self.count}: {[j[0] for j in jobs]}\n")
        proc = run_proc([sys.executable, os.path.abspath(__file__), "--child", job_file], timeout, self.log)
        results = []
        for s in spec:
            if os.path.exists(s["result"]):
                with open(s["result"]) as f:
                    results.append(json.load(f))
            else:
                why = f"timed out after {timeout:.0f} s" if proc["timed_out"] else f"child exited {proc['rc']}"
                results.append({"ok": False, "error": why, "timed_out": proc["timed_out"]})
        for r in results:
            r["child"] = proc
        return results


def graph_paths(graphs_dir: str, arch: str, n: int, bn: bool) -> str:
    tfv = _installed_version("tensorflow") or "tf"
    return os.path.join(graphs_dir, f"{arch}{n}_{'bn' if bn else 'nobn'}_v{BUILDER_VERSION}_tf{tfv}.pb")


def _installed_version(dist: str) -> str | None:
    from importlib import metadata

    for name in (dist, dist + "-cpu", dist.replace("-", "_")):
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return None


def ensure_graphs(runner: Runner, graphs_dir: str, archs, sizes, rebuild: bool) -> dict:
    """Build missing graphs in one child; return facts per (arch, n, bn) with ``cached``."""
    os.makedirs(graphs_dir, exist_ok=True)
    want, missing = {}, []
    for arch in archs:
        for n in sizes:
            for bn in (True, False):
                p = graph_paths(graphs_dir, arch, n, bn)
                want[(arch, n, bn)] = p
                done = all(os.path.exists(p[:-3] + ext) for ext in (".pb", ".json", ".npz"))
                if rebuild or not done:
                    missing.append({"arch": arch, "n": n, "bn": bn, "path": p})
    if missing:
        runner.say(f"building {len(missing)} graph(s) with TensorFlow (cached in {graphs_dir})")
        (res,) = runner.jobs([("build", {"specs": missing})], timeout=3600)
        if not res.get("ok"):
            raise SystemExit(f"bench: building the graphs failed: {res.get('error')} (see {runner.log})")
    built = {m["path"] for m in missing}
    facts = {}
    for key, p in want.items():
        with open(p[:-3] + ".json") as f:
            facts[key] = dict(json.load(f), cached=p not in built, path=p, ref=p[:-3] + ".npz")
    return facts


def bnconvert_cli() -> list[str]:
    exe = os.path.join(os.path.dirname(sys.executable), "bnconvert")
    if os.path.exists(exe):
        return [exe]
    return [sys.executable, "-c", "import sys; from bnconvert.cli.main import main; sys.exit(main())"]


def run_benchmarks(args, runner: Runner) -> dict:
    archs = args.archs
    sizes = args.sizes
    facts = ensure_graphs(runner, args.graphs, archs, sizes, args.rebuild)
    results = {"graphs": {f"{a}/{n}/{'bn' if b else 'nobn'}": v for (a, n, b), v in facts.items()},
               "pipeline": {}, "peers": {}, "cli": {}, "latency": {}}
    quick = args.quick
    wd = runner.workdir
    for arch in archs:
        for n in sizes:
            key = f"{arch}/{n}"
            g, floor = facts[(arch, n, True)], facts[(arch, n, False)]
            pb, ref = g["path"], g["ref"]
            # 1. bnconvert stage by stage (its own process: clean peak memory)
            runner.say(f"{key}: bnconvert stages")
            (pipe,) = runner.jobs([("pipeline", {"arch": arch, "n": n, "path": pb, "ref": ref,
                                                 "workdir": os.path.join(wd, "out")})], timeout=args.timeout * 3)
            results["pipeline"][key] = pipe
            # 2. peers, one process for all of them (each timed with its own alarm)
            runner.say(f"{key}: peers (tf2onnx, tf2onnx with constant phase, optimize_for_inference)")
            peer_jobs = [
                ("peer", {"tool": "tf2onnx", "path": pb, "ref": ref, "out": os.path.join(wd, f"{arch}{n}.tf2onnx.onnx"),
                          "timeout": args.timeout}),
                ("peer", {"tool": "tf2onnx_const", "path": pb, "ref": ref,
                          "out": os.path.join(wd, f"{arch}{n}.tf2onnx_const.onnx"), "timeout": args.timeout}),
                ("peer", {"tool": "optimize_for_inference", "path": pb, "ref": ref, "out": None, "timeout": args.timeout}),
                ("peer", {"tool": "tf2onnx_floor", "path": floor["path"], "ref": floor["ref"],
                          "out": os.path.join(wd, f"{arch}{n}.floor.onnx"), "timeout": args.timeout}),
            ]
            peers = runner.jobs(peer_jobs, timeout=args.timeout * 4 + 120)
            results["peers"][key] = {p.get("tool", j[1]["tool"]): p for p, j in zip(peers, peer_jobs)}
            # 3. the two command lines, as users run them
            if not quick or n == max(sizes):
                runner.say(f"{key}: command lines")
                results["cli"][key] = cli_compare(runner, pb, arch, n, args.timeout)
            # 4. latency
            models = {"floor (no BN)": results["peers"][key]["tf2onnx_floor"].get("onnx"),
                      "bnconvert": pipe.get("onnx") if pipe.get("ok") else None,
                      "tf2onnx unfolded": results["peers"][key]["tf2onnx"].get("onnx"),
                      "tf2onnx const phase": results["peers"][key]["tf2onnx_const"].get("onnx")}
            models = {k: v for k, v in models.items() if v and os.path.exists(v)}
            if models:
                runner.say(f"{key}: latency ({', '.join(models)})")
                (lat,) = runner.jobs([("latency", {"arch": arch, "models": models, "batches": [1, 100],
                                                   "threads": [1, 0], "warmup": 2 if quick else 10,
                                                   "runs": args.runs, "budget_s": 1.0 if quick else 6.0})],
                                     timeout=600)
                results["latency"][key] = lat
    return results


def cli_compare(runner: Runner, pb: str, arch: str, n: int, timeout: float) -> dict:
    out = os.path.join(runner.workdir, "cli")
    os.makedirs(out, exist_ok=True)
    bn_cmd = bnconvert_cli() + ["fold", pb, "-o", out, "--to", "onnx", "--no-verify", "--force",
                                "--inputs", "x:0", "--outputs", "out:0"]
    t2o_cmd = [sys.executable, "-m", "tf2onnx.convert", "--graphdef", pb, "--inputs", "x:0,phase:0",
               "--outputs", "out:0", "--opset", "17", "--output", os.path.join(out, f"{arch}{n}.tf2onnx.onnx")]
    res = {}
    for name, cmd in (("bnconvert", bn_cmd), ("tf2onnx", t2o_cmd)):
        r = run_proc(cmd, timeout, runner.log)
        r["cmd"] = " ".join(shlex.quote(c) for c in
                            [os.path.basename(cmd[0]) if name == "bnconvert" else "python"] + cmd[1:])
        res[name] = r
    return res
