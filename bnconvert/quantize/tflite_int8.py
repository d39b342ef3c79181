"""Full-integer TFLite from the folded graph: TensorFlow's post-training quantization.

The folded GraphDef goes through the same ``from_session`` path as the float export
(:func:`bnconvert.export.tflite.export_tflite`) with, in addition:

- ``optimizations = [Optimize.DEFAULT]`` and a ``representative_dataset`` yielding the
  calibration samples in the export's batch size: activation ranges come from them;
- ``target_spec.supported_ops = [TFLITE_BUILTINS_INT8]``: every kernel is int8; an op with no
  int8 kernel makes the converter fail (one line) instead of silently staying float;
- ``inference_input_type``/``inference_output_type`` int8 with ``int8_io``, else float32 (the
  model then starts with QUANTIZE and ends with DEQUANTIZE, a drop-in for the float file).

Weights: TFLite quantizes convolution (and depthwise) weights per output channel, symmetric
int8; fully-connected weights per tensor (the converter's default; per-channel dense weights are
an experimental converter flag this module does not turn on). Biases are int32.
"""
from __future__ import annotations

from .calibration import batches


def export_tflite_int8(graph_def, inputs, outputs, path, input_shapes, calib: dict, int8_io: bool = False) -> dict:
    """Write the int8 ``.tflite`` to ``path``; returns :func:`export_tflite`'s info dict."""
    from ..export.tflite import export_tflite

    batch = int(input_shapes[inputs[0]][0]) if input_shapes[inputs[0]] else 1

    def representative():
        for feed in batches(calib, batch):
            yield [feed[n] for n in inputs]

    def configure(converter, tf):
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = representative
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.int8 if int8_io else tf.float32
        converter.inference_output_type = tf.int8 if int8_io else tf.float32

    info = export_tflite(graph_def, inputs, outputs, path, input_shapes, configure=configure)
    info["int8_io"] = int8_io
    return info
