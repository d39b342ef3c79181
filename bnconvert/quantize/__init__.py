"""int8 post-training quantization of the folded graph (``bnconvert fold --quantize int8``).

Runs after the float exports, in the same staging folder, so the int8 files are installed
atomically with the rest (and nothing is left behind on failure):

- ``<stem>.int8.tflite`` (:mod:`.tflite_int8`): TensorFlow's full-integer converter on the
  folded GraphDef, int8 kernels only, per-channel conv weights, float or int8 I/O (``int8_io``);
- ``<stem>.int8.onnx`` (:mod:`.onnx_int8`): onnxruntime's static QDQ quantization of the float
  ``.onnx``, per-channel int8 weights.

Both are made from the *folded* graph: with BN inside the weights, each conv's per-channel
scale covers the BN scale too, and there is no separate BN op whose output needs its own int8
range (``tools/bench_int8.py`` measures the difference). Calibration data:
:mod:`.calibration`. Verification against the float original: :mod:`bnconvert.verify.quant`.
Needs ``onnxruntime`` (its ``quantization`` package) for ONNX and TensorFlow for TFLite.
"""
from __future__ import annotations

import os
import time

from ..errors import InputError

MODES = ("int8",)
KINDS = {"int8_tflite": ".int8.tflite", "int8_onnx": ".int8.onnx"}


def check_mode(mode) -> str | None:
    if mode in (None, "", "none"):
        return None
    if mode not in MODES:
        raise InputError(f"--quantize: unknown mode '{mode}' (choose from {', '.join(MODES)})")
    return mode


def int8_paths(paths: dict[str, str], to) -> dict[str, str]:
    """``<stem>.int8.tflite`` / ``<stem>.int8.onnx`` beside the float files, for the formats in ``to``."""
    base = paths["report"][: -len(".report.json")]
    wanted = [k for k, fmt in (("int8_tflite", "tflite"), ("int8_onnx", "onnx")) if fmt in to]
    if not wanted:
        raise InputError("--quantize int8 writes .int8.onnx/.int8.tflite: --to must include onnx or tflite")
    return {k: base + KINDS[k] for k in wanted}


def quantize_stage(prep, qopts, staged: dict, tmp: str, paths: dict, report, seed: int = 0):
    """Write the int8 files into ``tmp`` (keys ``int8_tflite``/``int8_onnx`` added to ``staged``).

    ``prep``: the run's :class:`~bnconvert.prepare.Prepared` (the folded graph is its file).
    Returns the :class:`~.calibration.CalibrationSet` (its held-out part verifies the files).
    """
    from .. import isolate
    from .calibration import load_calibration

    dtypes = dict(prep.input_dtypes)
    bad = next((v for v in dtypes.values() if isinstance(v, str)), None)
    if bad is not None:
        raise InputError(bad)
    t0 = time.perf_counter()
    calset = load_calibration(qopts.calibration or "", report.inputs, report.input_shapes, dtypes,
                              samples=qopts.calibration_samples, seed=seed)
    q = report.quantization
    q.update({"mode": qopts.quantize, "int8_io": bool(qopts.int8_io), "calibration": calset.describe()})
    q.setdefault("exports", {})
    report.notes.extend(calset.notes)
    report.timings["quantize_calibration_data"] = time.perf_counter() - t0
    batch = int(report.input_shapes[report.inputs[0]][0] or 1)
    if "int8_tflite" in paths:
        t = time.perf_counter()
        staged["int8_tflite"] = os.path.join(tmp, os.path.basename(paths["int8_tflite"]))
        q["exports"]["int8_tflite"] = isolate.run_stage(
            "the int8 TFLite export (TFLite converter)", "bnconvert.quantize.tflite_int8:export_tflite_int8",
            dict(graph_def=isolate.GraphFile(prep.folded_path), inputs=report.inputs, outputs=report.outputs,
                 path=staged["int8_tflite"], input_shapes=report.input_shapes, calib=calset.calib,
                 int8_io=bool(qopts.int8_io)))
        report.timings["quantize_tflite"] = time.perf_counter() - t
    if "int8_onnx" in paths:
        from .onnx_int8 import quantize_onnx

        t = time.perf_counter()
        staged["int8_onnx"] = os.path.join(tmp, os.path.basename(paths["int8_onnx"]))
        q["exports"]["int8_onnx"] = quantize_onnx(staged["onnx"], staged["int8_onnx"],
                                                  report.exports["onnx"]["onnx_names"], report.inputs, calset.calib,
                                                  batch=batch)
        report.timings["quantize_onnx"] = time.perf_counter() - t
    q["sizes"] = {k: os.path.getsize(staged[k]) for k in ("onnx", "tflite", "int8_onnx", "int8_tflite") if k in staged}
    return calset


def prepare(qopts, paths: dict, to) -> dict[str, str]:
    """Check the options before anything runs; the int8 output paths to add to ``paths``."""
    qopts.quantize = check_mode(qopts.quantize)
    if qopts.quantize is None:
        raise InputError("--calibration is for int8: add --quantize int8")
    if not qopts.calibration:
        raise InputError("--quantize int8 needs --calibration FILE.npz, mnist or random (random: last resort)")
    if qopts.calibration not in ("mnist", "random") and not os.path.isfile(qopts.calibration):
        raise InputError(f"--calibration {qopts.calibration}: no such file (expected FILE.npz, mnist or random)")
    if qopts.calibration_samples is None or int(qopts.calibration_samples) < 1:
        raise InputError(f"--calibration-samples must be at least 1, got {qopts.calibration_samples}")
    return int8_paths(paths, to)


def quantize_and_verify(prep, opts, staged: dict, tmp: str, paths: dict, report) -> None:
    """The pipeline's int8 step: write the int8 files, then (unless ``--no-verify``) verify them."""
    from ..verify.quant import thresholds, verify_int8

    q, ver = opts.quantize, opts.verify
    calset = quantize_stage(prep, q, staged, tmp, paths, report, seed=ver.seed)
    th = thresholds(q.int8_min_top1, q.int8_min_cosine, q.int8_min_sqnr)
    report.quantization["thresholds"] = th
    if ver.data:  # the user's own inputs judge the int8 files (labels unknown)
        from .calibration import held_out_from

        held_out_from(calset, ver.data, report.inputs, report.input_shapes)
        report.quantization["calibration"] = calset.describe()
    if ver.verify:
        report.quantization["verification"] = verify_int8(prep, staged, report, calset, th,
                                                          providers=ver.providers, allow_unsafe=opts.allow_unsafe)
