#!/usr/bin/env python
"""Benchmark bnconvert on generated TF1 batch-norm graphs and write docs/BENCHMARKS.md.

    python tools/bench.py --build-only           # build and cache the graphs (TF: minutes)
    python tools/bench.py                        # full run: 10, 50, 200, 1000 BN layers
                                                 # -> docs/BENCHMARKS.md
    python tools/bench.py --quick                # 10 and 50 BN layers, light; prints the tables
    python tools/bench.py --quick --out b.md     # ... and writes them to b.md (CI does this)

Other options: --sizes 10,50 --archs resnet,mlp --graphs DIR (graph cache) --rebuild
--workdir DIR --keep --runs N --timeout S --cli-sizes 10,200 --json PATH.

Every measurement runs in a child process of this script (``--child``), so that its peak
memory is its own and a converter that runs too long can be stopped.

graphs   TF 1.x-style frozen graphs built with ``tf.compat.v1.layers`` (TF_USE_LEGACY_KERAS=1,
         v2 behaviour off, so ``training=phase`` gives Switch/Merge conds): a ResNet-like conv
         stack (Conv2D 3x3, 4 channels, 8x8 input, fused BN, residual add every two layers,
         ReLU) and a deep MLP (Dense 16, decomposed BN with ``moments``, tanh), each with a bool
         ``phase`` placeholder, random moving statistics, gamma and beta, frozen with
         ``convert_variables_to_constants``; the same architectures without BN (biases
         instead) are the latency floor; a wide ResNet (128 channels, 16 BN layers, 9 MiB of
         weights) probes memory against the weights' size.  Graphs are cached in --graphs
         because TF needs minutes for a 1,000-layer graph; build time is recorded then.
stages   bnconvert's load, inference mode (flags set, Switch/Merge pruned), match
         (``find_bns`` alone), match+fold (``fold_all``: matches again, folds, prunes), write
         .pb, ONNX export, TFLite export and verification (original TF graph against the
         folded .pb, the ONNX in onnxruntime and the .tflite): wall time and peak RSS per stage
         (VmHWM after resetting it through /proc/self/clear_refs).  ``bnconvert.fold()`` is
         timed as a whole too (median of 3); its ``report.timings["match_fold"]`` is target 1.
peers    in the same process after bnconvert: tf2onnx on the unfolded graph as users run it
         (``phase`` an input, fed False), tf2onnx after replacing ``phase`` by a constant
         False, TF's ``optimize_for_inference``: conversion time, ops left, BN-derived ops
         left, outputs against the original graph.  At 1,000 BN layers and more a peer is
         stopped once it has taken 1.1x bnconvert's own load+fold+export time (at least 45 s):
         that is enough to decide "no slower than", and tf2onnx's transpose optimizer is
         quadratic in depth.
cli      ``bnconvert fold --to onnx --no-verify`` against ``python -m tf2onnx.convert`` on the
         same unfolded graph: wall time of the whole command, Python start-up included.
latency  onnxruntime, CPU, ORT_ENABLE_ALL: median latency of bnconvert's ONNX, tf2onnx's ONNX of
         the unfolded graph (and with ``phase`` constant) and the BN-free floor, 1 thread and
         all threads, batch 1 and 100; models interleaved in blocks, order reversed every round
         (sizes up to 200).
"""
from __future__ import annotations

import argparse
import datetime
import gc
import hashlib
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
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUILDER_VERSION = 1  # bump when the generated graphs change (invalidates the cache)
ARCHS = ("resnet", "mlp")
ARCH = {  # input shape without the batch dim, channels, layer kind
    "resnet": {"input": [8, 8, 4], "channels": 4, "kind": "conv"},
    "mlp": {"input": [16], "channels": 16, "kind": "dense"},
    "wide": {"input": [16, 16, 128], "channels": 128, "kind": "conv"},  # memory probe only
}
WIDE_N = 16
FULL_SIZES = (10, 50, 200, 1000)
QUICK_SIZES = (10, 50)
LARGE = 1000  # from here on, peers are stopped at CAP_FACTOR x bnconvert's time
CAP_FACTOR, CAP_MIN = 1.1, 45.0
LATENCY_MAX_N = 200
REF_BATCH = 8
FOLD_REPEATS = 3
ATOL, RTOL = 1e-5, 1e-4  # bnconvert.verify.compare defaults
ENV = {"TF_CPP_MIN_LOG_LEVEL": "3", "TF_USE_LEGACY_KERAS": "1", "TF_ENABLE_ONEDNN_OPTS": "1",
       "PYTHONWARNINGS": "ignore", "CUDA_VISIBLE_DEVICES": ""}

# BN-derived op types (ONNX and TF); Mul/Add chains after a linear op are counted separately
ONNX_BN_OPS = ("BatchNormalization", "If", "Sqrt", "Reciprocal")
TF_BN_OPS = ("FusedBatchNorm", "FusedBatchNormV2", "FusedBatchNormV3", "BatchNormWithGlobalNormalization",
             "Switch", "Merge", "Rsqrt", "Sqrt", "Reciprocal")
ONNX_LINEAR = ("Conv", "MatMul", "Gemm")
TF_LINEAR = ("Conv2D", "MatMul", "DepthwiseConv2dNative", "Conv2DBackpropInput", "Conv3D")
NOT_OPS = ("Const", "Constant", "Placeholder", "PlaceholderWithDefault")


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


class Stopped(BaseException):
    """Raised by :class:`Alarm`; a BaseException so converters' ``except Exception`` can't eat it."""


