"""Calibration data for post-training int8 quantization, and the held-out data it is judged on.

``--calibration`` takes one of three sources:

- a ``.npz`` of real inputs, keyed like ``--data`` (``"x:0"``, ``"x"`` or ``input_0``): the first
  ``N`` samples (along axis 0) calibrate; the samples after them, if any, are held out for
  verification;
- ``mnist``: the bundled real digits of :func:`bnconvert.mnist.load_mnist` for models with one
  float input of 784 values per sample (``[N,784]``, ``[N,28,28]``, ``[N,28,28,1]``). The TRAIN
  split calibrates (spread evenly over it, so every class is seen); verification uses the TEST
  split, which calibration never touches;
- ``random``: seeded standard-normal inputs. A last resort: activation ranges then come from
  data the model never sees in use, so int8 accuracy on real data is not what verification
  measures. It prints a warning line and the report records it.

With ``--data FILE.npz`` the int8 files are verified on those inputs instead (yours, real).

Samples are returned as one array per input, ``[N, *sample_shape]``; :func:`batches` cuts them
into the export batch size (the TFLite/ONNX models have a fixed batch dimension).
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field

import numpy as np

from ..errors import InputError

SOURCES = ("mnist", "random")
#: default number of calibration samples (TFLite's and onnxruntime's examples use 100-500)
DEFAULT_SAMPLES = 200
#: at most this many held-out samples are used to verify the int8 models
EVAL_SAMPLES = 1000
RANDOM_WARNING = ("bnconvert: warning: calibrating int8 on random inputs; activation ranges will not match "
                  "real data (pass --calibration FILE.npz or mnist)")


@dataclass
class CalibrationSet:
    """``calib``/``held_out``: input name → ``[N, *sample_shape]`` float arrays."""

    source: str
    calib: dict[str, np.ndarray]
    held_out: dict[str, np.ndarray]
    held_out_source: str
    labels: np.ndarray | None = None  # classes of held_out (mnist only)
    notes: list[str] = field(default_factory=list)

    @property
    def samples(self) -> int:
        return int(next(iter(self.calib.values())).shape[0])

    def describe(self) -> dict:
        return {"source": self.source, "samples": self.samples, "held_out": self.held_out_source,
                "held_out_samples": int(next(iter(self.held_out.values())).shape[0]), "notes": self.notes}


def load_calibration(spec: str, inputs: list[str], shapes: dict[str, list[int]], dtypes: dict,
                     samples: int = DEFAULT_SAMPLES, seed: int = 0, warn=None) -> CalibrationSet:
    """The calibration set for ``spec`` ("mnist", "random" or a path to an .npz)."""
    if samples is None or int(samples) < 1:
        raise InputError(f"--calibration-samples must be at least 1, got {samples}")
    samples = int(samples)
    for name in inputs:
        if not np.issubdtype(np.dtype(dtypes.get(name, np.float32)), np.floating):
            raise InputError(f"int8 quantization needs float inputs; input '{name}' is {np.dtype(dtypes[name])}")
    if spec == "mnist":
        return _mnist(inputs, shapes, samples)
    if spec == "random":
        (warn or _stderr)(RANDOM_WARNING)
        return _random(inputs, shapes, samples, seed)
    if not str(spec).endswith(".npz"):
        raise InputError(f"--calibration '{spec}': expected FILE.npz, mnist or random")
    return _npz(spec, inputs, shapes, samples)


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _sample_shape(name: str, shapes: dict) -> list[int]:
    return [int(d) for d in shapes[name][1:]]


def _mnist(inputs, shapes, samples) -> CalibrationSet:
    from ..mnist import load_mnist

    if len(inputs) != 1:
        raise InputError(f"--calibration mnist needs a model with one input; this one has {len(inputs)}")
    (name,) = inputs
    tail = _sample_shape(name, shapes)
    if int(np.prod(tail)) != 784:
        raise InputError(f"--calibration mnist needs an MNIST-shaped input (784 values per sample); "
                         f"'{name}' takes {shapes[name]}")
    digits = load_mnist()
    n_train = digits.x_train.shape[0]
    if samples > n_train:
        raise InputError(f"--calibration-samples {samples}: the bundled MNIST train split has {n_train} digits")
    idx = np.linspace(0, n_train - 1, samples).round().astype(int)  # evenly over the class-ordered split
    calib = {name: digits.x_train[idx].reshape([samples] + tail).astype(np.float32)}
    test = digits.x_test[:EVAL_SAMPLES]
    held = {name: test.reshape([test.shape[0]] + tail).astype(np.float32)}
    return CalibrationSet(f"mnist train split ({digits.source})", calib, held,
                          "mnist test split (never used for calibration)", labels=digits.y_test[:EVAL_SAMPLES])


def _random(inputs, shapes, samples, seed) -> CalibrationSet:
    rng = np.random.default_rng(seed + 8)
    calib = {n: rng.standard_normal([samples] + _sample_shape(n, shapes)).astype(np.float32) for n in inputs}
    rng2 = np.random.default_rng(seed + 88)
    held = {n: rng2.standard_normal([min(samples, EVAL_SAMPLES)] + _sample_shape(n, shapes)).astype(np.float32)
            for n in inputs}
    return CalibrationSet("random (standard normal; last resort)", calib, held,
                          "random (another seed)", notes=["calibrated on random inputs"])


def held_out_from(calset: CalibrationSet, path: str, inputs, shapes) -> None:
    """Verify on ``path`` (``--data``) instead: the user's own inputs, labels unknown."""
    calset.held_out = _npz_arrays(path, inputs, shapes)
    calset.held_out_source = f"{path} (--data)"
    calset.labels = None


