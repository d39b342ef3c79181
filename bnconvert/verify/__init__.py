"""Verification: run the original graph and every exported model, compare the outputs.

Importing this package imports numpy only; onnxruntime, TensorFlow and the TFLite interpreter
are loaded by the runner that needs them. ``verify_onnx`` never imports TensorFlow or tf2onnx.
"""
from bnconvert.verify.compare import (DEFAULT_ATOL, DEFAULT_RTOL, Comparison, OutputStats, compare,
                                      format_table)
from bnconvert.verify.inputs import (load_npz_inputs, placeholder_dtypes, placeholder_shapes, random_inputs,
                                     resolve_shapes, save_npz)
from bnconvert.verify.onnx_only import verify_onnx
from bnconvert.verify.runners import run_onnx, run_tf, run_tflite

__all__ = [
    "DEFAULT_ATOL", "DEFAULT_RTOL", "Comparison", "OutputStats", "compare", "format_table",
    "load_npz_inputs", "placeholder_dtypes", "placeholder_shapes", "random_inputs", "resolve_shapes",
    "save_npz", "verify_onnx", "run_onnx", "run_tf", "run_tflite",
]
