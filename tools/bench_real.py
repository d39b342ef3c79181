#!/usr/bin/env python
"""Real-size benchmark: ResNet-50, Inception-v3 and DenseNet-121 built the TF1 way, bnconvert
against tf2onnx as users run it and against tf2onnx on the hand-edited graph.

    python tools/bench_real.py --workdir /tmp/bench_real                      # ResNet-50, build once
    python tools/bench_real.py --workdir /tmp/bench_real --widths 0.3,1,2     # memory vs model size
    python tools/bench_real.py --archs resnet50,inception_v3,densenet121 --latency --json r.json

The graphs are Keras applications' models (``tf_keras``, TF1 graph mode, v2 behaviour off,
``weights=None``: random weights, no download) with the learning phase as a bool placeholder,
every BN's gamma, beta and moving statistics randomised, frozen with
``convert_variables_to_constants`` into ``WORKDIR/<arch>_w<width>.pb`` (never committed).
``--widths`` scales ResNet-50's conv channels (0.3 → 11 MB, 1 → 103 MB, 2 → ~400 MB).

Each command runs alone, one after the other, as a user runs it:

- ``bnconvert fold model.pb -o OUT --force`` (pb + onnx + tflite, verified; stages side by side as
  the machine allows, bnconvert.schedule),
- the same with ``--jobs 1`` (one stage at a time: the smallest peak),
- ``bnconvert fold model.pb -o OUT --force --to onnx --no-verify``,
- ``python -m tf2onnx.convert --graphdef model.pb --inputs input_1:0,keras_learning_phase:0
  --outputs <out> --output OUT/tf2onnx.onnx`` (the training flag stays an input),
- the same on ``model.const_flag.pb``, the flag placeholder replaced by a constant False.

``--latency`` then times the three ONNX models in onnxruntime (CPU; batch 1 and 32; one thread
and all cores; interleaved runs, median).  Memory is sampled every 50 ms over the command's whole process tree
(bnconvert's forkserver and stage children included): **sum RSS** adds every process's resident
set (pages shared between the forkserver and its children are counted once per process: an upper
bound); **tree memory** counts each process's private pages (USS) plus the largest shared part
once — what a container's memory limit sees.  Wall time includes Python and TensorFlow start-up.
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


ARCHS = {  # name → (tf_keras.applications constructor, input side)
    "resnet50": ("resnet.ResNet50", 224),
    "inception_v3": ("inception_v3.InceptionV3", 299),
    "densenet121": ("densenet.DenseNet121", 224),
}


def build(path: str, width: float, arch: str = "resnet50") -> dict:
    """Write the frozen ``arch`` (ResNet-50: channels × ``width``) to ``path``; returns its facts."""
    ctor, side = ARCHS[arch]
    code = f"""
import os, sys, json
import numpy as np
os.environ["TF_USE_LEGACY_KERAS"] = "1"
import tensorflow as tf
tf.compat.v1.disable_v2_behavior()
import tf_keras as keras
from tf_keras.src.applications import densenet, inception_v3, resnet
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
model = {ctor}(weights=None, input_shape=({side}, {side}, 3), **kw)
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


def hand_edited(model: str, facts: dict) -> str:
    """The peer a careful user makes by hand: the training flag placeholder replaced by a constant
    False (``<model>.const_flag.pb``), so tf2onnx sees an inference graph."""
    out = model[:-3] + ".const_flag.pb"
    if os.path.exists(out):
        return out
    code = f"""
import os
os.environ["TF_USE_LEGACY_KERAS"] = "1"
import tensorflow as tf
gd = tf.compat.v1.GraphDef()
gd.ParseFromString(open({model!r}, "rb").read())
name = {facts['phase'].split(':')[0]!r}
for n in gd.node:
    if n.name == name:
        n.op = "Const"
        del n.input[:]
        for k in list(n.attr):
            del n.attr[k]
        n.attr["dtype"].type = tf.bool.as_datatype_enum
        n.attr["value"].tensor.CopyFrom(tf.make_tensor_proto(False))
open({out!r}, "wb").write(gd.SerializeToString())
"""
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=ENV, timeout=600)
    if p.returncode:
        raise SystemExit(p.stderr[-3000:])
    return out


