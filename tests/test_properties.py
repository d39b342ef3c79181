"""Property-based tests.

1. Random stacks of Conv2D / DepthwiseConv2dNative / Conv2DBackpropInput / MatMul layers with
   batch norms in random forms (fused or decomposed; gamma/beta on or off; behind a ``phase``
   training flag or not; after a Relu; NCHW; shared weights), random statistics, built with
   ``tf.compat.v1`` ops from constants or from variables frozen by
   ``convert_variables_to_constants`` → :func:`bnconvert.fold` → no BN op left, every BN folded
   or (where expected) kept as scale-shift, and the folded graph computes what the original
   computes (flag false).
2. Random byte mutations of fixture files → a clean :class:`BNConvertError` or a correct
   conversion, never another exception or a hang.

NCHW: TensorFlow's CPU kernels run Conv2D in NHWC only, so an "NCHW" BN here is the decomposed
form with ``[1, C, 1, 1]`` parameters between two Transposes after an NHWC layer; it cannot be
folded (a Transpose separates it from the layer) and must come out as scale-shift.
"""
from __future__ import annotations

import contextlib
import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np
import pytest
import tensorflow as tf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import bnconvert
from bnconvert.errors import BNConvertError
from conftest import Hang, time_limit  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(ROOT, "fixtures")
LEFTOVER_OPS = {"FusedBatchNorm", "FusedBatchNormV2", "FusedBatchNormV3", "BatchNormWithGlobalNormalization",
                "Rsqrt", "Switch", "Merge", "RefSwitch"}

