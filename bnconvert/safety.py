"""Execute only graphs made of pure compute ops: an allowlist, not a list of known-bad ops.

A frozen GraphDef is code: running it in a ``tf.compat.v1.Session`` runs every op on the path to
the fetched outputs, and TensorFlow has well over a thousand ops, some of which read or write
files, call back into Python, talk to other machines, block on queues forever or keep state.
bnconvert executes user graphs (to verify conversions; TensorFlow's converters run grappler,
which evaluates constant sub-graphs), so before it does, :func:`check_safe` requires **every** op
in the graph and in the functions it calls to be on :data:`SAFE_OPS` — pure, stateless compute
(math, nn, array, image arithmetic, their gradients (checkpoints hold training graphs),
in-memory summaries, control flow including while-loop frames, ``TensorArrayV3``
and ``TensorList`` ops, constants, placeholders, quantization arithmetic, CTC decoders, random
ops) — and refuses anything else, naming the op, unless the user passed ``--allow-unsafe-ops``.

How the list was built: from TensorFlow 2.21's op registry, the ops whose ``OpDef`` is not
stateful and takes no resource/variant argument (849 of 1,462) were read by hand, keeping the
ones that compute from their inputs only; then the few stateful-but-local ops graphs really
need (random ops, ``Assert``/``Print``, TensorArray/TensorList, function calls) were added.
Left out on purpose (examples): variables and every ``Assign*``/``Apply*``/``Scatter*`` update
(state), queues, stacks, barriers, maps and tables (state; a dequeue from an empty queue hangs),
readers, ``ReadFile``/``WriteFile``/``MatchingFiles``/``ImmutableConst`` (files), ``PyFunc``
(Python), ``Send``/``Recv``/collectives (network), datasets and iterators, summaries, debug ops,
``Abort``, image/audio decoders and ``ParseExample`` (parsers of untrusted bytes), and anything
this list does not name.  ``PrintV2`` is allowed unless its ``output_stream`` names a file.

Graph-library functions are checked the same way (their nodes and the functions they call), and
a function that calls itself, directly or through others, is refused before TensorFlow sees the
graph (importing one crashes TensorFlow): :func:`check_functions`, also run by every load.

Pure protobuf traversal: no TensorFlow import.
"""
from __future__ import annotations

from typing import Iterable

from bnconvert.errors import GraphError, UnsafeGraphError

