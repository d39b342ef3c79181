"""A decomposed BN whose parameters have a higher rank than its input ([1,1,1,C] after a dense
layer) broadcasts the output to that rank in TensorFlow.  Folding it, or replacing it by a [C]
scale-shift, silently dropped those dimensions: ``bnconvert.fold`` returned a graph computing a
[2,4] tensor where the original computes [1,1,2,4] (only the CLI's verification caught it).  Such
a chain is not a per-channel map of its input: it stays in the graph as computed (reported)."""
import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

import bnconvert  # noqa: E402
from conftest import run_graph_def  # noqa: E402

C = 4


def _graph(producer: str, shape, xshape, channels=C):
    rng = np.random.default_rng(1)
    g = tf.Graph()
    with g.as_default():
        x = tf.compat.v1.placeholder(tf.float32, xshape, name="x")
        if producer == "dense":
            y = tf.linalg.matmul(x, tf.constant(rng.normal(size=(xshape[-1], channels)).astype(np.float32)))
        else:
            y = tf.nn.conv2d(x, tf.constant(rng.normal(size=(3, 3, xshape[-1], channels)).astype(np.float32)),
                             1, "SAME")
        p = [tf.constant(v.astype(np.float32).reshape(shape)) for v in
             (rng.normal(size=channels), rng.uniform(.5, 2, channels), rng.uniform(.5, 2, channels),
              rng.normal(size=channels))]
        tf.identity(tf.nn.batch_normalization(y, p[0], p[1], p[3], p[2], 1e-3, name="bn"), name="out")
    return g.as_graph_def()


CASES = {
    "dense + [1,1,1,C]": ("dense", (1, 1, 1, C), (2, 3), C),
    "conv + [1,1,1,1,C]": ("conv", (1, 1, 1, 1, C), (2, 5, 6, 3), C),
    "one-channel dense + [1,1,1,1]": ("dense", (1, 1, 1, 1), (2, 3), 1),
    "dense + [1,C] (control: folds)": ("dense", (1, C), (2, 3), C),
    "conv + [1,1,1,C] (control: folds)": ("conv", (1, 1, 1, C), (2, 5, 6, 3), C),
}


@pytest.mark.parametrize("mode", ["fold", "scale_shift"])
@pytest.mark.parametrize("case", list(CASES))
def test_output_keeps_the_rank_the_parameters_broadcast_to(case, mode):
    producer, shape, xshape, channels = CASES[case]
    gd = _graph(producer, shape, xshape, channels)
    feeds = {"x:0": np.random.default_rng(2).normal(size=xshape).astype(np.float32)}
    ref = run_graph_def(gd, feeds, ["out:0"])["out:0"]
    res = bnconvert.fold(gd, inputs=["x:0"], outputs=["out:0"], mode=mode)
    got = run_graph_def(res.graph_def, feeds, ["out:0"])["out:0"]
    assert got.shape == ref.shape
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4)
    actions = [ly["action"] for ly in res.report.layers]
    assert actions and "refuse" not in actions
    if "control" in case and mode == "fold":
        assert actions == ["fold"]
