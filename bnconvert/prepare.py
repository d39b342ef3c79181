"""The first stage of a conversion, run in a child process: load → inference mode → fold → stage.

:func:`bnconvert.pipeline.convert` runs :func:`prepare` through :mod:`bnconvert.isolate`, so the
conversion's own process never imports TensorFlow and never holds a GraphDef: the model file is
parsed, checked and folded in a short-lived child, the folded graph (and, where the input is not
already one, the original as a binary ``.pb``) is written into the run's staging folder, and what
the later stages need to know about the two graphs comes back as a small :class:`Prepared`.

Why (issue 12, ``tools/bench_real.py``): on a 100 MB ResNet-50 the process that loaded and
folded held TensorFlow's import (690 MB) and the graphs (another 500–700 MB) for the whole run,
beside the forkserver's own TensorFlow and the converter children.  Now the peak is the
forkserver plus the largest stage.  It also keeps the parsing of an untrusted file out of the
process that owns the outputs: a parser crash is one line naming the stage (exit 3).
"""
from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass, field

import numpy as np

#: file names inside the staging folder
FOLDED_INPUT = "folded-input.pb"
ORIGINAL = "original.pb"
SOURCE = "source.pb"
#: ops that draw random numbers (RandomUniform, StatelessRandomNormalV2, TruncatedNormal, ...)
_RANDOM_OP = re.compile(r"Random|TruncatedNormal|Multinomial")


@dataclass
class Prepared:
    """What the parent keeps of a loaded and folded model: no GraphDef, only files and facts."""

    report: object  # bnconvert.report.Report
    folded_path: str  # the folded GraphDef, staged (binary)
    original_path: str | None  # the original (frozen) GraphDef as a binary file; None without verification
    source_path: str  # the model as the user named it (messages)
    input_dtypes: dict[str, np.dtype | str] = field(default_factory=dict)  # str: why it cannot be fed
    declared_shapes: dict[str, list | None] = field(default_factory=dict)  # None: unknown rank
    original_ops: dict[str, str] = field(default_factory=dict)  # node → op (TFLite layer matching)
    probes: list = field(default_factory=list)  # bnconvert.verify.layers.Probe
    probes_skipped: list[str] = field(default_factory=list)
    fold_changed: set[str] = field(default_factory=set)
    power_targets: list = field(default_factory=list)  # bnconvert.verify.power targets
    #: placeholders of the original that the outputs reach only through branches the flags
    #: switch off: TensorFlow still wants them fed to run it; ``{tensor: 0}`` (their value is dead)
    idle_feeds: dict[str, int] = field(default_factory=dict)

    @property
    def declared_batch(self) -> dict[str, int | None]:
        """Each input's declared dim 0 (-1 unknown, None unknown rank), as make_samples wants it."""
        return {t: (None if not s else (-1 if s[0] is None else s[0])) for t, s in self.declared_shapes.items()}


def _dtypes(graph_def, inputs: list[str]) -> dict:
    """numpy dtype of each input; for one verification cannot feed (bfloat16), the message
    saying so, raised only if verification runs (:func:`bnconvert.verify.check.make_samples`)."""
    from .errors import InputError
    from .verify.inputs import placeholder_dtypes

    out = {}
    for t in inputs:
        try:
            out[t] = placeholder_dtypes(graph_def, [t])[t]
        except InputError as e:
            out[t] = e.message
    return out


def _declared(graph_def, inputs: list[str]) -> dict[str, list | None]:
    from .verify.inputs import placeholder_shapes

    out = {}
    for t in inputs:
        try:
            out[t] = placeholder_shapes(graph_def, [t])[t]
        except Exception:  # noqa: BLE001 - unknown rank: the shapes were resolved with overrides
            out[t] = None
    return out


