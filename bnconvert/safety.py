"""Refuse to execute graphs whose ops reach outside the process.

A frozen GraphDef is code: running it in a ``tf.compat.v1.Session`` runs every op on the path
to the fetched outputs, and some ops read or write files, call back into Python, open network
connections or map files into memory. bnconvert executes user graphs (to verify conversions),
so before it does, :func:`check_safe` scans the graph and its function library and refuses
those ops unless the user passed ``--allow-unsafe-ops``.

The list below was read from TensorFlow 2.21's op registry (``dir(tf.raw_ops)``), searching the
names for File, Read, Write, Save, Restore, Load, Reader, Dataset, PyFunc, Print, Summary,
Checkpoint, Immutable, Matching, Snapshot, Sql, CSV, LMDB, Debug, Remote, Collective and
DataService, then keeping the ops that touch the outside world. A few names from older
TensorFlow releases are kept too (harmless if absent). Ops that only *format* file names
(``ShardedFilename``, ``ShardedFilespec``) and ``Print`` (writes to stderr) are allowed;
``PrintV2`` is refused only when its ``output_stream`` attribute names a file.

Pure protobuf traversal: no TensorFlow import.
"""
from __future__ import annotations

from typing import Iterable

from bnconvert.errors import UnsafeGraphError

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
    "CacheDataset", "CacheDatasetV2",  # writes a cache file when filename is set
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

#: Op types refused by :func:`check_safe` (``PrintV2`` is refused only when it writes a file).
UNSAFE_OPS: frozenset[str] = frozenset(_FILES | _PYTHON | _NETWORK | {"PrintV2"})

_WHY_PYTHON = "calls back into Python"
_WHY_NETWORK = "talks to other processes or machines"
_WHY_FILES = "reads or writes outside the process"


def _why(op: str) -> str:
    if op in _PYTHON:
        return _WHY_PYTHON
    if op in _NETWORK:
        return _WHY_NETWORK
    return _WHY_FILES


def _is_unsafe(node) -> bool:
    if node.op == "PrintV2":
        stream = node.attr["output_stream"].s.decode("utf-8", "replace") if "output_stream" in node.attr else ""
        return stream.startswith("file://")
    return node.op in UNSAFE_OPS


def _all_nodes(graph_def) -> Iterable[tuple[str, object]]:
    for node in graph_def.node:
        yield node.name, node
    for fn in graph_def.library.function:
        for node in fn.node_def:
            yield f"{fn.signature.name}/{node.name}", node


def find_unsafe_ops(graph_def) -> list[tuple[str, str]]:
    """``(node name, op type)`` for every unsafe node, library functions included.

    Nodes inside a library function are named ``function_name/node_name``.
    """
    return [(name, node.op) for name, node in _all_nodes(graph_def) if _is_unsafe(node)]


def check_safe(graph_def, allow_unsafe: bool = False, what: str = "") -> None:
    """Raise :class:`UnsafeGraphError` (one line) if the graph holds an unsafe op.

    ``what`` names the graph in the message (e.g. a file name). With ``allow_unsafe`` nothing is
    checked.
    """
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
