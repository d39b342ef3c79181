"""int8 columns for ``bnconvert mnist-check``: float and int8 accuracy side by side.

:func:`bnconvert.mnist_check.check` converts with ``--quantize int8 --calibration mnist``
(calibration on the TRAIN digits) and classifies the TEST digits with each int8 file too. For
the ONNX and TFLite rows this adds ``int8_accuracy``, ``int8_changed`` (digits whose class
differs from the original float graph's) and ``int8_ok``: int8 accuracy at most ``max_drop``
(default 1) percentage points below the original's and at most ``max_changed_pct`` (default 2,
the complement of :data:`bnconvert.verify.quant.MIN_TOP1`) percent of the digits changing class.
The TF rows have no int8 file.
"""
from __future__ import annotations

from ..verify.quant import MAX_ACCURACY_DROP_PP, MIN_TOP1

CONVERT_OPTIONS = {"quantize": "int8", "calibration": "mnist"}


def int8_scores(files: dict, feeds: dict, logits: str, providers) -> dict:
    """Class scores of each int8 file on ``feeds``, keyed like the float rows."""
    from ..verify.quant import run_tflite_q
    from ..verify.runners import onnx_runtime_label, run_onnx

    out = {}
    if "int8_onnx" in files:
        for prov in providers:
            out[onnx_runtime_label(prov)] = run_onnx(files["int8_onnx"], feeds, [logits], provider=prov)[logits]
    if "int8_tflite" in files:
        out["tflite"] = run_tflite_q(files["int8_tflite"], feeds, [logits])[logits]
    return out


def add_int8(result: dict, scores: dict, original, labels, max_drop: float = MAX_ACCURACY_DROP_PP,
             max_changed_pct: float = 100 * (1 - MIN_TOP1)) -> dict:
    """Add the int8 columns to ``result`` (from ``check``) in place; a failing int8 row fails the check."""
    from ..mnist import accuracy, class_changes

    n = len(labels)
    ref_acc = accuracy(original, labels)
    result["int8"] = {"max_drop_pp": max_drop, "max_changed_pct": max_changed_pct}
    for row in result["runtimes"]:
        s = scores.get(row["runtime"])
        if s is None:
            continue
        acc, changed = accuracy(s, labels), class_changes(original, s)
        ok = (ref_acc - acc) * 100 <= max_drop + 1e-9 and changed * 100.0 / n <= max_changed_pct + 1e-9
        row.update(int8_accuracy=acc, int8_changed=changed, int8_ok=ok)
        if not ok:
            row["ok"] = False
            if result.get("ok", True):
                result["ok"] = False
                result["failure"] = (f"{row['runtime']} int8: accuracy {100 * acc:.2f}% vs original "
                                     f"{100 * ref_acc:.2f}%, {changed} of {n} digits changed class")
    return result


def format_int8(result: dict) -> str:
    """The mnist-check table with float and int8 columns."""
    lines = [f"{result['model']}: {result['digits']} test digits ({result['source']})",
             f"{'runtime':28s} {'float':>8s} {'changed':>8s} {'int8':>8s} {'changed':>8s}  result"]
    for r in result["runtimes"]:
        int8 = (f"{100 * r['int8_accuracy']:7.2f}% {r['int8_changed']:8d}" if "int8_accuracy" in r
                else f"{'-':>8s} {'-':>8s}")
        lines.append(f"{r['runtime']:28s} {100 * r['accuracy']:7.2f}% {r['changed']:8d} {int8}  "
                     f"{'PASS' if r['ok'] else 'FAIL'}")
    return "\n".join(lines)
