"""int8 quantization (`bnconvert fold --quantize int8`): the CLI end to end on an MNIST fixture,
calibration from .npz / random, a broken quantization that verification rejects (exit 1)."""
import json
import os

import numpy as np
import pytest

from conftest import FIXTURES

CONV = os.path.join(FIXTURES, "mnist_conv.pb")


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory):
    """One real `bnconvert fold … --quantize int8 --calibration mnist --json` run, shared (its
    ``main`` in this process, fds 1 and 2 captured: tests/_cli.py)."""
    import types

    from _cli import run_captured

    out = tmp_path_factory.mktemp("int8")
    r = run_captured(["fold", CONV, "-o", str(out), "--quantize", "int8", "--calibration", "mnist", "--json"])
    return types.SimpleNamespace(returncode=r["returncode"], stdout=r["stdout"], stderr=r["stderr"]), out


def test_cli_writes_verified_int8_files(cli_run):
    p, out = cli_run
    assert p.returncode == 0, p.stderr
    rep = json.loads(p.stdout)
    assert rep["ok"]
    q = rep["quantization"]
    assert q["calibration"]["samples"] == 200 and "train split" in q["calibration"]["source"]
    assert "test split" in q["calibration"]["held_out"]
    for kind in ("int8_tflite", "int8_onnx"):
        path = rep["files"][kind]
        assert os.path.isfile(path) and path.endswith(".int8." + kind.split("_")[1])
        # at most about a third of the float .tflite
        assert os.path.getsize(path) <= 0.36 * os.path.getsize(rep["files"]["tflite"]), kind
    ver = q["verification"]
    assert set(ver) == {"onnx-int8:CPUExecutionProvider", "tflite-int8"}
    for runtime, v in ver.items():
        (o,) = v["outputs"]
        assert v["ok"] and v["samples"] == 1000
        assert abs(o["accuracy"] - o["reference_accuracy"]) <= 0.01, runtime  # within 1 point
        assert o["top1_agreement"] >= 0.98 and o["cosine"] >= 0.99 and o["sqnr_db"] >= 15
    assert not [f for f in os.listdir(out) if f.startswith(".bnconvert-")]


def test_int8_tflite_is_integer_throughout(cli_run):
    from bnconvert.verify.runners import tflite_interpreter

    _, out = cli_run
    interp = tflite_interpreter(str(out / "mnist_conv.int8.tflite"))
    tensors = {t["index"]: t for t in interp.get_tensor_details()}
    ops = interp._get_ops_details()
    weighted = [op for op in ops if op["op_name"] in ("CONV_2D", "FULLY_CONNECTED", "DEPTHWISE_CONV_2D")]
    assert len(weighted) == 3
    for op in weighted:
        x, w = (tensors[i] for i in op["inputs"][:2])
        assert x["dtype"] == np.int8 and w["dtype"] == np.int8, op
    convs = [op for op in weighted if op["op_name"] == "CONV_2D"]
    for op in convs:  # per-channel weights: one scale per output channel
        w = tensors[op["inputs"][1]]
        assert len(w["quantization_parameters"]["scales"]) == w["shape"][0] > 1
    # float I/O by default (QUANTIZE in, DEQUANTIZE out)
    assert interp.get_input_details()[0]["dtype"] == np.float32


def test_int8_onnx_is_qdq_per_channel(cli_run):
    import onnx
    from onnx import numpy_helper

    _, out = cli_run
    m = onnx.load(str(out / "mnist_conv.int8.onnx"))
    ops = [n.op_type for n in m.graph.node]
    assert "QuantizeLinear" in ops and "DequantizeLinear" in ops and "BatchNormalization" not in ops
    inits = {i.name: numpy_helper.to_array(i) for i in m.graph.initializer}
    conv_w = [n.input[1] for n in m.graph.node if n.op_type == "Conv"]
    producers = {o: n for n in m.graph.node for o in n.output}
    for w in conv_w:
        dq = producers[w]
        assert dq.op_type == "DequantizeLinear"
        q, scale = inits[dq.input[0]], inits[dq.input[1]]
        assert q.dtype == np.int8 and scale.shape == (q.shape[0],)


