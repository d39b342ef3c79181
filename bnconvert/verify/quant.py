"""Verification of int8 models: compare with the float original by what matters for int8.

Max-abs tolerances (``compare.py``) are for float files: an int8 model differs from the float
one by about half a quantization step everywhere, by design. For int8 files, each output is
compared with the *original* graph (run in TensorFlow, training flags false) on held-out inputs
(never the calibration samples when others exist: see :mod:`bnconvert.quantize.calibration`):

- ``top1_agreement``: the fraction of samples whose arg-max class is the original's, for
  classifier-like outputs (``[N, C]``, C > 1);
- ``cosine``: cosine similarity of the whole output (all samples, flattened) with the original;
- ``sqnr_db``: signal-to-quantization-noise ratio, ``10·log10(Σref² / Σ(ref−q)²)``;
- ``accuracy`` / ``reference_accuracy`` when labels are known (``--calibration mnist``).

An output passes when ``top1_agreement >= MIN_TOP1`` (classifier-like outputs only),
``cosine >= MIN_COSINE`` and ``sqnr_db >= MIN_SQNR_DB``; with labels, also when the accuracy
is at most ``MAX_ACCURACY_DROP_PP`` percentage points below the original's. Exit code 1
otherwise, as for float files.

Measured by ``python tools/bench_int8.py --thresholds`` (2026-11-29 19:32 UTC run; 1,000
held-out MNIST test digits; every row is in docs/BENCHMARKS.md): good int8 conversions
(bnconvert's settings) against broken ones — 8-bit ONNX weights run by onnxruntime's AVX2
kernels (saturation, see :mod:`bnconvert.quantize.onnx_int8`), one layer's weight scales ×4,
random calibration of the MobileNet:

==========================================  ==========  ========  =======  ===========
int8 file                                   top-1 agr.  cosine    SQNR dB  accuracy Δpp
==========================================  ==========  ========  =======  ===========
good, 3 MNIST fixtures × (ONNX, TFLite)     ≥ 99.7%     ≥ 0.9999  ≥ 36.9   +0.1..+0.2
good, MobileNet-v1 0.25 (27 BN), ONNX       96.8%       0.9917    17.8     −0.6
good, MobileNet-v1 0.25 (27 BN), TFLite     97.5%       0.9968    21.9     +0.3
8-bit weights on AVX2, mnist_conv           96.8%       0.9808    12.0     −1.4
8-bit weights on AVX2, MobileNet            91.6%       0.9580    10.8     −1.5
random calibration, MobileNet, ONNX         96.6%       0.9752    12.1     −0.2
scales ×4, worst of the four models         ≤ 93.6%     ≤ 0.935   ≤ 1.0    −3.2..−75.6
==========================================  ==========  ========  =======  ===========

Top-1 agreement alone does not separate them (the good MobileNet ONNX and the broken
mnist_conv both agree on 96.8%: a 92%-accurate net has many near-ties); cosine and SQNR do, with
a margin on both sides. Defaults: ``MIN_SQNR_DB = 15`` (between 12.1 dB broken and 17.8 dB good)
and ``MIN_COSINE = 0.985`` (between 0.981 and 0.992), ``MIN_TOP1 = 0.95`` (a floor for gross
breakage, below every good conversion measured), and with labels ``MAX_ACCURACY_DROP_PP = 1``.
The 8-bit MLPs (98.8% agreement, 20 dB, accuracy unchanged) and the randomly calibrated MNIST
models (≥ 29.9 dB) pass: they are not broken. Each default is an option (``--int8-min-top1``,
``--int8-min-cosine``, ``--int8-min-sqnr``).
"""
from __future__ import annotations

import os
import time

import numpy as np

MIN_TOP1 = 0.95
MIN_COSINE = 0.985
MIN_SQNR_DB = 15.0
MAX_ACCURACY_DROP_PP = 1.0


def thresholds(min_top1=None, min_cosine=None, min_sqnr_db=None, max_accuracy_drop_pp=None) -> dict:
    return {"min_top1": MIN_TOP1 if min_top1 is None else float(min_top1),
            "min_cosine": MIN_COSINE if min_cosine is None else float(min_cosine),
            "min_sqnr_db": MIN_SQNR_DB if min_sqnr_db is None else float(min_sqnr_db),
            "max_accuracy_drop_pp": MAX_ACCURACY_DROP_PP if max_accuracy_drop_pp is None
            else float(max_accuracy_drop_pp)}