def _npz_arrays(path, inputs, shapes) -> dict[str, np.ndarray]:
    from ..verify.inputs import load_npz_inputs

    arrays = load_npz_inputs(path, inputs)
    counts = set()
    for name, arr in arrays.items():
        tail = _sample_shape(name, shapes)
        arr = np.asarray(arr)
        if arr.ndim == len(tail):  # one sample without its batch axis
            arr = arr[None]
        if list(arr.shape[1:]) != tail:
            raise InputError(f"{path}: '{name}' has samples of shape {list(arr.shape[1:])}, the model takes {tail}")
        if not np.issubdtype(arr.dtype, np.floating) or not np.all(np.isfinite(arr)):
            raise InputError(f"{path}: '{name}' must hold finite floats")
        arrays[name] = arr.astype(np.float32)
        counts.add(arr.shape[0])
    if len(counts) != 1:
        raise InputError(f"{path}: the inputs hold different numbers of samples ({sorted(counts)})")
    return arrays


def _npz(path, inputs, shapes, samples) -> CalibrationSet:
    arrays = _npz_arrays(path, inputs, shapes)
    total = int(next(iter(arrays.values())).shape[0])
    notes = []
    if total < samples:
        notes.append(f"{path} holds {total} samples, fewer than the {samples} asked for: calibrated on {total}")
        samples = total
    calib = {n: a[:samples] for n, a in arrays.items()}
    if total > samples:
        held = {n: a[samples:samples + EVAL_SAMPLES] for n, a in arrays.items()}
        held_src = f"{path} samples {samples}.. (not used for calibration)"
    else:
        held = calib
        held_src = f"{path} (the calibration samples themselves: the file has no others)"
        notes.append("verified on the calibration samples: give more samples than --calibration-samples "
                     "to hold some out")
    return CalibrationSet(f"{path}", calib, held, held_src, notes=notes)


def batches(arrays: dict[str, np.ndarray], batch: int):
    """Yield ``{name: array[i:i+batch]}`` for full batches (a short last batch is dropped unless it
    is the only one, then it is tiled up to ``batch``)."""
    n = int(next(iter(arrays.values())).shape[0])
    if n < batch:
        reps = -(-batch // n)
        yield {k: np.concatenate([v] * reps)[:batch] for k, v in arrays.items()}
        return
    for i in range(0, n - batch + 1, batch):
        yield {k: v[i:i + batch] for k, v in arrays.items()}
