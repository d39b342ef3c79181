"""Issue 11, install: one TensorFlow, a TensorFlow-free install that runs verify-onnx, install
hints where TensorFlow is missing, MNIST digits that come with the package, LiteRT for TFLite.

The TensorFlow-free checks run in a subprocess where ``import tensorflow`` fails
(``sys.modules["tensorflow"] = None``, what Python does for a package that is not there), so
they exercise the same code paths as CI's second virtual environment (``.ci/run``).
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
import tomllib

import numpy as np
import pytest

from conftest import FIXTURES, ROOT

PYPROJECT = os.path.join(ROOT, "pyproject.toml")
ONNX_PAIR = os.path.join(FIXTURES, "onnx_only")


def _project() -> dict:
    with open(PYPROJECT, "rb") as f:
        return tomllib.load(f)["project"]


def _dist(req: str) -> str:
    return re.split(r"[\s<>=!~;\[]", req, maxsplit=1)[0].lower().replace("_", "-")


# ------------------------------------------------------------------- packaging
def test_one_tensorflow_distribution():
    """`tensorflow` and `tensorflow-cpu` share site-packages/tensorflow: only one may be listed,
    and it must be the one tf-keras requires (`tensorflow`)."""
    p = _project()
    every = list(p["dependencies"]) + [r for extra in p["optional-dependencies"].values() for r in extra]
    tf_dists = {_dist(r) for r in every if _dist(r).startswith("tensorflow")}
    assert tf_dists == {"tensorflow"}, tf_dists
    base = {_dist(r) for r in p["dependencies"]}
    assert {"tensorflow", "tf2onnx"} <= base and "tf-keras" not in base, base  # `pip install .` runs everything
    # the documented TensorFlow-free install: requirements-onnx.txt + `pip install --no-deps .`
    with open(os.path.join(ROOT, "requirements-onnx.txt")) as f:
        free = {_dist(ln) for ln in f if ln.strip() and not ln.startswith("#")}
    assert free == {"numpy", "onnx", "onnxruntime"}, free
    extras = p["optional-dependencies"]
    keras_in = [name for name, reqs in extras.items() if any(_dist(r) == "tf-keras" for r in reqs)]
    assert keras_in == ["fixtures"], keras_in  # tests get it through bnconvert[fixtures]
    assert "bnconvert[fixtures]" in extras["test"]
    litert = [r for r in p["dependencies"] if _dist(r) == "ai-edge-litert"]
    assert litert and ";" in litert[0] and "platform_machine" in litert[0]


def test_bundled_digits_ship_with_the_package():
    from bnconvert.mnist import BUNDLED_DIGITS, load_mnist

    with open(PYPROJECT, "rb") as f:
        data = tomllib.load(f)["tool"]["setuptools"]["package-data"]["bnconvert"]
    assert "data/*.npz" in data and "data/*.md" in data
    assert os.path.getsize(BUNDLED_DIGITS) < 1_500_000
    licence = open(os.path.join(os.path.dirname(BUNDLED_DIGITS), "MNIST_LICENSE.md")).read()
    assert "CC BY-SA 3.0" in licence and "LeCun" in licence and "Cortes" in licence
    d = load_mnist()
    assert d.x_test.shape == (1000, 784) and np.bincount(d.y_test).tolist() == [100] * 10
    assert d.x_train.shape == (4000, 784) and 0.05 < float((d.x_test > 0).mean()) < 0.4


# ------------------------------------------------------------------- without TensorFlow
NO_TF = textwrap.dedent("""
    import json, os, sys
    sys.modules["tensorflow"] = None   # as if TensorFlow were not installed
    sys.modules["tf2onnx"] = None
    import bnconvert
    from bnconvert.cli.main import main
    out = {"tf_imported": "tensorflow" in sys.modules and sys.modules["tensorflow"] is not None}
    pair, fixtures, tmp = sys.argv[1:4]
    out["verify_onnx"] = main(["verify-onnx", f"{pair}/mnist_conv.onnx", "--inputs", f"{pair}/mnist_conv.inputs.npz",
                               "--expected", f"{pair}/mnist_conv.expected.npz", "--quiet"])
    for cmd in (["fold", f"{fixtures}/mnist_conv.pb", "-o", tmp], ["inspect", f"{fixtures}/mnist_conv.pb"],
                ["mnist-check", f"{fixtures}/mnist_mlp_moments.pb"]):
        out[cmd[0]] = main(cmd)
    try:
        bnconvert.convert_bytes(f"{fixtures}/mnist_conv.pb", to="onnx")
    except bnconvert.BNConvertError as e:
        out["library"] = [type(e).__name__, e.exit_code, str(e)]
    out["tmp_left"] = os.path.exists(tmp) and os.listdir(tmp)
    print(json.dumps(out))
""")


@pytest.fixture(scope="module")
def no_tf(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("no_tf")
    p = subprocess.run([sys.executable, "-c", NO_TF, ONNX_PAIR, FIXTURES, str(tmp / "out")],
                       capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert p.returncode == 0, p.stderr[-2000:]
    return json.loads(p.stdout.strip().splitlines()[-1]), p.stderr


def test_verify_onnx_runs_without_tensorflow(no_tf):
    out, _ = no_tf
    assert out["verify_onnx"] == 0 and not out["tf_imported"]


def test_commands_needing_tensorflow_say_how_to_install_it(no_tf):
    out, err = no_tf
    assert out["fold"] == out["inspect"] == out["mnist-check"] == 2
    lines = [ln for ln in err.splitlines() if ln.startswith("bnconvert: error:")]
    assert len(lines) == 3, err
    for ln in lines:
        assert 'TensorFlow is not installed' in ln and 'pip install "bnconvert[tf]"' in ln, ln
    assert "internal error" not in err and "Traceback" not in err
    assert out["library"][:2] == ["MissingDependencyError", 2]
    assert out["tmp_left"] is False  # fold created no output folder


def test_ci_runs_the_tensorflow_free_install():
    ci = open(os.path.join(ROOT, ".ci", "run")).read()
    assert "pip install --quiet -r requirements-onnx.txt && python -m pip install --quiet --no-deps ." in ci
    assert "verify-onnx" in ci and "import bnconvert" in ci
    for name in ("mnist_conv.onnx", "mnist_conv.inputs.npz", "mnist_conv.expected.npz"):
        assert os.path.isfile(os.path.join(ONNX_PAIR, name)), name
