"""Run a graph or model on one runtime and return its outputs keyed by TF tensor names.

- :func:`run_tf`: the GraphDef in a fresh ``tf.compat.v1`` graph on CPU (refuses unsafe ops).
- :func:`run_onnx`: onnxruntime, CPU or CUDA (TF32 off). Needs numpy + onnxruntime only.
- :func:`run_tflite`: the TFLite interpreter (``ai_edge_litert`` if installed, else ``tf.lite``).

This module is the process boundary: each public ``run_*`` runs its runtime in a child process
(:mod:`bnconvert.isolate`), so a runtime that crashes or hangs on a hostile graph becomes one
line, and its memory is returned when it ends.  The ``*_here`` functions do the work in the
calling process (the child calls them).  ``run_onnx`` with a ``session`` runs in-process.

TensorFlow is imported only inside ``run_tf`` / ``run_tflite``.
"""
from __future__ import annotations

import contextlib
import importlib
import os
import re
import warnings

import numpy as np

from bnconvert.errors import BNConvertError, GraphError, InputError
from bnconvert.safety import check_safe

#: ``provider`` argument → onnxruntime provider name
ONNX_PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}
#: provider options bnconvert always sets (TF32 is ~1e-3 relative: see docs/GPU.md)
CUDA_OPTIONS = {"use_tf32": "0"}


def _one_line(e: BaseException, limit: int = 500) -> str:
    """The whole message on one line (a runtime's decisive part, "Got: 1 Expected: 4", is often on
    its second line); cut at ``limit`` characters unless ``--debug`` (root logging at INFO)."""
    import logging

    text = " ".join(ln.strip() for ln in str(e).splitlines() if ln.strip()) or type(e).__name__
    if logging.getLogger().isEnabledFor(logging.INFO):
        return text
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _utf8(path: str) -> bool:
    try:
        path.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


def _strip0(name: str) -> str:
    return name[:-2] if name.endswith(":0") else name


def match_names(wanted: list[str], available: list[str], what: str, by_order: bool = True
                ) -> tuple[dict[str, str], str]:
    """Map TF tensor names to a runtime's tensor names.

    Tries, for each name: exact match; with ``":0"`` stripped or added; with a
    ``serving_default_`` prefix removed from the runtime names. If any name stays unmatched,
    ``by_order`` is set and the counts agree, falls back to position (the order given at
    export). Returns the mapping and how it was made ("name" or "order").
    """
    def norm(n: str) -> str:
        n = re.sub(r"^serving_default_", "", n)
        return _strip0(n)

    by_norm: dict[str, list[str]] = {}
    for a in available:
        by_norm.setdefault(norm(a), []).append(a)
    mapping = {}
    for w in wanted:
        if w in available:
            mapping[w] = w
        elif len(by_norm.get(norm(w), [])) == 1:
            mapping[w] = by_norm[norm(w)][0]
    if len(mapping) == len(wanted) and len(set(mapping.values())) == len(wanted):
        return mapping, "name"
    if by_order and len(wanted) == len(available):
        return dict(zip(wanted, available)), "order"
    missing = [w for w in wanted if w not in mapping]
    raise InputError(f"{what} has no tensor '{missing[0]}' (it has: {', '.join(available)})")


# ---------------------------------------------------------------------------- TensorFlow

def run_tf(graph, feeds: dict[str, np.ndarray], outputs: list[str], flags: dict[str, bool] | None = None,
           allow_unsafe: bool = False, what: str = "", stage: str = "TensorFlow") -> dict[str, np.ndarray]:
    """:func:`run_tf_here` in a child process: one run of :func:`run_tf_many`, nothing cut.
    ``graph``: a GraphDef, a :class:`~bnconvert.load.Model` or the path of a binary GraphDef
    (passed to the child as that file)."""
    results, _ = run_tf_many(graph, [feeds], outputs, flags=flags, allow_unsafe=allow_unsafe, what=what,
                             stage=stage, layer_rows=None)
    return results[0]


