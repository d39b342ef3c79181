"""Input shapes, dtypes and values for verification runs.

Reads Placeholder attributes straight from the GraphDef protobuf (no TensorFlow import), so it
works wherever the GraphDef object exists; the rest needs numpy only.
"""
from __future__ import annotations

import os
import re

import numpy as np

from bnconvert.errors import InputError

# tensorflow/core/framework/types.proto DataType enum → numpy
_TF_DTYPES = {
    1: np.float32, 2: np.float64, 3: np.int32, 4: np.uint8, 5: np.int16, 6: np.int8, 7: np.object_,
    9: np.int64, 10: np.bool_, 17: np.uint16, 19: np.float16, 22: np.uint32, 23: np.uint64,
}


def op_name(tensor: str) -> str:
    """``"x:0"`` → ``"x"``; ``"^x"`` → ``"x"``."""
    return tensor.lstrip("^").split(":")[0]


def tensor_name(name: str) -> str:
    """``"x"`` → ``"x:0"``; ``"x:1"`` stays."""
    return name if re.search(r":\d+$", name) else f"{name}:0"


def _node(graph_def, tensor: str):
    name = op_name(tensor)
    for node in graph_def.node:
        if node.name == name:
            return node
    raise InputError(f"input tensor '{tensor}' is not in the graph")


def _unknown_rank(node, name: str) -> str:
    """The error for an input of unknown rank: give its shape, or — a float placeholder may be a
    scalar parameter bnconvert did not recognise (a keep probability read elsewhere too) — set it."""
    msg = f"input '{name}' has unknown rank; give its shape with --input-shape {op_name(name)}=D0,D1,..."
    if node.op in ("Placeholder", "PlaceholderWithDefault") and "dtype" in node.attr \
            and node.attr["dtype"].type in (1, 2, 19):  # float, double, half
        msg += f" (or, if it is a scalar parameter such as a keep probability, --set {op_name(name)}=VALUE)"
    return msg


def _declared_shape(node) -> list[int | None] | None:
    """The node's declared shape; None for unknown rank or a node without a shape attribute."""
    if "shape" in node.attr:
        shape = node.attr["shape"].shape
    elif "_output_shapes" in node.attr and node.attr["_output_shapes"].list.shape:
        shape = node.attr["_output_shapes"].list.shape[0]
    else:
        return None
    if shape.unknown_rank:
        return None
    return [None if d.size < 0 else int(d.size) for d in shape.dim]


def placeholder_shapes(graph_def, inputs) -> dict[str, list[int | None]]:
    """Declared shapes of the input placeholders (None for unknown dims).

    Unknown rank (or an input with no declared shape) raises :class:`InputError` asking for
    ``--input-shape``.
    """
    out = {}
    for name in inputs:
        node = _node(graph_def, name)
        shape = _declared_shape(node)
        if shape is None:
            raise InputError(_unknown_rank(node, name))
        out[name] = shape
    return out


def placeholder_dtypes(graph_def, inputs) -> dict[str, np.dtype]:
    """numpy dtypes of the input placeholders (from their ``dtype`` attribute)."""
    out = {}
    for name in inputs:
        node = _node(graph_def, name)
        enum = node.attr["dtype"].type if "dtype" in node.attr else 0
        if enum not in _TF_DTYPES:
            raise InputError(f"input '{name}' ({node.op}) has no supported dtype (enum {enum})")
        out[name] = np.dtype(_TF_DTYPES[enum])
    return out


