"""CUDA check of bnconvert's ONNX models, in two halves.

    python tools/gpu_check.py prepare DIR      # here (TensorFlow): every fixture → DIR/<name>/
                                               #   model.onnx, inputs.npz, expected.npz (original TF graph)
    python tools/gpu_check.py run DIR OUT.json # on the GPU machine (no TensorFlow): verify-onnx with
                                               #   CPUExecutionProvider and CUDAExecutionProvider (TF32 off)

``run`` imports only bnconvert.verify (numpy, onnx, onnxruntime) and writes per-fixture
max abs / max rel errors for both providers plus CUDA-vs-CPU differences.
"""
from __future__ import annotations

import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def prepare(outdir: str) -> None:
    sys.path.insert(0, os.path.join(ROOT, "tests"))
    from conftest import fixture_specs  # noqa: E402

    import bnconvert
    from bnconvert.verify.inputs import save_npz
    from bnconvert.verify.runners import run_tf

    for spec in fixture_specs():
        d = os.path.join(outdir, spec["name"])
        os.makedirs(d, exist_ok=True)
        rep = bnconvert.convert(spec["path"], d, to=("onnx",), force=True, verify=False, batch=4)
        os.replace(rep.files["onnx"], os.path.join(d, "model.onnx"))
        os.remove(rep.files["report"])
        model = bnconvert.load(spec["path"])
        from bnconvert.verify.check import make_feeds as _feeds

        feeds = _feeds(model.graph_def, rep.inputs, rep.input_shapes, None, 0)
        ref = run_tf(model.graph_def, feeds, rep.outputs, flags=rep.training_flags)
        save_npz(os.path.join(d, "inputs.npz"), feeds)
        save_npz(os.path.join(d, "expected.npz"), ref)
        print("prepared", spec["name"])


def run(indir: str, out_json: str) -> int:
    import numpy as np

    from bnconvert.verify.inputs import load_npz
    from bnconvert.verify.onnx_only import verify_onnx
    from bnconvert.verify.runners import run_onnx

    results, worst_ok = {}, True
    for name in sorted(os.listdir(indir)):
        d = os.path.join(indir, name)
        model = os.path.join(d, "model.onnx")
        if not os.path.isfile(model):
            continue
        comps = verify_onnx(model, os.path.join(d, "inputs.npz"), os.path.join(d, "expected.npz"),
                            providers=("cpu", "cuda"), **({"atol": 1e-3, "rtol": 5e-3} if "float16" in name else {}))
        feeds = load_npz(os.path.join(d, "inputs.npz"))
        outs = list(load_npz(os.path.join(d, "expected.npz")))
        cpu = run_onnx(model, feeds, outs, provider="cpu")
        cuda = run_onnx(model, feeds, outs, provider="cuda")
        diff = max(float(np.abs(cpu[o].astype(np.float64) - cuda[o].astype(np.float64)).max()) for o in outs)
        mag = max(float(np.abs(cpu[o].astype(np.float64)).max()) for o in outs)
        results[name] = {c.runtime: {"ok": c.ok, "max_abs": max(o.max_abs for o in c.outputs),
                                     "max_rel": max(o.max_rel for o in c.outputs), "note": c.note} for c in comps}
        results[name]["cuda_vs_cpu_max_abs"] = diff
        results[name]["cuda_vs_cpu_max_rel"] = diff / mag if mag else 0.0
        worst_ok &= all(c.ok for c in comps)
        print(name, {k: (v["max_rel"] if isinstance(v, dict) else v) for k, v in results[name].items()})
    with open(out_json, "w") as f:
        json.dump(results, f, indent=2)
    return 0 if worst_ok else 1


if __name__ == "__main__":
    if len(sys.argv) >= 3 and sys.argv[1] == "prepare":
        prepare(sys.argv[2])
    elif len(sys.argv) >= 4 and sys.argv[1] == "run":
        sys.exit(run(sys.argv[2], sys.argv[3]))
    else:
        print(__doc__)
        sys.exit(2)
