"""CI guard: each MNIST fixture (trained on real digits), converted, keeps its accuracy.

Original ≥ 90% on the 1,000 bundled test digits; every converted runtime (folded .pb, ONNX on
onnxruntime CPU, TFLite) within 0.1 percentage point of it, and at most 0.1% of the digits
(1 of 1,000) change class.
"""
import pytest

from bnconvert.mnist_check import check, format_table

from conftest import fixture_specs

SPECS = fixture_specs("mnist_")


def test_three_mnist_fixtures():
    assert {s["name"] for s in SPECS} == {"mnist_mlp_moments", "mnist_mlp_contrib_fused", "mnist_conv"}


@pytest.mark.parametrize("spec", SPECS, ids=[s["name"] for s in SPECS])
def test_conversion_keeps_accuracy(spec, tmp_path):
    result = check(spec["path"], outdir=str(tmp_path))
    print(format_table(result))
    assert result["digits"] == 1000
    assert result["original_accuracy"] >= 0.90
    runtimes = {r["runtime"]: r for r in result["runtimes"]}
    assert set(runtimes) == {"tf:original", "tf:folded", "onnx:CPUExecutionProvider", "tflite"}
    for name, r in runtimes.items():
        assert abs(r["accuracy"] - result["original_accuracy"]) * 100 <= 0.1, (name, r)
        assert r["changed"] <= 1, (name, r)
    assert result["ok"]
    # the BN really is gone from what was measured
    import bnconvert

    rep = bnconvert.inspect(spec["path"])
    assert rep.bn == {"found": 2, "folded": 2, "scale_shift": 0, "refused": 0}


def test_mnist_check_cli_fails_when_a_conversion_loses_accuracy(cli, tmp_path):
    """--max-drop -1 cannot be met (accuracy equal is a 0 pp drop): exit 1 with the table.

    The command line's ``main(argv)`` in this process (conftest.cli: fds 1 and 2 captured, the
    session's forkserver; a process of its own spent most of its time importing TensorFlow)."""
    spec = SPECS[0]
    p = cli("mnist-check", spec["path"], "-o", tmp_path, "--max-drop", "-1")
    assert p.returncode == 1, p.stderr
    assert "FAIL" in p.stdout and "tf:folded" in p.stdout
    assert p.stderr.strip().startswith("bnconvert: error:") and len(p.stderr.strip().splitlines()) == 1
