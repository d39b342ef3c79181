"""Exporters: ONNX through tf2onnx, TFLite through TensorFlow's converter.

Both take the folded, frozen GraphDef plus TF tensor names and write one file atomically
(a temporary file renamed into place). tf2onnx and TensorFlow are imported inside the
functions, so importing this package stays light.
"""
from bnconvert.export.onnx import export_onnx, onnx_bn_leftovers
from bnconvert.export.tflite import export_tflite

__all__ = ["export_onnx", "onnx_bn_leftovers", "export_tflite"]
