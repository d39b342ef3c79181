"""ONNX and TFLite export on small frozen graphs built here with tf.compat.v1 ops."""
from __future__ import annotations

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import onnx
import pytest
import tensorflow as tf

from bnconvert.errors import InputError, UnsupportedError
from bnconvert.export import export_onnx, export_tflite, onnx_bn_leftovers
from bnconvert.verify import compare, run_onnx, run_tf, run_tflite

RNG = np.random.default_rng(0)


def f32(a):
    return tf.constant(np.asarray(a, np.float32))


def conv_graph():
    """x[?,8,8,3] → Conv2D → BiasAdd → Relu → y."""
    g = tf.Graph()
    with g.as_default():
        x = tf.compat.v1.placeholder(tf.float32, [None, 8, 8, 3], name="x")
        h = tf.nn.conv2d(x, f32(RNG.standard_normal((3, 3, 3, 4)) * 0.3), 1, "SAME")
        tf.nn.relu(tf.nn.bias_add(h, f32(RNG.standard_normal(4))), name="y")
    return g.as_graph_def()


def mlp_bn_graph():
    """The contrib MLP form: MatMul → BiasAdd → Reshape → FusedBatchNormV3 → Reshape (unfolded)."""
    g = tf.Graph()
    with g.as_default():
        x = tf.compat.v1.placeholder(tf.float32, [None, 5], name="x")
        h = tf.nn.bias_add(tf.matmul(x, f32(RNG.standard_normal((5, 4)))), f32(RNG.standard_normal(4)))
        y, _, _ = tf.compat.v1.nn.fused_batch_norm(
            tf.reshape(h, [-1, 1, 1, 4]), f32(RNG.random(4) + 0.5), f32(RNG.standard_normal(4)),
            mean=f32(RNG.standard_normal(4)), variance=f32(RNG.random(4) + 0.5), epsilon=1e-3, is_training=False)
        tf.reshape(y, [-1, 4], name="out")
    return g.as_graph_def()


def training_flag_graph():
    """Conv → cond(is_training){FusedBatchNormV3 train | inference}: tf2onnx makes an ONNX If."""
    g = tf.Graph()
    with g.as_default():
        x = tf.compat.v1.placeholder(tf.float32, [None, 6, 6, 2], name="x")
        flag = tf.compat.v1.placeholder_with_default(False, [], name="is_training")
        k = tf.nn.conv2d(x, f32(RNG.standard_normal((3, 3, 2, 3))), 1, "SAME")
        scale, offset, mean, var = (f32(RNG.random(3) + 0.5) for _ in range(4))
        y = tf.compat.v1.cond(
            flag,
            lambda: tf.compat.v1.nn.fused_batch_norm(k, scale, offset, epsilon=1e-3, is_training=True)[0],
            lambda: tf.compat.v1.nn.fused_batch_norm(k, scale, offset, mean=mean, variance=var, epsilon=1e-3,
                                                     is_training=False)[0])
        tf.identity(y, name="y")
    return g.as_graph_def()


def unsupported_graph():
    g = tf.Graph()
    with g.as_default():
        x = tf.compat.v1.placeholder(tf.float32, [None, 4], name="x")
        tf.identity(tf.math.bessel_i0e(x), name="y")
    return g.as_graph_def()


def test_onnx_export_conv_keeps_names_and_matches_tf(tmp_path):
    gd = conv_graph()
    path = tmp_path / "m.onnx"
    info = export_onnx(gd, ["x:0"], ["y:0"], str(path))
    assert path.is_file()
    onnx.checker.check_model(str(path))
    assert info["opset"] == 17
    assert info["ops"]["Conv"] == 1 and "Relu" in info["ops"]
    assert info["onnx_names"] == {"x:0": "x:0", "y:0": "y:0"}
    assert info["inputs"][0]["name"] == "x:0" and info["inputs"][0]["shape"][1:] == [8, 8, 3]
    assert not isinstance(info["inputs"][0]["shape"][0], int)  # batch stays dynamic
    assert onnx_bn_leftovers(str(path)) == []
    feeds = {"x:0": RNG.standard_normal((3, 8, 8, 3)).astype(np.float32)}
    result = compare(run_tf(gd, feeds, ["y:0"]), run_onnx(str(path), feeds, ["y:0"]), "onnx", str(path))
    assert result.ok, result.summary()


def test_onnx_export_input_shapes_fix_the_batch(tmp_path):
    info = export_onnx(conv_graph(), ["x:0"], ["y:0"], str(tmp_path / "m.onnx"), opset=13,
                       input_shapes={"x:0": [2, 8, 8, 3]})
    assert info["opset"] == 13
    assert info["inputs"][0]["shape"] == [2, 8, 8, 3]


def test_onnx_leftovers_unfolded_bn_after_matmul(tmp_path):
    path = tmp_path / "mlp.onnx"
    export_onnx(mlp_bn_graph(), ["x:0"], ["out:0"], str(path))
    left = onnx_bn_leftovers(str(path))
    assert any(s.startswith("BatchNormalization:") for s in left), left
    assert onnx_bn_leftovers(onnx.load(str(path))) == left  # ModelProto accepted too


