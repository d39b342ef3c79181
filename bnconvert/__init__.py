"""bnconvert: fold batch normalization out of TensorFlow 1.x graphs, export ONNX and TFLite,
and prove the results compute what the original graph computes.

Importing this package is cheap: TensorFlow and tf2onnx are imported only by the functions
that need them.
"""
__version__ = "0.1.0"

from .errors import BNConvertError  # noqa: E402,F401


def __getattr__(name):  # lazy re-exports of the API
    if name in ("load", "fold", "inspect", "convert", "verify", "FoldedModel"):
        from . import api

        return getattr(api, name)
    raise AttributeError(name)


__all__ = ["load", "fold", "inspect", "convert", "verify", "FoldedModel", "BNConvertError", "__version__"]