def resolve_shapes(graph_def, inputs, overrides: dict[str, list[int]] | None = None,
                   batch: int = 1) -> dict[str, list[int]]:
    """Concrete shapes for every input.

    An unknown dim 0 becomes ``batch``; any other unknown dim needs an override. Overrides may be
    keyed ``"x:0"`` or ``"x"``; an override that contradicts a known dim (or the rank) is an
    error naming the input.
    """
    overrides = {tensor_name(k): list(v) for k, v in (overrides or {}).items()}
    unknown = set(overrides) - {tensor_name(n) for n in inputs}
    if unknown:
        raise InputError(f"--input-shape names {', '.join(sorted(unknown))}, which is not a model input "
                         f"(inputs: {', '.join(inputs)})")
    out = {}
    for name in inputs:
        node = _node(graph_def, name)
        declared = _declared_shape(node)
        override = overrides.get(tensor_name(name))
        if override is not None:
            if any((not isinstance(d, (int, np.integer))) or d < 0 for d in override):
                raise InputError(f"--input-shape for '{name}' must be non-negative integers, got {override}")
            if declared is not None:
                if len(declared) != len(override):
                    raise InputError(f"--input-shape for '{name}' has rank {len(override)} but the graph "
                                     f"declares {_fmt_shape(declared)}")
                bad = [i for i, (d, o) in enumerate(zip(declared, override)) if d is not None and d != o]
                if bad:
                    raise InputError(f"--input-shape for '{name}' {override} conflicts with the graph's "
                                     f"declared shape {_fmt_shape(declared)} at dim {bad[0]}")
            out[name] = [int(d) for d in override]
            continue
        if declared is None:
            raise InputError(_unknown_rank(node, name))
        shape = list(declared)
        if shape and shape[0] is None:
            shape[0] = int(batch)
        missing = [i for i, d in enumerate(shape) if d is None]
        if missing:
            raise InputError(f"input '{name}' has unknown dim {missing[0]} in {_fmt_shape(declared)}; give "
                             f"its shape with --input-shape {op_name(name)}=D0,D1,...")
        out[name] = shape
    from bnconvert.budget import check_inputs  # sizes from --batch/--input-shape, before allocating

    check_inputs(out, {n: _TF_DTYPES.get(_node(graph_def, n).attr["dtype"].type, np.float64) for n in inputs})
    return out


def _fmt_shape(shape) -> str:
    return "[" + ",".join("?" if d is None else str(d) for d in shape) + "]"


def random_inputs(shapes: dict, dtypes: dict, seed: int = 0) -> dict[str, np.ndarray]:
    """Deterministic inputs: floats standard normal, ints in [0, 4), bools False."""
    rng = np.random.default_rng(seed)
    out = {}
    for name, shape in shapes.items():
        dt = np.dtype(dtypes.get(name, np.float32))
        if np.issubdtype(dt, np.floating):
            out[name] = rng.standard_normal(shape).astype(dt)
        elif np.issubdtype(dt, np.integer):
            out[name] = rng.integers(0, 4, size=shape).astype(dt)
        elif dt == np.bool_:
            out[name] = np.zeros(shape, dtype=np.bool_)
        else:
            raise InputError(f"cannot generate random values for input '{name}' of dtype {dt}; "
                             "supply them in an .npz file")
    return out


def match_keys(wanted: list[str], keys, prefix: str) -> dict[str, str]:
    """Map each wanted tensor name to a key among ``keys``.

    Tries ``"x:0"``, ``"x"`` (and the reverse) then ``prefix + index`` (``input_0`` ...). Wanted
    names with no key are left out.
    """
    keys = list(keys)
    out = {}
    for i, name in enumerate(wanted):
        for cand in (name, op_name(name) if name.endswith(":0") else tensor_name(name), f"{prefix}{i}"):
            if cand in keys:
                out[name] = cand
                break
    return out