_CONSTANTS_AND_FEEDS = """
Const Placeholder PlaceholderV2 PlaceholderWithDefault Identity IdentityN Snapshot NoOp StopGradient
PreventGradient EnsureShape CheckNumerics CheckNumericsV2 Assert Print PrintV2 StringFormat ZerosLike OnesLike
Fill Range LinSpace Shape ShapeN Size Rank BroadcastArgs BroadcastGradientArgs BroadcastTo ControlTrigger
"""
_MATH = """
Abs Acos Acosh Add AddN AddV2 AccumulateNV2 All Any Angle ApproximateEqual ArgMax ArgMin Asin Asinh Atan Atan2
Atanh BesselI0 BesselI0e BesselI1 BesselI1e BesselJ0 BesselJ1 BesselK0 BesselK0e BesselK1 BesselK1e BesselY0
BesselY1 Betainc Cast Ceil ClipByValue Complex ComplexAbs Conj Cos Cosh Cross Cumprod Cumsum CumulativeLogsumexp
Dawsn Digamma Div DivNoNan Equal Erf Erfc Erfinv EuclideanNorm Exp Expint Expm1 Floor FloorDiv FloorMod
FresnelCos FresnelSin Greater GreaterEqual Igamma Igammac Imag Inv Invert IsFinite IsInf IsNan LeftShift Less
LessEqual Lgamma Log Log1p LogicalAnd LogicalNot LogicalOr Max Maximum Mean Min Minimum Mod Mul MulNoNan Ndtri
Neg NextAfter NotEqual Polygamma PopulationCount Pow Prod Real RealDiv Reciprocal RightShift Rint Round Rsqrt
Select SelectV2 Sigmoid Sign Sin Sinh Spence Sqrt Square SquaredDifference Sub Sum Tan Tanh TruncateDiv
TruncateMod Xdivy Xlog1py Xlogy Zeta BitwiseAnd BitwiseOr BitwiseXor Einsum Bincount DenseBincount
HistogramFixedWidth Bucketize InTopK InTopKV2 TopK TopKV2 NthElement L2Loss LowerBound UpperBound
SegmentSum SegmentMax SegmentMean SegmentMin SegmentProd UnsortedSegmentSum UnsortedSegmentMax
UnsortedSegmentMin UnsortedSegmentProd MatMul BatchMatMul BatchMatMulV2 BatchMatMulV3 MatrixInverse
MatrixDeterminant LogMatrixDeterminant Cholesky Qr Svd SelfAdjointEigV2 MatrixBandPart MatrixDiag MatrixDiagV2
MatrixDiagV3 MatrixDiagPart MatrixDiagPartV2 MatrixDiagPartV3 MatrixSetDiag MatrixSetDiagV2 MatrixSetDiagV3
MatrixTriangularSolve MatrixSolve MatrixSolveLs MatrixSquareRoot MatrixExponential TridiagonalMatMul
TridiagonalSolve BandedTriangularSolve
"""
_NN = """
BiasAdd BiasAddV1 Conv Conv2D Conv3D Conv2DBackpropInput Conv2DBackpropInputV2 Conv3DBackpropInput
Conv3DBackpropInputV2 DepthwiseConv2dNative DepthwiseConv2dNativeBackpropInput AvgPool AvgPool3D MaxPool
MaxPoolV2 MaxPool3D MaxPoolWithArgmax FractionalAvgPool FractionalMaxPool FusedBatchNorm FusedBatchNormV2
FusedBatchNormV3 BatchNormWithGlobalNormalization Relu Relu6 Elu Selu LeakyRelu Softplus Softsign Softmax
LogSoftmax LRN Dilation2D FusedPadConv2D FusedResizeAndPadConv2D SoftmaxCrossEntropyWithLogits
SparseSoftmaxCrossEntropyWithLogits CTCGreedyDecoder CTCBeamSearchDecoder CTCLoss CTCLossV2 LSTMBlockCell
BlockLSTM BlockLSTMV2 GRUBlockCell ResizeBilinear ResizeBicubic ResizeNearestNeighbor ResizeArea
ScaleAndTranslate CropAndResize ExtractImagePatches ExtractVolumePatches NonMaxSuppression NonMaxSuppressionV2
NonMaxSuppressionV3 NonMaxSuppressionV4 NonMaxSuppressionV5 NonMaxSuppressionWithOverlaps
CombinedNonMaxSuppression AdjustContrastv2 AdjustHue AdjustSaturation RGBToHSV HSVToRGB DrawBoundingBoxes
DrawBoundingBoxesV2 ImageProjectiveTransformV2 ImageProjectiveTransformV3 Mfcc AudioSpectrogram
"""
_QUANTIZATION = """
Dequantize QuantizeV2 QuantizeAndDequantize QuantizeAndDequantizeV2 QuantizeAndDequantizeV3
QuantizeAndDequantizeV4 FakeQuantWithMinMaxArgs FakeQuantWithMinMaxVars FakeQuantWithMinMaxVarsPerChannel
Requantize RequantizationRange
"""
_ARRAY = """
Pack Unpack Concat ConcatV2 ConcatOffset Split SplitV Slice StridedSlice Reshape Squeeze ExpandDims Transpose
ConjugateTranspose Tile Pad PadV2 MirrorPad Gather GatherV2 GatherNd ScatterNd TensorScatterUpdate
TensorScatterAdd TensorScatterSub TensorScatterMax TensorScatterMin Reverse ReverseV2 ReverseSequence OneHot
Where Unique UniqueV2 UniqueWithCounts UniqueWithCountsV2 ListDiff InvertPermutation SpaceToBatch
SpaceToBatchND BatchToSpace BatchToSpaceND SpaceToDepth DepthToSpace DynamicPartition DynamicStitch
ParallelDynamicStitch Diag DiagPart Bitcast Roll DataFormatVecPermute DataFormatDimMap UnravelIndex
Fingerprint InplaceAdd InplaceSub InplaceUpdate SparseToDense MatrixBandPart
"""
_STRINGS = """
StringJoin StringLength AsString StringToNumber Substr ReduceJoin StringSplit StringSplitV2 StringLower
StringUpper StringStrip StringToHashBucketFast
"""
_CONTROL_FLOW = """
Switch Merge Enter Exit NextIteration LoopCond RefSwitch RefMerge RefEnter RefExit RefNextIteration RefIdentity
RefSelect While StatelessWhile If StatelessIf Case StatelessCase PartitionedCall StatefulPartitionedCall
TensorArrayV3 TensorArrayReadV3 TensorArrayWriteV3 TensorArrayGatherV3 TensorArrayScatterV3 TensorArraySizeV3
TensorArrayConcatV3 TensorArraySplitV3 TensorArrayCloseV3 TensorArrayGradV3
EmptyTensorList TensorListReserve TensorListFromTensor TensorListGetItem TensorListSetItem TensorListStack
TensorListLength TensorListPushBack TensorListPopBack TensorListElementShape TensorListGather
TensorListScatter TensorListScatterV2 TensorListScatterIntoExistingList TensorListConcat TensorListConcatV2
TensorListSplit TensorListResize
"""
_GRADIENTS = """
AvgPool3DGrad AvgPoolGrad BatchNormWithGlobalNormalizationGrad BiasAddGrad BlockLSTMGrad BlockLSTMGradV2
CholeskyGrad CropAndResizeGradBoxes CropAndResizeGradImage EluGrad FakeQuantWithMinMaxArgsGradient
FakeQuantWithMinMaxVarsGradient FakeQuantWithMinMaxVarsPerChannelGradient FractionalAvgPoolGrad
FractionalMaxPoolGrad FusedBatchNormGrad FusedBatchNormGradV2 FusedBatchNormGradV3 GRUBlockCellGrad IgammaGradA
InvGrad LRNGrad LSTMBlockCellGrad LeakyReluGrad MaxPool3DGrad MaxPool3DGradGrad MaxPoolGrad MaxPoolGradGrad
MaxPoolGradGradV2 MaxPoolGradGradWithArgmax MaxPoolGradV2 MaxPoolGradWithArgmax MirrorPadGrad
QuantizeAndDequantizeV4Grad RandomGammaGrad ReciprocalGrad Relu6Grad ReluGrad ResizeBicubicGrad
ResizeBilinearGrad ResizeNearestNeighborGrad RsqrtGrad ScaleAndTranslateGrad SeluGrad SigmoidGrad SoftplusGrad
SoftsignGrad SqrtGrad StridedSliceGrad TanhGrad TileGrad Conv2DBackpropFilter Conv2DBackpropFilterV2
Conv3DBackpropFilter Conv3DBackpropFilterV2 DepthwiseConv2dNativeBackpropFilter Dilation2DBackpropFilter
Dilation2DBackpropInput
ScalarSummary HistogramSummary MergeSummary TensorSummary TensorSummaryV2 ImageSummary AudioSummaryV2
"""
_RANDOM = """
RandomUniform RandomUniformInt RandomStandardNormal TruncatedNormal Multinomial RandomShuffle RandomGamma
RandomPoisson RandomPoissonV2 StatelessRandomUniform StatelessRandomUniformV2 StatelessRandomNormal
StatelessRandomNormalV2 StatelessTruncatedNormal StatelessTruncatedNormalV2 StatelessRandomUniformInt
StatelessRandomUniformIntV2 StatelessRandomUniformFullInt StatelessRandomUniformFullIntV2 StatelessMultinomial
StatelessRandomGetKeyCounter StatelessRandomGetAlg StatelessRandomGetKeyCounterAlg
"""

