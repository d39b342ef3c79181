"""Graphs that reach outside the process are refused before TensorFlow executes them."""
from __future__ import annotations

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pytest
import tensorflow as tf
from tensorflow.python.framework import op_def_registry

from bnconvert.errors import UnsafeGraphError
from bnconvert.safety import UNSAFE_OPS, check_safe, find_unsafe_ops
from bnconvert.verify import run_tf


def read_file_graph(path):
    g = tf.Graph()
    with g.as_default():
        x = tf.compat.v1.placeholder(tf.float32, [2], name="x")
        n = tf.strings.length(tf.io.read_file(tf.constant(str(path)), name="reader"))
        tf.identity(x + tf.cast(n, tf.float32), name="y")
    return g.as_graph_def()


def test_run_tf_refuses_read_file_and_allows_it_when_asked(tmp_path):
    data = tmp_path / "secret.txt"
    data.write_text("abc")
    gd = read_file_graph(data)
    feeds = {"x:0": np.zeros(2, np.float32)}
    with pytest.raises(UnsafeGraphError) as e:
        run_tf(gd, feeds, ["y:0"])
    msg = str(e.value)
    assert "ReadFile" in msg and "'reader'" in msg and "--allow-unsafe-ops" in msg and "\n" not in msg
    assert e.value.exit_code == 2
    assert run_tf(gd, feeds, ["y:0"], allow_unsafe=True)["y:0"].tolist() == [3.0, 3.0]


def test_write_file_is_refused_and_nothing_is_written(tmp_path):
    target = tmp_path / "out.txt"
    g = tf.Graph()
    with g.as_default():
        x = tf.compat.v1.placeholder(tf.float32, [2], name="x")
        w = tf.io.write_file(tf.constant(str(target)), tf.constant("pwned"), name="writer")
        with tf.control_dependencies([w]):
            tf.identity(x, name="y")
    gd = g.as_graph_def()
    with pytest.raises(UnsafeGraphError, match=r"op WriteFile \(node 'writer'\)"):
        run_tf(gd, {"x:0": np.zeros(2, np.float32)}, ["y:0"], what="evil.pb")
    assert not target.exists()
    with pytest.raises(UnsafeGraphError, match="^graph evil.pb holds"):
        check_safe(gd, what="evil.pb")


def test_unsafe_op_inside_a_library_function_is_found(tmp_path):
    @tf.function
    def sneaky(x):
        return x + tf.cast(tf.strings.length(tf.io.read_file(str(tmp_path / "f"))), tf.float32)

    g = tf.Graph()
    with g.as_default():
        x = tf.compat.v1.placeholder(tf.float32, [2], name="x")
        tf.identity(sneaky(x), name="y")
    gd = g.as_graph_def()
    assert not any(n.op == "ReadFile" for n in gd.node)  # only in graph_def.library
    found = find_unsafe_ops(gd)
    assert [op for _, op in found] == ["ReadFile"]
    assert found[0][0].startswith(gd.library.function[0].signature.name + "/")
    with pytest.raises(UnsafeGraphError, match="ReadFile"):
        check_safe(gd)


def test_print_v2_only_unsafe_when_it_writes_a_file(tmp_path):
    def graph(stream):
        g = tf.Graph()
        with g.as_default():
            x = tf.compat.v1.placeholder(tf.float32, [2], name="x")
            p = tf.print(x, output_stream=stream)
            with tf.control_dependencies([p]):
                tf.identity(x, name="y")
        return g.as_graph_def()

    check_safe(graph("file://" + str(tmp_path / "log.txt")), allow_unsafe=True)
    with pytest.raises(UnsafeGraphError, match="PrintV2"):
        check_safe(graph("file://" + str(tmp_path / "log.txt")))
    assert find_unsafe_ops(graph(tf.compat.v1.logging.info)) == []


def test_plain_graph_is_safe():
    g = tf.Graph()
    with g.as_default():
        x = tf.compat.v1.placeholder(tf.float32, [None, 3], name="x")
        tf.nn.relu(tf.matmul(x, tf.ones([3, 2])), name="y")
    gd = g.as_graph_def()
    assert find_unsafe_ops(gd) == []
    check_safe(gd)
    assert run_tf(gd, {"x:0": np.ones((1, 3), np.float32)}, ["y:0"])["y:0"].tolist() == [[3.0, 3.0]]


def test_unsafe_op_names_are_real_tensorflow_ops():
    legacy = {"ExperimentalSaveDataset"}  # kept for older graphs; gone from TF 2.21's registry
    missing = sorted(op for op in UNSAFE_OPS - legacy if op_def_registry.get(op) is None)
    assert missing == [], missing
    for op in ("ReadFile", "WriteFile", "SaveV2", "RestoreV2", "PyFunc", "EagerPyFunc", "ImmutableConst",
               "TFRecordDataset", "WholeFileReaderV2", "CreateSummaryFileWriter", "MatchingFiles"):
        assert op in UNSAFE_OPS
    assert "Print" not in UNSAFE_OPS and "ShardedFilename" not in UNSAFE_OPS
