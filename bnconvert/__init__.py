"""bnconvert: fold batch normalization out of TensorFlow 1.x graphs, export ONNX and TFLite,
and prove the results compute what the original graph computes.

Importing this package is cheap (numpy only) and works without TensorFlow: TensorFlow and
tf2onnx are imported by the functions that need them (install them with ``pip install
"bnconvert[tf]"``; a function that needs them and does not find them raises
:class:`~bnconvert.errors.MissingDependencyError`).
"""
__version__ = "0.1.0"

import os as _os  # noqa: E402
import signal as _signal  # noqa: E402
import sys as _sys  # noqa: E402


def _interrupted_at_start(signum, frame):  # the CLI's handler until it runs (see cli/main.py)
    _os.write(2, b"bnconvert: error: interrupted; no output written\n")
    _os._exit(130)


_argv = getattr(_sys, "orig_argv", [])
if ("-m" in _argv and _argv[_argv.index("-m") + 1:][:1] == ["bnconvert.cli.main"]) or \
        _os.path.basename(_sys.argv[0] if _sys.argv else "") == "bnconvert":
    for _s in (_signal.SIGINT, _signal.SIGTERM):  # before the imports below: no traceback at start-up
        _signal.signal(_s, _interrupted_at_start)

from .errors import BNConvertError  # noqa: E402
from .api import FoldedModel, compare, convert, convert_bytes, fold, inspect, load  # noqa: E402  (fold the function, not the module)
from .load import Model  # noqa: E402
from .report import Report  # noqa: E402

__all__ = ["load", "fold", "inspect", "convert", "convert_bytes", "compare", "FoldedModel", "Model", "Report",
           "BNConvertError", "__version__"]
