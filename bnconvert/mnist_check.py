"""``bnconvert mnist-check``: does a converted MNIST classifier keep its accuracy?

Converts the model (``convert`` with verification on; in memory unless ``outdir`` is given,
which then follows ``convert``'s rules: existing files need ``force``), then classifies the real test digits
of :func:`bnconvert.mnist.load_mnist` with the original graph (TensorFlow, training flags
false), the folded graph, the ONNX model (each provider asked for) and the TFLite model.  For
each runtime: accuracy and how many digits changed class against the original.  A runtime
fails when its accuracy is more than ``max_drop`` percentage points below the original's or
more than ``max_changed`` percent of the digits change class.
"""
from __future__ import annotations

import os

import numpy as np

from . import progress
from .api import public
from .errors import InputError
from .mnist import accuracy, class_changes, load_mnist


def _shape_digits(x: np.ndarray, shape: list, what: str = "") -> np.ndarray:
    """[N, 784] digits to the model's input shape (e.g. [None, 28, 28, 1])."""
    tail = [int(d) if d is not None else -1 for d in shape[1:]] if shape and len(shape) > 1 else [784]
    try:
        return x.reshape([x.shape[0]] + tail).astype(np.float32)
    except ValueError:
        raise InputError(f"{what}: the model's input shape {list(shape)} does not hold 28x28 digits "
                         "(pass --inputs to choose the image input)") from None


def _graph_def(data: bytes):
    from .tfproto import new_graph_def

    gd = new_graph_def()
    gd.ParseFromString(data)
    return gd


@public
def check(model_path, mnist_dir: str | None = None, outdir: str | None = None,
          providers: tuple[str, ...] = ("cpu",), max_drop: float = 0.1, max_changed: float = 0.1,
          force: bool = False, inputs=None, outputs=None, set_flags=None, int8: bool = True) -> dict:
    """Accuracy of the original and of each converted form on the test digits.

    ``inputs``/``outputs``/``set_flags`` as for :func:`bnconvert.convert` (the model needs one
    input, the images, and one output, the class scores). With ``outdir`` the converted files
    are written there (``force`` to overwrite); without it the conversion stays in memory.
    ``int8``: also quantize (``--quantize int8 --calibration mnist``) and add int8 columns.
    """
    from . import api
    from .verify.inputs import placeholder_shapes
    from .verify.runners import onnx_runtime_label, run_onnx, run_tf, run_tflite

    digits = load_mnist(mnist_dir)
    from .quantize import mnist_rows

    opts = dict(providers=providers, inputs=inputs, outputs=outputs, set_flags=set_flags,
                **(mnist_rows.CONVERT_OPTIONS if int8 else {}))
    model = api.load(model_path, outputs=outputs)
    if outdir is None:
        files, report = api.convert_bytes(model, **opts)
    else:
        report = api.convert(model, outdir, force=force, **opts)
        files = {}
        for kind, path in report.files.items():
            if kind != "report":
                with open(path, "rb") as f:
                    files[kind] = f.read()
    if len(report.inputs) != 1 or len(report.outputs) != 1:
        raise InputError(f"{model_path}: mnist-check needs one input (the images) and one output (the class scores); "
                         f"found inputs {', '.join(report.inputs)} and outputs {', '.join(report.outputs)} "
                         "(pass --inputs/--outputs)")
    (inp,), (logits,) = report.inputs, report.outputs
    shape = placeholder_shapes(model.graph_def, [inp])[inp]
    feeds = {inp: _shape_digits(digits.x_test, shape, model_path)}
    with progress.stage("classify digits"):
        scores = {"tf:original": run_tf(model.graph_def, feeds, [logits], flags=report.training_flags)[logits]}
        folded = api.load(_graph_def(files["pb"]))
        scores["tf:folded"] = run_tf(folded.graph_def, feeds, [logits])[logits]
        for prov in providers:
            scores[onnx_runtime_label(prov)] = run_onnx(files["onnx"], feeds, [logits], provider=prov)[logits]
        scores["tflite"] = run_tflite(files["tflite"], feeds, [logits])[logits]
    if scores["tf:original"].ndim != 2 or scores["tf:original"].shape[-1] < 2:
        raise InputError(f"{model_path}: output {logits} has shape {list(scores['tf:original'].shape)}, "
                         "not class scores [N, classes] (pass --outputs)")
    int8_scores = mnist_rows.int8_scores(files, feeds, logits, providers) if int8 else {}
    ref_acc = accuracy(scores["tf:original"], digits.y_test)
    n = len(digits.y_test)
    rows, failure = [], None
    for runtime, s in scores.items():
        acc = accuracy(s, digits.y_test)
        changed = class_changes(scores["tf:original"], s)
        ok = (ref_acc - acc) * 100 <= max_drop + 1e-9 and changed * 100.0 / n <= max_changed + 1e-9
        rows.append({"runtime": runtime, "accuracy": acc, "changed": changed, "ok": ok})
        if not ok and failure is None:
            failure = (f"{runtime}: accuracy {100 * acc:.2f}% vs original {100 * ref_acc:.2f}%, "
                       f"{changed} of {n} digits changed class")
    result = {"model": os.path.basename(model_path), "digits": n, "source": digits.source,
              "original_accuracy": ref_acc, "runtimes": rows, "ok": failure is None, "failure": failure,
              "max_drop_pp": max_drop, "max_changed_pct": max_changed}
    return mnist_rows.add_int8(result, int8_scores, scores["tf:original"], digits.y_test) if int8_scores else result


def format_table(result: dict) -> str:
    if "int8" in result:
        from .quantize.mnist_rows import format_int8

        return format_int8(result)
    lines = [f"{result['model']}: {result['digits']} test digits ({result['source']})",
             f"{'runtime':28s} {'accuracy':>9s} {'changed':>8s}  result"]
    for r in result["runtimes"]:
        lines.append(f"{r['runtime']:28s} {100 * r['accuracy']:8.2f}% {r['changed']:8d}  {'PASS' if r['ok'] else 'FAIL'}")
    return "\n".join(lines)
