"""Static int8 QDQ ONNX from the folded graph's float ONNX: onnxruntime's quantization tools.

``quant_pre_process`` first (onnx shape inference and onnxruntime's basic graph optimizations,
which fold constants and fuse what tf2onnx left apart; symbolic shape inference is skipped: it
needs ``sympy`` and the folded models have static shapes apart from the batch), then
``quantize_static`` with:

- ``QuantFormat.QDQ``: QuantizeLinear/DequantizeLinear pairs around float ops, the format
  onnxruntime, TensorRT and most accelerators read;
- ``per_channel=True``, ``weight_type=QInt8`` (symmetric), activations QInt8;
- MinMax calibration over a :class:`CalibrationDataReader` of the calibration samples;
- ``reduce_range=True`` (7-bit weights). **Decision, measured**: onnxruntime's x86 int8 kernels
  on CPUs without VNNI (AVX2, here an AMD EPYC) multiply u8×s8 pairs with 16-bit saturation
  (``pmaddubsw``); with full 8-bit weights the fixture ``mnist_conv`` falls from 95.3% to 93.9%
  on 1,000 test digits (SQNR 12.0 dB against the original; ``tools/bench_int8.py
  --thresholds``), while the same 8-bit QDQ model run with onnxruntime's graph optimizations
  off (reference arithmetic, no int8 kernels) kept 95.3% (40 dB; a one-off check with
  ``GraphOptimizationLevel.ORT_DISABLE_ALL``). 7-bit weights cannot saturate: 95.4%, 36.9 dB.
  A VNNI CPU would lose ~3 dB SQNR to it (40 → 37 dB here), which changes no class.

The input and output keep the float model's names and float32 type (Q/DQ inside). Internal
tensor names are shortened (:func:`compact_names`; node names, which carry the TF layer names,
stay): the quantizer's names (``conv1/Conv2D/bn_folded/weights:0_quantized_scale``, each used
two or three times) made up 45% of ``mnist_conv.int8.onnx`` (9 k parameters); shortened, the
file went from 17.3 to 13.5 KB (the float .tflite: 38.7 KB).
"""
from __future__ import annotations

import os

from ..errors import UnsupportedError
from .calibration import batches


def _one_line(e: BaseException, limit: int = 300) -> str:
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    text = lines[0] if lines else type(e).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def quantize_onnx(float_path: str, path: str, onnx_names: dict[str, str], inputs: list[str], calib: dict,
                  batch: int = 1, reduce_range: bool = True, preprocess: bool = True) -> dict:
    """Quantize ``float_path`` into ``path``; ``onnx_names`` maps TF input names to the model's.

    ``reduce_range=False`` and ``preprocess=False`` exist for ``tools/bench_int8.py``'s
    comparisons; bnconvert always uses the defaults."""
    import onnx
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                          quantize_static)
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from ..export.onnx import count_ops

    dtypes = _input_dtypes(float_path)
    feeds = [{onnx_names.get(n, n): f[n].astype(dtypes.get(onnx_names.get(n, n), f[n].dtype)) for n in inputs}
             for f in batches(calib, batch)]

    class Reader(CalibrationDataReader):
        def __init__(self):
            self._it = iter(feeds)

        def get_next(self):
            return next(self._it, None)

    pre = path + ".pre.onnx"
    notes = []
    try:
        try:
            if not preprocess:
                raise RuntimeError("pre-processing off")
            quant_pre_process(float_path, pre, skip_symbolic_shape=True)
            src = pre
        except Exception as e:  # noqa: BLE001 - pre-processing is an optimization only
            notes.append(f"quant_pre_process skipped: {_one_line(e)}")
            src = float_path
        try:
            quantize_static(src, path, Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                            weight_type=QuantType.QInt8, activation_type=QuantType.QInt8,
                            calibrate_method=CalibrationMethod.MinMax, reduce_range=reduce_range)
        except Exception as e:  # noqa: BLE001 - onnxruntime.quantization raises assorted types
            raise UnsupportedError(f"onnxruntime cannot quantize the ONNX model: {_one_line(e)}") from None
    finally:
        for p in (pre, pre + ".data"):
            if os.path.exists(p):
                os.remove(p)
    model = onnx.load(path, load_external_data=False)
    compact_names(model)
    from ..export.onnx import write_atomic

    write_atomic(path, model.SerializeToString())
    return {"ops": dict(sorted(count_ops(model.graph).items())), "format": "QDQ", "per_channel": True,
            "weight_type": "int8", "activation_type": "int8", "reduce_range": reduce_range,
            "calibration_batch": batch, **({"notes": notes} if notes else {})}


def _input_dtypes(path: str) -> dict:
    """Graph input name → numpy dtype (calibration samples are float32; a float16 model wants float16)."""
    import onnx
    from onnx.helper import tensor_dtype_to_np_dtype

    m = onnx.load(path, load_external_data=False)
    return {i.name: tensor_dtype_to_np_dtype(i.type.tensor_type.elem_type) for i in m.graph.input
            if i.type.tensor_type.elem_type}


def compact_names(model) -> None:
    """Rename every tensor except the graph's inputs and outputs to ``t0``, ``t1``, … in place
    (initializers, node inputs/outputs, value_info); node names are kept. A graph with subgraphs
    (If/Loop bodies may read outer names) is left as it is."""
    g = model.graph
    if any(a.HasField("g") or a.graphs for n in g.node for a in n.attribute):
        return
    keep = {v.name for v in g.input} | {v.name for v in g.output}
    new: dict[str, str] = {}

    def short(name: str) -> str:
        if not name or name in keep:
            return name
        if name not in new:
            new[name] = f"t{len(new)}"
        return new[name]

    for init in g.initializer:
        init.name = short(init.name)
    for node in g.node:
        ins, outs = [short(i) for i in node.input], [short(o) for o in node.output]
        del node.input[:], node.output[:]
        node.input.extend(ins)
        node.output.extend(outs)
    for vi in g.value_info:
        vi.name = short(vi.name)