#: Every op type bnconvert executes without ``--allow-unsafe-ops`` (plus calls to the graph's own
#: library functions, which are checked node by node).
SAFE_OPS: frozenset[str] = frozenset(" ".join((_CONSTANTS_AND_FEEDS, _MATH, _NN, _QUANTIZATION, _ARRAY, _STRINGS,
                                               _CONTROL_FLOW, _GRADIENTS, _RANDOM)).split())

# Ops named in messages with the reason they are dangerous (everything off SAFE_OPS is refused).
_FILES = {
    # raw file system access
    "ReadFile", "WriteFile", "MatchingFiles", "FileSystemSetConfiguration",
    "ImmutableConst",  # memory-maps a file named in an attribute
    "InitializeTableFromTextFile", "InitializeTableFromTextFileV2",
    "LoadAndRemapMatrix", "GenerateVocabRemapping",
    "DatasetToTFRecord", "ExperimentalDatasetToTFRecord",
    # checkpoints
    "Save", "SaveV2", "SaveSlices", "Restore", "RestoreV2", "RestoreSlice", "MergeV2Checkpoints",
    # queue-based readers (TF 1.x input pipelines)
    "FixedLengthRecordReader", "FixedLengthRecordReaderV2", "TFRecordReader", "TFRecordReaderV2",
    "TextLineReader", "TextLineReaderV2", "WholeFileReader", "WholeFileReaderV2",
    "IdentityReader", "IdentityReaderV2", "LMDBReader",
    "ReaderRead", "ReaderReadV2", "ReaderReadUpTo", "ReaderReadUpToV2",
    "ReaderRestoreState", "ReaderRestoreStateV2",
    # tf.data sources and sinks that touch files, databases or snapshots
    "TFRecordDataset", "TFRecordDatasetV2", "TextLineDataset",
    "FixedLengthRecordDataset", "FixedLengthRecordDatasetV2",
    "CSVDataset", "CSVDatasetV2", "ExperimentalCSVDataset",
    "LMDBDataset", "ExperimentalLMDBDataset", "SqlDataset", "ExperimentalSqlDataset",
    "MatchingFilesDataset", "ExperimentalMatchingFilesDataset",
    "CacheDataset", "CacheDatasetV2",
    "SnapshotDataset", "SnapshotDatasetV2", "SnapshotDatasetReader", "SnapshotNestedDatasetReader",
    "SnapshotChunkDataset", "ListSnapshotChunksDataset", "DistributedSave",
    "SaveDataset", "SaveDatasetV2", "ExperimentalSaveDataset", "LoadDataset",
    # summary writers (event files, databases)
    "SummaryWriter", "CreateSummaryFileWriter", "CreateSummaryDbWriter", "ImportEvent",
    "WriteSummary", "WriteScalarSummary", "WriteHistogramSummary", "WriteImageSummary",
    "WriteAudioSummary", "WriteGraphSummary", "WriteRawProtoSummary",
    "FlushSummaryWriter", "CloseSummaryWriter", "StatsAggregatorSetSummaryWriter",
    # tfdbg: debug_urls may be file:// or grpc://
    "DebugIdentity", "DebugIdentityV2", "DebugIdentityV3", "DebugNanCount",
    "DebugNumericSummary", "DebugNumericSummaryV2",
}
_PYTHON = {"PyFunc", "PyFuncStateless", "EagerPyFunc"}
_NETWORK = {
    "RemoteCall", "Send", "Recv", "_Send", "_Recv", "_HostSend", "_HostRecv",
    "DataServiceDataset", "DataServiceDatasetV2", "DataServiceDatasetV3", "DataServiceDatasetV4",
    "RegisterDataset", "RegisterDatasetV2", "WorkerHeartbeat",
    "CollectiveBcastSend", "CollectiveBcastRecv", "CollectiveBcastSendV2", "CollectiveBcastRecvV2",
    "CollectiveReduce", "CollectiveReduceV2", "CollectiveReduceV3", "CollectiveGather",
    "CollectiveGatherV2", "CollectiveAllToAllV2", "CollectiveAllToAllV3",
    "CollectiveInitializeCommunicator",
}