def classifier_like(ref: np.ndarray) -> bool:
    """Class scores ``[N, C]`` with C > 1 (a feature map's argmax over channels means nothing)."""
    return ref.ndim == 2 and ref.shape[-1] > 1


def top1_agreement(ref: np.ndarray, cand: np.ndarray) -> float:
    return float(np.mean(ref.reshape(-1, ref.shape[-1]).argmax(-1) == cand.reshape(-1, cand.shape[-1]).argmax(-1)))


def cosine(ref: np.ndarray, cand: np.ndarray) -> float:
    a, b = ref.astype(np.float64).ravel(), cand.astype(np.float64).ravel()
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    if na == 0 or nb == 0:
        return 1.0 if na == nb else 0.0
    return float(a @ b / (na * nb))


def sqnr_db(ref: np.ndarray, cand: np.ndarray) -> float:
    a, b = ref.astype(np.float64), cand.astype(np.float64)
    noise = float(np.sum((a - b) ** 2))
    signal = float(np.sum(a ** 2))
    if noise == 0:
        return float("inf")
    if signal == 0:
        return float("-inf")
    return 10.0 * np.log10(signal / noise)


def compare_int8(ref: dict, cand: dict, th: dict, labels=None) -> list[dict]:
    """One dict per output: the metrics, ``ok`` and ``reason`` (empty when ok)."""
    rows = []
    for name, r in ref.items():
        c = cand.get(name)
        row = {"name": name}
        if c is None or np.shape(c) != np.shape(r):
            row.update(ok=False, reason=f"shape {None if c is None else list(np.shape(c))} vs {list(np.shape(r))}")
            rows.append(row)
            continue
        c = np.asarray(c, dtype=np.float32)
        if not np.all(np.isfinite(c)):
            row.update(ok=False, reason="non-finite values")
            rows.append(row)
            continue
        row.update(cosine=cosine(r, c), sqnr_db=sqnr_db(r, c), max_abs=float(np.max(np.abs(r - c))) if r.size else 0.0)
        fails = []
        if classifier_like(r):
            row["top1_agreement"] = top1_agreement(r, c)
            if row["top1_agreement"] < th["min_top1"]:
                fails.append(f"top-1 agreement {100 * row['top1_agreement']:.1f}% < {100 * th['min_top1']:.1f}%")
            if labels is not None and r.ndim == 2 and r.shape[0] == len(labels):
                row["reference_accuracy"] = float(np.mean(r.argmax(-1) == labels))
                row["accuracy"] = float(np.mean(c.argmax(-1) == labels))
                drop = 100 * (row["reference_accuracy"] - row["accuracy"])
                if drop > th["max_accuracy_drop_pp"] + 1e-9:
                    fails.append(f"accuracy {100 * row['accuracy']:.2f}% vs original {100 * row['reference_accuracy']:.2f}%")
        if row["cosine"] < th["min_cosine"]:
            fails.append(f"cosine {row['cosine']:.4f} < {th['min_cosine']}")
        if row["sqnr_db"] < th["min_sqnr_db"]:
            fails.append(f"SQNR {row['sqnr_db']:.1f} dB < {th['min_sqnr_db']} dB")
        row.update(ok=not fails, reason="; ".join(fails))
        rows.append(row)
    return rows


# --------------------------------------------------------------------------- runners

def run_tflite_q(path, feeds: dict, outputs: list[str]) -> dict:
    """Run a .tflite whose inputs/outputs may be int8: float feeds are quantized with the input's
    scale and zero point, int8 outputs dequantized. Float I/O models run as usual."""
    from .runners import run_tflite, tflite_interpreter, tflite_name_map

    interp = tflite_interpreter(path)
    names = tflite_name_map(interp, list(feeds), list(outputs))
    ind = {d["name"]: d for d in interp.get_input_details()}
    outd = {d["name"]: d for d in interp.get_output_details()}
    q_feeds = {}
    for tf_name, v in feeds.items():
        d = ind[names["inputs"][tf_name]]
        if np.issubdtype(d["dtype"], np.integer):
            scale, zp = d["quantization"]
            info = np.iinfo(d["dtype"])
            v = np.clip(np.round(np.asarray(v, np.float32) / scale) + zp, info.min, info.max).astype(d["dtype"])
        q_feeds[tf_name] = v
    raw = run_tflite(path, q_feeds, outputs)
    out = {}
    for o, v in raw.items():
        d = outd[names["outputs"][o]]
        if np.issubdtype(d["dtype"], np.integer):
            scale, zp = d["quantization"]
            v = (v.astype(np.float32) - zp) * np.float32(scale)
        out[o] = v
    return out


