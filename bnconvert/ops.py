"""One home for op-type sets and dtype enums/names used across bnconvert's modules.

Plain data only (no TensorFlow import), so every module, including the ONNX-only paths, can
use it.  Sets are tuples (ordered, hashable) so they can be concatenated and used with ``in``.
"""
from __future__ import annotations

import enum

import numpy as np

# ---------------------------------------------------------------------- batch norms
FUSED_BN = ("FusedBatchNorm", "FusedBatchNormV2", "FusedBatchNormV3")
BNWGN = "BatchNormWithGlobalNormalization"
BN_OPS = FUSED_BN + (BNWGN,)
INV_SQRT = ("Rsqrt", "Sqrt", "Reciprocal", "RealDiv", "Inv")
ROOTS = ("Rsqrt", "Sqrt")  # the square root of variance + epsilon every BN chain has
ADD = ("Add", "AddV2")

# ---------------------------------------------------------------------- layers
PRODUCERS = ("Conv2D", "DepthwiseConv2dNative", "MatMul", "Conv2DBackpropInput", "Conv3D")
PRODUCER_RANK = {"Conv2D": 4, "DepthwiseConv2dNative": 4, "MatMul": 2, "Conv2DBackpropInput": 4, "Conv3D": 5}
PASS_THROUGH = ("Identity", "Snapshot", "StopGradient")
SHAPE_OPS = ("Squeeze", "ExpandDims", "Reshape")  # move axes, keep values
SHAPE_ONLY = ("Shape", "ShapeN", "Size", "Rank")  # read the shape, never the values
FAKE_QUANT = ("FakeQuantWithMinMaxVars", "FakeQuantWithMinMaxArgs", "FakeQuantWithMinMaxVarsPerChannel")

# ---------------------------------------------------------------------- value sources
PLACEHOLDERS = ("Placeholder", "PlaceholderWithDefault", "PlaceholderV2")
VARIABLES = ("VariableV2", "Variable", "VarHandleOp", "ReadVariableOp", "TemporaryVariable")
CONTROL_FLOW = ("Switch", "Merge", "RefSwitch", "RefMerge", "Enter", "Exit", "NextIteration", "LoopCond")
# ops whose value changes from run to run (or reads outside state): never constants
STATEFUL = ("RandomUniform", "RandomUniformInt", "RandomStandardNormal", "TruncatedNormal",
            "Multinomial", "RandomShuffle", "RandomGamma", "RandomPoisson", "RandomPoissonV2",
            "Assign", "AssignAdd", "AssignSub", "ScatterUpdate", "TensorArrayV3", "TensorArrayReadV3",
            "QueueDequeueV2", "IteratorGetNext", "ReadFile", "PyFunc", "EagerPyFunc")


# ---------------------------------------------------------------------- dtypes
class DT(enum.IntEnum):
    """TensorFlow's DataType enum (types.proto), the values bnconvert meets."""

    FLOAT = 1
    DOUBLE = 2
    INT32 = 3
    UINT8 = 4
    INT16 = 5
    INT8 = 6
    STRING = 7
    INT64 = 9
    BOOL = 10
    QINT8 = 11
    QUINT8 = 12
    QINT32 = 13
    BFLOAT16 = 14
    QINT16 = 15
    QUINT16 = 16
    UINT16 = 17
    HALF = 19
    UINT32 = 22
    UINT64 = 23


# numpy storage of each enum (quantized types are stored as their plain integer type)
NUMPY = {
    DT.FLOAT: np.float32, DT.DOUBLE: np.float64, DT.INT32: np.int32, DT.UINT8: np.uint8,
    DT.INT16: np.int16, DT.INT8: np.int8, DT.INT64: np.int64, DT.BOOL: np.bool_,
    DT.QINT8: np.int8, DT.QUINT8: np.uint8, DT.QINT32: np.int32, DT.QINT16: np.int16,
    DT.QUINT16: np.uint16, DT.UINT16: np.uint16, DT.HALF: np.float16, DT.UINT32: np.uint32,
    DT.UINT64: np.uint64,
}
QUANTIZED = (DT.QINT8, DT.QUINT8, DT.QINT32, DT.QINT16, DT.QUINT16)


def dtype_name(enum_value: int) -> str:
    """``1`` -> ``"float32"`` style names as TF prints them (``DT_QUINT8`` -> ``"quint8"``)."""
    try:
        dt = DT(enum_value)
    except ValueError:
        return f"dtype {enum_value}"
    return {DT.FLOAT: "float32", DT.DOUBLE: "float64", DT.HALF: "float16"}.get(dt, dt.name.lower())


def np_dtype(enum_value: int):
    """numpy dtype of a TF dtype enum, or None for bfloat16/string/unknown (use tfproto)."""
    try:
        return np.dtype(NUMPY[DT(enum_value)])
    except (ValueError, KeyError):
        return None