#: Ops that reach outside the process (files, Python, network); ``PrintV2`` only when it writes
#: a file.  A subset of what :func:`check_safe` refuses, used for the reason in its message and
#: by :func:`find_outside_ops` (the load-time check of frozen checkpoints).
UNSAFE_OPS: frozenset[str] = frozenset(_FILES | _PYTHON | _NETWORK | {"PrintV2"})

_WHY_PYTHON = "calls back into Python"
_WHY_NETWORK = "talks to other processes or machines"
_WHY_FILES = "reads or writes outside the process"
_WHY_OTHER = "is not a pure compute op on bnconvert's allowlist (it keeps state, blocks or touches resources)"


def _why(op: str) -> str:
    if op in _PYTHON:
        return _WHY_PYTHON
    if op in _NETWORK:
        return _WHY_NETWORK
    if op in UNSAFE_OPS:
        return _WHY_FILES
    return _WHY_OTHER


def _writes_file(node) -> bool:
    stream = node.attr["output_stream"].s.decode("utf-8", "replace") if "output_stream" in node.attr else ""
    return stream.startswith("file://")


def _is_outside(node) -> bool:
    if node.op == "PrintV2":
        return _writes_file(node)
    return node.op in UNSAFE_OPS


def _is_unsafe(node, functions: set[str]) -> bool:
    if node.op == "PrintV2":
        return _writes_file(node)
    return node.op not in SAFE_OPS and node.op not in functions


