#!/usr/bin/env python
"""Real-size benchmark: a ResNet-50 built the TF1 way, bnconvert against tf2onnx as users run it.

    python tools/bench_real.py --workdir /tmp/bench_real            # build (once) and measure
    python tools/bench_real.py --workdir /tmp/bench_real --widths 0.5,1,2   # memory vs model size

The graph is Keras applications' ResNet50 (``tf_keras``, TF1 graph mode, v2 behaviour off,
``weights=None``: random weights, no download) with the learning phase as a bool placeholder,
every BN's gamma, beta and moving statistics randomised, frozen with
``convert_variables_to_constants`` into ``WORKDIR/resnet50_w{width}.pb`` (never committed).
``--widths`` scales every layer's channels (1 → 25.6 M parameters, ~98 MB).

Each command runs alone, one after the other, as a user runs it:

- ``bnconvert fold model.pb -o OUT --force`` (pb + onnx + tflite, verified),
- ``bnconvert fold model.pb -o OUT --force --to onnx --no-verify``,
- ``python -m tf2onnx.convert --graphdef model.pb --inputs input_1:0,keras_learning_phase:0
  --outputs probs/Softmax:0 --output OUT/tf2onnx.onnx`` (the training flag stays an input).

Memory is sampled every 50 ms over the command's whole process tree (bnconvert's forkserver and
stage children included): **sum RSS** adds every process's resident set (pages shared between
the forkserver and its children are counted once per process: an upper bound); **tree memory**
counts each process's private pages (USS) plus the largest shared part once — what a container's
memory limit sees.  Wall time includes Python and TensorFlow start-up.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "TF_USE_LEGACY_KERAS": "1", "PYTHONPATH": ROOT}


def build(path: str, width: float) -> dict:
    """Write the frozen ResNet-50 (channels × ``width``) to ``path``; returns its facts."""
    code = f"""
import os, sys, json
import numpy as np
os.environ["TF_USE_LEGACY_KERAS"] = "1"
import tensorflow as tf
tf.compat.v1.disable_v2_behavior()
import tf_keras as keras
from tf_keras.src.applications import resnet
width = {width!r}
kw = {{}}
if width != 1.0:  # scale every conv layer's width (ResNet takes its layer factory as `layers=`)
    from tf_keras.src.layers import VersionAwareLayers
    base = VersionAwareLayers()
    class Layers:
        def __getattr__(self, n):
            return getattr(base, n)
        def Conv2D(self, filters, *a, **k):
            return base.Conv2D(max(1, int(round(filters * width))), *a, **k)
    kw["layers"] = Layers()
from tf_keras.src import backend as K0
phase = K0.learning_phase()
model = resnet.ResNet50(weights=None, input_shape=(224, 224, 3), **kw)
from tf_keras.src import backend as K
sess = K.get_session()
rng = np.random.default_rng(0)
for v in tf.compat.v1.global_variables():
    n = v.name
    shape = v.shape.as_list()
    if "moving_variance" in n or "gamma" in n:
        sess.run(v.assign(rng.uniform(0.5, 1.5, shape).astype(np.float32)))
    elif "moving_mean" in n or "beta" in n:
        sess.run(v.assign(rng.normal(0, 0.1, shape).astype(np.float32)))