def run_in_batches(fn, feeds: dict, batch: int | None, outputs: list[str]) -> dict:
    """``fn(feeds)`` over chunks of ``batch`` samples (all at once when None), concatenated."""
    n = int(next(iter(feeds.values())).shape[0])
    step = batch or n
    parts = [fn({k: v[i:i + step] for k, v in feeds.items()}) for i in range(0, n, step)]
    return {o: np.concatenate([p[o] for p in parts]) for o in outputs}


def held_out_feeds(calset, fixed_batch: int | None) -> tuple[dict, np.ndarray | None]:
    """The held-out samples, trimmed to a multiple of a fixed batch size (labels trimmed alike)."""
    feeds, labels = calset.held_out, calset.labels
    n = int(next(iter(feeds.values())).shape[0])
    if fixed_batch and n % fixed_batch:
        from ..quantize.calibration import batches

        if n < fixed_batch:
            return next(batches(feeds, fixed_batch)), None
        m = n - n % fixed_batch
        feeds = {k: v[:m] for k, v in feeds.items()}
        labels = None if labels is None else labels[:m]
    return feeds, labels


def verify_int8(prep, staged: dict, report, calset, th: dict, providers=("cpu",), allow_unsafe=False) -> dict:
    """Run the original (TF) and each staged int8 file on the held-out inputs; one entry per runtime.
    ``prep``: the run's :class:`~bnconvert.prepare.Prepared` (the original graph is its file)."""
    from .runners import onnx_runtime_label, run_onnx, run_tf

    fixed = next((s[0] for s in prep.declared_shapes.values() if s and s[0] is not None), None)
    feeds, labels = held_out_feeds(calset, fixed)
    outs = report.outputs
    t = time.perf_counter()
    ref = run_in_batches(lambda f: run_tf(prep.original_path, f, outs, flags={**prep.idle_feeds, **report.training_flags},
                                          allow_unsafe=allow_unsafe, what=prep.source_path), feeds, fixed or 500, outs)
    report.timings["verify_int8_tf_original"] = time.perf_counter() - t
    runs = []
    if "int8_onnx" in staged:
        for prov in providers:
            runs.append((onnx_runtime_label(prov).replace("onnx:", "onnx-int8:"), staged["int8_onnx"],
                         lambda f, prov=prov: run_onnx(staged["int8_onnx"], f, outs, provider=prov)))
    if "int8_tflite" in staged:
        runs.append(("tflite-int8", staged["int8_tflite"], lambda f: run_tflite_q(staged["int8_tflite"], f, outs)))
    result = {}
    from .check import naming

    for runtime, file, fn in runs:
        t = time.perf_counter()
        with naming(file):
            cand = run_in_batches(fn, feeds, fixed or 500, outs)
        report.timings[f"verify_{runtime}"] = time.perf_counter() - t
        rows = compare_int8(ref, cand, th, labels=labels)
        result[runtime] = {"file": os.path.basename(file), "samples": int(next(iter(feeds.values())).shape[0]),
                           "outputs": rows, "ok": all(r["ok"] for r in rows), **th}
    return result


def failure_line(verification: dict) -> str | None:
    """One line naming the first int8 runtime and output that failed, or None."""
    for runtime, v in verification.items():
        for o in v.get("outputs", []):
            if not o.get("ok"):
                return f"int8 verification failed: {v.get('file', runtime)} ({runtime}) output {o['name']}: {o['reason']}"
    return None


def table(verification: dict) -> str:
    """Rows for the int8 files: agreement, cosine, SQNR (and accuracy when labels are known)."""
    from ..report import _table

    rows = [("runtime", "output", "top-1 agr", "cosine", "SQNR dB", "accuracy", "result")]
    for runtime, v in verification.items():
        for o in v.get("outputs", []):
            agr = o.get("top1_agreement")
            acc = (f"{100 * o['accuracy']:.2f}% (float {100 * o['reference_accuracy']:.2f}%)"
                   if "accuracy" in o else "-")
            rows.append((runtime, o["name"], "-" if agr is None else f"{100 * agr:.1f}%",
                         f"{o['cosine']:.5f}" if "cosine" in o else "-",
                         f"{o['sqnr_db']:.1f}" if "sqnr_db" in o else "-", acc,
                         "PASS" if o.get("ok") else f"FAIL ({o.get('reason')})"))
    return _table(rows)