#: layer tensors (whatever is fetched besides the outputs) a runtime sends back for all runs
#: together, at most about this many bytes: beyond it they are kept for the first rows of each
#: run only (:func:`trim_rows`).  A ResNet-50 at 224x224 has ~300 MB of layer tensors per
#: sample: all of them, for 8 samples and four runtimes, took the parent to 2.3 GB.
LAYER_BYTES = 64 << 20


def trim_rows(got: dict, outputs, rows: int | None) -> dict:
    """``got`` with every tensor that is not an output cut to its first ``rows`` rows (dim 0).

    Every runtime cuts its layer tensors to the same ``rows`` of each run (the reference's
    choice), so the rows compared are the same samples everywhere."""
    if rows is None:
        return got
    outs = set(outputs)
    return {k: (v if k in outs or np.ndim(v) == 0 or np.shape(v)[0] <= rows else np.array(v[:rows]))
            for k, v in got.items()}


def run_tf_many(graph, runs: list[dict], outputs: list[str], flags: dict[str, bool] | None = None,
                allow_unsafe: bool = False, what: str = "", stage: str = "TensorFlow",
                n_outputs: int | None = None, layer_rows: int | None | str = "auto",
                layer_budget: int = LAYER_BYTES, then: tuple[str, dict] | None = None, layer_head: bool = True):
    """Every feed dict of ``runs`` through one TensorFlow session, in one child process.

    ``outputs[:n_outputs]`` are the model's outputs (kept whole); the rest are layer tensors,
    cut to ``layer_rows`` rows per run ("auto": as many as ``layer_budget`` bytes allow for all
    runs, chosen on the first run).  Returns the per-run results and the rows used (None: all).
    ``layer_head``: whether cut layer tensors may come from a run of the first rows alone
    (:func:`run_tf_many_here`); False: from the whole run, then cut.
    ``then``: ``("module:function", kwargs)`` called afterwards on the same session as
    ``function(run, **kwargs)`` (the power check: no second import of the graph; ``runs=None``
    in ``kwargs`` stands for ``runs``); its result, or ``{"error": message}`` if it raised (any
    exception, out of memory included: the results of the runs still come back), is returned
    third."""
    from bnconvert import isolate

    if hasattr(graph, "node"):
        check_safe(graph, allow_unsafe=allow_unsafe, what=what)
    elif hasattr(graph, "graph_def"):
        check_safe(graph.graph_def, allow_unsafe=allow_unsafe, what=what)
    with isolate.graph_file(graph) as src:
        return isolate.run_stage(stage, "bnconvert.verify.runners:run_tf_many_here",
                                 dict(graph_def=src, runs=runs, outputs=list(outputs), flags=flags,
                                      allow_unsafe=allow_unsafe, what=what, n_outputs=n_outputs,
                                      layer_rows=layer_rows, layer_budget=layer_budget, then=then,
                                      layer_head=layer_head))


