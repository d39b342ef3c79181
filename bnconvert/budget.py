"""Memory budgets, checked from declared sizes before anything is decoded or allocated.

Decision (issue 14): a 723-byte .pb can declare a constant of 2^40 floats stored as one repeated
value; an .npz header can declare 10^12 floats; ``--batch 100000000`` asks for a 77 GB input.
Each of these is refused in one line naming the node, the file or the option *before* the bytes
are decoded, by computing the decoded size from the declared shape and dtype alone.

The budget (:func:`limit`) is ``max_memory`` when given (``--max-memory``, the ``max_memory``
argument of :func:`bnconvert.load` / :func:`bnconvert.convert`, or the environment variable
``BNCONVERT_MAX_MEMORY``), else ``min(8 GiB, 50% of physical memory)``.  It bounds the *sum*
of the graph's decoded constants (and, separately, of the verification inputs); the peak memory
of a whole conversion is a small multiple of that (see docs/BENCHMARKS.md).

Pure Python and numpy: no TensorFlow import.
"""
from __future__ import annotations

import os
import re

from .errors import InputError

GIB = 1 << 30
#: the default budget never exceeds this, whatever the machine
DEFAULT_CAP = 8 * GIB

# tensorflow/core/framework/types.proto DataType → bytes per element (0: variable-size)
_ITEMSIZE = {
    1: 4, 2: 8, 3: 4, 4: 1, 5: 2, 6: 1, 7: 0, 8: 8, 9: 8, 10: 1, 11: 1, 12: 1, 13: 4, 14: 2, 15: 1, 16: 2,
    17: 2, 18: 16, 19: 2, 20: 0, 21: 0, 22: 4, 23: 8, 24: 1, 25: 1, 26: 1, 27: 1, 28: 1, 29: 1, 30: 1,
}
_NAMES = {1: "float32", 2: "float64", 3: "int32", 4: "uint8", 5: "int16", 6: "int8", 7: "string", 8: "complex64",
          9: "int64", 10: "bool", 14: "bfloat16", 17: "uint16", 18: "complex128", 19: "float16", 22: "uint32",
          23: "uint64"}
#: bytes a decoded string element costs beyond its characters (numpy object pointer + list slot)
_STRING_OVERHEAD = 16

_configured: int | None = None


def physical_memory() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 16 * GIB


