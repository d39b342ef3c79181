#!/usr/bin/env python
"""How many small errors does bnconvert's verification catch?  (issue 10)

    python tools/verify_mutants.py [--only NAME ...] [--samples 8] [--json]

For every fixture: ``bnconvert fold`` (default options) writes the .onnx and .tflite; then
*mutants* of each file are made — output channel 0 of the weights of the first, the middle and
the last folded layer scaled by 1.01, and the largest-magnitude weight of the first folded
layer scaled by 1.5 — and each is checked with ``bnconvert.compare(ORIGINAL, MUTANT)`` (what
``bnconvert verify`` runs).  A mutant is *caught* when the result is not "pass".  The untouched
files must pass.  Prints per fixture: mutants caught / total, the clean files' status, and the
worst layer error of the clean ONNX (the numbers behind the layer tolerance in compare.py).

Folded layers are found by the ``bn_folded`` initializer/tensor names bnconvert gives the weights
it folds; a file without any (a fixture whose BNs all became Mul+Add) is mutated in its
weighted layers instead.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")

ONNX_WEIGHTED = {"Conv": 0, "ConvTranspose": 1, "MatMul": -1, "Gemm": None}  # op -> output-channel axis
TFL_WEIGHTED = {"CONV_2D": 0, "FULLY_CONNECTED": 0, "DEPTHWISE_CONV_2D": -1, "TRANSPOSE_CONV": 0, "CONV_3D": -1}


def _pick(layers: list) -> list[tuple[str, object]]:
    """(position, layer) for the first, middle and last entries (deduplicated)."""
    if not layers:
        return []
    idx = {"first": 0, "middle": len(layers) // 2, "last": len(layers) - 1}
    seen, out = set(), []
    for pos, i in idx.items():
        if i not in seen:
            seen.add(i)
            out.append((pos, layers[i]))
    return out


def _mutations(layers) -> list[tuple[str, object, str, float]]:
    """``(label, layer, kind, factor)``: channel 0 x1.01 at first/middle/last, max weight x1.5."""
    out = [(f"{pos} layer channel 0 x1.01", ly, "channel", 1.01) for pos, ly in _pick(layers)]
    if layers:
        out.append(("first layer largest weight x1.5", layers[0], "element", 1.5))
    return out


def _apply(w: np.ndarray, axis: int, kind: str, factor: float) -> np.ndarray:
    w = w.copy()
    if kind == "channel":
        idx = [slice(None)] * w.ndim
        idx[axis] = 0
        w[tuple(idx)] *= factor
    else:
        flat = int(np.argmax(np.abs(w)))
        w.flat[flat] *= factor
    return w


# ---------------------------------------------------------------------------- ONNX

def onnx_layers(model) -> list[tuple[str, int]]:
    """``[(initializer name, output-channel axis)]`` of the weighted nodes, folded ones if any."""
    inits = {i.name: i for i in model.graph.initializer}
    found = []
    for n in model.graph.node:
        if n.op_type not in ONNX_WEIGHTED or len(n.input) < 2 or n.input[1] not in inits:
            continue
        axis = ONNX_WEIGHTED[n.op_type]
        if n.op_type == "Gemm":
            tb = next((a.i for a in n.attribute if a.name == "transB"), 0)
            axis = 0 if tb else 1
        found.append((n.input[1], axis))
    folded = [f for f in found if "bn_folded" in f[0]]
    return folded or found


def onnx_mutants(path: str, outdir: str) -> list[tuple[str, str]]:
    """Write the mutants of an ONNX file; ``[(label, path)]``."""
    import onnx
    from onnx import numpy_helper

    base = onnx.load(path)
    out = []
    for k, (label, (name, axis), kind, factor) in enumerate(_mutations(onnx_layers(base))):
        m = onnx.ModelProto()
        m.CopyFrom(base)
        init = next(i for i in m.graph.initializer if i.name == name)
        w = numpy_helper.to_array(init)
        init.CopyFrom(numpy_helper.from_array(_apply(w, axis, kind, factor), name))
        p = os.path.join(outdir, f"mutant{k}.onnx")
        onnx.save(m, p)
        out.append((f"onnx {label} ({name})", p))
    return out


# ---------------------------------------------------------------------------- TFLite

def tflite_layers(data: bytearray) -> list[tuple[np.ndarray, int, str]]:
    """``[(writable float32 view of the weights in data, axis, tensor name)]``, folded ones if any."""
    from tensorflow.lite.python import schema_py_generated as schema

    model = schema.Model.GetRootAsModel(data, 0)
    sub = model.Subgraphs(0)
    names = {getattr(schema.BuiltinOperator, k): k for k in dir(schema.BuiltinOperator) if not k.startswith("_")}
    found = []
    for i in range(sub.OperatorsLength()):
        op = sub.Operators(i)
        code = model.OperatorCodes(op.OpcodeIndex())
        opname = names.get(max(code.BuiltinCode(), code.DeprecatedBuiltinCode()), "")
        if opname not in TFL_WEIGHTED or op.InputsLength() < 2:
            continue
        t = sub.Tensors(op.Inputs(1))
        if t.Type() != schema.TensorType.FLOAT32:
            continue
        buf = model.Buffers(t.Buffer())
        if buf.DataLength() == 0:
            continue
        off = buf.DataAsNumpy().__array_interface__["data"][0] - np.frombuffer(data, np.uint8).__array_interface__["data"][0]
        shape = [t.Shape(j) for j in range(t.ShapeLength())]
        view = np.frombuffer(data, np.float32, count=int(np.prod(shape)), offset=off).reshape(shape)
        found.append((view, TFL_WEIGHTED[opname], t.Name().decode()))
    folded = [f for f in found if "bn_folded" in f[2]]
    return folded or found


def tflite_mutants(path: str, outdir: str) -> list[tuple[str, str]]:
    with open(path, "rb") as f:
        base = f.read()
    out = []
    n = len(tflite_layers(bytearray(base)))
    for k in range(len(_mutations(list(range(n))))):
        data = bytearray(base)
        layers = tflite_layers(data)
        label, (view, axis, name), kind, factor = _mutations(layers)[k]
        view[...] = _apply(np.array(view), axis, kind, factor)
        p = os.path.join(outdir, f"mutant{k}.tflite")
        with open(p, "wb") as f:
            f.write(bytes(data))
        out.append((f"tflite {label} ({name})", p))
    return out


# ---------------------------------------------------------------------------- sweep

def check(original: str, converted: str, samples: int = 8) -> dict:
    """``bnconvert.compare`` without raising: ``{"status", "message", "worst_layer"}``."""
    import bnconvert
    from bnconvert.errors import BNConvertError
    from bnconvert.verify.check import first_failure

    try:
        res = bnconvert.compare(original, converted, raise_on_failure=False, samples=samples)
    except BNConvertError as e:
        return {"status": "error", "message": str(e)}
    v = next(iter(res.values()))
    worst = v.get("worst_layer") or {}
    return {"status": v.get("status"), "message": "" if v.get("ok") else first_failure(res),
            "worst_layer": worst.get("name"), "worst_layer_rel": worst.get("max_rel")}


def sweep_fixture(spec: dict, samples: int = 8) -> dict:
    import bnconvert

    with tempfile.TemporaryDirectory() as tmp:
        report = bnconvert.convert(spec["path"], tmp, samples=samples)
        files = report.files
        clean = {k: check(spec["path"], files[k], samples) for k in ("onnx", "tflite")}
        muts = onnx_mutants(files["onnx"], tmp) + tflite_mutants(files["tflite"], tmp)
        results = [(label, check(spec["path"], p, samples)) for label, p in muts]
    caught = [r["status"] != "pass" for _, r in results]
    return {"fixture": spec["name"], "caught": sum(caught), "total": len(caught), "clean": clean,
            "missed": [label for (label, _), c in zip(results, caught) if not c],
            "power": report.verification_power, "layers_worst": {
                k: (v.get("worst_layer") or {}).get("max_rel") for k, v in report.verification.items()}}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", nargs="+", metavar="NAME")
    ap.add_argument("--samples", type=int, default=8)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    sys.path.insert(0, os.path.join(ROOT, "tests"))
    from conftest import fixture_specs

    specs = [s for s in fixture_specs() if not args.only or s["name"] in args.only]
    rows, caught, total, t0 = [], 0, 0, time.time()
    from bnconvert.errors import BNConvertError

    for spec in specs:
        try:
            r = sweep_fixture(spec, args.samples)
        except BNConvertError as e:  # the untouched conversion itself failed: a finding, not a crash
            print(f"{spec['name']:26s} CONVERSION FAILED: {e}", flush=True)
            rows.append({"fixture": spec["name"], "caught": 0, "total": 0, "clean": {"convert": {"status": "error"}}})
            continue
        rows.append(r)
        caught, total = caught + r["caught"], total + r["total"]
        clean = ",".join(f"{k}:{v['status']}" for k, v in r["clean"].items())
        worst = max((v for v in r["layers_worst"].values() if isinstance(v, float)), default=float("nan"))
        print(f"{r['fixture']:26s} caught {r['caught']:2d}/{r['total']:2d}  clean {clean:28s} "
              f"worst layer rel {worst:.2e}" + (f"  missed: {'; '.join(r['missed'])}" if r["missed"] else ""),
              flush=True)
    print(f"TOTAL caught {caught}/{total} = {100 * caught / max(total, 1):.1f}%  ({time.time() - t0:.0f} s)")
    if args.json:
        print(json.dumps(rows, indent=2, default=str))
    bad_clean = [r["fixture"] for r in rows if any(v["status"] != "pass" for v in r["clean"].values())]
    if bad_clean:
        print("clean files not passing:", ", ".join(bad_clean))
    return 0 if not bad_clean and caught >= 0.95 * total else 1


if __name__ == "__main__":
    sys.exit(main())
