"""Loading: every format, the reference-op repair, and restoring only safe checkpoints."""
import os

import numpy as np
import pytest

import bnconvert
from bnconvert.errors import UnsafeGraphError
from bnconvert.load import repair_ref_ops

from conftest import FIXTURES


@pytest.mark.parametrize("name,fmt", [("fused_v3_conv.pb", "pb"), ("pbtxt_dense.pbtxt", "pbtxt"),
                                      ("ckpt_dense/model.meta", "checkpoint"), ("ckpt_dense", "checkpoint"),
                                      ("savedmodel_conv", "savedmodel")])
def test_formats(name, fmt):
    m = bnconvert.load(os.path.join(FIXTURES, name))
    assert m.format == fmt
    ops = {n.op for n in m.graph_def.node}
    assert not ops & {"VariableV2", "VarHandleOp", "Variable"}  # frozen
    if fmt == "savedmodel":
        assert m.inputs and m.outputs  # from the signature


def test_facenet_graph_needs_the_ref_repair():
    import tensorflow as tf

    gd = tf.compat.v1.GraphDef()
    gd.ParseFromString(open(os.path.join(FIXTURES, "facenet_updates_none.pb"), "rb").read())
    with pytest.raises(ValueError, match="float_ref"):
        with tf.Graph().as_default():
            tf.compat.v1.import_graph_def(gd, name="")
    fixed, counts = repair_ref_ops(gd)
    assert counts.get("RefSwitch", 0) > 0 and counts.get("AssignSub", 0) > 0
    with tf.Graph().as_default():
        tf.compat.v1.import_graph_def(fixed, name="")
    again = tf.compat.v1.GraphDef()
    again.ParseFromString(open(os.path.join(FIXTURES, "facenet_updates_none.pb"), "rb").read())
    assert gd == again  # the repair worked on a copy


def _checkpoint_with_write_file(tmp_path):
    import tensorflow as tf

    g = tf.Graph()
    with g.as_default():
        x = tf.compat.v1.placeholder(tf.float32, [None, 2], name="x")
        w = tf.compat.v1.get_variable("w", initializer=np.ones((2, 2), np.float32))
        tf.identity(tf.matmul(x, w), name="out")
        tf.io.write_file(str(tmp_path / "pwned.txt"), "written at restore", name="evil")
        saver = tf.compat.v1.train.Saver()
        with tf.compat.v1.Session() as s:
            s.run(tf.compat.v1.global_variables_initializer())
            saver.save(s, str(tmp_path / "model"))
    return str(tmp_path / "model.meta")


def test_checkpoint_with_unsafe_ops_is_not_restored(tmp_path):
    meta = _checkpoint_with_write_file(tmp_path)
    with pytest.raises(UnsafeGraphError, match="WriteFile.*evil"):
        bnconvert.load(meta)
    m = bnconvert.load(meta, outputs=["out:0"], allow_unsafe=True)
    assert any(n.name == "out" for n in m.graph_def.node)
    assert not (tmp_path / "pwned.txt").exists()  # loading never ran the op itself
