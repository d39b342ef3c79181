"""``bnconvert verify-onnx``: check an ONNX model against saved inputs and expected outputs.

Imports neither TensorFlow nor tf2onnx — it runs on a machine with numpy + onnxruntime only
(e.g. a GPU box with onnxruntime-gpu). The .npz files are what ``convert`` saves next to the
model: keys are TF tensor names (``"x:0"``), bare op names (``"x"``) or ``input_0``/``output_0``
in the order of the model's inputs/outputs.
"""
from __future__ import annotations

from bnconvert.errors import InputError
from bnconvert.verify.compare import DEFAULT_ATOL, DEFAULT_RTOL, Comparison, compare
from bnconvert.verify.inputs import load_npz, match_keys
from bnconvert.verify.runners import CUDA_OPTIONS, onnx_runtime_label, onnx_session, run_onnx


def verify_onnx(model_path, inputs_npz, expected_npz, providers=("cpu",), atol: float = DEFAULT_ATOL,
                rtol: float = DEFAULT_RTOL) -> list[Comparison]:
    """Run the model on each provider ("cpu", "cuda") and compare with the expected outputs.

    Returns one :class:`Comparison` per provider (truthy when it passes). Expected outputs are
    compared by name; outputs of the model absent from ``expected_npz`` are not checked, but
    at least one must be present.
    """
    feeds_in = load_npz(inputs_npz)
    expected_in = load_npz(expected_npz)
    results = []
    for provider in providers:
        sess = onnx_session(str(model_path), provider)
        in_names = [i.name for i in sess.get_inputs()]
        out_names = [o.name for o in sess.get_outputs()]
        found = match_keys(in_names, feeds_in, "input_")
        missing = [n for n in in_names if n not in found]
        if missing:
            raise InputError(f"{inputs_npz} has no array for model input '{missing[0]}' "
                             f"(keys: {', '.join(sorted(feeds_in)) or 'none'})")
        feeds = {n: feeds_in[found[n]] for n in in_names}
        got = match_keys(out_names, expected_in, "output_")
        unused = sorted(set(expected_in) - set(got.values()))
        if unused:
            raise InputError(f"{expected_npz} holds '{unused[0]}', which is not an output of the model "
                             f"(outputs: {', '.join(out_names)})")
        if not got:
            raise InputError(f"{expected_npz} holds none of the model's outputs ({', '.join(out_names)})")
        reference = {n: expected_in[got[n]] for n in out_names if n in got}
        candidate = run_onnx(None, feeds, list(reference), session=sess)
        note = "TF32 disabled" if provider == "cuda" and CUDA_OPTIONS.get("use_tf32") == "0" else ""
        first = next(iter(reference.values()))
        samples = int(first.shape[0]) if getattr(first, "ndim", 0) else 1
        results.append(compare(reference, candidate, onnx_runtime_label(provider), str(model_path),
                               atol=atol, rtol=rtol, note=note, samples=samples))
    return results
