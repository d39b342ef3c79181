"""The report: what bnconvert found, did, wrote and measured — as JSON and as a table.

Keys tools rely on: ``bn`` {found, folded, scale_shift, refused}, ``layers`` [{name, form,
producer, action, reason, ...}], ``training_flags``, ``inputs``, ``outputs``, ``files``,
``timings`` (seconds per stage; stages overlap when ``jobs`` > 1), ``verification`` (one entry per runtime: ``status`` pass/fail/
inconclusive, ``outputs`` and ``layers`` with their errors and the reference's magnitude,
``worst_layer``, ``layers_skipped``), ``verification_inputs`` (samples, seed, distributions or the
``--data`` file), ``verification_power`` (see :mod:`bnconvert.verify.power`) and ``ok``.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field

BN_OPS = ("FusedBatchNorm", "FusedBatchNormV2", "FusedBatchNormV3", "BatchNormWithGlobalNormalization")


@dataclass
class Report:
    source: dict = field(default_factory=dict)
    inputs: list[str] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)
    outputs_guessed: bool = False  # picked by a heuristic (training graph): check them
    output_candidates: list[str] = field(default_factory=list)
    training_flags: dict[str, bool] = field(default_factory=dict)
    layers: list[dict] = field(default_factory=list)
    inference: dict = field(default_factory=dict)
    ops_before: dict[str, int] = field(default_factory=dict)
    ops_after: dict[str, int] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)
    exports: dict[str, dict] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)  # format → why its converter could not
    input_shapes: dict[str, list[int]] = field(default_factory=dict)
    verification: dict[str, dict] = field(default_factory=dict)
    verification_inputs: dict = field(default_factory=dict)  # samples, seed, distributions (or --data)
    verification_power: dict = field(default_factory=dict)  # bnconvert.verify.power.in_session
    timings: dict[str, float] = field(default_factory=dict)
    jobs: int = 1  # child stages run at once (bnconvert.schedule): the memory peak is their sum
    memory: dict[str, float] = field(default_factory=dict)  # peak MiB per process/stage (pipeline)
    notes: list[str] = field(default_factory=list)
    quantization: dict = field(default_factory=dict)  # int8 files: bnconvert.quantize, verify/quant.py

    @property
    def bn(self) -> dict[str, int]:
        count = {"found": len(self.layers), "folded": 0, "scale_shift": 0, "refused": 0}
        for layer in self.layers:
            key = {"fold": "folded", "scale_shift": "scale_shift", "refuse": "refused"}[layer["action"]]
            count[key] += 1
        return count

    @property
    def ok(self) -> bool:
        return self.bn["refused"] == 0 and all(v.get("ok", False) for v in self.verification.values()) and all(
            v.get("ok", False) for v in self.quantization.get("verification", {}).values())

    @property
    def status(self) -> str:
        """"pass", "fail" or "inconclusive" (a constant reference: nothing could show an error)."""
        st = [v.get("status", "pass" if v.get("ok") else "fail") for v in self.verification.values()]
        return "fail" if "fail" in st or self.bn["refused"] else "inconclusive" if "inconclusive" in st else "pass"

    def to_dict(self) -> dict:
        from . import __version__

        return {
            "bnconvert": __version__,
            "ok": self.ok,
            "source": self.source,
            "bn": self.bn,
            "layers": self.layers,
            "training_flags": self.training_flags,
            "inputs": self.inputs,
            "outputs": self.outputs,
            "outputs_guessed": self.outputs_guessed,
            "output_candidates": self.output_candidates,
            "inference": self.inference,
            "ops_before": self.ops_before,
            "ops_after": self.ops_after,
            "files": self.files,
            "exports": self.exports,
            "skipped": self.skipped,
            "input_shapes": self.input_shapes,
            "verification": self.verification,
            "verification_inputs": self.verification_inputs,
            "verification_power": self.verification_power,
            "timings": {k: round(v, 4) for k, v in self.timings.items()},
            "jobs": self.jobs,
            "memory_mib": self.memory,
            "notes": self.notes,
            **({"quantization": self.quantization} if self.quantization else {}),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False, default=_jsonable)

    # ------------------------------------------------------------------ text
    def summary(self) -> str:
        b = self.bn
        lines = [
            f"model:     {self.source.get('path', '?')} ({self.source.get('format', '?')})",
            f"inputs:    {', '.join(self.inputs)}",
            f"outputs:   {', '.join(self.outputs)}" + (" (guessed: a training graph; --outputs to choose)"
                                                       if self.outputs_guessed else ""),
            "flags:     " + (", ".join(f"{k}={str(v).lower()}" for k, v in self.training_flags.items()) or "none"),
            f"batch norms: {b['found']} found, {b['folded']} folded, {b['scale_shift']} kept as scale-shift, "
            f"{b['refused']} refused",
        ]
        if self.outputs_guessed and self.output_candidates != self.outputs:
            lines.insert(3, f"candidates: {', '.join(self.output_candidates)}")
        return "\n".join(lines)

    def layer_table(self) -> str:
        if not self.layers:
            return "no batch norm found"
        rows = [("BN", "form", "producer", "action", "why")]
        for layer in self.layers:
            rows.append((layer["name"], layer["form"], layer.get("producer") or "-", layer["action"],
                         layer.get("reason") or ""))
        return _table(rows)

    def verification_table(self) -> str:
        return verification_table(self.verification, self.verification_inputs, self.verification_power)

    def quantization_table(self) -> str:
        from .verify.quant import table

        return table(self.quantization.get("verification", {}))

    def files_table(self) -> str:
        lines = [f"wrote {kind:7s} {path}" for kind, path in self.files.items()]
        lines += [f"skipped {kind:5s} {why}" for kind, why in self.skipped.items()]
        return "\n".join(lines)


def _g(v) -> str:
    try:
        return f"{float(v):.3g}"
    except (TypeError, ValueError):
        return str(v)


def _result(o: dict) -> str:
    if not o.get("ok"):
        return "FAIL"
    return f"INCONCLUSIVE ({o['constant']})" if o.get("constant") else "PASS"


def verification_table(verification: dict[str, dict], inputs: dict | None = None, power: dict | None = None) -> str:
    """Errors against the original graph: one row per runtime and output (with the reference's
    magnitude), then each runtime's worst layer, the inputs used and the check's power."""
    rows = [("runtime", "output", "max|ref|", "ref std", "max abs", "max rel", "argmax", "result")]
    lrows = [("runtime", "layers", "worst layer", "max rel", "first failing layer", "result")]
    skipped: list[str] = []
    for runtime, v in verification.items():
        for o in v.get("outputs", []):
            agree = o.get("argmax_agreement")
            rows.append((runtime, o.get("name"), _g(o.get("ref_max")), _g(o.get("ref_std")), _g(o.get("max_abs")),
                         _g(o.get("max_rel")), "-" if agree is None else f"{100 * agree:.1f}%", _result(o)))
        layers = v.get("layers", [])
        for note in v.get("layers_skipped", []):
            if note not in skipped:
                skipped.append(note)
        if layers:
            worst = v.get("worst_layer") or {}
            bad = next((o for o in layers if not o.get("ok")), None)
            n_ok = sum(1 for o in layers if o.get("ok") and not o.get("constant"))
            n_const = sum(1 for o in layers if o.get("constant"))
            count = f"{n_ok}/{len(layers)} ok" + (f", {n_const} constant" if n_const else "")
            verdict = "FAIL" if bad else "INCONCLUSIVE" if n_const == len(layers) else "PASS"
            lrows.append((runtime, count, worst.get("name", "-"), _g(worst.get("max_rel")),
                          "-" if bad is None else f"{bad['name']} ({_g(bad.get('max_rel'))})", verdict))
    out = [_table(rows)]
    if len(lrows) > 1:
        out += ["", _table(lrows)]
    notes = [f"{r}: {v['note']}" for r, v in verification.items() if v.get("note")]
    if notes:
        out.append("notes:     " + "; ".join(notes))
    if skipped:
        out.append("not compared: " + "; ".join(skipped[:4]) + (f"; … {len(skipped) - 4} more" if len(skipped) > 4 else ""))
    if inputs:
        out.append(inputs_line(inputs))
    if power:
        from .verify.power import power_line

        out.append(power_line(power))
    return "\n".join(out)


def inputs_line(info: dict) -> str:
    """``inputs:    8 samples, seed 0 (x:0 normal x4 + uniform[0,1) x4)`` or the --data file."""
    if info.get("source") != "random":
        return f"inputs:    {info.get('samples')} samples from {info.get('source')}"
    runs = f" in {info['runs']} runs of batch {info['batch']}" if info.get("runs", 1) > 1 and info.get("batch") else ""
    dists = ", ".join(f"{k} {v}" for k, v in info.get("distributions", {}).items())
    return f"inputs:    {info.get('samples')} random samples{runs}, seed {info.get('seed')} ({dists})"


def _table(rows: list[tuple]) -> str:
    widths = [min(max(len(str(r[i])) for r in rows), 60) for i in range(len(rows[0]) - 1)]
    out = []
    for r in rows:
        cells = [str(c)[:60].ljust(w) for c, w in zip(r[:-1], widths)] + [str(r[-1])]
        out.append("  ".join(cells).rstrip())
    return "\n".join(out)


def _jsonable(o):
    try:
        import numpy as np

        if isinstance(o, np.generic):
            return o.item()
        if isinstance(o, np.ndarray):
            return o.tolist()
    except ImportError:  # pragma: no cover
        pass
    if hasattr(o, "to_dict"):
        return o.to_dict()
    return str(o)
