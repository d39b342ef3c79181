"""Compare a candidate runtime's outputs with the reference (the original TensorFlow graph).

Pass rule, per output (numpy-only; no TensorFlow):

    max_abs <= atol + rtol * max(|reference|)

where ``max_abs`` is the largest element-wise absolute difference. The relative part is scaled
by the output's magnitude (its largest absolute value), not element by element: near-zero
elements of a float32 output carry absolute rounding error of the size of the *largest*
values, so an element-wise relative test fails on correct conversions. An output also fails
when its shape differs, when it is missing, or when non-finite values differ (a NaN or inf in
the candidate where the reference has a finite value, or vice versa).

Defaults ``DEFAULT_ATOL = 1e-5`` and ``DEFAULT_RTOL = 1e-4``, measured on a small conv net
(2x Conv3x3+FusedBatchNormV3(eps=1e-3)+Relu, global mean, dense; 8x16x16x3 standard-normal
inputs; three seeds) against the unfolded TF graph: a float64-computed fold run in TF float32
max_rel 1.8e-7; ONNX Runtime CPU max_abs 0.7-1.4e-6, max_rel 4-5e-7; TFLite max_abs
0.8-1.2e-6, max_rel 4-4.6e-7 (the float64 reference itself differs from TF by ~2e-7). A
larger net (3 convs up to 64 channels, 16x32x32x3) on an H200 with onnxruntime-gpu 1.31.1:
CPU max_rel 1.3e-6, CUDA with TF32 off (what runners.py sets) 8.4e-7, CUDA with TF32 on
1.1e-3, which fails. Wrong folds fail by far: epsilon dropped 2-3.4e-3, gamma missing >0.3,
mean not subtracted >0.2, variance used as std >0.9. Below float32 noise nothing can be caught:
one weight off by 1e-3 (1e-5 relative) or a dropped epsilon of 1e-5 on unit variance
(computed: 5e-6) passes.

**Never vacuous.** Each output also records its reference's magnitude (``ref_max`` = max|ref|,
``ref_std``) and whether the reference is *constant* — NaN in it, every value equal (all zeros:
dead ReLUs), or every sample giving the same values (the output ignores the input).  A
comparison against a constant reference proves nothing, so it is "inconclusive": not a pass
(``ok`` False, ``status`` "inconclusive"), and the user is told to feed real inputs (``--data``).
Decision for *layers*: a layer constant on the inputs used (e.g. a conv whose input Relu is dead
deep in a random-weight net: resnet_like's bn30) is shown as inconclusive in its row but only
makes the whole comparison inconclusive when every layer is; the outputs still vary, so the
check is not vacuous, that layer just adds no evidence.

**Layer by layer** (``layers``): the same rule is applied to each folded batch norm's output
(the original BN tensor against the tensor that replaces it) and to the logits in front of a
final Softmax/Sigmoid.  The default tolerances are kept for layers, measured with
``python tools/verify_mutants.py`` (every fixture, 8 samples, seed 0; TF folded, ONNX Runtime
CPU, TFLite): the worst layer of any float32 fixture has max rel 1.4e-6 (mlp_moments, TFLite;
resnet_like 1.2e-6; the MNIST fixtures 7.3e-7 to 8.2e-7), 70x below ``rtol``; float16_conv
7.5e-4 against its float16 ``rtol`` of 5e-3.  A layer's error is measured against that layer's
own magnitude, so a large activation does not hide an error in a small one elsewhere.

**Mutants caught** (same command): copies of the exported .onnx/.tflite with output channel 0
of the first/middle/last folded layer x1.01 and the largest first-layer weight x1.5 — 170 of
178 fail verification (95.5%); every untouched file passes.  Missed: float16_conv (3: a 1%
channel error is within float16's tolerance), and TFLite mutants of dense layers whose channel
0 is dead after the fused Relu on all 8 samples (ckpt_dense, mlp_moments, the MNIST MLPs,
resnet_like: TFLite fuses the pre-activation away, so only post-Relu tensors can be compared).

``argmax_agreement`` is reported for 2-D outputs with more than one column (class scores): the
fraction of rows whose argmax matches. It is informational and does not decide pass/fail.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

DEFAULT_ATOL = 1e-5
DEFAULT_RTOL = 1e-4


@dataclass
class OutputStats:
    name: str
    max_abs: float
    max_rel: float  # max_abs / max(|reference|)
    mean_abs: float
    argmax_agreement: float | None
    shape_ok: bool
    ok: bool
    reference_shape: tuple = ()
    candidate_shape: tuple | None = ()
    reason: str = ""  # why it failed; empty when ok
    ref_max: float = float("nan")  # max |reference| (finite values)
    ref_std: float = float("nan")  # standard deviation of the reference
    constant: str = ""  # why the reference cannot discriminate (NaN, all equal, same per sample)
    tensor: str = ""  # for layers: the compared tensors, "original -> candidate"

    def to_dict(self) -> dict:
        d = asdict(self)
        d["reference_shape"] = list(self.reference_shape)
        d["candidate_shape"] = None if self.candidate_shape is None else list(self.candidate_shape)
        for k in ("max_abs", "max_rel", "mean_abs", "ref_max", "ref_std"):
            d[k] = _json_float(d[k])
        return d


@dataclass
class Comparison:
    runtime: str  # "onnx:CPUExecutionProvider", "tflite", "tf:folded", ...
    file: str
    outputs: list[OutputStats]
    ok: bool
    note: str = ""  # e.g. "TF32 disabled", "TFLite tensors matched by order"
    atol: float = DEFAULT_ATOL
    rtol: float = DEFAULT_RTOL
    extra: dict = field(default_factory=dict)
    layers: list[OutputStats] = field(default_factory=list)
    layers_skipped: list[str] = field(default_factory=list)

    @property
    def status(self) -> str:
        """"pass", "fail" (an error beyond tolerance: decisive) or "inconclusive" (a constant reference)."""
        if any(not o.ok for o in self.outputs + self.layers) or not self.outputs:
            return "fail"
        if any(o.constant for o in self.outputs) or (self.layers and all(o.constant for o in self.layers)):
            return "inconclusive"
        return "pass"

    def worst_layer(self) -> OutputStats | None:
        finite = [o for o in self.layers if o.shape_ok and np.isfinite(o.max_rel)]
        return max(finite, key=lambda o: o.max_rel, default=None)

    def __bool__(self) -> bool:
        return self.ok

    def failures(self) -> list[OutputStats]:
        return [o for o in self.outputs if not o.ok]

    def summary(self) -> str:
        """One line, e.g. for a VerificationError message."""
        if self.ok:
            worst = max((o.max_rel for o in self.outputs), default=0.0)
            return f"{self.runtime} {self.file}: PASS (max rel {worst:.2e})"
        parts = []
        for o in self.failures():
            if o.reason:
                parts.append(f"{o.name}: {o.reason}")
            else:
                parts.append(f"{o.name}: max abs {o.max_abs:.3e}, max rel {o.max_rel:.3e}")
        return (f"{self.runtime} {self.file}: FAIL ({'; '.join(parts)}; "
                f"tolerance atol={self.atol:g} + rtol={self.rtol:g}*max|ref|)")

    def to_dict(self) -> dict:
        return {
            "runtime": self.runtime,
            "file": self.file,
            "ok": self.ok,
            "note": self.note,
            "atol": self.atol,
            "rtol": self.rtol,
            "status": self.status,
            "outputs": [o.to_dict() for o in self.outputs],
            "layers": [o.to_dict() for o in self.layers],
            "layers_skipped": list(self.layers_skipped),
            **({"worst_layer": self.worst_layer().to_dict()} if self.worst_layer() else {}),
            **({"extra": self.extra} if self.extra else {}),
        }


def _json_float(v):
    if v is None:
        return None
    v = float(v)
    return v if np.isfinite(v) else str(v)


def _as_float(a: np.ndarray) -> np.ndarray:
    if a.dtype == np.bool_ or np.issubdtype(a.dtype, np.integer) or np.issubdtype(a.dtype, np.floating):
        return a.astype(np.float64)
    raise TypeError(f"cannot compare outputs of dtype {a.dtype}")


def _nonfinite_reason(r: np.ndarray, c: np.ndarray) -> str:
    """Name a NaN/inf disagreement as such (finite parts may agree exactly: max abs error 0)."""
    rn, cn = np.isnan(r), np.isnan(c)
    extra, lost = int(np.sum(cn & ~rn)), int(np.sum(rn & ~cn))
    if extra or lost:
        parts = ([f"{extra} NaN where the reference has none"] if extra else []) + \
                ([f"{lost} NaN where the reference is a number"] if lost else [])
        return "NaN mismatch: " + ", ".join(parts)
    return f"inf mismatch: {int(np.sum((np.isinf(r) | np.isinf(c)) & (r != c)))} infinite values differ"


def reference_constant(ref: np.ndarray, samples: int | None = None) -> str:
    """Why ``ref`` cannot tell a right model from a wrong one ("" when it can)."""
    try:
        r = _as_float(np.asarray(ref))
    except TypeError:
        return ""
    if r.size == 0:
        return "empty"
    if np.isnan(r).any():
        return "NaN in the reference"
    if np.all(r == r.flat[0]):
        return "all zeros" if r.flat[0] == 0 else f"all equal ({r.flat[0]:.4g})"
    if samples and samples >= 2 and r.ndim >= 1 and r.shape[0] == samples and np.all(r == r[:1]):
        return f"the same for all {samples} samples"
    return ""


def _magnitude(ref: np.ndarray) -> tuple[float, float]:
    try:
        r = _as_float(np.asarray(ref))
    except TypeError:
        return float("nan"), float("nan")
    fin = r[np.isfinite(r)]
    if fin.size == 0:
        return float("nan"), float("nan")
    return float(np.abs(fin).max()), float(fin.std())


def compare_output(name: str, reference, candidate, atol: float = DEFAULT_ATOL,
                   rtol: float = DEFAULT_RTOL, samples: int | None = None) -> OutputStats:
    """Statistics and verdict for one output (see the module docstring for the rule).

    ``samples``: how many samples the batch axis holds (to find a reference that ignores its
    input); verification always passes it.  Without it only the element-wise rule applies (a
    NaN where the reference has NaN agrees, as before).  ``ok`` says whether the candidate agrees within tolerance; ``constant`` whether
    that agreement proves anything — a :class:`Comparison` with a constant reference is never
    ok (its ``status`` is "inconclusive").
    """
    stats = _compare_output(name, reference, candidate, atol, rtol)
    stats.ref_max, stats.ref_std = _magnitude(reference)
    stats.constant = reference_constant(reference, samples) if samples is not None else ""
    return stats


def _compare_output(name: str, reference, candidate, atol: float, rtol: float) -> OutputStats:
    nan = float("nan")
    ref = np.asarray(reference)
    if candidate is None:
        return OutputStats(name, nan, nan, nan, None, False, False, ref.shape, None, "missing from candidate")
    cand = np.asarray(candidate)
    if ref.shape != cand.shape:
        return OutputStats(name, nan, nan, nan, None, False, False, ref.shape, cand.shape,
                           f"shape {list(cand.shape)} != reference {list(ref.shape)}")
    try:
        r, c = _as_float(ref), _as_float(cand)
    except TypeError as e:
        equal = bool(np.array_equal(ref, cand))
        return OutputStats(name, 0.0 if equal else nan, 0.0 if equal else nan, 0.0 if equal else nan, None,
                           True, equal, ref.shape, cand.shape, "" if equal else f"values differ ({e})")

    r_fin, c_fin = np.isfinite(r), np.isfinite(c)
    reason = ""
    nonfinite_ok = np.array_equal(r_fin, c_fin) and np.array_equal(r[~r_fin], c[~c_fin], equal_nan=True)
    if not nonfinite_ok:
        reason = _nonfinite_reason(r, c)
    both = r_fin & c_fin
    if both.any():
        diff = np.abs(r[both] - c[both])
        max_abs, mean_abs = float(diff.max()), float(diff.mean())
        scale = float(np.abs(r[both]).max())
    else:
        max_abs = mean_abs = scale = 0.0
    if scale > 0:
        max_rel = max_abs / scale
    else:
        max_rel = 0.0 if max_abs == 0 else float("inf")

    agreement = None
    if ref.ndim == 2 and ref.shape[1] > 1 and ref.shape[0] > 0:
        agreement = float(np.mean(np.argmax(r, axis=-1) == np.argmax(c, axis=-1)))

    within = max_abs <= atol + rtol * scale
    if not within and not reason:
        reason = f"max abs {max_abs:.3e} > {atol:g} + {rtol:g}*{scale:.3e}"
    return OutputStats(name, max_abs, max_rel, mean_abs, agreement, True, bool(within and nonfinite_ok),
                       ref.shape, cand.shape, "" if (within and nonfinite_ok) else reason)


def compare(reference: dict, candidate: dict, runtime: str, file: str, atol: float = DEFAULT_ATOL,
            rtol: float = DEFAULT_RTOL, note: str = "", samples: int | None = None,
            layers: list[tuple[str, str, np.ndarray, np.ndarray | None]] | None = None,
            layers_skipped: list[str] | None = None) -> Comparison:
    """Compare every output of ``reference`` (name → array) with ``candidate``.

    Outputs present only in ``candidate`` are ignored; outputs missing from it fail.
    ``layers``: ``(layer name, "orig -> cand" tensors, reference, candidate)`` in topological
    order; a candidate laid out differently is aligned first (:func:`bnconvert.verify.expose.align`).
    """
    stats = [compare_output(name, ref, candidate.get(name), atol, rtol, samples) for name, ref in reference.items()]
    lstats = []
    from .expose import align

    for lname, tensors, ref, cand in layers or []:
        cand = align(ref, cand)
        st = compare_output(lname, ref, cand, atol, rtol, samples)
        st.tensor = tensors
        lstats.append(st)
    c = Comparison(runtime, str(file), stats, False, note, atol, rtol, layers=lstats,
                   layers_skipped=list(layers_skipped or []))
    c.ok = c.status == "pass"
    return c


def _fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float) and np.isnan(v):
        return "n/a"
    return f"{v:.2e}"


def format_table(comparisons) -> str:
    """A fixed-width table: one row per (runtime, output), then the notes."""
    header = ("runtime", "output", "max abs", "max rel", "mean abs", "argmax", "result")
    rows = []
    notes = []
    for comp in comparisons:
        for o in comp.outputs or [OutputStats("(none)", float("nan"), float("nan"), float("nan"),
                                              None, False, False)]:
            agree = "-" if o.argmax_agreement is None else f"{100 * o.argmax_agreement:.1f}%"
            result = "PASS" if o.ok else "FAIL"
            if not o.ok and o.reason and not o.shape_ok:
                result += f" ({o.reason})"
            rows.append((comp.runtime, o.name, _fmt(o.max_abs), _fmt(o.max_rel), _fmt(o.mean_abs),
                         agree, result))
        if comp.note:
            notes.append(f"{comp.runtime}: {comp.note}")
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip() for row in [header, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    tols = sorted({(c.atol, c.rtol) for c in comparisons})
    if tols:
        notes.append("pass: max abs <= " + ", ".join(f"{a:g} + {r:g}*max|ref|" for a, r in tols))
    return "\n".join(lines + notes)