def _all_nodes(graph_def) -> Iterable[tuple[str, object]]:
    for node in graph_def.node:
        yield node.name, node
    for fn in graph_def.library.function:
        for node in fn.node_def:
            yield f"{fn.signature.name}/{node.name}", node


def function_refs(node) -> set[str]:
    """Function names a node's func / list(func) attributes name."""
    out = set()
    for a in node.attr.values():
        kind = a.WhichOneof("value")
        if kind == "func":
            out.add(a.func.name)
        elif kind == "list":
            out.update(f.name for f in a.list.func)
    return out


def _called(node, functions: set[str]) -> set[str]:
    """Library functions a node calls: as its op, or through func / list(func) attributes."""
    return ({node.op} & functions) | function_refs(node)


def find_unsafe_ops(graph_def) -> list[tuple[str, str]]:
    """``(node name, op type)`` for every node off the allowlist, library functions included.

    Nodes inside a library function are named ``function_name/node_name``.  Ops that reach
    outside the process come first (they are what a message should name).
    """
    functions = {f.signature.name for f in graph_def.library.function}
    found = [(name, node.op) for name, node in _all_nodes(graph_def) if _is_unsafe(node, functions)]
    for name, node in _all_nodes(graph_def):
        missing = _called(node, functions) - functions - {node.op}
        found.extend((name, f"{node.op} calling unknown function {m}") for m in sorted(missing))
    return sorted(found, key=lambda t: t[1] not in UNSAFE_OPS)


def find_outside_ops(graph_def) -> list[tuple[str, str]]:
    """``(node name, op type)`` for every node that reads/writes files, calls Python or talks to
    the network (:data:`UNSAFE_OPS`), library functions included."""
    return [(name, node.op) for name, node in _all_nodes(graph_def) if _is_outside(node)]


def check_functions(graph_def, what: str = "") -> None:
    """Raise :class:`GraphError` if a library function calls itself (directly or through others).

    TensorFlow crashes (segfault) importing or running such a graph, so this runs before it sees
    the graph.  Iterative depth-first search: a long call chain cannot exhaust Python's stack.
    """
    lib = graph_def.library.function
    if not lib:
        return
    functions = {f.signature.name for f in lib}
    calls = {f.signature.name: set().union(*(_called(n, functions) for n in f.node_def)) & functions
             if f.node_def else set() for f in lib}
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    for root in sorted(calls):
        if state.get(root):
            continue
        stack = [(root, iter(sorted(calls[root])))]
        state[root] = 1
        path = [root]
        while stack:
            fn, it = stack[-1]
            nxt = next(it, None)
            if nxt is None:
                state[fn] = 2
                stack.pop()
                path.pop()
            elif state.get(nxt) == 1:
                cycle = path[path.index(nxt):] + [nxt]
                label = f"{what}: " if what else ""
                raise GraphError(f"{label}library function '{nxt}' calls itself ({' -> '.join(cycle)}); "
                                 "refusing the graph (TensorFlow crashes on recursive functions)")
            elif not state.get(nxt):
                state[nxt] = 1
                path.append(nxt)
                stack.append((nxt, iter(sorted(calls[nxt]))))


def check_safe(graph_def, allow_unsafe: bool = False, what: str = "") -> None:
    """Raise :class:`UnsafeGraphError` (one line) unless every op is on :data:`SAFE_OPS`.

    ``what`` names the graph in the message (e.g. a file name).  With ``allow_unsafe`` only the
    recursion check (:func:`check_functions`) runs: a self-calling function crashes TensorFlow
    whatever the user allows.
    """
    check_functions(graph_def, what)
    if allow_unsafe:
        return
    found = find_unsafe_ops(graph_def)
    if not found:
        return
    name, op = found[0]
    label = f"graph {what}" if what else "the graph"
    more = f" (and {len(found) - 1} more: {', '.join(sorted({o for _, o in found[1:]}))})" if len(found) > 1 else ""
    raise UnsafeGraphError(
        f"{label} holds op {op} (node '{name}') that {_why(op)}{more}; refusing to execute it "
        "(pass --allow-unsafe-ops to run it anyway)"
    )
