"""The ONNX form of a BN that cannot be folded: one BatchNormalization (default) or Mul+Add."""
import os
from collections import Counter

import numpy as np
import pytest

from conftest import FIXTURES, fixture_data, fixture_specs

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")


def _scale_shift_model(c: int, const_shape, rank: int = 4):
    """x → Mul(x, s) → Add(·, t), named as bnconvert's scale-shift pair."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    s = rng.normal(size=const_shape).astype(np.float32)
    t = rng.normal(size=const_shape).astype(np.float32)
    dims = [2, c] + [5] * (rank - 2)
    g = helper.make_graph(
        [helper.make_node("Mul", ["x", "s"], ["m"], name="bn/scale_shift/mul"),
         helper.make_node("Add", ["m", "t"], ["y"], name="bn/scale_shift/add")],
        "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, dims)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, dims)],
        [numpy_helper.from_array(s, "s"), numpy_helper.from_array(t, "t")])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), dims


def _run(model, x):
    s = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return s.run(None, {"x": x})[0]


@pytest.mark.parametrize("const_shape,rank", [((1, 6, 1, 1), 4), ((6, 1, 1), 4), ((6,), 2), ((6, 1), 3)])
def test_rewrite_is_exact(const_shape, rank):
    from bnconvert.export.bnform import scale_shift_to_batchnorm

    model, dims = _scale_shift_model(6, const_shape, rank)
    x = np.random.default_rng(1).normal(size=dims).astype(np.float32) * 10
    before = _run(model, x)
    assert scale_shift_to_batchnorm(model) == 1
    onnx.checker.check_model(model)
    assert Counter(n.op_type for n in model.graph.node) == {"BatchNormalization": 1}
    after = _run(model, x)
    # (x - 0) / sqrt(1 + 0) * s + t is x * s + t: at most the rounding of a fused multiply-add
    np.testing.assert_allclose(after, before, rtol=2e-7, atol=1e-6)


def test_channels_last_constant_is_left_alone():
    """A [C] constant on a rank-4 tensor broadcasts on the LAST axis: not BatchNormalization's."""
    from bnconvert.export.bnform import scale_shift_to_batchnorm

    model, _ = _scale_shift_model(6, (6,), 4)  # dims [2, 6, 5, 5] with a [6] constant: invalid broadcast
    model.graph.input[0].type.tensor_type.shape.dim[3].dim_value = 6
    model.graph.output[0].type.tensor_type.shape.dim[3].dim_value = 6
    assert scale_shift_to_batchnorm(model) == 0
    assert [n.op_type for n in model.graph.node] == ["Mul", "Add"]


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    import bnconvert

    spec = next(s for s in fixture_specs("bn_after_relu") if s["name"] == "bn_after_relu")
    out = {}
    for form in ("bnop", "muladd"):
        d = tmp_path_factory.mktemp(form)
        rep = bnconvert.convert(spec["path"], str(d), to=("onnx",), bn_form=form,
                                data=os.path.join(FIXTURES, spec["data"]))
        out[form] = rep
    return spec, out


def test_default_form_is_one_batchnormalization_and_verifies(converted):
    from bnconvert.export.onnx import onnx_bn_leftovers

    spec, reps = converted
    rep = reps["bnop"]
    assert rep.ok and rep.bn["scale_shift"] == 1
    m = onnx.load(rep.files["onnx"])
    ops = Counter(n.op_type for n in m.graph.node)
    assert ops["BatchNormalization"] == 1 and ops["Mul"] == 0, ops
    assert onnx_bn_leftovers(m) == []  # written by bnconvert for a reported scale-shift
    assert rep.exports["onnx"]["scale_shift_as_batchnorm"] == 1
    # and it computes what the original graph computed (bnconvert's own check plus the fixture's)
    feeds, expected = fixture_data(spec)
    s = ort.InferenceSession(rep.files["onnx"], providers=["CPUExecutionProvider"])
    got = s.run(None, {s.get_inputs()[0].name: next(iter(feeds.values()))})[0]
    np.testing.assert_allclose(got, next(iter(expected.values())), rtol=1e-4, atol=1e-5)


def test_muladd_form_keeps_mul_and_add(converted):
    _, reps = converted
    m = onnx.load(reps["muladd"].files["onnx"])
    ops = Counter(n.op_type for n in m.graph.node)
    assert ops["BatchNormalization"] == 0 and ops["Mul"] == 1 and ops["Add"] == 1, ops


def test_unknown_form_is_refused(tmp_path):
    import bnconvert
    from bnconvert.errors import InputError

    with pytest.raises(InputError, match="bn-form"):
        bnconvert.convert(os.path.join(FIXTURES, "bn_after_relu.pb"), str(tmp_path), to=("onnx",), bn_form="fast")
