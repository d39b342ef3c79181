"""Every fixture graph: fold it, check no BN is left but the reported scale-shifts, and that the
folded graph computes the original's outputs (training flags false) in real TensorFlow."""
import numpy as np
import pytest

import bnconvert
from bnconvert.graph import Graph
from bnconvert.match import find_bns

from conftest import fixture_data, fixture_specs, run_graph_def

SPECS = fixture_specs()
BN_OPS = {"FusedBatchNorm", "FusedBatchNormV2", "FusedBatchNormV3", "BatchNormWithGlobalNormalization",
          "Rsqrt", "Switch", "Merge", "RefSwitch"}


def _not_a_bn_rsqrt(g, node):
    """An Rsqrt of something other than ``variance + epsilon`` (e.g. tf.nn.l2_normalize's)."""
    if node.op != "Rsqrt":
        return False
    src = g.get(g.inputs(node)[0])
    return src is None or src.op not in ("Add", "AddV2")


def test_fixtures_exist():
    assert len(SPECS) >= 25, [s["name"] for s in SPECS]


@pytest.mark.parametrize("spec", SPECS, ids=[s["name"] for s in SPECS])
def test_fold_fixture(spec):
    model = bnconvert.load(spec["path"])
    res = bnconvert.fold(model)
    rep = res.report
    assert rep.outputs == spec["outputs"]
    assert rep.inputs == spec["inputs"]
    assert rep.training_flags == spec["training_flags"]
    assert rep.bn["found"] == spec["bn_count"]
    assert rep.bn["folded"] == spec["expect"]["folded"], rep.layer_table()
    assert rep.bn["scale_shift"] == spec["expect"]["scale_shift"], rep.layer_table()
    assert rep.bn["refused"] == 0
    g = Graph(res.graph_def)
    left = {n.name: n.op for n in g.nodes.values() if n.op in BN_OPS and not _not_a_bn_rsqrt(g, n)}
    assert not left, left
    assert find_bns(g) == [], "a Mul/Add chain of a BN is left"
    scale_shift_muls = [n for n in g.nodes if n.endswith("/scale_shift/mul") or "/scale_shift/mul_" in n]
    assert len(scale_shift_muls) == spec["expect"]["scale_shift"]
    feeds, expected = fixture_data(spec)
    got = run_graph_def(res.graph_def, feeds, spec["outputs"])
    for name, ref in expected.items():
        out = got[name].astype(np.float64)
        ref = ref.astype(np.float64)
        mag = max(np.abs(ref).max(), 1e-12)
        tol = 1e-5 if ref.dtype != np.float16 and spec.get("dtype", "float32") != "float16" else 2e-3
        assert np.abs(out - ref).max() <= tol * mag, (name, np.abs(out - ref).max(), mag)


@pytest.mark.parametrize("spec", SPECS[:3], ids=[s["name"] for s in SPECS[:3]])
def test_input_file_is_not_modified(spec, tmp_path):
    import hashlib
    import os

    if os.path.isdir(spec["path"]):
        pytest.skip("folder model")
    before = hashlib.sha256(open(spec["path"], "rb").read()).hexdigest()
    bnconvert.fold(spec["path"])
    assert hashlib.sha256(open(spec["path"], "rb").read()).hexdigest() == before