def commands(model: str, facts: dict, out: str) -> dict[str, list[str]]:
    bn = [sys.executable, "-m", "bnconvert.cli.main", "fold", model, "-o", out, "--force"]
    t2o = [sys.executable, "-m", "tf2onnx.convert", "--graphdef"]
    return {
        "bnconvert fold (pb+onnx+tflite, verified)": bn,
        "bnconvert fold --jobs 1 (stages one at a time)": bn + ["--jobs", "1"],
        "bnconvert fold --to onnx --no-verify": bn + ["--to", "onnx", "--no-verify"],
        "python -m tf2onnx.convert --graphdef": t2o + [
            model, "--inputs", f"{facts['input']},{facts['phase']}", "--outputs", facts["output"],
            "--output", os.path.join(out, "tf2onnx.onnx")],
        "tf2onnx on the hand-edited graph (flag a constant)": t2o + [
            hand_edited(model, facts), "--inputs", facts["input"], "--outputs", facts["output"],
            "--output", os.path.join(out, "tf2onnx_const_flag.onnx")],
    }


def latency(files: dict[str, str], facts: dict, side: int, batches=(1, 32), threads=(1, 0)) -> list[dict]:
    """ONNX Runtime (CPU) latency of each converted model: the models' runs interleaved, the
    order rotated every round (load on the machine hits all of them alike), median after a
    warm-up run.  Timed one model after another, a busy moment can fall on one model alone (this
    table once showed bnconvert's DenseNet-121 at 1.29× the hand-edited model's; interleaved,
    and per node in onnxruntime's profiler, they are the same: ``tools/bench_bnform.py``).

    ``threads`` 0 means onnxruntime's default (all cores).  A training flag the model still takes
    as an input (tf2onnx as users run it) is fed False."""
    import numpy as np
    import onnxruntime as ort

    rows = []
    for batch in batches:
        x = np.random.default_rng(0).random((batch, side, side, 3), dtype=np.float32)
        for nthreads in threads:
            sessions, feeds, times = {}, {}, {}
            for label, path in files.items():
                if not os.path.exists(path):
                    continue
                so = ort.SessionOptions()
                so.intra_op_num_threads = nthreads
                so.inter_op_num_threads = 1
                so.log_severity_level = 3
                sessions[label] = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
                feeds[label] = {i.name: (np.array(False) if i.type == "tensor(bool)" else x)
                                for i in sessions[label].get_inputs()}
                sessions[label].run(None, feeds[label])
                times[label] = []
            order = list(sessions)
            for r in range(5 if batch > 8 else 30):
                for label in order[r % len(order):] + order[:r % len(order)]:
                    t = time.perf_counter()
                    sessions[label].run(None, feeds[label])
                    times[label].append(time.perf_counter() - t)
            for label in order:
                rows.append({"model": label, "batch": batch, "threads": nthreads or "all",
                             "ms": round(1000 * float(np.median(times[label])), 2)})
                print(json.dumps(rows[-1]), flush=True)
            del sessions
    return rows