def default_limit() -> int:
    return min(DEFAULT_CAP, physical_memory() // 2)


def parse_size(text: str | int, what: str = "--max-memory") -> int:
    """``"4G"``, ``"512M"``, ``"1.5GiB"``, ``"1000000"`` → bytes (positive); errors name ``what``."""
    if isinstance(text, int):
        value = text
    else:
        m = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([kmgt]?)(?:i?b)?\s*", str(text), re.I)
        if not m:
            raise InputError(f"{what} '{text}': expected bytes or a size like 4G, 512M")
        value = int(float(m.group(1)) * (1 << (10 * "_kmgt".index(m.group(2).lower() or "_"))))
    if value <= 0:
        raise InputError(f"{what} must be positive, got {text}")
    return value


def configure(max_memory: int | str | None) -> int:
    """Set the process-wide budget (None: the default); returns it in bytes."""
    global _configured
    _configured = None if max_memory is None else parse_size(max_memory)
    return limit()


def explicit() -> bool:
    """Whether a budget was set (``configure``: ``--max-memory``, a ``max_memory`` argument) or
    ``BNCONVERT_MAX_MEMORY`` holds one, rather than the default being in effect."""
    return _configured is not None or bool(os.environ.get("BNCONVERT_MAX_MEMORY", "").strip())


def limit() -> int:
    if _configured is not None:
        return _configured
    env = os.environ.get("BNCONVERT_MAX_MEMORY")
    if env:
        try:
            return parse_size(env)
        except InputError:
            pass
    return default_limit()


def over_budget(what: str, hint: str = "") -> str:
    """The one-line refusal when ``what`` outgrows the memory budget (a stage child's data
    segment is capped at it): ``"<what> needs more memory than the budget of 8.0 GiB (--max-memory
    to allow more<hint>)"``."""
    return f"{what} needs more memory than the budget of {human(limit())} (--max-memory to allow more{hint})"


def human(n: int) -> str:
    for unit, size in (("TiB", 1 << 40), ("GiB", GIB), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} bytes"


def _count(dims) -> int:
    out = 1
    for d in dims:
        out *= max(int(d), 0)
    return out


def tensor_bytes(t) -> int:
    """Bytes a TensorProto decodes to (numpy), from its declared shape and dtype only.

    A numeric tensor costs ``elements × itemsize`` however it is stored (``tensor_content``, a
    full ``*_val`` list or one value repeated to fill the shape).  A string tensor costs its
    characters plus a pointer per element (the last value is repeated to fill the shape).
    """
    n = _count(d.size for d in t.tensor_shape.dim)
    itemsize = _ITEMSIZE.get(t.dtype % 100, 8)
    if t.dtype % 100 == 7:
        vals = t.string_val
        chars = sum(len(v) for v in vals) + (n - len(vals)) * (len(vals[-1]) if vals and n > len(vals) else 0)
        return n * _STRING_OVERHEAD + chars
    return n * (itemsize or 8)


def check_tensor(t, what: str, budget: int | None = None) -> int:
    """Raise :class:`InputError` if the tensor alone would exceed the budget; returns its size."""
    size = tensor_bytes(t)
    budget = limit() if budget is None else budget
    if size > budget:
        raise InputError(f"{what}: decodes to {human(size)} ({_shape(t)}), over the memory budget of "
                         f"{human(budget)} (--max-memory)")
    return size


def check_constants(graph_def, path: str, budget: int | None = None) -> int:
    """Sum the decoded sizes of every Const (graph and library functions); refuse over budget.

    The message names the largest constant, which is almost always the culprit.
    """
    budget = limit() if budget is None else budget
    total, worst, worst_size = 0, None, -1
    for name, node in _consts(graph_def):
        t = node.attr["value"].tensor
        size = tensor_bytes(t)
        total += size
        if size > worst_size:
            worst, worst_size = (name, t), size
    if total > budget:
        name, t = worst
        raise InputError(f"{path}: constant '{name}' decodes to {human(worst_size)} ({_shape(t)}); the graph's "
                         f"constants total {human(total)}, over the memory budget of {human(budget)} (--max-memory)")
    return total


def _consts(graph_def):
    for n in graph_def.node:
        if n.op == "Const" and "value" in n.attr:
            yield n.name, n
    for f in graph_def.library.function:
        for n in f.node_def:
            if n.op == "Const" and "value" in n.attr:
                yield f"{f.signature.name}/{n.name}", n


def _shape(t) -> str:
    dims = ",".join(str(d.size) for d in t.tensor_shape.dim)
    return f"shape [{dims}] {_NAMES.get(t.dtype % 100, f'dtype {t.dtype}')}"


def check_inputs(shapes: dict, dtypes: dict | None = None, budget: int | None = None) -> int:
    """Refuse verification inputs (``--batch``, ``--input-shape``) whose total size exceeds the budget."""
    import numpy as np

    budget = limit() if budget is None else budget
    total = 0
    for name, shape in shapes.items():
        itemsize = np.dtype((dtypes or {}).get(name, np.float32)).itemsize
        size = _count(shape) * itemsize
        total += size
        if total > budget:
            raise InputError(f"input '{name}' of shape {list(shape)} takes {human(size)}, over the memory budget "
                             f"of {human(budget)} (lower --batch/--input-shape or raise --max-memory)")
    return total


def check_batch(batch) -> None:
    if not isinstance(batch, int) or isinstance(batch, bool) or batch < 1:
        raise InputError(f"--batch must be a positive integer, got {batch}")


def check_npz(path: str, budget: int | None = None) -> int:
    """Read every .npy header in an .npz (no array data) and refuse what exceeds the budget.

    A member whose header declares more bytes than it holds is corrupt and refused too, so
    ``numpy.load`` never allocates for data that is not there.
    """
    import zipfile

    import numpy as np

    from .freeze import require_regular

    budget = limit() if budget is None else budget
    require_regular(path)
    total = 0
    try:
        with zipfile.ZipFile(path) as z:
            for info in z.infolist():
                if not info.filename.endswith(".npy"):
                    continue
                with z.open(info) as f:
                    version = np.lib.format.read_magic(f)
                    if version == (1, 0):
                        shape, _, dtype = np.lib.format.read_array_header_1_0(f)
                    else:
                        shape, _, dtype = np.lib.format.read_array_header_2_0(f)
                    header_len = f.tell()
                size = _count(shape) * dtype.itemsize
                key = info.filename[:-4]
                if size > budget - total:
                    raise InputError(f"{path}: array '{key}' declares shape {list(shape)} {dtype} "
                                     f"({human(size)}), over the memory budget of {human(budget)} (--max-memory)")
                if dtype.hasobject or info.file_size - header_len < size:
                    raise InputError(f"{path}: array '{key}' is corrupt (its header declares {human(size)}, "
                                     f"it holds {human(max(info.file_size - header_len, 0))})")
                total += size
    except InputError:
        raise
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        raise InputError(f"cannot read {path} as .npz: {' '.join(str(e).split())[:200]}") from None
    return total