class Alarm:
    """Raise :class:`Stopped` in the main thread after ``seconds`` (Python-level code only)."""

    def __init__(self, seconds: float | None):
        self.seconds = seconds

    def _fire(self, *_):
        raise Stopped(f"stopped after {self.seconds:.0f} s")

    def __enter__(self):
        if self.seconds:
            self.old = signal.signal(signal.SIGALRM, self._fire)
            signal.setitimer(signal.ITIMER_REAL, self.seconds)
        return self

    def __exit__(self, *exc):
        if self.seconds:
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

    conv archs: n conv layers in n/2 residual blocks ``relu(x + bn(conv(relu(bn(conv(x))))))``
    then a global mean; mlp: n ``tanh(bn(dense(x)))`` layers; both end in a dense 10 named
    ``out``.  Weights and BN parameters come from numpy with ``seed``; the last BN of each
    residual block gets a small gamma (as ResNets initialise it) so 1,000 layers stay finite.
    """
    import numpy as np

    tf = _tf()
    tf.compat.v1.disable_v2_behavior()  # v1 control flow: tf.cond -> Switch/Merge, as in TF 1.x
    rng = np.random.default_rng(seed + 1000 * n + sorted(ARCH).index(arch))
    L = tf.compat.v1.layers
    spec = ARCH[arch]
    c = spec["channels"]

    def init(a):
        return tf.compat.v1.constant_initializer(np.asarray(a, np.float32))

    g = tf.Graph()
    t0 = time.perf_counter()
    with g.as_default():
        x = tf.compat.v1.placeholder(tf.float32, [None] + spec["input"], name="x")
        phase = tf.compat.v1.placeholder(tf.bool, [], name="phase") if with_bn else None

        def layer(h, i, small_gamma=False):
            if spec["kind"] == "conv":
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
        if spec["kind"] == "conv":
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
    """Build every spec ``{arch, n, bn, path}``: writes the .pb, a .json of facts, an .npz reference."""
    import numpy as np

    for spec in specs:
        t = time.perf_counter()
        gd, times = build_graph(spec["arch"], spec["n"], spec["bn"])
        data = gd.SerializeToString()
        with open(spec["path"] + ".tmp", "wb") as f:
            f.write(data)
        os.replace(spec["path"] + ".tmp", spec["path"])
        x = np.random.default_rng(7).standard_normal([REF_BATCH] + ARCH[spec["arch"]]["input"]).astype(np.float32)
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
        if users[0].op_type == "Add" and sum(i in consts for i in users[0].input) == 1:
            chain += 2
    bn["Mul+Add after linear"] = chain
    bn = {k: v for k, v in bn.items() if v}
    return {"ops_left": sum(nd.op_type not in NOT_OPS for nd in nodes), "bn_left": sum(bn.values()),
            "bn_detail": bn}


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

    consumers: dict[str, list] = {}
    for n in nodes:
        for s in n.input:
            if not s.startswith("^"):
                consumers.setdefault(s[:-2] if s.endswith(":0") else s, []).append(n)
    bn = {op: sum(n.op == op for n in nodes) for op in TF_BN_OPS}
    chain = 0
    for n in nodes:
        if n.op != "Mul" or sum(is_const(s) for s in n.input) != 1:
            continue
        prod = src(next(s for s in n.input if not is_const(s)))
        if prod is not None and prod.op == "BiasAdd":
            prod = src(prod.input[0])
        users = consumers.get(n.name, [])
        if prod is None or prod.op not in TF_LINEAR or len(users) != 1:
            continue
        if users[0].op in ("Add", "AddV2") and sum(is_const(s) for s in users[0].input) == 1:
            chain += 2
    bn["Mul+Add after linear"] = chain
    bn = {k: v for k, v in bn.items() if v}
    return {"ops_left": sum(n.op not in NOT_OPS for n in nodes), "bn_left": sum(bn.values()), "bn_detail": bn}


def compare(ref, cand) -> dict:
    """bnconvert's pass rule: max_abs <= atol + rtol * max|reference|."""
    import numpy as np

    ref = np.asarray(ref, np.float64)
    cand = np.asarray(cand, np.float64)
    if ref.shape != cand.shape:
        return {"ok": False, "max_abs": None, "max_rel": None, "why": f"shape {cand.shape} != {ref.shape}"}
    max_abs = float(np.max(np.abs(ref - cand)))
    scale = float(np.max(np.abs(ref))) or 1.0
    return {"ok": bool(max_abs <= ATOL + RTOL * scale), "max_abs": max_abs, "max_rel": max_abs / scale}


def run_onnx(path: str, x):
    import numpy as np
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    s = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    return s.run(None, {i.name: (np.array(False) if i.name.startswith("phase") else x) for i in s.get_inputs()})[0]


# ====================================================================== child tasks
_FROZEN = []


def _imports():
    """Import everything up front, so that stages measure work, not imports.

    Then (once per process) collect and freeze what the imports left (``gc.freeze``): TensorFlow,
    tf2onnx and onnxruntime are millions of objects that are never garbage, yet every full
    collection walks them again (0.2-0.4 s each on 2 cores).  :func:`measure` collects before
    each of the ~50 measurements of a quick run (outside the timers): unfrozen, those collections
    were about a third of its measuring child's time.  Inside the timers only the collector's own
    runs change (they skip the frozen objects), as in bnconvert's stage children
    (``isolate._child``) and its in-process ONNX export, which freeze the same way; everything
    the measurements allocate stays collectable."""
    _tf()
    import onnx  # noqa: F401
    import onnxruntime  # noqa: F401
    import tf2onnx  # noqa: F401

    from bnconvert import api, endpoints, fold, graph, inference, match  # noqa: F401
    from bnconvert.export import onnx as _o, tflite as _t  # noqa: F401
    from bnconvert.verify import compare as _c, inputs as _i, runners as _r  # noqa: F401

    if not _FROZEN:
        gc.collect()
        gc.freeze()
        _FROZEN.append(True)


