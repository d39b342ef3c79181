"""bnconvert: fold batch normalization out of TensorFlow 1.x graphs, export ONNX and TFLite,
and prove the results compute what the original graph computes.

Importing this package is cheap (numpy only) and works without TensorFlow: TensorFlow and
tf2onnx are imported by the functions that need them (install them with ``pip install
"bnconvert[tf]"``; a function that needs them and does not find them raises
:class:`~bnconvert.errors.MissingDependencyError`).
"""
__version__ = "0.1.0"

from .errors import BNConvertError  # noqa: E402
from .api import FoldedModel, compare, convert, convert_bytes, fold, inspect, load  # noqa: E402  (fold the function, not the module)
from .load import Model  # noqa: E402
from .report import Report  # noqa: E402

__all__ = ["load", "fold", "inspect", "convert", "convert_bytes", "compare", "FoldedModel", "Model", "Report",
           "BNConvertError", "__version__"]
