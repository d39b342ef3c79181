"""The library API: load → inference mode → match → fold → export → verify → report.

    import bnconvert
    model = bnconvert.load("model.pb")
    result = bnconvert.fold(model)                 # FoldedModel: .graph_def, .report
    report = bnconvert.convert("model.pb", outdir="out", to=("pb", "onnx", "tflite"))
    files, report = bnconvert.convert_bytes(graph_def, to="onnx")   # {"onnx": b"..."}, nothing written

The CLI is a thin layer over these functions; everything it can do, they can.

Decisions (for pipelines that call bnconvert):

- **Models**: every function takes a path (str or PathLike), a :class:`Model` (from
  :func:`load`) or a GraphDef (``tf.compat.v1.GraphDef``, frozen); anything else is an
  :class:`InputError` naming the type. A GraphDef is never modified.
- **In memory**: :func:`convert_bytes` returns each format's bytes and the :class:`Report`
  without writing anywhere the caller sees (the converters need files: they work in a private
  temporary folder that is removed before it returns).
- **Errors**: every failure is a :class:`~bnconvert.errors.BNConvertError` subclass carrying
  the CLI's exit code (``InputError`` & co. 2, ``VerificationError`` 1, ``InternalError`` 3,
  ``MissingDependencyError`` 2 when TensorFlow is needed but not installed). An unexpected
  exception becomes ``InternalError`` chained to it (``__cause__``). Ctrl-C stays
  ``KeyboardInterrupt``.
- **Arguments are checked**: names (``inputs``, ``outputs``, ``only``, ``to``, ``providers``)
  are one comma-separated string or a sequence of strings; ``set_flags`` values must be bools
  for bool placeholders or numbers for scalar numeric ones (``{"keep_prob": 1.0}``;
  ``{"phase": "false"}`` is an error, not True); flags like ``verify``/``force`` must be bools;
  tensor names may be given with or without ``":0"`` (``input_shapes={"x": [...]}``).
- **Logging**: TensorFlow/absl/tf2onnx logging is silenced while a call runs and restored
  afterwards (:mod:`bnconvert.logs`); bnconvert's own messages go to the ``"bnconvert"`` logger.
"""
from __future__ import annotations

import fnmatch
import functools
import math
import numbers
import os
import shutil
import tempfile
import time
from dataclasses import dataclass

from . import inference, progress
from .analysis import analyze
from .errors import BNConvertError, InputError, InternalError, VerificationError, missing_dependency
from .fold import fold_all
from .graph import Graph, node_of, tensor_name
from .load import Model
from .load import load as _load
from .logs import log, quiet_tensorflow
from .options import FORMATS, ConvertOptions, VerifyOptions
from .report import BN_OPS, Report
from .verify.check import naming as _naming

_BN_RELATED = BN_OPS + ("Rsqrt", "Switch", "Merge", "RefSwitch")


@dataclass
class FoldedModel:
    """A folded, frozen GraphDef plus the report of what was done."""

    graph_def: object
    report: Report
    model: Model


def public(fn):
    """Decorator of every public function: TF logging quiet, every failure a BNConvertError."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with quiet_tensorflow():
            try:
                return fn(*args, **kwargs)
            except BNConvertError:
                raise
            except ImportError as e:
                dep = missing_dependency(e)
                if dep is not None:
                    raise dep from e
                raise InternalError(_internal(e)) from e
            except TypeError as e:  # a wrong argument type that slipped past the checks
                raise InputError(f"{fn.__name__}(): {' '.join(str(e).split())}") from e
            except MemoryError as e:  # a stage child's data segment is capped at the budget
                from .budget import over_budget

                raise InputError(over_budget(fn.__name__)) from e
            except Exception as e:  # noqa: BLE001 - the library's contract: BNConvertError only
                raise InternalError(_internal(e)) from e

    return wrapper


def _internal(e: BaseException) -> str:
    msg = " ".join(str(e).split())[:300]
    return f"internal error: {type(e).__name__}: {msg} (run with --debug for the traceback)"


# ---------------------------------------------------------------------- argument checks
def _is_graph_def(x) -> bool:
    return type(x).__name__ == "GraphDef" and hasattr(x, "node") and hasattr(x, "SerializeToString")


def _names(value, what: str) -> list[str] | None:
    """None, one comma-separated string, or a sequence of strings → a list (None when empty)."""
    if value is None:
        return None
    if isinstance(value, (str, os.PathLike)) and not isinstance(value, str):
        value = os.fspath(value)
    if isinstance(value, str):
        items = [v.strip() for v in value.split(",")]
    elif isinstance(value, (list, tuple, set, frozenset)) and all(isinstance(v, str) for v in value):
        items = [v.strip() for v in value]
    else:
        raise InputError(f"{what}: expected a string or a sequence of strings, got {_type(value)}")
    items = [v for v in items if v]
    return items or None


def _type(x) -> str:
    return repr(x) if isinstance(x, (str, bytes, int, float)) and len(repr(x)) < 40 else type(x).__name__


def _bool(value, what: str) -> bool:
    import numpy as np

    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    raise InputError(f"{what}: expected True or False, got {_type(value)}")


def _flag_value(value, what: str) -> bool | float:
    """A bool (a training flag), or a finite number (a numeric placeholder such as keep_prob)."""
    import math

    import numpy as np

    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, float, np.integer, np.floating)):
        try:
            number = float(value)
        except OverflowError:  # an int beyond float's range (10**400)
            number = math.inf
        if math.isfinite(number):
            return number
    raise InputError(f"{what}: expected True, False or a finite number, got {_type(value)}")


def _flags(value) -> dict[str, bool | float] | None:
    """``set_flags``: {name: bool or number}; keys with or without ``":0"``."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise InputError(f"set_flags: expected a dict {{name: value}}, got {_type(value)}")
    out = {}
    for k, v in value.items():
        if not isinstance(k, str) or not k.strip():
            raise InputError(f"set_flags: flag names must be strings, got {_type(k)}")
        out[node_of(k.strip())] = _flag_value(v, f"set_flags['{k}']")
    return out