def run_tf_many_here(graph_def, runs: list[dict], outputs: list[str], flags: dict[str, bool] | None = None,
                     allow_unsafe: bool = False, what: str = "", n_outputs: int | None = None,
                     layer_rows: int | None | str = "auto", layer_budget: int = LAYER_BYTES,
                     then: tuple[str, dict] | None = None, layer_head: bool = True):
    """:func:`run_tf_many` in this process.

    The outputs are computed on each whole run.  The layer tensors, when the rows are cut, the
    graph's batch dimension is free and ``layer_head`` allows it, are computed on the run's
    first rows only (a second, smaller pass), so that this process never holds every layer of
    every sample: where the rows are independent they are the same values.  Where they are not
    (a mean over the batch, a BN left in training mode) they differ, so every runtime compared
    with these tensors must compute them the same way (``layer_head``: the same for all,
    :func:`bnconvert.verify.check.layer_head`)."""
    n = len(outputs) if n_outputs is None else n_outputs
    outs, layers = list(outputs[:n]), [t for t in outputs[n:] if t not in outputs[:n]]
    results = []
    with _tf_session(graph_def, allow_unsafe, what) as (run, free):
        for feeds in runs:
            got = run(feeds, outs, flags)
            if layers:
                can_cut = layer_head and free(feeds)
                sample = None
                if layer_rows == "auto":
                    sample = run(_head(feeds, 1), layers, flags) if can_cut else run(feeds, layers, flags)
                    per_row = sum(np.asarray(v).nbytes // max(1, np.shape(v)[0]) for v in sample.values() if np.ndim(v))
                    total = per_row * _rows(feeds) * len(runs)
                    layer_rows = None if total <= layer_budget else max(1, layer_budget // max(1, per_row * len(runs)))
                    if can_cut and layer_rows != 1:
                        sample = None  # computed on one row, more are kept: computed again below
                if sample is None:
                    sample = run(_head(feeds, layer_rows) if can_cut and layer_rows else feeds, layers, flags)
                got.update(trim_rows(sample, (), layer_rows))
            results.append(got)
        rows = None if layer_rows == "auto" else layer_rows
        if then is None:
            return results, rows
        run.reset()  # the check feeds other tensors: new executors, without the ones used so far
        module, func = then[0].split(":")
        kwargs = dict(then[1])
        if kwargs.get("runs") is None:  # the same inputs: not sent twice
            kwargs["runs"] = runs
        try:
            extra = getattr(importlib.import_module(module), func)(run, **kwargs)
        except BNConvertError as e:
            extra = {"error": str(e)}
        except MemoryError:
            from bnconvert.budget import over_budget

            extra = {"error": over_budget("it")}
        except Exception as e:  # noqa: BLE001 - what follows the runs never costs their results
            extra = {"error": f"{type(e).__name__}: {' '.join(str(e).split())[:200]}"}
        return results, rows, extra


def _rows(feeds: dict) -> int:
    return max([np.shape(v)[0] for v in feeds.values() if np.ndim(v)] or [1])


def _head(feeds: dict, rows: int) -> dict:
    return {k: (v[:rows] if np.ndim(v) and np.shape(v)[0] > rows else v) for k, v in feeds.items()}


@contextlib.contextmanager
def _tf_session(graph_def, allow_unsafe: bool, what: str):
    """``run(feeds, outputs, flags) -> {name: array}`` on one session of ``graph_def`` (CPU)."""
    check_safe(graph_def, allow_unsafe=allow_unsafe, what=what)
    from bnconvert.tfproto import tf as _tf

    tf = _tf()
    graph = tf.Graph()
    with graph.as_default():
        try:
            tf.compat.v1.import_graph_def(graph_def, name="")
        except Exception as e:  # noqa: BLE001 - TF raises ValueError, KeyError, InvalidArgumentError...
            raise GraphError(f"cannot import the graph into TensorFlow: {_one_line(e)}") from None

    def tensor(name: str):
        try:
            return graph.get_tensor_by_name(_tensor_name(name))
        except (KeyError, ValueError):
            raise InputError(f"tensor '{name}' is not in the graph") from None

    def free(feeds) -> bool:
        """Every fed tensor with a batch dimension leaves it unknown (a smaller batch can be fed)."""
        for k, v in feeds.items():
            if np.ndim(v):
                shape = tensor(k).shape
                if shape.rank is None or shape.rank != np.ndim(v) or shape[0] is not None:
                    return False
        return True

    config = tf.compat.v1.ConfigProto(device_count={"GPU": 0})
    # the graph runs as written: grappler's rewrites (constant folding, remapper fusions) are not
    # needed to run it and cost memory and time (ResNet-50, batch 8: 1.6 GB instead of 2.2 GB
    # for the child, first run 2.3 s instead of 3.7 s)
    config.graph_options.rewrite_options.disable_meta_optimizer = True
    state = {"sess": None}

    def run(feeds, outputs, flags=None):
        if state["sess"] is None:
            state["sess"] = tf.compat.v1.Session(graph=graph, config=config)
        feed_dict = {tensor(k): np.asarray(v) for k, v in feeds.items()}
        for k, v in (flags or {}).items():  # a training flag (bool) or a dropout parameter (number)
            t = tensor(k)
            value = np.asarray(v, dtype=t.dtype.as_numpy_dtype)
            if value.ndim == 0 and t.shape.rank:  # a keep_prob declared [1]: the report holds a scalar
                value = np.full([d if d is not None else 1 for d in t.shape.as_list()], value)
            feed_dict[t] = value
        fetches = [tensor(o) for o in outputs]
        try:
            values = state["sess"].run(fetches, feed_dict)
        except (tf.errors.OpError, ValueError) as e:
            _raise_run_error(tf, e)
        return {o: np.asarray(v) for o, v in zip(outputs, values)}

    def reset():
        """Close the session: each distinct feed/fetch signature it ran built an executor holding
        its own copy of the graph's constants.  The next ``run`` opens a fresh session on the
        same imported graph (no second import)."""
        if state["sess"] is not None:
            state["sess"].close()
            state["sess"] = None

    run.reset = reset
    try:
        yield run, free
    finally:
        reset()


def run_tf_here(graph_def, feeds: dict[str, np.ndarray], outputs: list[str], flags: dict[str, bool] | None = None,
                allow_unsafe: bool = False, what: str = "") -> dict[str, np.ndarray]:
    """Run ``graph_def`` on CPU, feeding ``feeds`` plus the training ``flags`` (name → bool).

    The graph is imported with ``name=""`` so tensor names are the GraphDef's own. Unsafe ops
    (see :mod:`bnconvert.safety`) raise :class:`UnsafeGraphError` unless ``allow_unsafe``.
    """
    with _tf_session(graph_def, allow_unsafe, what) as (run, _):
        return run(feeds, outputs, flags)


#: what TensorFlow says when an allocation fails (the stage child's data segment is capped by the
#: memory budget, bnconvert.isolate._limit_data): grappler's constant folding or a kernel
_ALLOCATION_FAILED = ("OOM when allocating", "Cannot parse tensor from proto", "bad_alloc", "Cannot allocate memory")


def _raise_run_error(tf, e):
    msg = str(e)
    if isinstance(e, tf.errors.ResourceExhaustedError) or any(s in msg for s in _ALLOCATION_FAILED):
        from bnconvert.budget import over_budget

        raise InputError(over_budget("running the graph", f"; at node {_failed_node(msg)}")) from None
    if isinstance(e, (tf.errors.InvalidArgumentError, ValueError)):
        raise InputError(f"TensorFlow could not run the graph: {_one_line(e)}") from None
    raise GraphError(f"TensorFlow could not run the graph: {_one_line(e)}") from None


def _failed_node(msg: str) -> str:
    m = re.search(r"node '?([^'\s\]]+)'?", msg)
    return m.group(1) if m else "?"


def _tensor_name(name: str) -> str:
    return name if re.search(r":\d+$", name) else f"{name}:0"


# ---------------------------------------------------------------------------- ONNX Runtime

_ORT_TYPES = {
    "tensor(float)": np.float32, "tensor(double)": np.float64, "tensor(float16)": np.float16,
    "tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(int16)": np.int16,
    "tensor(int8)": np.int8, "tensor(uint8)": np.uint8, "tensor(bool)": np.bool_,
}


def import_onnxruntime():
    """``import onnxruntime`` without its import-time warnings on stderr (a telemetry id it cannot
    persist where bnconvert keeps it from writing into HOME)."""
    import sys

    if sys.modules.get("onnxruntime") is not None:
        return sys.modules["onnxruntime"]
    from bnconvert.tfproto import quiet_fd2

    with quiet_fd2():
        import onnxruntime
    return onnxruntime


def _onnx_model_arg(model):
    """An ONNX model given as a path (checked to exist), bytes, or an ``onnx.ModelProto`` (serialized)."""
    if hasattr(model, "SerializeToString"):
        return model.SerializeToString()
    if isinstance(model, os.PathLike):
        model = os.fspath(model)
    if isinstance(model, str) and not os.path.isfile(model):
        raise InputError(f"no such ONNX model: {model}")
    return model


def onnx_session(path_or_bytes, provider: str = "cpu"):
    """An onnxruntime InferenceSession on ``provider`` ("cpu" or "cuda", TF32 off).

    Raises :class:`InputError` if CUDA is asked for but is not available or fails to load
    (onnxruntime would otherwise fall back to CPU silently).
    """
    ort = import_onnxruntime()

    if provider not in ONNX_PROVIDERS:
        raise InputError(f"unknown ONNX provider '{provider}' (use one of: {', '.join(ONNX_PROVIDERS)})")
    model = _onnx_model_arg(path_or_bytes)
    if isinstance(model, str) and not _utf8(model):  # onnxruntime takes UTF-8 paths only
        with open(model, "rb") as f:
            model = f.read()
    if provider == "cuda":
        if ONNX_PROVIDERS["cuda"] not in ort.get_available_providers():
            raise InputError("the CUDA execution provider is not available in this onnxruntime "
                             f"(available: {', '.join(ort.get_available_providers())}); install onnxruntime-gpu")
        providers = [(ONNX_PROVIDERS["cuda"], dict(CUDA_OPTIONS)), ONNX_PROVIDERS["cpu"]]
    else:
        providers = [ONNX_PROVIDERS["cpu"]]
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    try:
        sess = ort.InferenceSession(model, sess_options=opts, providers=providers)
    except Exception as e:  # noqa: BLE001 - onnxruntime raises its own Fail/InvalidGraph types
        raise InputError(f"onnxruntime cannot load the model: {_one_line(e)}") from None
    if provider == "cuda" and sess.get_providers()[0] != ONNX_PROVIDERS["cuda"]:
        raise InputError("the CUDA execution provider failed to start (CUDA/cuDNN libraries missing?); "
                         "onnxruntime fell back to CPU")
    return sess


def onnx_runtime_label(provider: str = "cpu") -> str:
    return f"onnx:{ONNX_PROVIDERS.get(provider, provider)}"


def run_onnx(path_or_bytes, feeds: dict[str, np.ndarray], outputs: list[str], provider: str = "cpu",
             session=None) -> dict[str, np.ndarray]:
    """:func:`run_onnx_here` in a child process (in this one when ``session`` is given)."""
    if session is not None:
        return run_onnx_here(path_or_bytes, feeds, outputs, provider, session)
    from bnconvert import isolate

    path_or_bytes = _onnx_model_arg(path_or_bytes)
    return isolate.run_stage(f"onnxruntime ({provider})", "bnconvert.verify.runners:run_onnx_here",
                             dict(path_or_bytes=path_or_bytes, feeds=feeds, outputs=list(outputs), provider=provider),
                             tf=False)


def run_onnx_here(path_or_bytes, feeds: dict[str, np.ndarray], outputs: list[str], provider: str = "cpu",
                  session=None) -> dict[str, np.ndarray]:
    """Run an ONNX model; ``feeds``/``outputs`` use TF names, mapped to the model's names.

    ``path_or_bytes`` is a path, serialized bytes or an ``onnx.ModelProto``; pass ``session``
    (from :func:`onnx_session`) to reuse one. Float inputs are cast to the model's input type.
    """
    sess = session if session is not None else onnx_session(path_or_bytes, provider)
    metas = _onnx_feed_meta(sess, feeds)
    out_names = [o.name for o in sess.get_outputs()]
    out_map, _ = match_names(list(outputs), out_names, "the ONNX model's outputs", by_order=False)
    ort_feeds = {}
    for tf_name, value in feeds.items():
        meta = metas[tf_name]
        arr = np.asarray(value)
        want = _ORT_TYPES.get(meta.type)
        if want is not None and arr.dtype != want:
            if np.issubdtype(arr.dtype, np.floating) and np.issubdtype(want, np.floating):
                arr = arr.astype(want)
            else:
                raise InputError(f"input '{tf_name}' is {arr.dtype} but the ONNX model expects {meta.type}")
        ort_feeds[meta.name] = arr
    try:
        values = sess.run([out_map[o] for o in outputs], ort_feeds)
    except Exception as e:  # noqa: BLE001
        raise InputError(f"onnxruntime could not run the model: {_one_line(e)}") from None
    return {o: np.asarray(v) for o, v in zip(outputs, values)}


def run_onnx_probes(path, runs: list[dict], outputs: list[str], probes: list[str], provider: str = "cpu",
                    layer_rows: int | None = None, extra_feeds: dict | None = None,
                    layer_head: bool = True) -> tuple[list[dict], list[str]]:
    """ONNX Runtime, in one child process, on a copy of ``path`` that also outputs the ``probes``
    it computes (:func:`bnconvert.verify.expose.expose_onnx`): per-run results (probe tensors
    cut to ``layer_rows`` rows, :func:`trim_rows`) and the probes found."""
    from bnconvert import isolate

    return isolate.run_stage(f"onnxruntime ({provider})", "bnconvert.verify.runners:run_onnx_probes_here",
                             dict(path=os.fspath(path), runs=runs, outputs=list(outputs), probes=list(probes),
                                  provider=provider, layer_rows=layer_rows, extra_feeds=extra_feeds,
                                  layer_head=layer_head), tf=False)


def run_onnx_probes_here(path, runs, outputs, probes, provider="cpu", layer_rows=None, extra_feeds=None,
                         layer_head=True):
    """:func:`run_onnx_probes` in this process.

    The outputs come from the model file as written, on every whole run: the verdict is on the
    model that ships, with onnxruntime's fusions as they apply to it (a graph output in the
    middle of a Conv+Relu keeps onnxruntime from fusing them).  Then that session is released
    and the probes come from the exposing copy; when they are cut to ``layer_rows`` rows, the
    model's batch is free and ``layer_head`` allows it (the reference computed its own so:
    :func:`run_tf_many_here`), on those first rows only, so this process never holds every
    layer of the whole batch at once — DenseNet-121 at batch 8 with its 121 BN layers exposed:
    ~0.5 GB."""
    from .expose import expose_onnx

    extra = extra_feeds or {}
    sess = onnx_session(path, provider)
    results = [run_onnx_here(None, {**f, **extra}, outputs, session=sess) for f in runs]
    del sess
    if not probes:
        return results, []
    data, found = expose_onnx(path, probes)
    fetch = [t for t in found if t not in outputs]
    if not fetch:
        return results, found
    sess = onnx_session(data, provider)
    del data
    for f, got in zip(runs, results):
        feeds = {**f, **extra}
        cut = layer_head and layer_rows is not None and _rows(f) > layer_rows and _onnx_free_batch(sess, feeds)
        layers = run_onnx_here(None, _head(feeds, layer_rows) if cut else feeds, fetch, session=sess)
        got.update(trim_rows(layers, (), layer_rows))
    return results, found


def _onnx_feed_meta(sess, feeds: dict) -> dict:
    """``{TF name: onnxruntime NodeArg}`` for each feed: the model's inputs, else its overridable
    initializers too — tf2onnx writes a ``PlaceholderWithDefault`` as a graph input that is also
    an initializer holding the default, which onnxruntime lists only there."""
    inputs = {i.name: i for i in sess.get_inputs()}
    try:
        in_map, _ = match_names(list(feeds), list(inputs), "the ONNX model's inputs", by_order=False)
    except InputError as first:
        over = {i.name: i for i in sess.get_overridable_initializers() if i.name not in inputs}
        try:
            in_map, _ = match_names(list(feeds), list(inputs) + list(over), "", by_order=False)
        except InputError:
            raise first from None  # named against the inputs: the initializers are the weights
        inputs.update(over)
    return {k: inputs[v] for k, v in in_map.items()}


def _onnx_free_batch(sess, feeds: dict) -> bool:
    """Every fed input with a batch dimension has it symbolic in the model (a smaller batch can
    be fed); an input the model declares without a shape does not count as free."""
    metas = _onnx_feed_meta(sess, feeds)
    for k, v in feeds.items():
        if np.ndim(v):
            shape = metas[k].shape
            if not shape or len(shape) != np.ndim(v) or isinstance(shape[0], int):
                return False
    return True


# ---------------------------------------------------------------------------- TFLite

def tflite_interpreter(path_or_bytes, preserve_all: bool = False):
    """A TFLite interpreter: ``ai_edge_litert`` when installed, else ``tf.lite.Interpreter``.
    ``preserve_all`` keeps intermediate tensors readable (layer-by-layer verification)."""
    kwargs = {"model_content": bytes(path_or_bytes)} if isinstance(path_or_bytes, (bytes, bytearray)) \
        else {"model_path": os.fspath(path_or_bytes)}
    if preserve_all:
        kwargs["experimental_preserve_all_tensors"] = True
    if "model_path" in kwargs and not os.path.isfile(kwargs["model_path"]):
        raise InputError(f"no such TFLite model: {kwargs['model_path']}")
    if "model_path" in kwargs and not _utf8(kwargs["model_path"]):  # a non-UTF-8 file name: pass the bytes
        with open(kwargs.pop("model_path"), "rb") as f:
            kwargs["model_content"] = f.read()
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        from bnconvert.tfproto import tf as _tf

        Interpreter = _tf().lite.Interpreter
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tf.lite.Interpreter's deprecation notice
        try:
            return Interpreter(**kwargs)
        except (ValueError, RuntimeError) as e:
            raise InputError(f"cannot load the TFLite model: {_one_line(e)}") from None


def tflite_name_map(interpreter, inputs: list[str], outputs: list[str]) -> dict:
    """``{"inputs": {tf: tflite}, "outputs": {tf: tflite}, "matched_by": "name"|"order"}``."""
    in_names = [d["name"] for d in interpreter.get_input_details()]
    out_names = [d["name"] for d in interpreter.get_output_details()]
    imap, how_i = match_names(list(inputs), in_names, "the TFLite model's inputs")
    omap, how_o = match_names(list(outputs), out_names, "the TFLite model's outputs")
    return {"inputs": imap, "outputs": omap, "matched_by": "order" if "order" in (how_i, how_o) else "name"}


def run_tflite(path, feeds: dict[str, np.ndarray], outputs: list[str], mapping: dict | None = None,
               intermediates: dict | None = None) -> dict[str, np.ndarray]:
    """:func:`run_tflite_here` in a child process (``mapping`` and ``intermediates`` are filled
    the same way)."""
    from bnconvert import isolate

    if isinstance(path, os.PathLike):
        path = os.fspath(path)
    if isinstance(path, str) and not os.path.isfile(path):
        raise InputError(f"no such TFLite model: {path}")
    values, names, inter = isolate.run_stage(
        "the TFLite interpreter", "bnconvert.verify.runners:_run_tflite_child",
        dict(path=path, feeds=feeds, outputs=list(outputs), want_intermediates=intermediates is not None))
    if mapping is not None:
        mapping.clear()
        mapping.update(names)
    if intermediates is not None:
        intermediates.update(inter)
    return values


def _run_tflite_child(path, feeds, outputs, want_intermediates=False):
    names: dict = {}
    inter: dict | None = {} if want_intermediates else None
    return run_tflite_here(path, feeds, outputs, names, inter), names, inter


def run_tflite_layers(path, runs: list[dict], outputs: list[str], layer_rows: int | None = None,
                      prefix: str = "", only: list[str] | None = None, layer_head: bool = True) -> list[dict]:
    """The .tflite on every feed dict of ``runs`` in one child process: the outputs, plus every
    intermediate tensor (keyed ``prefix + TFLite name``; only those named in ``only``, if given)
    cut to ``layer_rows`` rows per run."""
    from bnconvert import isolate

    if isinstance(path, str) and not os.path.isfile(path):
        raise InputError(f"no such TFLite model: {path}")
    return isolate.run_stage("the TFLite interpreter", "bnconvert.verify.runners:run_tflite_layers_here",
                             dict(path=os.fspath(path), runs=runs, outputs=list(outputs), layer_rows=layer_rows,
                                  prefix=prefix, only=None if only is None else list(only),
                                  layer_head=layer_head))


def run_tflite_layers_here(path, runs, outputs, layer_rows=None, prefix="", only=None, layer_head=True):
    """:func:`run_tflite_layers` in this process.

    When the layer tensors are cut to ``layer_rows`` rows, ``layer_head`` allows it (as for the
    reference: :func:`run_tf_many_here`) and the model takes a smaller batch, the outputs come
    from a plain run of the whole batch and the layer tensors from a run of the first rows (an
    interpreter that keeps every tensor holds them all at once)."""
    keep = None if only is None else set(only)
    results = []
    for f in runs:
        inter: dict = {}
        if layer_head and layer_rows is not None and _rows(f) > layer_rows:
            got = run_tflite_here(path, f, outputs)
            try:
                run_tflite_here(path, _head(f, layer_rows), outputs, intermediates=inter, only=keep)
            except InputError:  # a fixed batch: every tensor of the whole batch, then cut
                inter = {}
                run_tflite_here(path, f, outputs, intermediates=inter, only=keep)
        else:
            got = run_tflite_here(path, f, outputs, intermediates=inter, only=keep)
        got.update(trim_rows({prefix + k: v for k, v in inter.items()}, (), layer_rows))
        results.append(got)
    return results


def run_tflite_here(path, feeds: dict[str, np.ndarray], outputs: list[str], mapping: dict | None = None,
                    intermediates: dict | None = None, only: set | None = None) -> dict[str, np.ndarray]:
    """Run a .tflite model (path or bytes). TF names are matched to TFLite names by name, else
    by position: pass ``feeds`` and ``outputs`` in the order used at export. If ``mapping`` is a
    dict it receives the mapping used (see :func:`tflite_name_map`).  ``intermediates``, if a
    dict, receives every op output by TFLite name (only those named in ``only``, if given).
    """
    interp = tflite_interpreter(path, preserve_all=intermediates is not None)
    names = tflite_name_map(interp, list(feeds), list(outputs))
    if mapping is not None:
        mapping.clear()
        mapping.update(names)
    details = {d["name"]: d for d in interp.get_input_details()}
    resized = False
    for tf_name, value in feeds.items():
        d = details[names["inputs"][tf_name]]
        if tuple(d["shape"]) != np.shape(value):
            interp.resize_tensor_input(d["index"], list(np.shape(value)))
            resized = True
    try:
        interp.allocate_tensors()
    except RuntimeError as e:
        raise InputError(f"TFLite cannot take inputs of these shapes: {_one_line(e)}") from None
    for tf_name, value in feeds.items():
        d = details[names["inputs"][tf_name]]
        arr = np.asarray(value)
        if arr.dtype != d["dtype"]:
            if np.issubdtype(arr.dtype, np.floating) and np.issubdtype(d["dtype"], np.floating):
                arr = arr.astype(d["dtype"])
            else:
                raise InputError(f"input '{tf_name}' is {arr.dtype} but the TFLite model expects "
                                 f"{np.dtype(d['dtype'])}")
        try:
            interp.set_tensor(d["index"], arr)
        except ValueError as e:
            raise InputError(f"TFLite input '{tf_name}': {_one_line(e)}") from None
    try:
        interp.invoke()
    except RuntimeError as e:
        what = "after resizing inputs " if resized else ""
        raise InputError(f"TFLite failed {what}to run the model: {_one_line(e)}") from None
    out_details = {d["name"]: d for d in interp.get_output_details()}
    if intermediates is not None:  # every op output, by TFLite tensor name
        details = {d["index"]: d["name"] for d in interp.get_tensor_details()}
        for op in interp._get_ops_details():
            for i in op["outputs"]:
                if i in details and (only is None or details[i] in only):
                    intermediates[details[i]] = np.array(interp.get_tensor(i))
    return {o: np.array(interp.get_tensor(out_details[names["outputs"][o]]["index"])) for o in outputs}