def test_broken_scales_are_caught(cli_run, tmp_path):
    """One conv's weight scales ×4 (a broken quantizer): the metrics fall below every default."""
    import onnx
    from onnx import numpy_helper

    from bnconvert.mnist import load_mnist
    from bnconvert.verify.quant import compare_int8, thresholds
    from bnconvert.verify.runners import run_onnx

    _, out = cli_run
    m = onnx.load(str(out / "mnist_conv.int8.onnx"))
    producers = {o: n for n in m.graph.node for o in n.output}
    dq = producers[next(n.input[1] for n in m.graph.node if n.op_type == "Conv")]
    init = next(i for i in m.graph.initializer if i.name == dq.input[1])
    init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init) * 4, init.name))
    digits = load_mnist()
    feeds = {"x:0": digits.x_test.reshape(-1, 28, 28, 1)}
    ref = run_onnx(str(out / "mnist_conv.onnx"), feeds, ["logits/BiasAdd:0"])
    good = run_onnx(str(out / "mnist_conv.int8.onnx"), feeds, ["logits/BiasAdd:0"])
    bad = run_onnx(m, feeds, ["logits/BiasAdd:0"])
    th = thresholds()
    assert compare_int8(ref, good, th, labels=digits.y_test)[0]["ok"]
    (row,) = compare_int8(ref, bad, th, labels=digits.y_test)
    assert not row["ok"]
    assert row["sqnr_db"] < th["min_sqnr_db"] and row["cosine"] < th["min_cosine"] and "accuracy" in row["reason"]


def test_calibration_from_npz_and_broken_calibration_exits_1(tmp_path):
    """Real digits from an .npz calibrate well; the same digits ×0.02 (activation ranges 50×
    too small: real digits saturate) give a model that verification on real digits (--data)
    rejects with exit code 1."""
    import bnconvert
    from bnconvert.errors import VerificationError
    from bnconvert.mnist import load_mnist

    x = load_mnist().x_train[::10].reshape(-1, 28, 28, 1)  # 400 digits: 200 calibrate, 200 held out
    good, bad = tmp_path / "good.npz", tmp_path / "bad.npz"
    np.savez(good, **{"x:0": x})
    np.savez(bad, x=x * 0.02)
    real = tmp_path / "real.npz"
    np.savez(real, input_0=load_mnist().x_test[:300].reshape(-1, 28, 28, 1))
    rep = bnconvert.convert(CONV, str(tmp_path / "g"), to="onnx", quantize="int8", calibration=str(good))
    v = rep.quantization["verification"]["onnx-int8:CPUExecutionProvider"]
    assert rep.ok and v["samples"] == 200 and "samples 200.." in rep.quantization["calibration"]["held_out"]
    with pytest.raises(VerificationError) as e:
        bnconvert.convert(CONV, str(tmp_path / "b"), to="onnx", quantize="int8", calibration=str(bad), data=str(real))
    assert e.value.exit_code == 1 and "int8 verification failed" in str(e.value)
    assert os.path.isfile(tmp_path / "b" / "mnist_conv.int8.onnx")  # written, to inspect
    assert e.value.report.quantization["verification"]["onnx-int8:CPUExecutionProvider"]["ok"] is False


def test_random_calibration_warns_and_int8_io(tmp_path, capsys):
    """`random` warns and is recorded; --int8-io gives int8 tensors at both ends, which
    run_tflite_q quantizes/dequantizes (checked on real digits against the float original)."""
    import bnconvert
    from bnconvert.mnist import load_mnist
    from bnconvert.verify.quant import compare_int8, run_tflite_q, thresholds
    from bnconvert.verify.runners import run_tflite, tflite_interpreter

    rep = bnconvert.convert(CONV, str(tmp_path), to="tflite", verify=False, quantize="int8", calibration="random",
                            calibration_samples=50, int8_io=True)
    err = capsys.readouterr().err
    assert "warning: calibrating int8 on random inputs" in err
    assert rep.quantization["calibration"]["samples"] == 50
    assert rep.quantization["calibration"]["source"].startswith("random")
    q8 = str(tmp_path / "mnist_conv.int8.tflite")
    assert os.path.isfile(q8) and not os.path.exists(tmp_path / "mnist_conv.int8.onnx")
    interp = tflite_interpreter(q8)
    assert interp.get_input_details()[0]["dtype"] == np.int8 and interp.get_output_details()[0]["dtype"] == np.int8
    feeds = {"x:0": load_mnist().x_test[::10].reshape(-1, 28, 28, 1)}
    ref = run_tflite(str(tmp_path / "mnist_conv.tflite"), feeds, rep.outputs)
    (row,) = compare_int8(ref, run_tflite_q(q8, feeds, rep.outputs), thresholds())
    assert row["cosine"] > 0.99, row


