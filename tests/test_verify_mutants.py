"""Verification catches small errors in the exported files (issue 10).

Mutants of bnconvert's own .onnx/.tflite — output channel 0 of the first/middle/last folded
layer x1.01, the largest first-layer weight x1.5 — must fail ``bnconvert.compare`` (what
``bnconvert verify`` runs); the untouched files pass.  A few fixtures only: the sweep over all
of them is ``tools/verify_mutants.py``.
"""
import os
import sys

import pytest

import bnconvert
from conftest import FIXTURES, ROOT

sys.path.insert(0, os.path.join(ROOT, "tools"))
import verify_mutants as vm  # noqa: E402


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    cache = {}

    def get(name):
        if name not in cache:
            out = tmp_path_factory.mktemp(name)
            report = bnconvert.convert(os.path.join(FIXTURES, f"{name}.pb"), str(out))
            cache[name] = (report, out)
        return cache[name]
    return get


def _status(name, path):
    return vm.check(os.path.join(FIXTURES, f"{name}.pb"), path)["status"]


def test_mnist_mlp_onnx_mutants_fail_and_the_file_passes(converted):
    report, out = converted("mnist_mlp_contrib_fused")
    assert _status("mnist_mlp_contrib_fused", report.files["onnx"]) == "pass"
    muts = vm.onnx_mutants(report.files["onnx"], str(out))
    labels = [label for label, _ in muts]
    assert any("first layer channel 0" in x for x in labels) and any("x1.5" in x for x in labels)
    for label, path in muts:
        r = vm.check(os.path.join(FIXTURES, "mnist_mlp_contrib_fused.pb"), path)
        assert r["status"] == "fail", (label, r)
        assert "layer" in r["message"]  # named at the first layer where it appears


def test_mnist_mlp_largest_weight_x1_5_in_tflite_fails(converted):
    report, out = converted("mnist_mlp_contrib_fused")
    muts = dict(vm.tflite_mutants(report.files["tflite"], str(out)))
    label = next(k for k in muts if "x1.5" in k)
    assert _status("mnist_mlp_contrib_fused", muts[label]) == "fail"


def test_conv_tflite_mutants_fail(converted):
    report, out = converted("mnist_conv")
    assert _status("mnist_conv", report.files["tflite"]) == "pass"
    for label, path in vm.tflite_mutants(report.files["tflite"], str(out))[:3]:
        assert _status("mnist_conv", path) == "fail", label


def test_softmax_output_catches_a_1pct_error_in_its_first_layer(converted):
    report, out = converted("softmax_conv")
    assert report.verification["onnx:CPUExecutionProvider"]["status"] == "pass"
    assert any(o["name"].startswith("logits of") for o in report.verification["tf:folded"]["layers"])
    first = vm.onnx_mutants(report.files["onnx"], str(out))[0]
    assert "first layer channel 0 x1.01" in first[0]
    r = vm.check(os.path.join(FIXTURES, "softmax_conv.pb"), first[1])
    assert r["status"] == "fail", r
    # the power check of the conversion itself says a 1% error in the first layer is caught
    power = report.verification_power["layers"][0]
    assert power["position"] == "first" and power["caught_1pct"] is True
