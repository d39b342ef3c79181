"""TensorFlow protobuf helpers, imported lazily so ``import bnconvert`` stays light.

Everything that touches TensorFlow's proto classes goes through here.
"""
from __future__ import annotations

import os

import numpy as np


def no_home_state() -> None:
    """Keep TensorFlow, Keras and onnxruntime from writing state into the user's home folder.

    Importing TensorFlow imports Keras, which creates ``~/.keras/keras.json``; onnxruntime
    writes a telemetry device id under ``~/.cache/Microsoft``.  bnconvert writes nothing outside
    its output folder, so unless the user set ``KERAS_HOME``/``XDG_CACHE_HOME`` they point at a
    path that cannot be created (both libraries then keep their defaults in memory).
    """
    unwritable = os.path.join(os.devnull, "bnconvert")
    os.environ.setdefault("KERAS_HOME", unwritable)
    os.environ.setdefault("XDG_CACHE_HOME", unwritable)


def quiet_fd2():
    """Context manager: file descriptor 2 to /dev/null for the block (native libraries' start-up
    chatter), unless ``--debug`` (BNCONVERT_DEBUG) or TF_CPP_MIN_LOG_LEVEL=0 asks for it."""
    import contextlib
    import sys

    @contextlib.contextmanager
    def cm():
        saved = None
        if not os.environ.get("BNCONVERT_DEBUG") and os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2") != "0":
            try:
                sys.stderr.flush()
                saved = os.dup(2)
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, 2)
                os.close(devnull)
            except OSError:
                saved = None
        try:
            yield
        finally:
            if saved is not None:
                os.dup2(saved, 2)
                os.close(saved)

    return cm()


def tf():
    """Import TensorFlow (v1 graph APIs) on first use, quietly.

    TensorFlow's C++ start-up chatter (absl/CUDA probing) goes to file descriptor 2 before any
    logging setting applies; unless TF_CPP_MIN_LOG_LEVEL is 0 it is silenced for the import.
    Nothing is written into HOME (:func:`no_home_state`).
    """
    import sys

    if "tensorflow" in sys.modules and sys.modules["tensorflow"] is not None:
        return sys.modules["tensorflow"]
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    no_home_state()
    # TensorFlow's default CPU kernels refuse NCHW Conv2D/Depthwise/Conv2DBackpropInput on CPUs
    # without AVX-512; its oneDNN kernels run them, so NCHW graphs can be verified anywhere.
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
    with quiet_fd2():
        import tensorflow as _tf
    return _tf


def graph_def_class():
    tf()
    from tensorflow.core.framework import graph_pb2  # noqa: heavy, lazy

    return graph_pb2.GraphDef


def new_graph_def():
    return graph_def_class()()


def make_ndarray(tensor_proto, what: str = "constant") -> np.ndarray:
    """Decode a TensorProto; its decoded size (from the declared shape and dtype) is checked
    against the memory budget first (:mod:`bnconvert.budget`), so a tiny proto declaring a huge
    shape is refused instead of allocated."""
    from .budget import check_tensor

    check_tensor(tensor_proto, what)
    tf()
    from tensorflow.python.framework import tensor_util

    return np.array(tensor_util.MakeNdarray(tensor_proto))


def make_tensor_proto(value: np.ndarray):
    tf()
    from tensorflow.python.framework import tensor_util

    return tensor_util.make_tensor_proto(np.asarray(value), dtype=_tf_dtype(value.dtype), shape=value.shape)


def _tf_dtype(np_dt):
    t = tf()
    return t.dtypes.as_dtype(np.dtype(np_dt))


def dtype_attr(np_dt):
    tf()
    from tensorflow.core.framework import attr_value_pb2

    return attr_value_pb2.AttrValue(type=_tf_dtype(np_dt).as_datatype_enum)


def type_attr(enum: int):
    tf()
    from tensorflow.core.framework import attr_value_pb2

    return attr_value_pb2.AttrValue(type=enum)


def string_attr(s: str):
    tf()
    from tensorflow.core.framework import attr_value_pb2

    return attr_value_pb2.AttrValue(s=s.encode())


def np_dtype(enum: int) -> np.dtype:
    t = tf()
    return np.dtype(t.dtypes.as_dtype(enum).as_numpy_dtype)


def op_registered(op: str) -> bool:
    tf()
    from tensorflow.python.framework import op_def_registry

    return op_def_registry.get(op) is not None