@pytest.mark.parametrize("kwargs, msg", [
    ({"quantize": "int8"}, "needs --calibration"),
    ({"calibration": "mnist"}, "add --quantize int8"),
    ({"quantize": "int4", "calibration": "mnist"}, "unknown mode 'int4'"),
    ({"quantize": "int8", "calibration": "nope.npz"}, "no such file"),
    ({"quantize": "int8", "calibration": "mnist", "calibration_samples": 0}, "at least 1"),
    ({"quantize": "int8", "calibration": "mnist", "to": "pb"}, "must include onnx or tflite"),
])
def test_bad_quantize_options_are_input_errors(tmp_path, kwargs, msg):
    import bnconvert
    from bnconvert.errors import InputError

    with pytest.raises(InputError, match=msg):
        bnconvert.convert(CONV, str(tmp_path / "o"), **kwargs)
    assert not os.path.exists(tmp_path / "o")


def test_mnist_calibration_refuses_other_shapes():
    from bnconvert.errors import InputError
    from bnconvert.quantize.calibration import load_calibration

    with pytest.raises(InputError, match="MNIST-shaped"):
        load_calibration("mnist", ["x:0"], {"x:0": [1, 32, 32, 3]}, {"x:0": np.float32})
    with pytest.raises(InputError, match="float inputs"):
        load_calibration("mnist", ["x:0"], {"x:0": [1, 784]}, {"x:0": np.int32})


def test_float16_onnx_calibrates_in_its_own_dtype(tmp_path):
    """A float16 ONNX model (bnconvert keeps float16 graphs float16) gets float16 calibration
    feeds; onnxruntime refused float32 ones."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from bnconvert.quantize.onnx_int8 import quantize_onnx
    from bnconvert.verify.quant import compare_int8, thresholds
    from bnconvert.verify.runners import run_onnx

    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((8, 3, 3, 3)).astype(np.float16), "w")
    b = numpy_helper.from_array(rng.standard_normal(8).astype(np.float16), "b")
    graph = helper.make_graph([helper.make_node("Conv", ["x:0", "w", "b"], ["y"], pads=[1, 1, 1, 1]),
                               helper.make_node("Relu", ["y"], ["out:0"])], "g",
                              [helper.make_tensor_value_info("x:0", TensorProto.FLOAT16, [None, 3, 8, 8])],
                              [helper.make_tensor_value_info("out:0", TensorProto.FLOAT16, [None, 8, 8, 8])], [w, b])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    src, dst = str(tmp_path / "f16.onnx"), str(tmp_path / "f16.int8.onnx")
    onnx.save(model, src)
    calib = {"x:0": rng.standard_normal((40, 3, 8, 8)).astype(np.float32)}
    info = quantize_onnx(src, dst, {"x:0": "x:0"}, ["x:0"], calib, batch=8)
    assert info["ops"].get("QuantizeLinear")
    feeds = {"x:0": rng.standard_normal((16, 3, 8, 8)).astype(np.float16)}
    (row,) = compare_int8(run_onnx(src, feeds, ["out:0"]), run_onnx(dst, feeds, ["out:0"]), thresholds())
    assert row["ok"] and "top1_agreement" not in row, row  # a feature map is not classifier-like


def test_bad_calibration_npz_is_one_line(tmp_path):
    from bnconvert.errors import InputError
    from bnconvert.quantize.calibration import load_calibration

    shapes, dtypes = {"x:0": [1, 4, 4, 2]}, {"x:0": np.float32}
    bad_shape, nan, ok = tmp_path / "s.npz", tmp_path / "n.npz", tmp_path / "ok.npz"
    np.savez(bad_shape, x=np.zeros((10, 4, 4, 3), np.float32))
    np.savez(nan, x=np.full((10, 4, 4, 2), np.nan, np.float32))
    np.savez(ok, input_0=np.ones((5, 4, 4, 2), np.float32))
    with pytest.raises(InputError, match=r"samples of shape \[4, 4, 3\], the model takes \[4, 4, 2\]"):
        load_calibration(str(bad_shape), ["x:0"], shapes, dtypes)
    with pytest.raises(InputError, match="finite floats"):
        load_calibration(str(nan), ["x:0"], shapes, dtypes)
    with pytest.raises(InputError, match="has no array for 'y:0'"):
        load_calibration(str(bad_shape), ["x:0", "y:0"], {**shapes, "y:0": [1, 2]}, {**dtypes, "y:0": np.float32})
    cal = load_calibration(str(ok), ["x:0"], shapes, dtypes, samples=200)
    assert cal.samples == 5 and "fewer than the 200" in cal.notes[0] and "themselves" in cal.held_out_source
    with pytest.raises(InputError, match="train split has 4000"):
        load_calibration("mnist", ["x:0"], {"x:0": [1, 784]}, dtypes, samples=5000)
