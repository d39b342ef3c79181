"""Verification inputs and verdict rules (numpy only): several samples from two distributions,
constant references are inconclusive, layouts of exposed tensors are aligned."""
import numpy as np
import pytest

from bnconvert.errors import InputError
from bnconvert.verify.compare import compare, reference_constant
from bnconvert.verify.expose import align
from bnconvert.verify.inputs import concat_runs, sample_runs


def test_free_batch_is_one_run_of_n_samples_half_uniform_for_images():
    runs, info = sample_runs({"x:0": [1, 6, 6, 3], "v:0": [1, 5]}, {"x:0": np.float32, "v:0": np.float32},
                             free_batch=True, samples=8, seed=3)
    assert len(runs) == 1 and runs[0]["x:0"].shape == (8, 6, 6, 3) and runs[0]["v:0"].shape == (8, 5)
    x = runs[0]["x:0"]
    assert x[:4].min() < 0 and x[4:].min() >= 0 and x[4:].max() < 1  # normal rows, then uniform [0, 1)
    assert runs[0]["v:0"].min() < 0  # rank-2 inputs stay standard normal
    assert info == {"source": "random", "seed": 3, "samples": 8, "runs": 1, "batch": 8,
                    "distributions": {"x:0": "normal x4 + uniform[0,1) x4", "v:0": "normal x8"}}
    again, _ = sample_runs({"x:0": [1, 6, 6, 3], "v:0": [1, 5]}, {"x:0": np.float32, "v:0": np.float32},
                           free_batch=True, samples=8, seed=3)
    assert np.array_equal(again[0]["x:0"], x)  # seeded


def test_fixed_batch_runs_several_times():
    runs, info = sample_runs({"x:0": [1, 4]}, {"x:0": np.float32}, free_batch=False, samples=8)
    assert len(runs) == 8 and all(r["x:0"].shape == (1, 4) for r in runs)
    runs, info = sample_runs({"x:0": [4, 4]}, {"x:0": np.float32}, free_batch=False, samples=8)
    assert len(runs) == 2 and info["samples"] == 8 and info["batch"] == 4
    runs, _ = sample_runs({"x:0": [16, 4]}, {"x:0": np.float32}, free_batch=False, samples=8)
    assert len(runs) == 2  # never a single run
    assert not np.array_equal(runs[0]["x:0"], runs[1]["x:0"])
    joined = concat_runs([{"y": np.ones((2, 3))}, {"y": np.zeros((2, 3))}])
    assert joined["y"].shape == (4, 3)
    with pytest.raises(InputError, match="--samples"):
        sample_runs({"x:0": [1, 4]}, {"x:0": np.float32}, free_batch=True, samples=0)


@pytest.mark.parametrize("ref,why", [
    (np.zeros((8, 10)), "all zeros"),
    (np.full((8, 10), 0.5), "all equal"),
    (np.tile(np.arange(10.0), (8, 1)), "the same for all 8 samples"),
    (np.where(np.eye(8, 10) > 0, np.nan, 1.0), "NaN"),
])
def test_constant_reference_is_inconclusive_not_pass(ref, why):
    assert why in reference_constant(ref, samples=8)
    c = compare({"y": ref}, {"y": ref.copy()}, "tf:folded", "m.pb", samples=8)
    assert not c.ok and c.status == "inconclusive"
    d = c.to_dict()
    assert why in d["outputs"][0]["constant"] and d["ok"] is False and d["status"] == "inconclusive"


def test_reference_magnitude_and_a_real_failure_wins_over_inconclusive():
    rng = np.random.default_rng(0)
    ref = rng.standard_normal((8, 10))
    c = compare({"y": ref, "z": np.zeros((8, 2))}, {"y": ref * 1.01, "z": np.zeros((8, 2))}, "rt", "f", samples=8)
    assert c.status == "fail"
    y = c.to_dict()["outputs"][0]
    assert y["ref_max"] == pytest.approx(np.abs(ref).max()) and y["ref_std"] == pytest.approx(ref.std())


def test_layers_decide_and_report_the_worst():
    rng = np.random.default_rng(1)
    out = rng.standard_normal((8, 3))
    l1, l2 = rng.standard_normal((8, 5, 5, 4)), rng.standard_normal((8, 6))
    bad = l2.copy()
    bad[:, 0] *= 1.01
    c = compare({"y": out}, {"y": out}, "rt", "f", samples=8,
                layers=[("bn1", "a:0", l1, l1 + 1e-9), ("bn2", "b:0", l2, bad)])
    assert not c.ok and c.status == "fail" and c.worst_layer().name == "bn2"
    assert [o.ok for o in c.layers] == [True, False]


def test_align_channels_first_and_rank():
    rng = np.random.default_rng(2)
    nhwc = rng.standard_normal((2, 5, 6, 3))
    assert np.array_equal(align(nhwc, np.transpose(nhwc, (0, 3, 1, 2))), nhwc)
    square = rng.standard_normal((2, 4, 4, 4))
    assert np.array_equal(align(square, np.transpose(square, (0, 3, 1, 2))), square)
    assert np.array_equal(align(square, square), square)
    flat = rng.standard_normal((2, 7))
    assert np.array_equal(align(flat.reshape(2, 1, 1, 7), flat), flat.reshape(2, 1, 1, 7))