def load_npz(path) -> dict[str, np.ndarray]:
    if not os.path.isfile(path):
        raise InputError(f"no such file: {path}")
    from bnconvert.budget import check_npz  # headers only: refuse declared sizes over the budget

    check_npz(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except (OSError, ValueError) as e:
        raise InputError(f"cannot read {path} as .npz: {e}") from None


def load_npz_inputs(path, inputs, prefix: str = "input_") -> dict[str, np.ndarray]:
    """Arrays for ``inputs`` from an .npz keyed ``"x:0"``, ``"x"`` or ``input_0``, ``input_1``...

    Returns a dict keyed by the names in ``inputs``; a missing one raises :class:`InputError`.
    """
    arrays = load_npz(path)
    found = match_keys(list(inputs), arrays, prefix)
    missing = [n for n in inputs if n not in found]
    if missing:
        raise InputError(f"{path} has no array for '{missing[0]}' (keys: {', '.join(sorted(arrays)) or 'none'}; "
                         f"use '{missing[0]}', '{op_name(missing[0])}' or '{prefix}{list(inputs).index(missing[0])}')")
    return {n: arrays[found[n]] for n in inputs}


def save_npz(path, arrays: dict[str, np.ndarray]) -> None:
    """Write arrays keyed by TF tensor names (readable by :func:`load_npz_inputs`)."""
    tmp = f"{path}.tmp.npz"
    np.savez(tmp, **{k: np.asarray(v) for k, v in arrays.items()})
    os.replace(tmp, path)


# ---------------------------------------------------------------------------- samples

#: samples compared by default: enough that a perturbed channel shows on some of them
DEFAULT_SAMPLES = 8


def _image_like(shape, dt) -> bool:
    """Rank-4+ float inputs are treated as images: half the samples are uniform [0, 1)."""
    return np.issubdtype(dt, np.floating) and len(shape) >= 4


def sample_runs(shapes: dict, dtypes: dict, free_batch: bool, samples: int = DEFAULT_SAMPLES,
                seed: int = 0) -> tuple[list[dict[str, np.ndarray]], dict]:
    """Seeded verification inputs as a list of runs (feed dicts) and a description for the report.

    Decisions: with a free batch dim (every input's dim 0 unknown) one run holds ``samples`` rows;
    with a fixed batch ``B`` there are ``max(2, ceil(samples / B))`` runs of ``B`` rows, so a
    fixed-batch-1 model still sees several samples.  Float inputs are standard normal; rank-4
    (image-like) float inputs draw their second half of samples from uniform [0, 1) instead,
    the range real images are fed in.  Ints are uniform in [0, 4); bools False.
    """
    if samples < 1:
        raise InputError(f"--samples must be at least 1, got {samples}")
    rng = np.random.default_rng(seed)
    batch = None
    if not free_batch:
        b = {int(s[0]) for s in shapes.values() if len(s) > 0}
        batch = b.pop() if len(b) == 1 else None
    if free_batch:
        nruns, rows = 1, samples
    elif batch:
        nruns, rows = max(2, -(-samples // batch)), batch
    else:  # scalar inputs or mixed batch sizes: whole independent draws
        nruns, rows = max(2, samples), None
    total = nruns * rows if rows else nruns
    dists: dict[str, str] = {}
    full: dict[str, np.ndarray] = {}
    scalars = {n for n, s in shapes.items() if len(s) == 0}
    for name, shape in shapes.items():
        dt = np.dtype(dtypes.get(name, np.float32))
        shape = list(shape)
        big = [total] + shape[1:] if rows else [nruns] + shape
        if rows and free_batch:
            big = [samples] + shape[1:]
        if name in scalars:  # a scalar beside batched inputs (keep_prob, temperature): one per run
            big = [nruns]
        if np.issubdtype(dt, np.floating):
            a = rng.standard_normal(big)
            if _image_like(shape, dt) and big[0] >= 2:
                half = big[0] // 2
                a[half:] = rng.random([big[0] - half] + big[1:])
                dists[name] = f"normal x{half} + uniform[0,1) x{big[0] - half}"
            else:
                dists[name] = f"normal x{big[0]}"
            full[name] = a.astype(dt)
        elif np.issubdtype(dt, np.integer):
            full[name] = rng.integers(0, 4, size=big).astype(dt)
            dists[name] = "integers [0,4)"
        elif dt == np.bool_:
            full[name] = np.zeros(big, dtype=np.bool_)
            dists[name] = "false"
        else:
            raise InputError(f"cannot generate random values for input '{name}' of dtype {dt}; "
                             "supply them in an .npz file (--data)")
    runs = []
    for i in range(nruns):
        if rows:
            runs.append({n: (a[i] if n in scalars else a[i * rows:(i + 1) * rows]) for n, a in full.items()})
        else:
            runs.append({n: a[i] for n, a in full.items()})
    info = {"source": "random", "seed": seed, "samples": total if rows else nruns, "runs": nruns,
            "batch": rows, "distributions": dists}
    return runs, info


def concat_runs(results: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Join the outputs of several runs along the batch axis (stack scalars)."""
    if len(results) == 1:
        return results[0]
    out = {}
    for k in results[0]:
        vals = [np.asarray(r[k]) for r in results]
        out[k] = np.concatenate(vals, axis=0) if vals[0].ndim > 0 else np.stack(vals)
    return out