def pipeline(arch: str, n: int, path: str, ref: str, workdir: str) -> dict:
    """bnconvert stage by stage, with wall time and peak RSS per stage."""
    import numpy as np

    from bnconvert import api, endpoints, inference
    from bnconvert import pipeline as bn_pipeline
    from bnconvert.options import VerifyOptions
    from bnconvert.verify.check import verify_conversion
    from bnconvert.export.onnx import export_onnx
    from bnconvert.export.tflite import export_tflite
    from bnconvert.fold import fold_all
    from bnconvert.graph import Graph, node_of
    from bnconvert.match import find_bns
    from bnconvert.verify.inputs import resolve_shapes

    gc.collect()
    baseline = _status_kb("VmRSS") / 1024
    ins, outs = ["x:0"], ["out:0"]
    stages: list[dict] = []
    model, *_ = measure(lambda: api.load(path), stages, "load")

    def to_inference():  # api.fold's first half
        g = Graph(model.graph_def)
        inference.to_inference(g, None)
        g.invalidate()
        endpoints.check_tensors(g, ins, "input")
        endpoints.check_tensors(g, outs, "output")
        g.prune(outs, keep=[node_of(t) for t in ins])
        return g

    g, *_ = measure(to_inference, stages, "inference mode")
    matches, *_ = measure(lambda: find_bns(g), stages, "match")

    def match_fold():  # api.fold's second half
        r = fold_all(g, outs)
        g.prune(outs, keep=[node_of(t) for t in ins])
        return r

    measure(match_fold, stages, "match+fold")
    n_matches = len(matches)
    del g, matches
    runs = []
    for _ in range(FOLD_REPEATS):
        folded, s, peak, _ = measure(lambda: api.fold(model, inputs=ins, outputs=outs))
        runs.append({"s": s, "peak_mb": peak, "timings": dict(folded.report.timings)})
    rep = folded.report
    os.makedirs(workdir, exist_ok=True)
    stem = os.path.join(workdir, f"{arch}{n}")
    staged = {"pb": stem + ".folded.pb", "onnx": stem + ".bnconvert.onnx", "tflite": stem + ".tflite"}
    measure(lambda: bn_pipeline.write_graph_def(folded.graph_def, staged["pb"]), stages, "write .pb")
    measure(lambda: export_onnx(folded.graph_def, ins, outs, staged["onnx"], opset=17), stages, "ONNX export")
    shapes = resolve_shapes(folded.graph_def, ins, None, batch=1)
    rep.input_shapes = shapes
    measure(lambda: export_tflite(folded.graph_def, ins, outs, staged["tflite"], shapes), stages, "TFLite export")
    # what api.convert runs after exporting (private: the benchmark follows convert's own sequence)
    from bnconvert.prepare import prepared

    prep = prepared(folded, staged["pb"], path)
    measure(lambda: verify_conversion(prep, staged, rep, VerifyOptions()), stages, "verification")
    import onnx

    d = np.load(ref)
    by = {s["stage"]: s for s in stages}

    def med(key):
        vals = sorted(r["timings"][key] if key in r["timings"] else r[key] for r in runs)
        return vals[len(vals) // 2]

    return {
        "ok": True, "baseline_mb": baseline, "stages": stages, "clean_peak": all(s["clean_peak"] for s in stages),
        "fold_runs": runs, "fold_s": med("s"), "fold_peak_mb": max(r["peak_mb"] for r in runs),
        "inference_mode_s": med("inference_mode"), "match_fold_s": med("match_fold"), "matches": n_matches,
        "bn": rep.bn, "flags": rep.training_flags, "inference": rep.inference,
        "nodes_before": len(model.graph_def.node), "nodes_after": len(folded.graph_def.node),
        "weight_bytes": weight_bytes(model.graph_def), "file_bytes": os.path.getsize(path),
        "verification": {k: {"ok": v.get("ok"), "max_rel": max((o.get("max_rel") or 0) for o in v.get("outputs", []) or [{}])}
                         for k, v in rep.verification.items()},
        "onnx": staged["onnx"], "onnx_counts": onnx_counts(onnx.load(staged["onnx"])),
        "onnx_match": compare(d["out"], run_onnx(staged["onnx"], d["x"])),
        "to_onnx_s": by["load"]["s"] + med("s") + by["ONNX export"]["s"],
    }


def peer(tool: str, path: str, ref: str, out: str | None, cap: float | None) -> dict:
    """One peer conversion in this process: time, ops left, BN-derived ops left, outputs."""
    import numpy as np
    import onnx
    import tf2onnx

    tf = _tf()
    gd = tf.compat.v1.GraphDef()
    with open(path, "rb") as f:
        gd.ParseFromString(f.read())
    d = np.load(ref)
    res: dict = {"tool": tool, "cap_s": cap}
    t0 = time.perf_counter()
    try:
        with Alarm(cap):
            if tool.startswith("tf2onnx"):
                names = ["x:0", "phase:0"] if tool == "tf2onnx" else ["x:0"]
                if tool == "tf2onnx_const":
                    gd = _phase_to_const(gd, tf)
                model, s, peak, before = measure(lambda: tf2onnx.convert.from_graph_def(
                    gd, input_names=names, output_names=["out:0"], opset=17)[0])
            elif tool == "optimize_for_inference":
                from tensorflow.python.tools import optimize_for_inference_lib as ofi

                model, s, peak, before = measure(lambda: ofi.optimize_for_inference(
                    gd, ["x"], ["out"], tf.float32.as_datatype_enum))
            else:
                raise ValueError(f"unknown peer {tool}")
        res.update(s=s, peak_mb=peak, before_mb=before)
        if tool.startswith("tf2onnx"):
            onnx.save(model, out)
            res.update(onnx_counts(model), onnx=out, match=compare(d["out"], run_onnx(out, d["x"])))
        else:
            res.update(tf_counts(model))
            feeds = {"x:0": d["x"]}
            if any(nd.name == "phase" and nd.op.startswith("Placeholder") for nd in model.node):
                feeds["phase:0"] = False
            res["match"] = compare(d["out"], run_tf(model, feeds, ["out:0"])[0])
    except Stopped:
        res.update(stopped=True, s=time.perf_counter() - t0)
    except Exception as e:  # noqa: BLE001 - a peer failing is a result, not a crash
        res["error"] = _one_line(e)
    gc.collect()
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


def task_graph(arch: str, n: int, path: str, ref: str, workdir: str, peers: bool,
               floor: dict | None, cap: float | None) -> dict:
    """bnconvert's stages, then (optionally) the peers and the floor's ONNX, in one process."""
    _imports()
    import bnconvert

    res = {"pipeline": pipeline(arch, n, path, ref, workdir), "peers": {}, "bnconvert_file": bnconvert.__file__}
    if n >= LARGE and cap is None:
        cap = max(CAP_MIN, CAP_FACTOR * res["pipeline"]["to_onnx_s"])
    for tool in ("tf2onnx", "tf2onnx_const", "optimize_for_inference") if peers else ():
        res["peers"][tool] = peer(tool, path, ref, os.path.join(workdir, f"{arch}{n}.{tool}.onnx"), cap)
    if floor:
        res["peers"]["floor"] = peer("tf2onnx_floor", floor["path"], floor["ref"],
                                     os.path.join(workdir, f"{arch}{n}.floor.onnx"), None)
    return res


def task_latency(arch: str, models: dict, batches: list, threads: list, warmup: int, runs: int,
                 budget_s: float) -> dict:
    """Median latency per model; models interleaved in blocks so that drift hits all alike."""
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
            x = np.random.default_rng(3).standard_normal([b] + ARCH[arch]["input"]).astype(np.float32)
            feeds = {name: {i.name: (np.array(False) if i.name.startswith("phase") else x) for i in s.get_inputs()}
                     for name, s in sessions.items()}
            est = 0.0
            for name, s in sessions.items():
                t0 = time.perf_counter()
                for _ in range(warmup):
                    s.run(None, feeds[name])
                est = max(est, (time.perf_counter() - t0) / warmup)
            # blocks of k runs per model, the order reversed every round: a session's spinning
            # intra-op threads then only touch the first run of the next model's block
            k = max(1, min(runs // 10, int(budget_s / 10 / len(sessions) / max(est, 1e-6))))
            times: dict[str, list[float]] = {name: [] for name in sessions}
            start, rnd = time.perf_counter(), 0
            while len(times[next(iter(times))]) < runs:
                for name in (list(sessions) if rnd % 2 == 0 else list(reversed(sessions))):
                    s = sessions[name]
                    for _ in range(k):
                        t0 = time.perf_counter()
                        s.run(None, feeds[name])
                        times[name].append(time.perf_counter() - t0)
                rnd += 1
                if rnd >= 10 and time.perf_counter() - start > budget_s:
                    break
            rows.append({"threads": t, "batch": b, "runs": len(next(iter(times.values()))),
                         "median_ms": {m: 1000 * float(np.median(v)) for m, v in times.items()}})
    return {"ok": True, "rows": rows}


def _task_build(specs):
    return {"ok": True, **task_build(specs)}


def _task_graph(**kw):
    return {"ok": True, **task_graph(**kw)}


TASKS = {"build": _task_build, "graph": _task_graph, "latency": task_latency}


def child_main(job_file: str) -> int:
    with open(job_file) as f:
        jobs = json.load(f)
    for job in jobs:  # several jobs may share one process (imports paid once)
        try:
            result = TASKS[job["task"]](**job["args"])
        except Exception as e:  # noqa: BLE001
            import traceback

            traceback.print_exc()
            result = {"ok": False, "error": _one_line(e)}
        with open(job["result"], "w") as f:
            json.dump(result, f)
    return 0


# ====================================================================== parent side
def source_hash(folder: str) -> str:
    """sha256 (12 hex digits) of a package's .py files, names included."""
    h = hashlib.sha256()
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        for name in sorted(f for f in files if f.endswith(".py")):
            path = os.path.join(root, name)
            h.update(os.path.relpath(path, folder).encode() + b"\0")
            with open(path, "rb") as f:
                h.update(f.read())
    return h.hexdigest()[:12]


def snapshot_source(workdir: str) -> tuple[str, str]:
    """Copy bnconvert/ into the work folder; every child imports that copy (PYTHONPATH), so edits
    to the working tree during a run cannot mix two versions into one report."""
    src = os.path.join(workdir, "src")
    shutil.rmtree(src, ignore_errors=True)
    shutil.copytree(os.path.join(ROOT, "bnconvert"), os.path.join(src, "bnconvert"),
                    ignore=shutil.ignore_patterns("__pycache__"))
    return src, source_hash(os.path.join(src, "bnconvert"))


def run_proc(cmd: list[str], timeout: float, log: str | None = None, pythonpath: str = ROOT,
             cwd: str | None = None) -> dict:
    """Run ``cmd`` in ``cwd`` (not the repository: ``python -c``/``-m`` put the current folder first on
    sys.path, ahead of ``pythonpath``); its wall time, exit code and own peak RSS (wait4's ru_maxrss)."""
    env = dict(os.environ, **ENV)
    env["PYTHONPATH"] = pythonpath + os.pathsep + env.get("PYTHONPATH", "")
    box: dict = {}
    with open(log or os.devnull, "ab") as out:
        t0 = time.perf_counter()
        p = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=cwd or tempfile.gettempdir())

        def reap():  # blocks in wait4 (no polling that would steal CPU from the child)
            _, status, ru = os.wait4(p.pid, 0)
            box.update(status=status, ru=ru, t=time.perf_counter())

        th = threading.Thread(target=reap, daemon=True)
        th.start()
        th.join(timeout)
        timed_out = th.is_alive()
        if timed_out:
            p.kill()
            th.join()
    p.returncode = os.waitstatus_to_exitcode(box["status"])
    return {"rc": p.returncode, "wall_s": box["t"] - t0, "maxrss_mb": box["ru"].ru_maxrss / 1024,
            "timed_out": timed_out, "limit_s": timeout}


class Runner:
    def __init__(self, workdir: str, pythonpath: str = ROOT):
        self.workdir = workdir
        self.pythonpath = pythonpath
        self.log = os.path.join(workdir, "children.log")
        self.count = 0

    @staticmethod
    def say(msg: str) -> None:
        print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)

    def jobs(self, jobs: list[tuple[str, dict]], timeout: float) -> list[dict]:
        """Run jobs one after the other in one child process; one result dict per job."""
        self.count += 1
        spec = [{"task": t, "args": a, "result": os.path.join(self.workdir, f"r{self.count}_{i}.json")}
                for i, (t, a) in enumerate(jobs)]
        job_file = os.path.join(self.workdir, f"job{self.count}.json")
        with open(job_file, "w") as f:
            json.dump(spec, f)
        with open(self.log, "a") as f:
            f.write(f"\n==== job {self.count}: {[j[0] for j in jobs]}\n")
        proc = run_proc([sys.executable, os.path.abspath(__file__), "--child", job_file], timeout, self.log,
                        self.pythonpath, self.workdir)
        results = []
        for s in spec:
            if os.path.exists(s["result"]):
                with open(s["result"]) as f:
                    results.append(json.load(f))
            else:
                why = f"stopped after {timeout:.0f} s" if proc["timed_out"] else f"child exited {proc['rc']}"
                results.append({"ok": False, "error": f"{why} (see {self.log})"})
        return results

    def command(self, cmd: list[str], timeout: float) -> dict:
        with open(self.log, "a") as f:
            f.write(f"\n==== {' '.join(cmd)}\n")
        return run_proc(cmd, timeout, self.log, self.pythonpath, self.workdir)


def _installed_version(dist: str) -> str | None:
    from importlib import metadata

    for name in (dist, dist + "-cpu"):
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return None


def graph_path(graphs_dir: str, arch: str, n: int, bn: bool) -> str:
    tfv = _installed_version("tensorflow") or "tf"
    return os.path.join(graphs_dir, f"{arch}{n}_{'bn' if bn else 'nobn'}_v{BUILDER_VERSION}_tf{tfv}.pb")


def ensure_graphs(runner: Runner, graphs_dir: str, wanted: list[tuple], rebuild: bool) -> dict:
    """Build the missing graphs in one child; facts per (arch, n, bn), with ``cached``."""
    os.makedirs(graphs_dir, exist_ok=True)
    paths = {key: graph_path(graphs_dir, *key) for key in wanted}
    missing = [{"arch": a, "n": n, "bn": bn, "path": p} for (a, n, bn), p in paths.items()
               if rebuild or not all(os.path.exists(p[:-3] + ext) for ext in (".pb", ".json", ".npz"))]
    if missing:
        runner.say(f"building {len(missing)} graph(s) with TensorFlow into {graphs_dir}")
        (res,) = runner.jobs([("build", {"specs": missing})], timeout=4 * 3600)
        if not res.get("ok"):
            raise SystemExit(f"bench: building the graphs failed: {res.get('error')} (see {runner.log})")
    built = {m["path"] for m in missing}
    facts = {}
    for key, p in paths.items():
        with open(p[:-3] + ".json") as f:
            facts[key] = dict(json.load(f), cached=p not in built, path=p, ref=p[:-3] + ".npz")
    return facts


def bnconvert_cli() -> list[str]:
    exe = os.path.join(os.path.dirname(sys.executable), "bnconvert")
    if os.path.exists(exe):
        return [exe]
    return [sys.executable, "-c", "import sys; from bnconvert.cli.main import main; sys.exit(main())"]


def cli_compare(runner: Runner, pb: str, arch: str, n: int, timeout: float) -> dict:
    """The two command lines, one after the other, as users run them."""
    out = os.path.join(runner.workdir, "cli")
    os.makedirs(out, exist_ok=True)
    bn_cmd = bnconvert_cli() + ["fold", pb, "-o", out, "--to", "onnx", "--no-verify", "--force",
                                "--inputs", "x:0", "--outputs", "out:0"]
    t2o_cmd = [sys.executable, "-m", "tf2onnx.convert", "--graphdef", pb, "--inputs", "x:0,phase:0",
               "--outputs", "out:0", "--opset", "17", "--output", os.path.join(out, f"{arch}{n}.tf2onnx.onnx")]
    b = runner.command(bn_cmd, timeout)
    # tf2onnx only has to be watched long enough to know whether it is slower than bnconvert
    t = runner.command(t2o_cmd, max(CAP_MIN, CAP_FACTOR * b["wall_s"]) if n >= LARGE and b["rc"] == 0 else timeout)
    b["cmd"] = " ".join(["bnconvert"] + [shlex.quote(c) for c in bn_cmd[len(bnconvert_cli()):]])
    t["cmd"] = " ".join(["python"] + [shlex.quote(c) for c in t2o_cmd[1:]])
    return {"bnconvert": b, "tf2onnx": t}


def plan(args) -> list[dict]:
    """What to run per graph: peers, floor/latency and command lines."""
    items = []
    for arch in args.archs:
        for n in args.sizes:
            if args.quick:  # never rots: every path once, at the smallest size
                light = n == min(args.sizes)
                items.append({"arch": arch, "n": n, "peers": light, "latency": light,
                              "cli": light and arch == args.archs[0]})
            else:
                items.append({"arch": arch, "n": n, "peers": True, "latency": n <= LATENCY_MAX_N,
                              "cli": n in args.cli_sizes})
    if args.memory_probe:
        items.append({"arch": "wide", "n": WIDE_N, "peers": False, "latency": False, "cli": False})
    return items


def run_benchmarks(args, runner: Runner) -> dict:
    items = plan(args)
    wanted = [(it["arch"], it["n"], True) for it in items] + \
             [(it["arch"], it["n"], False) for it in items if it["latency"]]
    facts = ensure_graphs(runner, args.graphs, wanted, args.rebuild)
    res = {"graphs": {f"{a}/{n}/{'bn' if b else 'nobn'}": v for (a, n, b), v in facts.items()},
           "pipeline": {}, "peers": {}, "cli": {}, "latency": {}}
    if args.build_only:
        return res
    out = os.path.join(runner.workdir, "out")
    graph_jobs = []
    for it in items:
        key = f"{it['arch']}/{it['n']}"
        g = facts[(it["arch"], it["n"], True)]
        fl = facts.get((it["arch"], it["n"], False)) if it["latency"] else None
        if it["cli"]:
            runner.say(f"{key}: command lines (bnconvert fold, python -m tf2onnx.convert)")
            res["cli"][key] = cli_compare(runner, g["path"], it["arch"], it["n"], args.timeout)
        graph_jobs.append((key, ("graph", {"arch": it["arch"], "n": it["n"], "path": g["path"], "ref": g["ref"],
                                           "workdir": out, "peers": it["peers"],
                                           "floor": {"path": fl["path"], "ref": fl["ref"]} if fl else None,
                                           "cap": None if it["n"] >= LARGE else args.timeout})))
    # quick: one child for all graphs (imports once); full: one child per graph (clean memory)
    groups = [graph_jobs] if args.quick else [[j] for j in graph_jobs]
    for group in groups:
        runner.say(f"{', '.join(k for k, _ in group)}: bnconvert stages"
                   f"{' and peers' if any(j[1]['peers'] for _, j in group) else ''}")
        results = runner.jobs([j for _, j in group], timeout=args.timeout * 6 * len(group) + 300)
        for (key, _), r in zip(group, results):
            res["pipeline"][key] = r.get("pipeline", r) if r.get("ok") else r
            res["peers"][key] = r.get("peers", {})
            if r.get("ok") and not r["bnconvert_file"].startswith(runner.pythonpath):
                raise SystemExit(f"bench: a child imported {r['bnconvert_file']}, not the snapshot in {runner.pythonpath}")
    lat_jobs = []
    for it in items:
        key = f"{it['arch']}/{it['n']}"
        p, q = res["pipeline"][key], res["peers"][key]
        models = {"floor (no BN)": q.get("floor", {}).get("onnx"), "floor again (A/A)": q.get("floor", {}).get("onnx"),
                  "bnconvert": p.get("onnx"),
                  "tf2onnx unfolded": q.get("tf2onnx", {}).get("onnx"),
                  "tf2onnx const phase": q.get("tf2onnx_const", {}).get("onnx")}
        models = {k: v for k, v in models.items() if v and os.path.exists(v)}
        if it["latency"] and models:
            lat_jobs.append((key, ("latency", {"arch": it["arch"], "models": models, "batches": [1, 100],
                                               "threads": [1, 0], "warmup": 3 if args.quick else 10,
                                               "runs": args.runs, "budget_s": 0.5 if args.quick else 3.0})))
    groups = [lat_jobs] if args.quick else [[j] for j in lat_jobs]
    for group in groups:
        if group:
            runner.say(f"{', '.join(k for k, _ in group)}: latency")
            for (key, _), r in zip(group, runner.jobs([j for _, j in group], timeout=900)):
                res["latency"][key] = r
    return res


# ====================================================================== report
STAGES = ("load", "inference mode", "match", "match+fold", "write .pb", "ONNX export", "TFLite export", "verification")
FOLD_STAGES = STAGES[:5]
PEER_NAMES = {"bnconvert": "bnconvert", "tf2onnx": "tf2onnx, phase an input",
              "tf2onnx_const": "tf2onnx, phase → const False",
              "optimize_for_inference": "TF optimize_for_inference"}
LAT_MODELS = ("floor (no BN)", "floor again (A/A)", "bnconvert", "tf2onnx unfolded", "tf2onnx const phase")


def machine() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            names = [ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    ram = 0.0
    try:
        with open("/proc/meminfo") as f:
            ram = int(next(ln for ln in f if ln.startswith("MemTotal")).split()[1]) / 1024 ** 2
    except (OSError, StopIteration):
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"cpu": cpu, "nproc": cores, "ram_gib": ram, "os": f"{platform.system()} {platform.release()}",
            "python": platform.python_version()}


def _loadavg() -> str:
    try:
        return f"{os.getloadavg()[0]:.2f}"
    except OSError:
        return "?"


def versions() -> dict:
    return {k: _installed_version(k) or "?" for k in ("tensorflow", "tf2onnx", "onnxruntime", "onnx", "numpy",
                                                      "bnconvert")}


def _s(x) -> str:
    if x is None:
        return "—"
    if x < 0.01:
        return f"{x * 1000:.1f} ms"
    return f"{x:.3f}" if x < 1 else f"{x:.2f}" if x < 100 else f"{x:.0f}"


def _ms(x) -> str:
    return "—" if x is None else f"{x:.3f}" if x < 1 else f"{x:.2f}" if x < 100 else f"{x:.0f}"


def _mb(peak, before=None) -> str:
    if peak is None:
        return "—"
    return f"{peak:.0f}" if before is None else f"{peak:.0f} (+{max(peak - before, 0):.0f})"


def _table(head: list[str], rows: list[list]) -> str:
    out = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


def _detail(d: dict) -> str:
    return ", ".join(f"{k} {v}" for k, v in d.items()) if d else "none"


def _match(m: dict | None) -> str:
    if not m:
        return "—"
    if m.get("max_rel") is None:
        return f"NO ({m.get('why', '?')})"
    return f"{'yes' if m['ok'] else 'NO'} ({m['max_rel']:.1e})"


def _peer_time(q: dict) -> str:
    if q.get("stopped"):
        return f"> {q['s']:.0f} (stopped)"
    if "error" in q:
        return f"failed: {q['error']}"
    return _s(q.get("s"))


def _cli(r: dict | None) -> str:
    if not r:
        return "—"
    if r["timed_out"]:
        return f"> {r['wall_s']:.0f} (stopped)"
    return _s(r["wall_s"]) if r["rc"] == 0 else f"failed (exit {r['rc']})"


def _ok(r) -> bool:
    return r["rc"] == 0 and not r["timed_out"]


def _keys(res, archs=None):
    out = [(k, k.split("/")[0], int(k.split("/")[1])) for k in res["pipeline"]]
    return [x for x in out if archs is None or x[1] in archs]


def _exp(t1, t2, n1, n2) -> str:
    return f"{math.log(t2 / t1) / math.log(n2 / n1):.2f}" if t1 and t2 else "—"


def render(res: dict, meta: dict) -> str:
    m, v = meta["machine"], meta["versions"]
    L = ["# bnconvert benchmarks", "",
         f"Generated by `{meta['command']}` on {meta['date']}; the run took {meta['wall_s'] / 60:.1f} min "
         f"({'quick mode' if meta['quick'] else 'full run'}). Every number below was measured by that run: "
         "rerun the command to refresh this file, never edit the numbers by hand.", "",
         f"- machine: {m['cpu']}, {m['nproc']} CPU cores, {m['ram_gib']:.0f} GiB RAM, {m['os']}; load average "
         f"(1 min) {meta['load_before']} before the run, {meta['load_after']} after it — anything above 0 is other "
         "processes sharing the cores, and the timings below include their interference",
         f"- versions: Python {m['python']}, TensorFlow {v['tensorflow']}, tf2onnx {v['tf2onnx']}, "
         f"onnxruntime {v['onnxruntime']}, onnx {v['onnx']}, numpy {v['numpy']}, bnconvert {v['bnconvert']}",
         f"- bnconvert source: a copy of `bnconvert/` taken at the start (sha256 of its .py files "
         f"`{meta['source']}`), imported by every measurement; the working tree's `bnconvert/` "
         + ("**changed during the run** (these numbers are for the copy)" if meta["source_changed"]
            else "was unchanged at the end"),
         f"- graphs: {', '.join(meta['archs'])} with {', '.join(map(str, meta['sizes']))} BN layers"
         + (f", plus the wide ResNet ({WIDE_N} BN layers, 128 channels) for memory" if meta["memory_probe"] else "")
         + f"; conversions stopped after {meta['timeout']:.0f} s (from {LARGE} BN layers: after "
           f"{CAP_FACTOR}× bnconvert's time, at least {CAP_MIN:.0f} s); latency: up to {meta['runs']} runs per model",
         "- at real size (a 100 MB ResNet-50 against tf2onnx's CLI, child-process costs): "
         "docs/BENCHMARKS_REAL_SIZE.md (`tools/bench_real.py`; ResNet-50, Inception-v3, DenseNet-121, memory vs model size, latency against tf2onnx; the memory design in docs/MEMORY.md)",
         "- the exported form of a BN that cannot be folded (DenseNet-121's 62 BNs after a concat) against tf2onnx on the hand-edited graph, with an A/A control and per-node kernel times: docs/BENCH_BNFORM.md (`tools/bench_bnform.py`)",
         "", "## Targets", "", targets_md(res, meta), ""]
    L += graphs_md(res)
    L += stages_md(res)
    L += growth_md(res, meta)
    L += peers_md(res)
    L += cli_md(res)
    L += latency_md(res)
    L += ["## How to reproduce", "", "```",
          "python tools/bench.py --build-only   # build and cache the graphs (minutes at 1,000 layers)",
          "python tools/bench.py                # full run, writes docs/BENCHMARKS.md",
          "python tools/bench.py --quick        # 10 and 50 BN layers, light (CI: tests/test_bench_quick.py)",
          "```", "",
          "Graphs are cached in `--graphs` (default `~/.cache/bnconvert-bench`); `--rebuild` builds them "
          "again. Each measurement runs in a child process of `tools/bench.py`, one per graph, with "
          "TensorFlow, tf2onnx, onnxruntime and bnconvert imported before the first stage (and then, as in "
          "bnconvert's own stage children, left out of garbage collection: `gc.freeze`); the children's "
          "output goes to `children.log` in the work folder (`--workdir`, `--keep`). Peak RSS per stage is "
          "VmHWM read after resetting it through `/proc/self/clear_refs` at the stage's start; for whole "
          "commands it is `wait4`'s ru_maxrss.", ""]
    return "\n".join(L)


def graphs_md(res) -> list[str]:
    L = ["## Graphs", "",
         "ResNet-like: Conv2D 3×3 (4 channels, 8×8 input; *wide*: 128 channels, 16×16), fused BN "
         "(`FusedBatchNormV3` in a `cond`), residual add every two layers, ReLU. MLP: Dense 16, decomposed "
         "BN (`moments`, two `cond`s, `batchnorm/*`), tanh. Both: bool placeholder `phase` as `training`, "
         "random moving statistics, gamma and beta, built with `tf.compat.v1.layers` and frozen with "
         "`convert_variables_to_constants`; *no BN*: the same with biases (the latency floor). Build time "
         "is TensorFlow's (layers / initialisation / freezing), measured when the graph was built; it is "
         "in no other number.", ""]
    rows = []
    for g in sorted(res["graphs"].values(), key=lambda g: (g["arch"], not g["bn"], g["n"])):
        rows.append([g["arch"] + ("" if g["bn"] else " (no BN)"), g["n"], g["nodes"], f"{g['bytes'] / 1024:.0f}",
                     f"{g['weight_bytes'] / 1024:.0f}",
                     f"{g['build_s']:.1f} ({g['graph_s']:.1f} / {g['init_s']:.1f} / {g['freeze_s']:.1f})",
                     f"{'cached from' if g['cached'] else 'this run,'} {g['built']}"])
    return L + [_table(["graph", "layers", "nodes", ".pb KiB", "weights KiB", "TF build s (layers / init / freeze)",
                        "built"], rows), ""]


def stages_md(res) -> list[str]:
    L = ["## bnconvert, stage by stage", "",
         "Seconds per stage. *match* is `find_bns` alone on the inference-mode graph; *match+fold* is "
         "`fold_all` (it matches again, folds, prunes). `bnconvert.fold()` is the public call (inference mode "
         "+ match+fold), median of 3. *verification* is what `bnconvert fold` runs after exporting: the "
         "original graph in TF against the folded .pb, the ONNX (onnxruntime CPU) and the .tflite.", ""]
    rows, mem = [], []
    for key, arch, n in _keys(res):
        p = res["pipeline"][key]
        if not p.get("ok"):
            rows.append([arch, n, f"failed: {p.get('error')}"] + [""] * len(STAGES))
            continue
        by = {s["stage"]: s for s in p["stages"]}
        ok = all(v["ok"] for v in p["verification"].values())
        rows.append([arch, n] + [_s(by[s]["s"]) if s in by else "—" for s in STAGES] + [_s(p["fold_s"]),
                    f"{p['bn']['folded']}/{p['bn']['found']} folded, verification {'passed' if ok else 'FAILED'}"])
        mem.append([arch, n, f"{p['baseline_mb']:.0f}"] +
                   [_mb(by[s]["peak_mb"], by[s]["before_mb"]) if s in by else "—" for s in STAGES] +
                   [_mb(p["fold_peak_mb"])])
    L += [_table(["graph", "BNs"] + list(STAGES) + ["`bnconvert.fold()`", "result"], rows), "",
          "Peak RSS in MiB during each stage, with the increase over the RSS at the stage's start in "
          "brackets; *baseline* is the RSS after the imports, before loading.", "",
          _table(["graph", "BNs", "baseline"] + list(STAGES) + ["`bnconvert.fold()`"], mem), ""]
    return L


def growth_md(res, meta) -> list[str]:
    L = ["## Growth with graph size", "",
         "Medians of 3 `bnconvert.fold()` calls (`report.timings`); *match* is `find_bns` once. *exponent* "
         "is log(t₂/t₁) / log(n₂/n₁) against the previous size (last row: smallest to largest): 1 is linear, "
         "2 quadratic.", ""]
    rows = []
    for arch in meta["archs"]:
        prev = first = None
        for n in meta["sizes"]:
            p = res["pipeline"].get(f"{arch}/{n}", {})
            if not p.get("ok"):
                continue
            inf, mf = p["inference_mode_s"], p["match_fold_s"]
            mt = next(s["s"] for s in p["stages"] if s["stage"] == "match")
            rows.append([arch, n, p["nodes_before"], _s(inf), _exp(prev[1], inf, prev[0], n) if prev else "—",
                         _s(mt), _s(mf), _exp(prev[2], mf, prev[0], n) if prev else "—", f"{1e6 * mf / n:.0f}"])
            prev = (n, inf, mf)
            first = first or prev
        if first and prev and prev[0] > first[0]:
            rows.append([arch, f"{first[0]} → {prev[0]}", "", "", _exp(first[1], prev[1], first[0], prev[0]), "", "",
                         _exp(first[2], prev[2], first[0], prev[0]), ""])
    return L + [_table(["graph", "BNs", "nodes", "inference mode s", "exponent", "match s", "match+fold s",
                        "exponent", "match+fold µs per BN"], rows), ""]


def peers_md(res) -> list[str]:
    L = ["## Against peers", "",
         "Same graphs, same run, same process after bnconvert's stages. *in-process s*: the conversion "
         "call alone (bnconvert: load + `fold()` + ONNX export; tf2onnx: `from_graph_def`; "
         "`optimize_for_inference`), imports excluded. *command s*: the whole command line (next section). "
         "*ops left*: nodes other than constants and placeholders, `If` branches included. *BN-derived*: "
         "ONNX `BatchNormalization`, `If`, `Sqrt`, `Reciprocal`, and a `Mul` by a constant followed by an "
         "`Add` of a constant right after `Conv`/`MatMul`/`Gemm` (both counted); in TF graphs "
         "`FusedBatchNorm*`, `Switch`, `Merge`, `Rsqrt` and the same chains. *outputs match*: against the "
         f"original graph in TF with `phase` False on {REF_BATCH} random inputs, pass if max_abs ≤ {ATOL:g} + "
         f"{RTOL:g}·max|reference| (max relative error in brackets). *peak RSS*: MiB during the conversion, "
         "increase in brackets.", ""]
    rows = []
    for key, arch, n in _keys(res):
        p, peers, cli = res["pipeline"][key], res["peers"].get(key, {}), res["cli"].get(key, {})
        if not p.get("ok") or not any(t in peers for t in PEER_NAMES):
            continue
        c = p["onnx_counts"]
        rows.append([arch, n, PEER_NAMES["bnconvert"], _s(p["to_onnx_s"]), _cli(cli.get("bnconvert")),
                     c["ops_left"], c["bn_left"], _detail(c["bn_detail"]), _match(p["onnx_match"]),
                     _mb(max(s["peak_mb"] for s in p["stages"] if s["stage"] in ("load", "ONNX export")),
                         p["baseline_mb"])])
        for tool in ("tf2onnx", "tf2onnx_const", "optimize_for_inference"):
            q = peers.get(tool)
            if not q:
                continue
            done = "error" not in q and not q.get("stopped")
            rows.append([arch, n, PEER_NAMES[tool], _peer_time(q), _cli(cli.get("tf2onnx")) if tool == "tf2onnx" else "—",
                         q.get("ops_left", "—"), q.get("bn_left", "—"),
                         _detail(q.get("bn_detail", {})) if done else "—", _match(q.get("match")),
                         _mb(q.get("peak_mb"), q.get("before_mb")) if done else "—"])
    return L + [_table(["graph", "BNs", "tool", "in-process s", "command s", "ops left", "BN-derived",
                        "which", "outputs match", "peak RSS MiB"], rows), ""]


def cli_md(res) -> list[str]:
    L = ["## Command lines", "",
         "Wall time of the whole command (Python start-up and imports included), one run each, "
         "bnconvert first; peak RSS is the process's.", ""]
    rows, cmds = [], None
    for key, c in res["cli"].items():
        arch, n = key.split("/")
        b, t = c["bnconvert"], c["tf2onnx"]
        cmds = cmds or (b["cmd"], t["cmd"])
        ratio = f"{b['wall_s'] / t['wall_s']:.2f}" if _ok(b) and _ok(t) else \
            f"< {b['wall_s'] / t['wall_s']:.2f}" if _ok(b) and t["timed_out"] else "—"
        rows.append([arch, n, _cli(b), _cli(t), ratio, f"{b['maxrss_mb']:.0f}", f"{t['maxrss_mb']:.0f}"])
    if not rows:
        return L + ["Not run.", ""]
    return L + ["```", cmds[0], cmds[1], "```", "",
                _table(["graph", "BNs", "`bnconvert fold` s", "`tf2onnx.convert` s", "bnconvert / tf2onnx",
                        "bnconvert peak MiB", "tf2onnx peak MiB"], rows), ""]


def latency_md(res) -> list[str]:
    L = ["## Inference latency (onnxruntime, CPU)", "",
         "Median milliseconds per `run`, `ORT_ENABLE_ALL`, `intra_op_num_threads` 1 or 0 (all cores), "
         "models interleaved in blocks of runs (order reversed every round) after a warm-up. *floor*: the same architecture built without BN "
         "(biases instead), converted by tf2onnx; *floor again (A/A)* is the same file in a second session, "
         "so *A/A* shows how far two identical models drift apart on this machine. *tf2onnx unfolded* is fed "
         "`phase`=False.", ""]
    rows = []
    for key, lat in res["latency"].items():
        arch, n = key.split("/")
        if not lat.get("ok"):
            rows.append([arch, n, "—", "—", f"failed: {lat.get('error')}"] + [""] * 6)
            continue
        for r in lat["rows"]:
            med = r["median_ms"]
            f, a, b, u = (med.get(k) for k in ("floor (no BN)", "floor again (A/A)", "bnconvert", "tf2onnx unfolded"))
            rows.append([arch, n, r["threads"] or "all", r["batch"], r["runs"]] + [_ms(med.get(k)) for k in LAT_MODELS]
                        + [f"{b / f:.3f}" if b and f else "—", f"{a / f:.3f}" if a and f else "—",
                           f"{u / b:.2f}" if u and b else "—"])
    return L + [_table(["graph", "BNs", "threads", "batch", "runs"] + [f"{k} ms" for k in LAT_MODELS] +
                       ["bnconvert / floor", "A/A: floor again / floor", "tf2onnx unfolded / bnconvert"], rows), ""]


def targets_md(res: dict, meta: dict) -> str:
    rows = []
    # 1. match+fold of a 1,000-BN graph under 5 s
    big = max(meta["sizes"])
    vals = [(a, res["pipeline"].get(f"{a}/{big}", {}).get("match_fold_s")) for a in meta["archs"]]
    got = "; ".join(f"{a} {_s(t)} s" for a, t in vals if t is not None) or "failed"
    if big >= 1000:
        rows.append([f"match+fold of a 1,000-BN graph < 5 s on {meta['machine']['nproc']} cores",
                     f"{got} (median of 3, `report.timings['match_fold']`)",
                     "met" if all(t is not None and t < 5 for _, t in vals) else "NOT met"])
    else:
        rows.append(["match+fold of a 1,000-BN graph < 5 s", f"not measured, largest size {big}: {got}", "—"])
    # 2. bnconvert fold --to onnx --no-verify no slower than tf2onnx alone
    cmd, inproc = [], []
    for key, c in res["cli"].items():
        if _ok(c["bnconvert"]) and (_ok(c["tf2onnx"]) or c["tf2onnx"]["timed_out"]):
            cmd.append((key, c["bnconvert"]["wall_s"] / c["tf2onnx"]["wall_s"]))
    for key, peers in res["peers"].items():
        p, q = res["pipeline"].get(key, {}), peers.get("tf2onnx")
        if p.get("ok") and q and ("error" not in q):
            inproc.append((key, p["to_onnx_s"] / q["s"]))
    if cmd or inproc:
        parts, met = [], True
        for label, lst in (("command lines", cmd), ("in-process", inproc)):
            if lst:
                worst = max(lst, key=lambda r: r[1])
                parts.append(f"{label}: bnconvert/tf2onnx time {min(r for _, r in lst):.2f}–{worst[1]:.2f} "
                             f"over {len(lst)} graphs (highest {worst[0]})")
                met = met and worst[1] <= 1.0
        rows.append(["`bnconvert fold --to onnx --no-verify` no slower than tf2onnx alone on the unfolded graph",
                     "; ".join(parts) + " (a stopped tf2onnx counts with the time it had run)", "met" if met else "NOT met"])
    # 3. latency within 5% of the BN-free floor
    lat = []
    for key, r in res["latency"].items():
        for row in r.get("rows") or []:
            med = row["median_ms"]
            f = med.get("floor (no BN)")
            if med.get("bnconvert") and f:
                aa = med.get("floor again (A/A)", f) / f
                lat.append((f"{key} threads={row['threads'] or 'all'} batch={row['batch']}", med["bnconvert"] / f, aa))
    if lat:
        worst = max(lat, key=lambda x: x[1])
        within = sum(r <= 1.05 for _, r, _ in lat)
        ratios = sorted(r for _, r, _ in lat)
        aa_dev = sorted(abs(a - 1) for *_, a in lat)
        over = [(k, r, a) for k, r, a in lat if r > 1.05]
        noise = sum(r - 1.05 <= abs(a - 1) for _, r, a in over)
        rows.append(["bnconvert's ONNX within 5% of the BN-free floor's latency",
                     f"{within}/{len(lat)} configurations within 5%; median ratio {ratios[len(ratios) // 2]:.3f}, "
                     f"highest {worst[1]:.3f} ({worst[0]}, A/A {worst[2]:.3f}); the A/A control (identical "
                     f"models) deviates by a median {100 * aa_dev[len(aa_dev) // 2]:.1f}%, at most "
                     f"{100 * aa_dev[-1]:.1f}%; {noise} of the {len(over)} configurations over 5% exceed it by "
                     "less than their own A/A deviation",
                     "met" if within == len(lat) else "NOT met as measured" + (" (all within the A/A noise)"
                                                                            if noise == len(over) else "")])
    # 4. peak memory
    fold_ok, all_ok, desc = [], [], []
    for key, arch, n in _keys(res):
        p = res["pipeline"][key]
        if not p.get("ok"):
            continue
        w = 3 * p["weight_bytes"] / 2 ** 20
        fold_peak = max([s["peak_mb"] for s in p["stages"] if s["stage"] in FOLD_STAGES] + [p["fold_peak_mb"]])
        all_peak = max(s["peak_mb"] for s in p["stages"])
        fold_ok.append(fold_peak - p["baseline_mb"] <= w)
        all_ok.append(all_peak - p["baseline_mb"] <= w)
        desc.append(f"{key}: 3× weights {w:.1f} MiB; fold +{fold_peak - p['baseline_mb']:.1f} MiB; "
                    f"with exports and verification +{all_peak - p['baseline_mb']:.0f} MiB")
    if desc:
        def verdict(lst):
            return "met" if all(lst) else f"NOT met on {len(lst) - sum(lst)} of {len(lst)} graphs"

        rows.append(["peak memory < 3× the model's weights + the runtime's baseline (RSS after imports, "
                     f"{min(res['pipeline'][k]['baseline_mb'] for k, *_ in _keys(res) if res['pipeline'][k].get('ok')):.0f} MiB)",
                     "<br>".join(desc),
                     f"load → fold → write .pb: {verdict(fold_ok)}; with ONNX/TFLite export and verification: "
                     f"{verdict(all_ok)}"])
    return _table(["target", "measured", "status"], rows)


# ====================================================================== main
def parse_args(argv):
    p = argparse.ArgumentParser(description="bnconvert benchmarks (see the module docstring)")
    p.add_argument("--quick", action="store_true", help="sizes 10 and 50, peers/latency/commands at 10 only (CI)")
    p.add_argument("--out", help="write the Markdown report here (default: docs/BENCHMARKS.md for the full "
                                 "run; --quick prints only)")
    p.add_argument("--sizes", help="comma-separated BN layer counts (even)")
    p.add_argument("--archs", default=",".join(ARCHS), help="resnet,mlp")
    p.add_argument("--cli-sizes", default="10,200", help="sizes whose command lines are timed (full run)")
    p.add_argument("--no-memory-probe", dest="memory_probe", action="store_false",
                   help="skip the wide ResNet (on by default in the full run)")
    p.add_argument("--graphs", default=os.path.join(os.path.expanduser("~"), ".cache", "bnconvert-bench"),
                   help="graph cache folder")
    p.add_argument("--rebuild", action="store_true", help="build the graphs again even if cached")
    p.add_argument("--build-only", action="store_true", help="build and cache the graphs, then stop")
    p.add_argument("--workdir", help="folder for outputs and the children's log (default: temporary)")
    p.add_argument("--keep", action="store_true", help="keep the work folder")
    p.add_argument("--runs", type=int, help="latency runs per model and configuration (default 100, quick 10)")
    p.add_argument("--timeout", type=float, help="seconds allowed per conversion (default 600, quick 120)")
    p.add_argument("--json", help="also write the raw results as JSON here")
    p.add_argument("--child", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.child:
        return a
    a.archs = [x for x in a.archs.split(",") if x]
    bad = [x for x in a.archs if x not in ARCHS]
    if bad or not a.archs:
        p.error(f"--archs: choose from {', '.join(ARCHS)}")
    try:
        a.sizes = [int(x) for x in a.sizes.split(",")] if a.sizes else list(QUICK_SIZES if a.quick else FULL_SIZES)
        a.cli_sizes = {int(x) for x in a.cli_sizes.split(",") if x}
    except ValueError:
        p.error("--sizes and --cli-sizes take comma-separated integers")
    if any(n < 2 or n % 2 for n in a.sizes):
        p.error("--sizes must be even numbers >= 2 (ResNet blocks hold two BN layers)")
    a.sizes = sorted(set(a.sizes))
    a.memory_probe = a.memory_probe and not a.quick
    a.runs = a.runs or (10 if a.quick else 100)
    a.timeout = a.timeout or (120 if a.quick else 600)
    if a.out is None and not a.quick and not a.build_only:
        a.out = os.path.join(ROOT, "docs", "BENCHMARKS.md")
    return a


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if args.child:
        return child_main(args.child)
    t0 = time.perf_counter()
    load_before = _loadavg()
    workdir = args.workdir or tempfile.mkdtemp(prefix="bnconvert-bench-")
    os.makedirs(workdir, exist_ok=True)
    src, src_hash = snapshot_source(workdir)
    runner = Runner(workdir, src)
    try:
        res = run_benchmarks(args, runner)
        if args.build_only:
            print("\n".join(graphs_md(res)))
            return 0
        here = os.path.abspath(os.getcwd()) == ROOT
        script = os.path.relpath(os.path.abspath(__file__), ROOT) if here else os.path.abspath(__file__)
        meta = {"command": " ".join(["python", script] + [shlex.quote(a) for a in argv]),
                "date": datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
                "wall_s": time.perf_counter() - t0, "quick": args.quick, "archs": args.archs,
                "sizes": args.sizes, "timeout": args.timeout, "runs": args.runs,
                "memory_probe": args.memory_probe, "machine": machine(), "versions": versions(),
                "load_before": load_before, "load_after": _loadavg(), "source": src_hash,
                "source_changed": source_hash(os.path.join(ROOT, "bnconvert")) != src_hash}
        md = render(res, meta)
        print(md)
        if args.out:
            os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
            with open(args.out, "w") as f:
                f.write(md)
            runner.say(f"wrote {args.out}")
        if args.json:
            with open(args.json, "w") as f:
                json.dump({"meta": meta, "results": res}, f, indent=1, default=str)
    finally:
        if args.keep or args.workdir:
            runner.say(f"work folder kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