def test_onnx_leftovers_training_flag_becomes_if(tmp_path):
    path = tmp_path / "cond.onnx"
    info = export_onnx(training_flag_graph(), ["x:0"], ["y:0"], str(path))
    left = onnx_bn_leftovers(str(path))
    assert any(s.startswith("If:") for s in left), left
    assert sum(s.startswith("BatchNormalization:") for s in left) == 2  # both branches, searched inside If
    assert info["ops"]["If"] == 1 and info["ops"]["BatchNormalization"] == 2


def test_onnx_export_errors_are_one_line(tmp_path):
    gd = conv_graph()
    with pytest.raises(InputError, match="'nope:0' is not in the graph"):
        export_onnx(gd, ["nope:0"], ["y:0"], str(tmp_path / "a.onnx"))
    with pytest.raises(InputError, match="not a tensor name"):
        export_onnx(gd, ["x"], ["y:0"], str(tmp_path / "a.onnx"))
    with pytest.raises(UnsupportedError, match="BesselI0e") as e:
        export_onnx(unsupported_graph(), ["x:0"], ["y:0"], str(tmp_path / "b.onnx"))
    assert "\n" not in str(e.value)
    assert not os.listdir(tmp_path)  # nothing half-written


def test_tflite_export_conv_matches_tf(tmp_path):
    gd = conv_graph()
    path = tmp_path / "m.tflite"
    info = export_tflite(gd, ["x:0"], ["y:0"], str(path), {"x:0": [2, 8, 8, 3]})
    assert path.is_file()
    assert info["ops"] == {"CONV_2D": 1}  # bias and relu fused into the conv
    assert info["input_shapes"] == {"x:0": [2, 8, 8, 3]}
    # issue 11: the batch stays resizable (default 1); the run below feeds batch 2
    assert info["batch"] == "dynamic" and info["inputs"][0]["shape"][1:] == [8, 8, 3]
    assert info["inputs"][0]["shape_signature"] == [-1, 8, 8, 3]
    assert info["tflite_names"]["inputs"] == {"x:0": "x"} and info["tflite_names"]["matched_by"] == "name"
    for batch in (2, 5):  # 5: the interpreter resizes the input
        feeds = {"x:0": RNG.standard_normal((batch, 8, 8, 3)).astype(np.float32)}
        result = compare(run_tf(gd, feeds, ["y:0"]), run_tflite(str(path), feeds, ["y:0"]), "tflite", str(path))
        assert result.ok, result.summary()


def test_tflite_export_mlp_with_bn_and_two_outputs(tmp_path):
    g = tf.Graph()
    with g.as_default():
        x = tf.compat.v1.placeholder(tf.float32, [None, 5], name="in/x")
        h = tf.nn.bias_add(tf.matmul(x, f32(RNG.standard_normal((5, 4)))), f32(RNG.standard_normal(4)),
                           name="dense/BiasAdd")
        tf.split(tf.nn.softmax(h), 2, axis=1, name="sp")
    gd = g.as_graph_def()
    outs = ["sp:1", "dense/BiasAdd:0"]
    path = tmp_path / "mlp.tflite"
    info = export_tflite(gd, ["in/x:0"], outs, str(path), {"in/x:0": [3, 5]})
    assert info["tflite_names"]["outputs"] == {"sp:1": "sp:1", "dense/BiasAdd:0": "dense/BiasAdd"}
    assert info["ops"]["FULLY_CONNECTED"] == 1
    feeds = {"in/x:0": RNG.standard_normal((3, 5)).astype(np.float32)}
    result = compare(run_tf(gd, feeds, outs), run_tflite(str(path), feeds, outs), "tflite", str(path))
    assert result.ok, result.summary()
    assert [o.name for o in result.outputs] == outs


def test_tflite_export_needs_concrete_shapes_and_supported_ops(tmp_path):
    gd = conv_graph()
    with pytest.raises(InputError, match="concrete shape for input 'x:0'"):
        export_tflite(gd, ["x:0"], ["y:0"], str(tmp_path / "a.tflite"), {"x:0": [None, 8, 8, 3]})
    with pytest.raises(InputError, match="concrete shape for input 'x:0'"):
        export_tflite(gd, ["x:0"], ["y:0"], str(tmp_path / "a.tflite"), {})
    with pytest.raises(InputError, match="input shapes do not fit"):
        export_tflite(gd, ["x:0"], ["y:0"], str(tmp_path / "a.tflite"), {"x:0": [1, 8, 8, 5]})
    with pytest.raises(UnsupportedError, match="BesselI0e") as e:
        export_tflite(unsupported_graph(), ["x:0"], ["y:0"], str(tmp_path / "b.tflite"), {"x:0": [1, 4]})
    assert "\n" not in str(e.value)
    assert not os.listdir(tmp_path)
