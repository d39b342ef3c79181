"""Layer-by-layer verification within a memory budget (issue 12: a ResNet-50's layer tensors for
8 samples and four runtimes took the parent process to 2.3 GB).

With a budget too small for every row, each runtime keeps its layer tensors for the first rows of
each run only — the same rows everywhere — while the outputs are still compared on every sample.
These tests use a tiny budget on a small conv net, so they exercise the cut path; the numbers
come from real TensorFlow, onnxruntime and TFLite runs.
"""
import os

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

import bnconvert
from conftest import FIXTURES

CONV = os.path.join(FIXTURES, "mnist_conv.pb")
TINY = 4096  # bytes: less than one sample's layer tensors


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The same conversion with the default budget and with a tiny one."""
    out = {}
    for name, budget in (("default", None), ("tiny", TINY)):
        kw = {} if budget is None else {"layer_budget": budget}
        out[name] = bnconvert.convert(CONV, str(tmp_path_factory.mktemp(name)), **kw)
    return out


def test_tiny_budget_compares_the_same_layers_on_the_first_row(runs):
    full, cut = runs["default"], runs["tiny"]
    assert "layer_rows" not in full.verification_inputs
    assert cut.verification_inputs["layer_rows"] == 1
    assert any("layer tensors compared on the first 1 row(s)" in n for n in cut.notes)
    assert set(cut.verification) == set(full.verification) == {"tf:folded", "onnx:CPUExecutionProvider", "tflite"}
    for runtime, v in cut.verification.items():
        assert v["ok"], (runtime, v)
        layers = [ly["name"] for ly in v["layers"]]
        assert layers and layers == [ly["name"] for ly in full.verification[runtime]["layers"]], runtime
        # the outputs are still compared on every sample: same statistics as with the full budget
        for o_cut, o_full in zip(v["outputs"], full.verification[runtime]["outputs"]):
            assert o_cut["max_abs"] == o_full["max_abs"] and o_cut["reference_shape"] == o_full["reference_shape"]
            assert o_cut["reference_shape"][0] == full.verification_inputs["samples"] == 8
        # the layers on one row
        assert all(ly["reference_shape"][0] == 1 for ly in v["layers"]), runtime
        assert all(ly["reference_shape"][0] == 8 for ly in full.verification[runtime]["layers"]), runtime


def test_tiny_budget_power_check_still_catches_a_one_percent_error(runs):
    power = runs["tiny"].verification_power
    assert power["layers"] and power["caught_1pct"] is True, power


def test_tiny_budget_still_fails_a_wrong_weight(runs, tmp_path):
    """A 1% error in one output channel of the first conv's folded weights, checked layer by
    layer on one row: the first layer is named as failing."""
    onnx_path = runs["tiny"].files["onnx"]
    model = onnx.load(onnx_path)
    init = next(t for t in model.graph.initializer if "bn_folded/weights" in t.name and len(t.dims) == 4)
    w = numpy_helper.to_array(init).copy()
    w[0] *= 1.01  # ONNX conv weights are OIHW: output channel 0
    init.CopyFrom(numpy_helper.from_array(w.astype(np.float32), init.name))
    bad = tmp_path / "bad.onnx"
    onnx.save(model, str(bad))
    result = bnconvert.compare(CONV, str(bad), layer_budget=TINY, raise_on_failure=False)
    v = result["onnx:CPUExecutionProvider"]
    assert not v["ok"]
    failing = [ly for ly in v["layers"] if not ly["ok"]]
    assert failing and all(ly["reference_shape"][0] == 1 for ly in v["layers"]), v["layers"]


def test_layer_budget_is_checked():
    from bnconvert.errors import InputError

    with pytest.raises(InputError, match="layer_budget"):
        bnconvert.convert(CONV, "/nonexistent-out", layer_budget=0)