def _shapes(value) -> dict[str, list[int]] | None:
    """``input_shapes``: {tensor: [dims]}; keys with or without ``":0"``."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise InputError(f"input_shapes: expected a dict {{name: [dims]}}, got {_type(value)}")
    out = {}
    for k, dims in value.items():
        if not isinstance(k, str):
            raise InputError(f"input_shapes: names must be strings, got {_type(k)}")
        if isinstance(dims, (str, bytes)) or not hasattr(dims, "__iter__") or not all(
                isinstance(d, numbers.Integral) and not isinstance(d, bool) for d in dims):
            raise InputError(f"input_shapes['{k}']: expected a sequence of integers, got {_type(dims)}")
        out[tensor_name(k.strip())] = [int(d) for d in dims]
    return out


_BOOL_OPTIONS = ("verify", "force", "allow_unsafe", "keep_going", "raise_on_failure")
_INT_OPTIONS = ("layer_budget", "opset", "batch", "seed")


def _check_options(options: dict) -> dict:
    """Type-check the keyword options shared by :func:`convert`, :func:`compare`, :func:`fold`."""
    from .pipeline import check_formats

    out = dict(options)
    for key in ("inputs", "outputs", "only"):
        if key in out:
            given = out[key] is not None
            out[key] = _names(out[key], key)
            if key == "only" and given and not out[key]:
                raise InputError("only: no batch norm named (an empty --only would fold nothing by name)")
    if out.get("only") and out.get("mode") == "scale_shift":
        raise InputError("only: --only selects BNs to fold, --no-fold folds none; give one of them")
    if "to" in out:
        to = _names(out["to"], "to")
        if not to:
            raise InputError(f"to: give at least one format ({', '.join(FORMATS)})")
        out["to"] = check_formats(to)
    if "providers" in out:
        provs = _names(out["providers"], "providers") or ["cpu"]
        bad = [p for p in provs if p not in ("cpu", "cuda")]
        if bad:
            raise InputError(f"providers: unknown provider '{bad[0]}' (cpu or cuda)")
        out["providers"] = tuple(provs)
    if "set_flags" in out:
        out["set_flags"] = _flags(out["set_flags"])
    if "input_shapes" in out:
        out["input_shapes"] = _shapes(out["input_shapes"])
    for key in _BOOL_OPTIONS:
        if key in out:
            out[key] = _bool(out[key], key)
    for key in _INT_OPTIONS:
        if key in out and (isinstance(out[key], bool) or not isinstance(out[key], numbers.Integral)):
            raise InputError(f"{key}: expected an integer, got {_type(out[key])}")
    for key in ("atol", "rtol"):
        v = out.get(key)
        if v is not None and (isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(v)
                              or v < 0):
            raise InputError(f"{key}: expected a non-negative number, got {_type(v)}")
    j = out.get("jobs")
    if j is not None and (isinstance(j, bool) or not isinstance(j, numbers.Integral) or j < 1):
        raise InputError(f"jobs: expected a positive integer (stages run at once), got {_type(j)}")
    if out.get("data") is not None and not isinstance(out["data"], (str, os.PathLike)):
        raise InputError(f"data: expected the path of an .npz file, got {_type(out['data'])}")
    if "layer_budget" in out and out["layer_budget"] < 1:
        raise InputError(f"layer_budget: expected a positive number of bytes, got {out['layer_budget']}")
    if "mode" in out and out["mode"] not in ("fold", "scale_shift"):
        raise InputError(f"mode: unknown mode {_type(out['mode'])} (fold or scale_shift)")
    return out


def _as_path(value, what: str) -> str:
    if isinstance(value, (str, os.PathLike)):
        return os.fspath(value)
    hint = " (write it to a file first, or use convert_bytes)" if _is_graph_def(value) or isinstance(value, Model) else ""
    raise InputError(f"{what}: expected a file path, got {type(value).__name__}{hint}")


# ---------------------------------------------------------------------- load
@public
def load(model, outputs: list[str] | None = None, allow_unsafe: bool = False,
         max_memory: int | str | None = None) -> Model:
    """Read a .pb / .pbtxt / checkpoint / SavedModel into a checked, frozen :class:`Model`.

    ``model`` may also be a GraphDef (checked and ref ops repaired, like a file) or a Model
    (returned as is).  ``max_memory``: bytes (or "4G") the decoded constants may take (see
    :mod:`bnconvert.budget`).
    """
    if max_memory is not None:
        from . import budget

        budget.configure(max_memory)
    return _as_model(model, allow_unsafe=_bool(allow_unsafe, "allow_unsafe"), outputs=_names(outputs, "outputs"))


def _as_model(model_or_graph_def, allow_unsafe: bool = False, outputs=None, name: str = "model") -> Model:
    if isinstance(model_or_graph_def, Model):
        return model_or_graph_def
    if isinstance(model_or_graph_def, (str, os.PathLike)):
        with progress.stage("load"):
            return _load(os.fspath(model_or_graph_def), outputs=outputs, allow_unsafe=allow_unsafe)
    if _is_graph_def(model_or_graph_def):
        from .load import check_graph, repair_ref_ops

        if not model_or_graph_def.node:
            raise InputError("the GraphDef holds no nodes")
        gd, repairs = repair_ref_ops(model_or_graph_def)
        check_graph(gd, name)
        return Model(gd, name, "graphdef", repairs=repairs)
    if type(model_or_graph_def).__name__ == "Graph" and hasattr(model_or_graph_def, "as_graph_def"):
        raise InputError("got a tf.Graph: pass a frozen GraphDef (convert_variables_to_constants(...)) or a file")
    raise InputError(f"expected a path, a Model or a GraphDef, got {type(model_or_graph_def).__name__}")


def _bn_ops(hist: dict[str, int]) -> dict[str, int]:
    return {k: v for k, v in hist.items() if k in _BN_RELATED}


@public
def fold(
    model,
    *,
    inputs: list[str] | None = None,
    outputs: list[str] | None = None,
    set_flags: dict[str, bool] | None = None,
    mode: str = "fold",
    only: list[str] | None = None,
    keep_going: bool = False,
) -> FoldedModel:
    """Switch ``model`` to inference mode and fold every batch norm.

    ``model``: a :class:`Model`, a path or a GraphDef (never modified).  ``inputs``/``outputs``
    default to what :mod:`bnconvert.endpoints` finds (or the SavedModel signature).
    ``set_flags`` overrides training flags (``{"phase": False}``).  ``mode="scale_shift"``
    turns folding off (every BN becomes Mul+Add); ``only`` folds just the BNs whose name
    matches one of the names or globs (``"bn1"``, ``"block*/bn"``; :func:`fnmatch.fnmatchcase`
    on the BN's name; a pattern that matches no BN is an error).  ``keep_going`` records unusable
    BNs as "refuse" instead of raising (what ``inspect`` shows).
    """
    a = _check_options({"inputs": inputs, "outputs": outputs, "set_flags": set_flags, "mode": mode,
                        "only": only, "keep_going": keep_going})
    inputs, outputs, set_flags, only = a["inputs"], a["outputs"], a["set_flags"], a["only"]
    m = _as_model(model)
    report = Report(source={"path": m.path, "format": m.format, "sha256": m.sha256})
    if m.repairs:
        report.notes.append("reference ops rewritten: " + ", ".join(f"{k}×{v}" for k, v in sorted(m.repairs.items())))
    t0 = time.perf_counter()
    a = analyze(m, inputs=inputs, outputs=outputs, set_flags=set_flags)
    g, inf, ins, outs = a.graph, a.inference, a.inputs, a.outputs
    report.ops_before = _bn_ops(a.op_histogram_before)
    report.training_flags = inf.flags
    report.inference = {
        "switches_resolved": inf.switches_resolved, "merges_resolved": inf.merges_resolved,
        "dead_nodes_removed": inf.dead_removed, "control_deps_dropped": inf.control_deps_dropped,
    }
    if inf.dropout_draws_removed:  # keep probability 1: the draws are zeros (inference.find_dropout_params)
        report.inference["dropout_draws_zeroed"] = list(inf.dropout_draws_removed)
    report.inputs, report.outputs = ins, outs
    report.outputs_guessed, report.output_candidates = a.outputs_guessed, a.output_candidates
    g.prune(outs, keep=[node_of(t) for t in ins])
    report.timings["inference_mode"] = time.perf_counter() - t0
    t1 = time.perf_counter()
    with progress.stage("fold"):
        result = fold_all(g, outs, mode=mode, only=set(only) if only else None, keep_going=keep_going)
    _check_only(only, result.layers)
    inference.place_constants_in_frames(g)  # new weights read inside a while loop enter its frame
    g.prune(outs, keep=[node_of(t) for t in ins])
    report.layers = [layer.to_dict() for layer in result.layers]
    report.timings["match_fold"] = time.perf_counter() - t1
    gd = g.to_graph_def()
    report.ops_after = _bn_ops(g.op_histogram())
    for note in report.notes:
        log.info("%s: %s", m.path, note)
    return FoldedModel(gd, report, m)


def _check_only(only, layers) -> None:
    """Every ``only`` pattern must select at least one BN (a typo would silently fold nothing)."""
    names = [layer.name for layer in layers]
    for pattern in only or ():
        if not any(fnmatch.fnmatchcase(n, pattern) for n in names):
            shown = ", ".join(names[:8]) + (", …" if len(names) > 8 else "")
            raise InputError(f"--only '{pattern}' matches no batch norm (they are: {shown or 'none'})")


@public
def inspect(model, **kwargs) -> Report:
    """What :func:`fold` would do, without writing anything; unusable BNs show as "refuse"."""
    kwargs.setdefault("keep_going", True)
    with _naming(model if isinstance(model, (str, os.PathLike)) else ""):
        return fold(model, **kwargs).report


# ---------------------------------------------------------------------- convert
@public
def convert(model, outdir: str | None = None, **options) -> Report:
    """``bnconvert fold``: load, fold, export, verify, write the report; returns the :class:`Report`.

    ``model``: a path, a :class:`Model` or a GraphDef (then ``outdir`` is required and the files
    are named after ``name=``, default ``"model"``).  Files go to ``outdir`` (default: the
    input's folder) as ``<stem>.folded.pb`` (``<stem>.scaleshift.pb`` with
    ``mode="scale_shift"``), ``<stem>.onnx``, ``<stem>.tflite`` and ``<stem>.report.json``.
    ``options`` are the CLI's (see :mod:`bnconvert.options`): ``to``, ``verify``, ``force``,
    ``inputs``, ``outputs``, ``set_flags``, ``mode``, ``only``, ``opset``, ``batch``,
    ``input_shapes``, ``data``, ``providers``, ``atol``, ``rtol``, ``allow_unsafe``, ``seed``,
    ``max_memory``, ``jobs`` (child stages run at once; default: what the CPUs and the free
    memory allow, one with ``max_memory``: :mod:`bnconvert.schedule`), ``layer_budget`` (bytes of layer tensors each runtime keeps for the
    layer-by-layer comparison, default 64 MiB; beyond it the layers are compared on the first
    rows of each run, the outputs always on every sample).  Nothing is left behind on failure; when verification fails the files are written and
    :class:`VerificationError` (exit code 1, ``.report`` attached) is raised.
    """
    from . import pipeline

    name = options.pop("name", "model")
    if not isinstance(name, str) or not name or os.sep in name:
        raise InputError(f"name: expected a file stem such as 'model', got {_type(name)}")
    if outdir is not None:
        outdir = _as_path(outdir, "outdir")
    if not isinstance(model, (str, os.PathLike)):
        if outdir is None:
            raise InputError("outdir: needed when converting a Model or a GraphDef (or use convert_bytes)")
        model = _as_model(model, allow_unsafe=bool(options.get("allow_unsafe", False)), name=name)
    else:
        model = os.fspath(model)
    return pipeline.convert(model, outdir, ConvertOptions.from_kwargs(**_check_options(options)))


@public
def convert_bytes(model, to=FORMATS, **options) -> tuple[dict[str, bytes], Report]:
    """:func:`convert` in memory: ``({"pb": b"...", "onnx": b"...", "tflite": b"..."}, report)``.

    Nothing is written where the caller can see it: the converters work in a private temporary
    folder (``tempfile``) that is removed before this returns; ``report.files`` is empty.  The
    same options as :func:`convert` (``force`` and ``outdir`` do not apply).  When verification
    fails, :class:`VerificationError` is raised with ``.report`` and ``.files`` (the bytes).
    """
    for key in ("outdir", "force"):
        if key in options:
            raise InputError(f"convert_bytes() takes no '{key}': nothing is written")
    name = options.pop("name", "model")
    if not isinstance(model, (str, os.PathLike)):
        model = _as_model(model, allow_unsafe=bool(options.get("allow_unsafe", False)), name=name)
    tmp = tempfile.mkdtemp(prefix="bnconvert-bytes-")
    try:
        try:
            report = convert(model, tmp, to=to, **options)
        except VerificationError as e:
            e.files = _read_outputs(getattr(e, "report", None))
            if getattr(e, "report", None) is not None:
                e.report.files = {}
            raise
        files = _read_outputs(report)
        report.files = {}
        return files, report
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _read_outputs(report) -> dict[str, bytes]:
    out = {}
    for kind, path in (report.files if report is not None else {}).items():
        if kind != "report" and os.path.isfile(path):
            with open(path, "rb") as f:
                out[kind] = f.read()
    return out


@public
def compare(
    original,
    converted: str,
    *,
    inputs: list[str] | None = None,
    outputs: list[str] | None = None,
    set_flags: dict[str, bool] | None = None,
    providers: tuple[str, ...] = ("cpu",),
    data: str | None = None,
    input_shapes: dict[str, list[int]] | None = None,
    batch: int = 1,
    atol: float | None = None,
    rtol: float | None = None,
    allow_unsafe: bool = False,
    seed: int = 0,
    samples: int = 8,
    save_io: str | None = None,
    raise_on_failure: bool = True,
    max_memory: int | str | None = None,
    layer_budget: int = 64 << 20,
) -> dict[str, dict]:
    """Compare ``converted`` (.pb/.pbtxt, .onnx or .tflite, made by anything) with ``original``.

    Returns one entry per runtime (``"tf:converted"``, ``"onnx:CPUExecutionProvider"``, …) with
    per-output and per-layer statistics, ``status`` and the ``inputs`` used (``samples`` seeded
    random samples; ``save_io``: a folder for inputs.npz/expected.npz); raises :class:`VerificationError` on a mismatch unless
    ``raise_on_failure`` is False.
    """
    from .verify.check import first_failure, verify_converted
    from .verify.inputs import resolve_shapes

    from . import budget

    converted = _as_path(converted, "converted")
    budget.check_batch(batch)
    if max_memory is not None:
        budget.configure(max_memory)
    a = _check_options({"inputs": inputs, "outputs": outputs, "set_flags": set_flags, "providers": providers,
                        "input_shapes": input_shapes, "batch": batch, "atol": atol, "rtol": rtol,
                        "allow_unsafe": allow_unsafe, "seed": seed, "raise_on_failure": raise_on_failure,
                        "data": data, "layer_budget": layer_budget})
    inputs, outputs, set_flags, providers = a["inputs"], a["outputs"], a["set_flags"], a["providers"]
    input_shapes = a["input_shapes"]
    if not os.path.exists(converted):
        raise InputError(f"{converted}: no such file or directory")
    from .verify.check import check_providers

    check_providers(providers)
    with _naming(original if isinstance(original, (str, os.PathLike)) else ""):
        model = _as_model(original, allow_unsafe=allow_unsafe)
        # not analyze() alone: the fold's layer records name the BN outputs and their replacements,
        # which the converted file is compared with layer by layer (verify.layers.layer_probes)
        info = fold(model, inputs=inputs, outputs=outputs, set_flags=set_flags, keep_going=True).report
        shapes = resolve_shapes(model.graph_def, info.inputs, input_shapes, batch=batch)
    vopts = VerifyOptions(data=data, providers=providers, atol=atol, rtol=rtol, seed=seed, samples=samples,
                          save_io=save_io, layer_budget=a["layer_budget"])
    with progress.stage("verify"):
        result = verify_converted(model, converted, info, shapes, vopts, allow_unsafe=allow_unsafe)
    if raise_on_failure and not all(v["ok"] for v in result.values()):
        err = VerificationError(first_failure(result))
        err.report = Report(verification=result, verification_inputs=next(iter(result.values()), {}).get("inputs", {}))
        raise err
    return result
