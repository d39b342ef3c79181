"""Imported by the stage forkserver before TensorFlow (:data:`bnconvert.isolate._PRELOAD_TF`):
keeps Keras out of it.

``import tensorflow`` with ``TF_USE_LEGACY_KERAS=1`` also imports ``tf_keras`` (its layers,
applications and distribution code): measured here, 7–8 s instead of 11 s for the import on a
loaded 2-core machine, and the memory of those modules in every child.  No stage uses Keras
(graphs are run, folded and converted as GraphDefs: TensorFlow sessions, tf2onnx, the TFLite
converter); TensorFlow imports it only where it is installed, so marking it absent
(``sys.modules[name] = None``: an import of it raises ImportError) is the state of a machine
without it.  Only the forkserver and its children are affected, never a library caller's
process.
"""
import sys

for _name in ("tf_keras", "keras"):
    if _name not in sys.modules:
        sys.modules[_name] = None
