"""The report: what bnconvert found, did, wrote and measured — as JSON and as a table.

Keys tools rely on: ``bn`` {found, folded, scale_shift, refused}, ``layers`` [{name, form,
producer, action, reason, ...}], ``training_flags``, ``inputs``, ``outputs``, ``files``,
``timings`` (seconds per stage), ``verification`` (one entry per runtime) and ``ok``.
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
    timings: dict[str, float] = field(default_factory=dict)
    memory: dict[str, float] = field(default_factory=dict)  # peak MiB per process/stage (pipeline)
    notes: list[str] = field(default_factory=list)

    @property
    def bn(self) -> dict[str, int]:
        count = {"found": len(self.layers), "folded": 0, "scale_shift": 0, "refused": 0}
        for layer in self.layers:
            key = {"fold": "folded", "scale_shift": "scale_shift", "refuse": "refused"}[layer["action"]]
            count[key] += 1
        return count

    @property
    def ok(self) -> bool:
        return self.bn["refused"] == 0 and all(v.get("ok", False) for v in self.verification.values())

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
            "inference": self.inference,
            "ops_before": self.ops_before,
            "ops_after": self.ops_after,
            "files": self.files,
            "exports": self.exports,
            "skipped": self.skipped,
            "input_shapes": self.input_shapes,
            "verification": self.verification,
            "timings": {k: round(v, 4) for k, v in self.timings.items()},
            "memory_mib": self.memory,
            "notes": self.notes,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False, default=_jsonable)

    # ------------------------------------------------------------------ text
    def summary(self) -> str:
        b = self.bn
        lines = [
            f"model:     {self.source.get('path', '?')} ({self.source.get('format', '?')})",
            f"inputs:    {', '.join(self.inputs)}",
            f"outputs:   {', '.join(self.outputs)}",
            "flags:     " + (", ".join(f"{k}={str(v).lower()}" for k, v in self.training_flags.items()) or "none"),
            f"batch norms: {b['found']} found, {b['folded']} folded, {b['scale_shift']} kept as scale-shift, "
            f"{b['refused']} refused",
        ]
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
        return verification_table(self.verification)

    def files_table(self) -> str:
        lines = [f"wrote {kind:7s} {path}" for kind, path in self.files.items()]
        lines += [f"skipped {kind:5s} {why}" for kind, why in self.skipped.items()]
        return "\n".join(lines)


def verification_table(verification: dict[str, dict]) -> str:
    """One row per runtime and output: errors against the original graph, PASS/FAIL."""
    rows = [("runtime", "output", "max abs", "max rel", "mean abs", "argmax", "result")]
    for runtime, v in verification.items():
        for o in v.get("outputs", []):
            agree = o.get("argmax_agreement")
            rows.append((runtime, o.get("name"), f"{o.get('max_abs', float('nan')):.3g}",
                         f"{o.get('max_rel', float('nan')):.3g}", f"{o.get('mean_abs', float('nan')):.3g}",
                         "-" if agree is None else f"{100 * agree:.1f}%", "PASS" if o.get("ok") else "FAIL"))
    return _table(rows)


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
