"""Fixtures for verification's power (issue 10), registered into tools/make_fixtures.py.

    softmax_conv   a conv net whose only output is a saturated softmax: a 1% error in the first
                   layer changes the probabilities by far less than float32 noise, so only the
                   logits (the softmax's input, compared layer by layer) can show it.

(The dead-ReLU graph that must verify as "inconclusive" is built by tests/test_verify_power.py
itself: as a fixture it would fail every conversion test by design.)
"""
from __future__ import annotations


def register(mf) -> None:
    """Add this module's fixtures to make_fixtures' registry (``mf`` is that module)."""

    @mf.fixture("softmax_conv", "Conv+BiasAdd -> fused BN -> Relu -> Conv (no bias) -> fused BN -> Relu -> "
                "mean -> dense(10) x25 -> Softmax (saturated); image-like input [N,16,16,3] in [0,1)")
    def _softmax_conv(net):
        tf = mf.tf
        x = net.input([None, 16, 16, 3], [4, 16, 16, 3], kind="uniform")
        phase = net.phase()
        y = tf.nn.relu(mf.layer_bn(mf.conv2d(x, 8, scope="conv1"), phase, "bn1"))
        net.bn("bn1", mf.FUSED_COND, "Conv2D+BiasAdd")
        y = tf.nn.relu(mf.layer_bn(mf.conv2d(y, 16, bias=False, scope="conv2"), phase, "bn2"))
        net.bn("bn2", mf.FUSED_COND, "Conv2D")
        logits = mf.dense(tf.reduce_mean(y, axis=[1, 2]), 10, scope="logits")
        net.output(tf.nn.softmax(logits * 25.0), name="probs")
