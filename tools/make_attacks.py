#!/usr/bin/env python
"""Write bnconvert's attack corpus (issue 14) into a folder: model files a hostile author would send.

    python tools/make_attacks.py OUTDIR [--list]

Beside tools/make_bad_inputs.py (broken files), these are files built to make bnconvert *do*
something: run the author's ops at load (a ``SaveV2`` chained into ``save/restore_all``, a
SavedModel ``main_op`` that writes a file), block forever (named pipes, an empty queue), eat
memory (a 1 KB constant declaring terabytes, an .npz header declaring 10^12 floats, ``--batch
100000000``), crash TensorFlow (a library function that calls itself), escape the folder (a
``checkpoint`` file naming another folder) — plus the input-side rough edges (empty
``checkpoint`` file, duplicated ``--outputs``, ``-o /proc``, a file name that is not UTF-8).

OUTDIR receives the files plus ``cases.json``: a list of ``{"name", "args", "input", "exit",
"expect", "bomb", "why"}``.  ``args`` are the arguments after ``bnconvert`` (``{dir}`` stands
for OUTDIR, ``{out}`` for an output folder the caller creates), ``input`` the path whose bytes
must stay unchanged (null for a pipe or a missing path), ``exit`` the expected exit code,
``expect`` strings the single error line must contain (exit 0: none), ``bomb`` whether peak
memory is the point.  Every hostile write in the corpus targets ``OUTDIR/written_by_model*`` or
the checkpoint's own files, so "nothing written" is checked by listing OUTDIR and hashing inputs.  Non-UTF-8 names are stored in cases.json with
Python's surrogateescape (``os.fsencode`` gives back the bytes).

Deterministic; every file is small (the largest is a ~70 KB .meta).
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

C = 4
WRITTEN = "written_by_model"  # every hostile write targets OUTDIR/written_by_model*


def _tf():
    import tensorflow as tf

    return tf


def _bn_graph(use_resource: bool = False, unknown_dims: bool = False):
    """x → MatMul(w) → FusedBatchNormV3 (params are variables) → out; returns (graph, x, out)."""
    tf = _tf()
    rng = np.random.default_rng(0)
    g = tf.Graph()
    with g.as_default():
        x = tf.compat.v1.placeholder(tf.float32, [None, None, None, 3] if unknown_dims else [1, 4, 4, 3], name="x")
        var = lambda name, v: tf.compat.v1.get_variable(name, initializer=v.astype(np.float32),  # noqa: E731
                                                        use_resource=use_resource)
        w = var("conv/weights", rng.normal(size=(3, 3, 3, C)))
        y = tf.nn.conv2d(x, w, 1, "SAME", name="conv/Conv2D")
        z, _, _ = tf.compat.v1.nn.fused_batch_norm(
            y, var("bn/gamma", rng.uniform(0.5, 1.5, C)), var("bn/beta", rng.normal(size=C)),
            mean=var("bn/moving_mean", rng.normal(size=C)), variance=var("bn/moving_variance", rng.uniform(0.5, 2, C)),
            epsilon=1e-3, is_training=False, name="bn/FusedBatchNormV3")
        out = tf.nn.relu(z, name="out")
    return g, x, out


def _save_checkpoint(folder: str, use_resource: bool = False, var_list_filter=None) -> str:
    tf = _tf()
    os.makedirs(folder, exist_ok=True)
    g, _, _ = _bn_graph(use_resource)
    with g.as_default():
        variables = tf.compat.v1.global_variables()
        if var_list_filter:
            variables = [v for v in variables if var_list_filter(v.op.name)]
        saver = tf.compat.v1.train.Saver(variables)
        with tf.compat.v1.Session(graph=g) as s:
            s.run(tf.compat.v1.global_variables_initializer())
            saver.save(s, os.path.join(folder, "model"))
    return os.path.join(folder, "model.meta")


def _meta(path: str):
    from tensorflow.core.protobuf import meta_graph_pb2

    m = meta_graph_pb2.MetaGraphDef()
    with open(path, "rb") as f:
        m.ParseFromString(f.read())
    return m


def _write_meta(path: str, meta) -> None:
    with open(path, "wb") as f:
        f.write(meta.SerializeToString())


def _evil_saver(meta_path: str, target_prefix: str, name: str = "save/evil") -> None:
    """Add ``name`` (a SaveV2 of every variable to ``target_prefix``) to ``save/restore_all``."""
    tf = _tf()
    meta = _meta(meta_path)
    gd = meta.graph_def
    tensors = [n.name for n in gd.node if n.op == "VariableV2"]
    g = tf.Graph()
    with g.as_default():
        tf.constant(target_prefix, name=f"{name}/filename")
        tf.constant(tensors, name=f"{name}/tensor_names")
        tf.constant([""] * len(tensors), name=f"{name}/shape_and_slices")
    gd.node.extend(g.as_graph_def().node)
    node = gd.node.add()
    node.name, node.op = name, "SaveV2"
    node.input.extend([f"{name}/filename", f"{name}/tensor_names", f"{name}/shape_and_slices"] + tensors)
    node.attr["dtypes"].list.type.extend([1] * len(tensors))
    restore = next(n for n in gd.node if n.name == meta.saver_def.restore_op_name.split(":")[0])
    restore.input.append("^" + name)
    _write_meta(meta_path, meta)


def _saved_model(folder: str, target: str, as_text: bool) -> None:
    """A TF1 SavedModel whose ``main_op`` writes ``target`` (the loader would run it)."""
    tf = _tf()
    g, x, out = _bn_graph()
    with g.as_default(), tf.compat.v1.Session(graph=g) as s:
        s.run(tf.compat.v1.global_variables_initializer())
        main_op = tf.group(tf.io.write_file(target, "written by main_op", name="evil_write"), name="evil_main_op")
        b = tf.compat.v1.saved_model.Builder(folder)
        sig = tf.compat.v1.saved_model.predict_signature_def(inputs={"x": x}, outputs={"out": out})
        b.add_meta_graph_and_variables(s, ["serve"], signature_def_map={"serving_default": sig}, main_op=main_op)
        b.save(as_text=as_text)


def _graph_with(builder) -> bytes:
    tf = _tf()
    g = tf.Graph()
    with g.as_default():
        builder(tf)
    return g.as_graph_def().SerializeToString()


def _const_bomb(dims: list[int], dtype: int = 1, string: bytes | None = None) -> bytes:
    """The valid conv→BN graph plus ``bomb``: one value repeated to a huge declared shape, added
    to ``out`` so it lies on the output path."""
    from make_bad_inputs import conv_bn_graph

    gd = conv_bn_graph()
    n = gd.node.add()
    n.name, n.op = "bomb", "Const"
    n.attr["dtype"].type = dtype
    t = n.attr["value"].tensor
    t.dtype = dtype
    for d in dims:
        t.tensor_shape.dim.add().size = d
    if string is not None:
        t.string_val.append(string)
    else:
        t.float_val.append(1.0)
    return gd.SerializeToString()


def _recursive_library(cycle: list[str]) -> bytes:
    """x → out = cycle[0](x); each function calls the next, the last calls the first."""
    from tensorflow.core.framework import graph_pb2

    gd = graph_pb2.GraphDef()
    x = gd.node.add()
    x.name, x.op = "x", "Placeholder"
    x.attr["dtype"].type = 1
    out = gd.node.add()
    out.name, out.op = "out", cycle[0]
    out.input.append("x")
    for i, name in enumerate(cycle):
        f = gd.library.function.add()
        f.signature.name = name
        a = f.signature.input_arg.add()
        a.name, a.type = "a", 1
        r = f.signature.output_arg.add()
        r.name, r.type = "r", 1
        call = f.node_def.add()
        call.name, call.op = "call", cycle[(i + 1) % len(cycle)]
        call.input.append("a")
        f.ret["r"] = "call:r:0"
    return gd.SerializeToString()


def _deep_pbtxt(depth: int) -> bytes:
    """A GraphDef text nesting AttrValue.func → NameAttrList.attr ``depth`` levels deep."""
    head = 'node { name: "x" op: "Placeholder" attr { key: "dtype" value { type: DT_FLOAT } } attr { key: "deep" value '
    inner = "{ func { name: \"f\" attr { key: \"a\" value " * depth + "{ i: 1 }" + " } }" * depth
    return (head + inner + " } }\n").encode()


def _deep_binary(depth: int) -> bytes:
    """The same nesting in binary: AttrValue(func=NameAttrList(attr={"a": AttrValue(...)}))."""
    def varint(n: int) -> bytes:
        out = b""
        while True:
            b, n = n & 0x7F, n >> 7
            out += bytes([b | (0x80 if n else 0)])
            if not n:
                return out

    def field(num: int, payload: bytes) -> bytes:
        return varint(num << 3 | 2) + varint(len(payload)) + payload

    value = varint(3 << 3) + varint(1)  # AttrValue{i: 1}
    for _ in range(depth):
        entry = field(1, b"a") + field(2, value)  # map entry {key, value}
        name_attr_list = field(1, b"f") + field(2, entry)
        value = field(10, name_attr_list)  # AttrValue.func = 10
    attr_entry = field(1, b"deep") + field(2, value)
    node = field(1, b"x") + field(2, b"Placeholder") + field(5, attr_entry)
    return field(1, node)


def _npz_header_bomb(path: str, count: int) -> None:
    """An .npz whose x.npy header declares ``count`` float32 values (holding 16 bytes of data)."""
    import zipfile

    header = {"descr": "<f4", "fortran_order": False, "shape": (count,)}
    import io

    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, header)
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("x.npy", np.lib.format.magic(1, 0) + buf.getvalue()[8:] + b"\0" * 16)


def write_corpus(folder: str) -> list[dict]:
    """Write every case into ``folder`` (created); returns the manifest, also in cases.json."""
    from make_bad_inputs import conv_bn_graph

    tf = _tf()
    folder = os.path.abspath(folder)
    os.makedirs(folder, exist_ok=True)
    d = lambda *p: os.path.join(folder, *p)  # noqa: E731
    target = d(WRITTEN)
    cases: list[dict] = []

    def case(name, args, input_path, exit_code, expect, why, bomb=False, inproc=False):
        cases.append({"name": name, "args": args, "input": input_path, "exit": exit_code, "expect": expect,
                      "bomb": bomb, "inproc": inproc, "why": why})

    def write(name, data: bytes) -> str:
        with open(d(name), "wb") as f:
            f.write(data)
        return d(name)

    valid = write("valid.pb", conv_bn_graph().SerializeToString())

    # ---- 1. load executes nothing from the file
    meta = _save_checkpoint(d("ckpt_evil_saver"))
    _evil_saver(meta, target + "_ckpt")
    _evil_saver(meta, d("ckpt_evil_saver", "model"), name="save/evil_self")
    case("ckpt_evil_saver_fold", ["fold", d("ckpt_evil_saver"), "-o", "{out}", "--to", "pb"], meta, 0, [],
         "SaveV2 'save/evil' (to OUTDIR/written_by_model_ckpt) and 'save/evil_self' (to the checkpoint's own "
         "prefix: it would rewrite model.index/data) chained into save/restore_all; folded and verified")
    case("ckpt_evil_saver_inspect", ["inspect", meta], d("ckpt_evil_saver", "model.index"), 0, [],
         "the same checkpoint through inspect", inproc=True)
    _saved_model(d("sm_pbtxt_main_op"), target + "_pbtxt", as_text=True)
    case("savedmodel_pbtxt_main_op", ["inspect", d("sm_pbtxt_main_op")], d("sm_pbtxt_main_op", "saved_model.pbtxt"),
         0, [], "saved_model.pbtxt whose main_op is a WriteFile")
    _saved_model(d("sm_pb_main_op"), target + "_pb", as_text=False)
    case("savedmodel_pb_main_op_fold", ["fold", d("sm_pb_main_op"), "-o", "{out}", "--to", "pb"], d("sm_pb_main_op", "saved_model.pb"),
         0, [], "saved_model.pb whose main_op is a WriteFile, folded and verified")
    meta = _save_checkpoint(d("ckpt_resource"), use_resource=True)
    case("ckpt_resource_variables", ["fold", meta, "-o", "{out}", "--to", "pb"], meta, 0, [],
         "resource variables (VarHandleOp + ReadVariableOp) frozen from the bundle", inproc=True)
    meta = _save_checkpoint(d("ckpt_missing_var"), var_list_filter=lambda n: n != "bn/gamma")
    case("ckpt_variable_not_saved", ["inspect", meta], meta, 2, ["bn/gamma", "no value in the checkpoint"],
         "the saver leaves bn/gamma out: its value cannot be read, so refuse (never run its initializer)", inproc=True)
    meta = _save_checkpoint(d("ckpt_shape"))
    m = _meta(meta)
    node = next(n for n in m.graph_def.node if n.name == "bn/beta")
    node.attr["shape"].shape.dim[0].size = C + 1
    _write_meta(meta, m)
    case("ckpt_shape_mismatch", ["inspect", meta], meta, 2, ["bn/beta", "shape"],
         "the graph declares bn/beta with 5 values, the checkpoint holds 4", inproc=True)
    os.makedirs(d("ckpt_escape"), exist_ok=True)
    _save_checkpoint(d("elsewhere"))
    with open(d("ckpt_escape", "checkpoint"), "w") as f:
        f.write(f'model_checkpoint_path: "{d("elsewhere", "model")}"\n')
    case("ckpt_points_elsewhere", ["inspect", d("ckpt_escape")], d("ckpt_escape", "checkpoint"), 2,
         ["model.meta missing"], "the checkpoint file names an absolute path in another folder: not followed", inproc=True)
    _save_checkpoint(d("ckpt_empty_state"))
    open(d("ckpt_empty_state", "checkpoint"), "w").close()
    case("ckpt_empty_checkpoint_file", ["inspect", d("ckpt_empty_state")], d("ckpt_empty_state", "checkpoint"), 2,
         ["checkpoint", "empty"], "an empty checkpoint file")
    _save_checkpoint(d("ckpt_garbage_state"))
    with open(d("ckpt_garbage_state", "checkpoint"), "wb") as f:
        f.write(b"\x00\xff garbage {{{\n")
    case("ckpt_garbage_checkpoint_file", ["inspect", d("ckpt_garbage_state")], d("ckpt_garbage_state", "checkpoint"),
         2, ["checkpoint"], "a checkpoint file that is not a CheckpointState", inproc=True)
    _save_checkpoint(d("ckpt_fifo_index"))
    os.remove(d("ckpt_fifo_index", "model.index"))
    os.mkfifo(d("ckpt_fifo_index", "model.index"))
    case("ckpt_index_is_a_fifo", ["inspect", d("ckpt_fifo_index")], None, 2, ["model.index", "named pipe"],
         "model.index is a named pipe (reading it would block forever)")
    _save_checkpoint(d("ckpt_fifo_state"))
    os.remove(d("ckpt_fifo_state", "checkpoint"))
    os.mkfifo(d("ckpt_fifo_state", "checkpoint"))
    case("ckpt_checkpoint_is_a_fifo", ["inspect", d("ckpt_fifo_state")], None, 2, ["checkpoint", "named pipe"],
         "the checkpoint file is a named pipe")
    _save_checkpoint(d("ckpt_dev_data"))
    data = next(f for f in os.listdir(d("ckpt_dev_data")) if ".data-" in f)
    os.remove(d("ckpt_dev_data", data))
    os.symlink("/dev/zero", d("ckpt_dev_data", data))
    case("ckpt_data_is_dev_zero", ["inspect", d("ckpt_dev_data", "model.meta")], None, 2, ["device"],
         "the variables' data file is a symlink to /dev/zero")
    case("model_is_dev_zero", ["inspect", "/dev/zero"], None, 2, ["/dev/zero", "device"], "the model is /dev/zero")

    # ---- 2. execution allows what is safe
    def queue(tf):
        x = tf.compat.v1.placeholder(tf.float32, [1, 4], name="x")
        q = tf.queue.FIFOQueue(4, [tf.float32], shapes=[[1, 4]], name="q")
        tf.identity(x + q.dequeue(name="dequeue"), name="out")
    p = write("queue_dequeue.pb", _graph_with(queue))
    case("empty_queue_dequeue", ["fold", p, "-o", "{out}"], p, 2, ["FIFOQueueV2", "QueueDequeueV2", "--allow-unsafe-ops"],
         "a dequeue from an empty queue on the output path (would block forever)")

    def pyfunc(tf):
        x = tf.compat.v1.placeholder(tf.float32, [2], name="x")
        tf.identity(tf.compat.v1.py_func(lambda a: a, [x], tf.float32, name="callback"), name="out")
    p = write("py_func.pb", _graph_with(pyfunc))
    case("py_func", ["fold", p, "-o", "{out}"], p, 2, ["PyFunc", "'callback'", "Python"],
         "a Python callback on the output path", inproc=True)

    def variable_op(tf):
        x = tf.compat.v1.placeholder(tf.float32, [2], name="x")
        v = tf.compat.v1.Variable(np.ones(2, np.float32), name="state", use_resource=True)
        tf.identity(x + v.read_value(), name="out")
    p = write("resource_variable.pb", _graph_with(variable_op))
    case("unfrozen_resource_variable", ["fold", p, "-o", "{out}"], p, 2, ["VarHandleOp", "'state'"],
         "a resource variable (state) left in a .pb", inproc=True)
    p = write("recursive_function.pb", _recursive_library(["f"]))
    case("function_calls_itself", ["inspect", p], p, 2, ["'f'", "calls itself"],
         "a library function that calls itself (TensorFlow segfaults importing it)", inproc=True)
    p = write("mutual_recursion.pb", _recursive_library(["f", "g", "h"]))
    case("functions_call_each_other", ["inspect", p], p, 2, ["calls itself", "f -> g -> h -> f"],
         "f calls g calls h calls f")

    # ---- 3. budgets before decoding
    p = write("const_bomb.pb", _const_bomb([1 << 20, 1 << 20]))
    case("const_bomb_inspect", ["inspect", p], p, 2, ["'bomb'", "memory budget"],
         f"a {os.path.getsize(p)}-byte .pb declaring a 4 TiB float constant", bomb=True, inproc=True)
    case("const_bomb_fold", ["fold", p, "-o", "{out}"], p, 2, ["'bomb'", "memory budget"],
         "the same bomb through fold", bomb=True)
    p = write("string_bomb.pb", _const_bomb([1 << 30], dtype=7, string=b"x" * 1000))
    case("string_const_bomb", ["inspect", p], p, 2, ["'bomb'", "memory budget"],
         "one 1000-byte string repeated 2^30 times", bomb=True)
    p = write("small_over_budget.pb", _const_bomb([64, 1024, 1024]))
    case("const_over_max_memory", ["inspect", p, "--max-memory", "100M"], p, 2, ["'bomb'", "100.0 MiB"],
         "a 256 MiB constant under --max-memory 100M", inproc=True)
    p = write("deep.pbtxt", _deep_pbtxt(20000))
    case("pbtxt_nested_20000_deep", ["inspect", p], p, 2, [p, "deep"], "a .pbtxt nested 20,000 levels deep")
    p = write("deep.pb", _deep_binary(20000))
    case("pb_nested_20000_deep", ["inspect", p], p, 2, [p], "a binary .pb nested 20,000 levels deep", inproc=True)
    p = d("npz_bomb.npz")
    _npz_header_bomb(p, 10 ** 12)
    case("npz_header_bomb", ["fold", valid, "-o", "{out}", "--data", p], p, 2, [p, "memory budget"],
         "--data whose x.npy header declares 10^12 floats", bomb=True)
    open_shape = write("open_shape.pb", _graph_with(lambda tf: tf.nn.relu(
        tf.compat.v1.placeholder(tf.float32, [None, None, None, 3], name="x"), name="out")))
    batch_graph = write("open_batch.pb", conv_bn_open_batch())
    case("batch_huge", ["fold", batch_graph, "-o", "{out}", "--batch", "100000000"], batch_graph, 2,
         ["x:0", "memory budget"], "--batch 100000000 (a 77 GB input)", bomb=True)
    case("batch_zero", ["fold", batch_graph, "-o", "{out}", "--batch", "0"], batch_graph, 2, ["--batch"], "--batch 0")
    case("batch_negative", ["fold", batch_graph, "-o", "{out}", "--batch", "-3"], batch_graph, 2, ["--batch"],
         "--batch -3")
    case("input_shape_huge", ["fold", open_shape, "-o", "{out}", "--input-shape", "x=1,100000,100000,3"], open_shape, 2,
         ["x:0", "memory budget"], "--input-shape asking for a 120 GB input", bomb=True)

    # ---- 6. input-side rough edges
    case("outputs_duplicated", ["fold", valid, "-o", "{out}", "--outputs", "out:0,out:0,out", "--to", "pb"], valid, 0,
         [], "--outputs naming one tensor three times is deduplicated", inproc=True)
    case("outdir_proc", ["fold", valid, "-o", "/proc"], valid, 2, ["/proc"], "-o /proc (cannot be written)")
    odd = os.fsdecode(os.path.join(os.fsencode(folder), b"m\xff.pb"))
    with open(os.fsencode(odd), "wb") as f:
        f.write(conv_bn_graph().SerializeToString())
    case("non_utf8_file_name", ["fold", odd, "-o", "{out}"], odd, 0, [], "a model named b'm\\xff.pb'")
    del tf

    names = [c["name"] for c in cases]
    assert len(names) == len(set(names)), names
    with open(d("cases.json"), "w") as f:
        json.dump(cases, f, indent=1)
    return cases


def conv_bn_open_batch() -> bytes:
    """The conv→BN graph with the batch dimension left open ([None, 8, 8, 3])."""
    from make_bad_inputs import conv_bn_graph

    gd = conv_bn_graph()
    x = next(n for n in gd.node if n.name == "x")
    x.attr["shape"].shape.dim[0].size = -1
    return gd.SerializeToString()


def case_names() -> list[str]:
    """The names write_corpus produces, without building anything (for test parametrization)."""
    return list(CASE_NAMES)


CASE_NAMES = (
    "ckpt_evil_saver_fold", "ckpt_evil_saver_inspect", "savedmodel_pbtxt_main_op",
    "savedmodel_pb_main_op_fold", "ckpt_resource_variables", "ckpt_variable_not_saved", "ckpt_shape_mismatch",
    "ckpt_points_elsewhere", "ckpt_empty_checkpoint_file", "ckpt_garbage_checkpoint_file", "ckpt_index_is_a_fifo",
    "ckpt_checkpoint_is_a_fifo", "ckpt_data_is_dev_zero", "model_is_dev_zero", "empty_queue_dequeue", "py_func",
    "unfrozen_resource_variable", "function_calls_itself", "functions_call_each_other", "const_bomb_inspect",
    "const_bomb_fold", "string_const_bomb", "const_over_max_memory", "pbtxt_nested_20000_deep",
    "pb_nested_20000_deep", "npz_header_bomb", "batch_huge", "batch_zero", "batch_negative", "input_shape_huge",
    "outputs_duplicated", "outdir_proc", "non_utf8_file_name",
)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("outdir")
    ap.add_argument("--list", action="store_true", help="print the cases written")
    args = ap.parse_args(argv)
    cases = write_corpus(args.outdir)
    assert tuple(c["name"] for c in cases) == CASE_NAMES
    if args.list:
        for c in cases:
            print(f"{c['name']:32s} exit {c['exit']}  {c['why']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