out = model.outputs[0].op.name
gd = tf.compat.v1.graph_util.convert_variables_to_constants(sess, sess.graph.as_graph_def(), [out])
gd = tf.compat.v1.graph_util.extract_sub_graph(gd, [out])
open({path!r}, "wb").write(gd.SerializeToString())
params = int(sum(np.prod(v.shape.as_list()) for v in tf.compat.v1.global_variables()))
print(json.dumps({{"output": out + ":0", "input": model.inputs[0].name, "phase": phase.name,
                  "params": params, "bytes": os.path.getsize({path!r}),
                  "bns": sum(1 for n in gd.node if n.op.startswith("FusedBatchNorm")) // 2}}))
"""
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=ENV, timeout=1800)
    if p.returncode:
        raise SystemExit(p.stderr[-3000:])
    return json.loads(p.stdout.strip().splitlines()[-1])


def _tree(pid: int):
    import psutil

    try:
        root = psutil.Process(pid)
        return [root] + root.children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def measure(cmd: list[str], timeout: float = 3600) -> dict:
    """Run ``cmd``; wall time, peak sum-RSS and peak tree memory (USS + largest shared, once)."""
    import psutil

    peak = {"rss": 0, "tree": 0, "procs": 0}
    done = threading.Event()
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV, cwd=ROOT)

    def sample():
        while not done.is_set():
            rss = uss = shared = 0
            procs = _tree(proc.pid)
            for p in procs:
                try:
                    m = p.memory_full_info()
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    continue
                rss += m.rss
                uss += m.uss
                shared = max(shared, m.rss - m.uss)
            peak["rss"] = max(peak["rss"], rss)
            peak["tree"] = max(peak["tree"], uss + shared)
            peak["procs"] = max(peak["procs"], len(procs))
            time.sleep(0.05)

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    out, err = proc.communicate(timeout=timeout)
    wall = time.perf_counter() - t0
    done.set()
    th.join()
    return {"cmd": cmd, "rc": proc.returncode, "wall_s": round(wall, 2), "peak_sum_rss_mb": round(peak["rss"] / 2**20),
            "peak_tree_mb": round(peak["tree"] / 2**20), "processes": peak["procs"], "stderr": err[-500:]}


def commands(model: str, facts: dict, out: str) -> dict[str, list[str]]:
    bn = [sys.executable, "-m", "bnconvert.cli.main", "fold", model, "-o", out, "--force"]
    return {
        "bnconvert fold (pb+onnx+tflite, verified)": bn,
        "bnconvert fold --to onnx --no-verify": bn + ["--to", "onnx", "--no-verify"],
        "python -m tf2onnx.convert --graphdef": [
            sys.executable, "-m", "tf2onnx.convert", "--graphdef", model,
            "--inputs", f"{facts['input']},{facts['phase']}", "--outputs", facts["output"],
            "--output", os.path.join(out, "tf2onnx.onnx")],
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--workdir", default="/tmp/bnconvert_bench_real")
    p.add_argument("--widths", default="1", help="channel multipliers, e.g. 0.3,1,2 (memory vs model size)")
    p.add_argument("--only", help="substring of the command names to run")
    p.add_argument("--json", help="write the results here")
    args = p.parse_args(argv)
    os.makedirs(args.workdir, exist_ok=True)
    results = []
    for width in [float(w) for w in args.widths.split(",")]:
        model = os.path.join(args.workdir, f"resnet50_w{width:g}.pb")
        facts_path = model + ".json"
        if not os.path.exists(facts_path):
            t = time.perf_counter()
            facts = build(model, width)
            facts["build_s"] = round(time.perf_counter() - t, 1)
            with open(facts_path, "w") as f:
                json.dump(facts, f)
        with open(facts_path) as f:
            facts = json.load(f)
        print(f"# {model}: {facts['bytes'] / 1e6:.1f} MB, {facts['params'] / 1e6:.1f} M parameters, "
              f"{facts['bns']} BNs", flush=True)
        out = os.path.join(args.workdir, f"out_w{width:g}")
        os.makedirs(out, exist_ok=True)
        for name, cmd in commands(model, facts, out).items():
            if args.only and args.only not in name:
                continue
            r = measure(cmd)
            r.update(name=name, width=width, model_mb=round(facts["bytes"] / 1e6, 1))
            report = os.path.join(out, os.path.basename(model)[:-3] + ".report.json")
            if name.startswith("bnconvert") and r["rc"] == 0 and os.path.exists(report):
                with open(report) as f:
                    rep = json.load(f)
                r["timings"] = rep.get("timings")
                r["memory_mib"] = rep.get("memory_mib")
                r["ok"] = rep.get("ok")
            print(json.dumps({k: v for k, v in r.items() if k != "cmd"}), flush=True)
            results.append(r)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"loadavg": os.getloadavg(), "results": results}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
