"""Verification copies of exported models that also return intermediate tensors.

ONNX: tf2onnx names most node outputs after the TF tensor they compute (``conv1/BiasAdd:0``), so
the tensors a layer probe needs are added as extra graph outputs of an in-memory copy (the file
is never touched).  A tensor tf2onnx renamed, fused away or moved into a subgraph is not found:
that layer is skipped with a note.  tf2onnx computes convolutions in NCHW and keeps the name, so
a rank-4/5 tensor may come back channels-first: :func:`align` handles that.

TFLite: the converter fuses bias, activation and layout into its kernels, so the tensor at a BN
boundary mostly does not exist in the flatbuffer; TFLite layers are not compared (a note says so).
"""
from __future__ import annotations

import numpy as np

TFLITE_NOTE = "tflite: layers not compared (TFLite fuses the BN boundary into its kernels)"


def expose_onnx(model_path, tensors: list[str]):
    """``(model bytes, found)``: a copy of the ONNX model that also outputs the ``tensors`` it
    computes in its main graph; ``found`` lists those (TF names, which are also the ONNX names).

    An added output takes its type from the model's ``value_info`` when listed there, and is
    otherwise added without one: onnxruntime takes it from the node that computes the tensor.
    (No type is guessed: the type of some other tensor — the model's first output, int32 for
    ``--outputs topk:1,topk:0`` — made onnxruntime refuse the copy.)"""
    import onnx
    from onnx import helper

    model = onnx.load(model_path)
    produced = {o for n in model.graph.node for o in n.output}
    have = {o.name for o in model.graph.output}
    types = {v.name: v.type.tensor_type.elem_type for v in model.graph.value_info if v.type.tensor_type.elem_type}
    found = []
    for t in dict.fromkeys(tensors):
        if t in produced and t not in have:
            model.graph.output.append(helper.make_tensor_value_info(t, types[t], None) if t in types
                                      else onnx.ValueInfoProto(name=t))
            found.append(t)
        elif t in have:
            found.append(t)
    return model.SerializeToString(), found


def align(reference: np.ndarray, candidate):
    """``candidate`` laid out like ``reference``: as is when the shapes agree, channels-first
    transposed to channels-last (tf2onnx's NCHW convs) or back (TFLite runs NCHW graphs in
    NHWC), or reshaped when only the rank differs
    (contrib's rank-4 BN around a dense layer).  With both layouts possible (H == W == C) the
    closer one is taken: a mutation that only matches when transposed is not plausible."""
    if candidate is None:
        return None
    ref, cand = np.asarray(reference), np.asarray(candidate)
    options = []
    if cand.shape == ref.shape:
        options.append(cand)
    if cand.ndim == ref.ndim and cand.ndim in (3, 4, 5):
        to_last = (0,) + tuple(range(2, cand.ndim)) + (1,)  # tf2onnx: NCHW tensor for an NHWC graph
        to_first = (0, cand.ndim - 1) + tuple(range(1, cand.ndim - 1))  # TFLite: NHWC for an NCHW graph
        for perm in (to_last, to_first):
            t = np.transpose(cand, perm)
            if t.shape == ref.shape:
                options.append(t)
    if not options and cand.size == ref.size and cand.ndim != ref.ndim:
        options.append(cand.reshape(ref.shape))
    if not options:
        return cand
    if len(options) == 1:
        return options[0]
    r = ref.astype(np.float64)
    return min(options, key=lambda c: float(np.nanmax(np.abs(r - c.astype(np.float64)))))