SETTINGS = dict(max_examples=25, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@contextlib.contextmanager
def v1_control_flow():
    """``tf.compat.v1.cond`` builds Switch/Merge (as TF 1.x did) for the block only."""
    was = tf.compat.v1.control_flow_v2_enabled()
    tf.compat.v1.disable_control_flow_v2()
    try:
        yield
    finally:
        if was:
            tf.compat.v1.enable_control_flow_v2()


# ------------------------------------------------------------------ network specifications
BN_FORMS = ("fused", "decomp_gamma_beta", "decomp_gamma", "decomp_beta", "decomp_plain", "nchw")
CONV_KINDS = ("conv", "depthwise", "transpose", "shared_pair")


@st.composite
def layer_specs(draw, kind):
    return {
        "kind": kind,
        "cout": draw(st.integers(1, 4)),
        "mult": draw(st.integers(1, 2)),
        "stride": draw(st.sampled_from([1, 2])) if kind == "transpose" else 1,
        "bias": draw(st.booleans()),
        "relu_before_bn": draw(st.booleans()),
        "form": draw(st.sampled_from(BN_FORMS if kind != "dense" else ("fused", "decomp_gamma_beta",
                                                                       "decomp_gamma", "decomp_beta",
                                                                       "decomp_plain"))),
        "form2": draw(st.sampled_from(BN_FORMS)),  # second BN of a shared pair
        "relu_after": draw(st.booleans()),
    }


@st.composite
def networks(draw):
    convs = draw(st.lists(st.sampled_from(CONV_KINDS), min_size=0, max_size=3))
    n_dense = draw(st.integers(0 if convs else 1, 2))
    layers = [draw(layer_specs(k)) for k in convs] + [draw(layer_specs("dense")) for _ in range(n_dense)]
    return {
        "batch": draw(st.integers(1, 2)),
        "hw": draw(st.integers(3, 5)),
        "cin": draw(st.integers(1, 3)),
        "flag": draw(st.sampled_from([None, "placeholder", "with_default"])),
        "freeze": draw(st.booleans()),
        "eps": draw(st.sampled_from([1e-3, 1e-5, 0.01])),
        "seed": draw(st.integers(0, 2**31 - 1)),
        "layers": layers,
    }


class Builder:
    """Builds one network in the current default graph and counts its batch norms."""

    def __init__(self, spec):
        self.spec = spec
        self.rng = np.random.default_rng(spec["seed"])
        self.phase = None
        self.bns = 0
        self.expected_scale_shift = 0
        self.n = 0

    def param(self, shape, lo=None, hi=None, name="p"):
        if lo is None:
            v = self.rng.normal(size=shape)
        else:
            v = self.rng.uniform(lo, hi, size=shape)
        v = v.astype(np.float32)
        self.n += 1
        if self.spec["freeze"]:
            return tf.compat.v1.Variable(v, name=f"{name}_{self.n}", use_resource=False)
        return tf.constant(v, name=f"{name}_{self.n}")

    def stats(self, c):
        mean = self.param([c], name="moving_mean")
        var = self.param([c], 0.05, 5.0, name="moving_variance")
        gamma = self.rng.uniform(0.2, 2.0, size=c) * self.rng.choice([-1.0, 1.0], size=c)
        self.n += 1
        gamma = (tf.compat.v1.Variable(gamma.astype(np.float32), name=f"gamma_{self.n}", use_resource=False)
                 if self.spec["freeze"] else tf.constant(gamma.astype(np.float32), name=f"gamma_{self.n}"))
        beta = self.param([c], name="beta")
        return mean, var, gamma, beta

    def bn(self, y, form, unfoldable: bool):
        """A batch norm on ``y`` (channels last) in ``form``; counts it and what fold should do."""
        self.bns += 1
        if form == "nchw" or unfoldable:
            self.expected_scale_shift += 1
        rank = len(y.shape)
        c = int(y.shape[-1])
        mean, var, gamma, beta = self.stats(c)
        eps = self.spec["eps"]
        with tf.compat.v1.variable_scope(None, default_name="bn"):
            if form == "fused":
                return self._fused(y, rank, c, mean, var, gamma, beta, eps)
            if form == "nchw":
                yt = tf.transpose(y, [0, 3, 1, 2])
                p = [tf.reshape(t, [1, c, 1, 1]) for t in (mean, var, gamma, beta)]
                m, v = self._moments(yt, [0, 2, 3], p[0], p[1], keepdims=True)
                z = tf.nn.batch_normalization(yt, m, v, p[3], p[2], eps)
                return tf.transpose(z, [0, 2, 3, 1])
            axes = list(range(rank - 1))
            m, v = self._moments(y, axes, mean, var)
            g = gamma if form in ("decomp_gamma_beta", "decomp_gamma") else None
            b = beta if form in ("decomp_gamma_beta", "decomp_beta") else None
            return tf.nn.batch_normalization(y, m, v, b, g, eps)

    def _moments(self, y, axes, mean, var, keepdims=False):
        if self.phase is None:
            return mean, var

        def train():
            return tf.nn.moments(y, axes, keepdims=keepdims)

        def infer():
            return tf.identity(mean), tf.identity(var)

        return tf.compat.v1.cond(self.phase, train, infer)

    def _fused(self, y, rank, c, mean, var, gamma, beta, eps):
        x4 = y if rank == 4 else tf.reshape(y, [-1, 1, 1, c])

        def infer():
            return tf.compat.v1.nn.fused_batch_norm(x4, gamma, beta, mean=mean, variance=var, epsilon=eps,
                                                    is_training=False)[0]

        def train():
            return tf.compat.v1.nn.fused_batch_norm(x4, gamma, beta, epsilon=eps, is_training=True)[0]

        z = infer() if self.phase is None else tf.compat.v1.cond(self.phase, train, infer)
        return z if rank == 4 else tf.reshape(z, [-1, c])

    def layer(self, x, L):
        kind = L["kind"]
        cin = int(x.shape[-1])
        if kind == "dense":
            if len(x.shape) != 2:
                x = tf.reshape(x, [-1, int(np.prod(x.shape[1:]))])
                cin = int(x.shape[-1])
            w = self.param([cin, L["cout"]], name="dense_w")
            return self.after(tf.matmul(x, w), L, L["form"])
        if kind == "shared_pair":
            w = self.param([3, 3, cin, cin], name="shared_w")
            y = self.after(tf.nn.conv2d(x, w, 1, "SAME"), L, L["form"])
            y = self.after(tf.nn.conv2d(y, w, 1, "SAME"), {**L, "bias": False, "relu_before_bn": False},
                           L["form2"])
            return y
        if kind == "conv":
            w = self.param([3, 3, cin, L["cout"]], name="conv_w")
            y = tf.nn.conv2d(x, w, 1, "SAME")
        elif kind == "depthwise":
            w = self.param([3, 3, cin, L["mult"]], name="dw_w")
            y = tf.nn.depthwise_conv2d(x, w, [1, 1, 1, 1], "SAME")
        else:  # transpose
            w = self.param([3, 3, L["cout"], cin], name="deconv_w")
            b, h, wd = int(x.shape[0]), int(x.shape[1]), int(x.shape[2])
            st_ = L["stride"]
            y = tf.nn.conv2d_transpose(x, w, [b, h * st_, wd * st_, L["cout"]], st_, "SAME")
        return self.after(y, L, L["form"])

    def after(self, y, L, form):
        """Optional bias, optional Relu before the BN, the BN, optional Relu after."""
        if L["bias"]:
            y = tf.nn.bias_add(y, self.param([int(y.shape[-1])], name="bias"))
        if L["relu_before_bn"]:
            y = tf.nn.relu(y)
        y = self.bn(y, form, unfoldable=L["relu_before_bn"])
        if L["relu_after"]:
            y = tf.nn.relu(y)
        return y

    def build(self):
        s = self.spec
        x = tf.compat.v1.placeholder(tf.float32, [s["batch"], s["hw"], s["hw"], s["cin"]], name="x")
        if s["flag"] == "placeholder":
            self.phase = tf.compat.v1.placeholder(tf.bool, [], name="phase")
        elif s["flag"] == "with_default":
            self.phase = tf.compat.v1.placeholder_with_default(False, [], name="phase")
        y = x
        for L in s["layers"]:
            y = self.layer(y, L)
        return tf.identity(y, name="out")


def build_graph_def(spec):
    g = tf.Graph()
    with g.as_default(), v1_control_flow():
        b = Builder(spec)
        b.build()
        if spec["freeze"]:
            with tf.compat.v1.Session(graph=g) as sess:
                sess.run(tf.compat.v1.global_variables_initializer())
                gd = tf.compat.v1.graph_util.convert_variables_to_constants(sess, g.as_graph_def(), ["out"])
        else:
            gd = g.as_graph_def()
    return gd, b


def run(gd, feeds):
    g = tf.Graph()
    with g.as_default():
        tf.compat.v1.import_graph_def(gd, name="")
        names = {n.name for n in gd.node}
        feed = {k: v for k, v in feeds.items() if k.split(":")[0] in names}
        with tf.compat.v1.Session(graph=g) as s:
            return s.run("out:0", feed)


@settings(**SETTINGS)
@given(networks())
def test_random_stacks_fold_and_compute_the_same(spec):
    gd, b = build_graph_def(spec)
    x = np.random.default_rng(spec["seed"] + 1).normal(size=(spec["batch"], spec["hw"], spec["hw"], spec["cin"]))
    feeds = {"x:0": x.astype(np.float32)}
    if spec["flag"]:
        feeds["phase:0"] = False
    ref = run(gd, feeds)

    folded = bnconvert.fold(gd, outputs=["out:0"])
    ops = {n.op for n in folded.graph_def.node}
    assert not ops & LEFTOVER_OPS, (ops & LEFTOVER_OPS, spec)
    bn = folded.report.bn
    assert bn["found"] == b.bns, (bn, spec)
    assert bn["refused"] == 0, (folded.report.layers, spec)
    assert bn["folded"] + bn["scale_shift"] == b.bns, (bn, spec)
    assert bn["scale_shift"] == b.expected_scale_shift, (folded.report.layers, spec)
    if spec["flag"]:
        assert folded.report.inputs == ["x:0"]
    got = run(folded.graph_def, feeds)
    assert got.shape == ref.shape
    tol = 1e-5 * float(np.max(np.abs(ref))) + 1e-6
    err = float(np.max(np.abs(got.astype(np.float64) - ref)))
    assert err <= tol, (err, tol, spec, folded.report.layers)


# ------------------------------------------------------------------ byte mutations
FUZZ_FIXTURES = ("fused_v3_conv.pb", "decomp_gamma_beta_conv.pb", "contrib_fused_dense.pb")
MUTANTS_PER_FIXTURE = 40
SECONDS_PER_RUN = 20


def mutate(data: bytes, rng: np.random.Generator) -> bytes:
    b = bytearray(data)
    for _ in range(int(rng.integers(1, 4))):
        op = rng.integers(0, 4)
        i = int(rng.integers(0, max(1, len(b))))
        if op == 0 and b:  # flip bits
            b[i % len(b)] ^= int(rng.integers(1, 256))
        elif op == 1:  # insert bytes
            b[i:i] = bytes(rng.integers(0, 256, int(rng.integers(1, 9)), dtype=np.uint8))
        elif op == 2 and b:  # delete a run
            del b[i:i + int(rng.integers(1, 9))]
        elif b:  # overwrite with a "special" value (length/varint edge cases)
            b[i % len(b)] = int(rng.choice([0x00, 0x7F, 0x80, 0xFF]))
    return bytes(b)


def fuzz_fixtures():
    found = [f for f in FUZZ_FIXTURES if os.path.exists(os.path.join(FIXTURES, f))]
    if not found:
        pytest.skip("no fixture graphs to mutate")
    return found


def test_mutated_fixtures_fail_cleanly_or_convert(tmp_path):
    rng = np.random.default_rng(1234)
    crashes, outcomes = [], {"ok": 0, "error": 0}
    for name in fuzz_fixtures():
        with open(os.path.join(FIXTURES, name), "rb") as f:
            data = f.read()
        for i in range(MUTANTS_PER_FIXTURE):
            mutant = mutate(data, rng)
            path = tmp_path / f"{name[:-3]}_{i}.pb"
            path.write_bytes(mutant)
            try:
                with time_limit(SECONDS_PER_RUN):
                    folded = bnconvert.fold(str(path))
                assert not {n.op for n in folded.graph_def.node} & LEFTOVER_OPS - {"Rsqrt"}
                outcomes["ok"] += 1
            except BNConvertError as e:
                assert "\n" not in str(e)
                outcomes["error"] += 1
            except Exception as e:  # noqa: BLE001 - any other exception is a bug
                keep = tmp_path / f"crash_{len(crashes)}.pb"
                keep.write_bytes(mutant)
                crashes.append(f"{path.name}: {type(e).__name__}: {str(e)[:200]}")
    assert not crashes, "\n".join(crashes)
    assert outcomes["ok"] and outcomes["error"], outcomes


def mutate_structure(gd, rng):
    """Edit a parsed GraphDef the way a hand edit or a buggy exporter might: rewire or drop an
    input, change an attribute (types, strings, shapes, constant bytes), rename an op."""
    from tensorflow.core.framework import graph_pb2

    out = graph_pb2.GraphDef()
    out.CopyFrom(gd)
    nodes = list(out.node)
    pick = lambda seq: seq[int(rng.integers(len(seq)))]  # noqa: E731
    for _ in range(int(rng.integers(1, 3))):
        n = pick(nodes)
        k = int(rng.integers(0, 7))
        if k == 0 and n.input:
            n.input[int(rng.integers(len(n.input)))] = pick(nodes).name + str(rng.choice(["", ":1", ":2"]))
        elif k == 1 and n.attr:
            a = n.attr[pick(sorted(n.attr))]
            kind = a.WhichOneof("value")
            if kind == "type":
                a.type = int(rng.choice([0, 1, 2, 3, 10, 14, 19, 7, 101]))
            elif kind == "s":
                a.s = bytes(rng.choice([b"NCHW", b"NHWC", b"VALID", b"", b"XYZ"]))
            elif kind == "f":
                a.f = float(rng.choice([0.0, -1.0, np.nan, np.inf, 1e30]))
            elif kind == "b":
                a.b = not a.b
            elif kind == "list" and a.list.i:
                a.list.i[int(rng.integers(len(a.list.i)))] = int(rng.choice([0, -1, 2, 99]))
            elif kind == "shape" and a.shape.dim:
                a.shape.dim[int(rng.integers(len(a.shape.dim)))].size = int(rng.choice([-1, 0, 7]))
            elif kind == "tensor":
                t = a.tensor
                if t.tensor_shape.dim and rng.random() < 0.5:
                    t.tensor_shape.dim[int(rng.integers(len(t.tensor_shape.dim)))].size = int(rng.choice([0, 1, 3, -1]))
                elif t.tensor_content:
                    b = bytearray(t.tensor_content)
                    b[int(rng.integers(len(b)))] ^= 0xFF
                    t.tensor_content = bytes(b[: len(b) - int(rng.integers(0, 2)) * 4])
                else:
                    t.dtype = int(rng.choice([0, 2, 3, 19]))
        elif k == 2:
            n.op = pick(nodes).op
        elif k == 3 and n.input:
            del n.input[int(rng.integers(len(n.input)))]
        elif k == 4:
            n.input.append(pick(nodes).name)
        elif k == 5 and n.attr:
            del n.attr[pick(sorted(n.attr))]
        else:
            n.input.append("^" + pick(nodes).name)
    return out


STRUCTURE_FIXTURES = ("fused_v3_conv.pb", "decomp_gamma_beta_conv.pb", "contrib_fused_dense.pb", "depthwise_fused.pb",
                      "conv_transpose_fused.pb", "bnwgn_conv.pb", "shared_weights.pb", "bn_after_relu.pb")


def test_structurally_mutated_graphs_fail_cleanly_or_fold(tmp_path):
    """Parsed-then-edited GraphDefs reach matching and folding (byte mutations mostly stop at
    parsing): each must fold or raise a BNConvertError, within the time limit."""
    from tensorflow.core.framework import graph_pb2

    rng = np.random.default_rng(2)
    crashes, outcomes = [], {"ok": 0, "error": 0}
    found = [f for f in STRUCTURE_FIXTURES if os.path.exists(os.path.join(FIXTURES, f))]
    if not found:
        pytest.skip("no fixture graphs to mutate")
    for name in found:
        gd = graph_pb2.GraphDef()
        with open(os.path.join(FIXTURES, name), "rb") as f:
            gd.ParseFromString(f.read())
        for i in range(120):
            mutant = mutate_structure(gd, rng)
            try:
                with time_limit(SECONDS_PER_RUN), np.errstate(all="ignore"):
                    bnconvert.fold(mutant)
                outcomes["ok"] += 1
            except BNConvertError as e:
                assert "\n" not in str(e)
                outcomes["error"] += 1
            except Exception as e:  # noqa: BLE001 - any other exception (or a hang) is a bug
                keep = tmp_path / f"crash_{name[:-3]}_{i}.pb"
                keep.write_bytes(mutant.SerializeToString())
                crashes.append(f"{keep}: {type(e).__name__}: {str(e)[:200]}")
    assert not crashes, "\n".join(crashes)
    assert outcomes["ok"] and outcomes["error"], outcomes


def test_mutated_fixtures_through_the_cli(tmp_path):
    """A few mutants through the real CLI (full conversion and verification): exit 0, 1 or 2."""
    from _cli import run_batch

    rng = np.random.default_rng(99)
    jobs = []
    for k, name in enumerate(fuzz_fixtures()):
        with open(os.path.join(FIXTURES, name), "rb") as f:
            data = f.read()
        path = tmp_path / f"m{k}.pb"
        path.write_bytes(mutate(data, rng))
        out = tmp_path / f"out{k}"
        out.mkdir()
        jobs.append((path, out))
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "TF_USE_LEGACY_KERAS": "1"}
    # one process runs them all, one after the other (tests/_cli.py): a hang or a crash of the
    # command leaves the cases from there on without a result
    batch = run_batch([{"name": path.name, "argv": ["fold", str(path), "-o", str(out)]} for path, out in jobs],
                      env=env, cwd=ROOT, timeout=90 * len(jobs))
    procs = [batch[path.name] for path, _ in jobs]
    for (path, out), proc in zip(jobs, procs):
        assert proc.returncode is not None, f"{path.name}: hung or crashed: {proc.stderr}"
        assert proc.returncode in (0, 1, 2), (path.name, proc.returncode, proc.stderr)
        assert "Traceback" not in proc.stderr
        if proc.returncode == 2:
            assert len(proc.stderr.splitlines()) == 1, proc.stderr
            assert os.listdir(out) == []
        assert not [f for f in os.listdir(out) if f.startswith(".bnconvert-")]