def prepare(source: str, tmp: str, graph_name: str, opts, source_meta: dict | None = None,
            proto_limits: dict[str, int] | None = None) -> Prepared:
    """Load ``source`` (a model path), fold it as ``opts`` says and stage the results in ``tmp``.

    ``graph_name``: the staged folded graph's file name (the final ``.pb``'s name when a ``.pb``
    is written).  ``source_meta``: for a Model or GraphDef the library caller handed in (staged
    by the parent as ``source``): its ``path``, ``format``, ``sha256`` and ``repairs``.
    ``proto_limits``: the parent's protobuf size limits (``{"load": …, "write": …}``, bytes),
    which apply here as they would in the parent.
    """
    if proto_limits:
        import importlib

        # the modules (``bnconvert.load`` is also the name of the api function)
        _load_mod = importlib.import_module("bnconvert.load")
        _pipeline_mod = importlib.import_module("bnconvert.pipeline")
        _load_mod.MAX_PROTO_BYTES = int(proto_limits["load"])
        _pipeline_mod.MAX_PROTO_BYTES = int(proto_limits["write"])
    from . import api
    from .errors import BNConvertError
    from .pipeline import write_graph_def
    from .verify.inputs import resolve_shapes

    exp, ver, ana = opts.export, opts.verify, opts.analysis
    t0 = time.perf_counter()
    try:
        model = api.load(source, outputs=ana.outputs, allow_unsafe=opts.allow_unsafe)
    except BNConvertError as e:
        if source_meta:  # name the caller's model, not the staged copy of it
            e.message = e.message.replace(source, source_meta["path"])
        raise
    # the original graph for verification: the file itself when it is a binary GraphDef read as is
    original_as_is = model.format == "pb" and not model.repairs and os.path.isfile(source)
    if source_meta:
        model.path, model.format = source_meta["path"], source_meta["format"]
        model.sha256 = source_meta.get("sha256") or model.sha256
        model.repairs = dict(source_meta.get("repairs") or {}) or model.repairs
        # a SavedModel's signature: its inputs and outputs are the defaults, as in the parent
        model.inputs = source_meta.get("inputs") or model.inputs
        model.outputs = source_meta.get("outputs") or model.outputs
    load_s = time.perf_counter() - t0
    folded = api.fold(model, inputs=ana.inputs, outputs=ana.outputs, set_flags=ana.set_flags,
                      mode=opts.fold.mode, only=opts.fold.only)
    needs_tf_children = ver.verify or set(exp.to) - {"pb"}
    if not opts.allow_unsafe and needs_tf_children:
        # verification runs the original graph; TF's converters run grappler on the folded one
        from .safety import check_safe

        check_safe(model.graph_def if ver.verify else folded.graph_def, what=model.path)
    report = folded.report
    report.timings = {"load": load_s, **report.timings}
    # every format (the .pb's verification included) uses the same concrete input shapes
    report.input_shapes = resolve_shapes(folded.graph_def, report.inputs, exp.input_shapes, batch=exp.batch)
    t = time.perf_counter()
    folded_path = os.path.join(tmp, graph_name)
    write_graph_def(folded.graph_def, folded_path)
    if "pb" in exp.to:
        report.timings["write_pb"] = time.perf_counter() - t
    original_path = _original_file(model, source, original_as_is, tmp) if ver.verify else None
    return prepared(folded, folded_path, original_path, verify=ver.verify, power=ver.power)


def prepared(folded, folded_path: str, original_path: str | None, verify: bool = True,
             power: bool = True) -> Prepared:
    """The :class:`Prepared` of a :class:`~bnconvert.api.FoldedModel` whose folded graph is at
    ``folded_path`` and whose original is at ``original_path`` (binary GraphDefs; the report's
    ``input_shapes`` must be set).  Also what ``tools/bench.py`` uses to verify stage by stage."""
    model, report = folded.model, folded.report
    prep = Prepared(report=report, folded_path=folded_path, original_path=original_path, source_path=model.path,
                    input_dtypes=_dtypes(folded.graph_def, report.inputs),
                    declared_shapes=_declared(model.graph_def, report.inputs))
    if verify:
        _verification_facts(prep, model.graph_def, folded.graph_def, report, power=power)
    return prep


def _original_file(model, source: str, as_is: bool, tmp: str) -> str:
    """The original graph as a binary GraphDef file: ``source`` itself when it is one that was
    read as is, else written into the staging folder."""
    if as_is:
        return source
    from .pipeline import write_graph_def

    path = os.path.join(tmp, ORIGINAL)
    write_graph_def(model.graph_def, path)
    return path


def _idle_placeholders(g, folded_gd, report) -> dict[str, int]:
    """``{tensor: 0}`` for each ``Placeholder`` of the original that the outputs depend on but
    that is neither an input nor a flag and that the folded graph no longer reads: it is read
    only inside branches the training flags switch off (a noise level used in training), so
    its value never reaches an output — but TensorFlow refuses to run the original unfed.
    ``g``: the original as a :class:`~bnconvert.graph.Graph`."""
    from .graph import node_of

    needed = g.ancestors([node_of(t) for t in report.outputs], control=True)
    read = {node_of(i) for n in folded_gd.node for i in n.input}
    taken = {node_of(t) for t in list(report.inputs) + list(report.training_flags)}
    return {f"{name}:0": 0 for name in sorted(needed) if name in g.nodes and g.nodes[name].op == "Placeholder"
            and name not in taken and name not in read and g.nodes[name].attr["dtype"].type != 7}  # 7: string


def _verification_facts(prep: Prepared, original_gd, folded_gd, report, power: bool) -> None:
    from .verify.layers import fold_changed, layer_probes

    prep.probes, prep.probes_skipped = layer_probes(original_gd, folded_gd, report.layers, report.outputs)
    prep.original_ops = {n.name: n.op for n in original_gd.node}
    prep.fold_changed = fold_changed(original_gd, report.layers)
    # a random draw (zeroed here, or left in the model: a dropout bnconvert did not recognise set
    # with --set keep_prob=1, whose mask keeps every unit) and its own arithmetic differ from
    # runtime to runtime: those tensors are not compared layer by layer (the outputs still are)
    from .graph import Graph

    g = Graph(original_gd, copy_nodes=False)  # one index of the original for both questions below
    zeroed = (report.inference or {}).get("dropout_draws_zeroed") or ()
    drawn = [n.name for n in original_gd.node if _RANDOM_OP.search(n.op)]
    if zeroed or drawn:
        from .inference import noise_path

        prep.fold_changed |= noise_path(g, zeroed) | noise_path(g, drawn, own=True)
    prep.idle_feeds = _idle_placeholders(g, folded_gd, report)
    if power:
        from .verify.power import targets

        prep.power_targets = targets(folded_gd, report.layers)
