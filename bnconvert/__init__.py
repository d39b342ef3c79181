"""bnconvert: fold batch normalization out of TensorFlow 1.x graphs, export ONNX and TFLite,
and prove the results compute what the original graph computes.

Importing this package is cheap (numpy only): TensorFlow and tf2onnx are imported by the
functions that need them.
"""
__version__ = "0.1.0"

from .errors import BNConvertError  # noqa: E402
from .api import FoldedModel, compare, convert, fold, inspect, load  # noqa: E402  (fold the function, not the module)

__all__ = ["load", "fold", "inspect", "convert", "compare", "FoldedModel", "BNConvertError", "__version__"]