def render(results: list[dict], latency_rows: dict, notes: list[str]) -> str:
    """docs/BENCHMARKS_REAL_SIZE.md from the measurements (never edited by hand)."""
    lines = ["# Real size: bnconvert against tf2onnx on ResNet-50, Inception-v3 and DenseNet-121", "",
             "Generated by `tools/bench_real.py --markdown` from the measurements listed below; rerun the "
             "commands to refresh it, never edit the numbers by hand.", ""]
    lines += [f"- {n}" for n in notes] + [""]
    models = list(dict.fromkeys((r.get("run", 1), r["arch"], r["width"], r["model_mb"]) for r in results))
    peer = "python -m tf2onnx.convert --graphdef"
    lines += ["## Each command alone, per model", "",
              "*tree* = peak of the whole process tree's memory (each process's private pages plus the largest "
              "shared part once: what a container limit sees); ratios against tf2onnx as users run it on the "
              "same file (the flag an input).", "",
              "| run | model | MB | command | wall s | tree MB | time / tf2onnx | memory / tf2onnx |",
              "|---|---|---|---|---|---|---|---|"]
    for run, arch, width, mb in models:
        rows = [r for r in results if (r.get("run", 1), r["arch"], r["width"]) == (run, arch, width)]
        base = next((r for r in rows if r["name"] == peer and r["rc"] == 0), None)
        for r in rows:
            rt = f"{r['wall_s'] / base['wall_s']:.2f}×" if base else "-"
            rm = f"{r['peak_tree_mb'] / base['peak_tree_mb']:.2f}×" if base else "-"
            name = f"{arch}" + (f" ×{width:g}" if arch == "resnet50" and width != 1 else "")
            ok = "" if r["rc"] == 0 else f" (exit {r['rc']})"
            lines.append(f"| {run} | {name} | {mb} | `{r['name']}`{ok} | {r['wall_s']} | {r['peak_tree_mb']} | {rt} | {rm} |")
    lines += ["", "## bnconvert fold (all formats, verified): stages", "",
              "Seconds per stage (`report.json` timings) and each process's peak resident MiB (`memory_mib`; a "
              "child's RSS includes the TensorFlow pages it shares with the forkserver).", ""]
    for r in results:
        if r["name"].startswith("bnconvert fold (") and r.get("timings"):
            name = f"{r['arch']}" + (f" ×{r['width']:g}" if r["arch"] == "resnet50" and r["width"] != 1 else "")
            t = ", ".join(f"{k} {v:.1f}" for k, v in r["timings"].items())
            m = ", ".join(f"{k} {v:.0f}" for k, v in (r.get("memory_mib") or {}).items())
            lines += [f"- **{name}** ({r['model_mb']} MB, run {r.get('run', 1)}): {t}", f"  - memory MiB: {m}"]
    # memory does not depend on the load: the first run's row per size
    seen: set = set()
    sized = []
    for r in results:
        if r["arch"] == "resnet50" and (r["width"], r["name"]) not in seen:
            seen.add((r["width"], r["name"]))
            sized.append(r)
    results = sized + [r for r in results if r["arch"] != "resnet50"]
    sizes = sorted({(r["width"], r["model_mb"]) for r in results if r["arch"] == "resnet50"})
    if len(sizes) > 1:
        cmds = list(dict.fromkeys(r["name"] for r in results if r["arch"] == "resnet50"))
        lines += ["", "## Memory against model size (ResNet-50, conv widths scaled)", "",
                  "Peak tree MB, and in brackets MB per MB of model.", "",
                  "| model MB | " + " | ".join(f"`{c}`" for c in cmds) + " |", "|---|" + "---|" * len(cmds)]
        for width, mb in sizes:
            cells = []
            for c in cmds:
                r = next((x for x in results if x["arch"] == "resnet50" and x["width"] == width and x["name"] == c), None)
                cells.append("-" if r is None else f"{r['peak_tree_mb']} ({r['peak_tree_mb'] / mb:.1f})")
            lines.append(f"| {mb} | " + " | ".join(cells) + " |")
    if latency_rows:
        lines += ["", "## Inference latency of the converted models (onnxruntime CPU, median ms)", "",
                  "| model | batch | threads | " + " | ".join(["bnconvert", "tf2onnx (flag an input)",
                                                             "tf2onnx (hand-edited)"]) + " |", "|---|---|---|---|---|---|"]
        for stem, rows in latency_rows.items():
            keys = list(dict.fromkeys((r["batch"], r["threads"]) for r in rows))
            for b, th in keys:
                cell = {r["model"]: r["ms"] for r in rows if (r["batch"], r["threads"]) == (b, th)}
                lines.append(f"| {stem} | {b} | {th} | " + " | ".join(
                    str(cell.get(k, "-")) for k in ("bnconvert", "tf2onnx (flag an input)", "tf2onnx (hand-edited)")) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--workdir", default="/tmp/bnconvert_bench_real")
    p.add_argument("--archs", default="resnet50", help=f"comma-separated: {', '.join(ARCHS)}")
    p.add_argument("--widths", default="1", help="ResNet-50 channel multipliers, e.g. 0.3,1,2 (memory vs model size)")
    p.add_argument("--only", help="substring of the command names to run")
    p.add_argument("--latency", action="store_true", help="also time the converted ONNX models in onnxruntime")
    p.add_argument("--json", help="write the results here")
    p.add_argument("--markdown", help="write docs/BENCHMARKS_REAL_SIZE.md from --from JSON files (no measuring)")
    p.add_argument("--from", dest="sources", default="", help="comma-separated --json files for --markdown")
    p.add_argument("--note", action="append", default=[], help="a line for the markdown's notes (repeatable)")
    args = p.parse_args(argv)
    if args.markdown:
        results, lat, notes = [], {}, list(args.note)
        for src in args.sources.split(","):
            with open(src) as f:
                d = json.load(f)
            run = len(notes) - len(args.note) + 1
            results += [{**r, "run": run} for r in d["results"]]
            lat.update(d.get("latency", {}))
            notes.append(f"run {run}: `{src}`: {d.get('command', '')} — load average after the run "
                         f"{', '.join(f'{x:.1f}' for x in d.get('loadavg', []))}")
        with open(args.markdown, "w") as f:
            f.write(render(results, lat, notes))
        return 0
    os.makedirs(args.workdir, exist_ok=True)
    results, lat = [], {}
    for arch in args.archs.split(","):
        for width in [float(w) for w in args.widths.split(",")] if arch == "resnet50" else [1.0]:
            stem = f"{arch}_w{width:g}" if arch != "resnet50" else f"resnet50_w{width:g}"
            model = os.path.join(args.workdir, stem + ".pb")
            facts_path = model + ".json"
            if not os.path.exists(facts_path):
                t = time.perf_counter()
                facts = build(model, width, arch)
                facts["build_s"] = round(time.perf_counter() - t, 1)
                with open(facts_path, "w") as f:
                    json.dump(facts, f)
            with open(facts_path) as f:
                facts = json.load(f)
            print(f"# {model}: {facts['bytes'] / 1e6:.1f} MB, {facts['params'] / 1e6:.1f} M parameters, "
                  f"{facts['bns']} BNs", flush=True)
            out = os.path.join(args.workdir, f"out_{stem}")
            os.makedirs(out, exist_ok=True)
            for name, cmd in commands(model, facts, out).items():
                if args.only and args.only not in name:
                    continue
                r = measure(cmd)
                r.update(name=name, arch=arch, width=width, model_mb=round(facts["bytes"] / 1e6, 1))
                report = os.path.join(out, os.path.basename(model)[:-3] + ".report.json")
                if name.startswith("bnconvert") and r["rc"] == 0 and os.path.exists(report):
                    with open(report) as f:
                        rep = json.load(f)
                    r["timings"] = rep.get("timings")
                    r["memory_mib"] = rep.get("memory_mib")
                    r["ok"] = rep.get("ok")
                print(json.dumps({k: v for k, v in r.items() if k != "cmd"}), flush=True)
                results.append(r)
            if args.latency:
                files = {"bnconvert": os.path.join(out, stem + ".onnx"),
                         "tf2onnx (flag an input)": os.path.join(out, "tf2onnx.onnx"),
                         "tf2onnx (hand-edited)": os.path.join(out, "tf2onnx_const_flag.onnx")}
                lat[stem] = latency(files, facts, ARCHS[arch][1])
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"loadavg": os.getloadavg(), "results": results, "latency": lat,
                       "command": "python tools/bench_real.py " + " ".join(argv if argv is not None else sys.argv[1:])},
                      f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
