"""Layer-by-layer verification points: where a folded model must agree with the original inside.

A *probe* pairs a tensor of the original graph with the tensor that should hold the same values
in the converted one:

- every folded or scale-shifted batch norm: the original BN output (``bn_output``, recorded by
  :mod:`bnconvert.fold`) against the tensor that replaces it (``replaced_by``: the producer's
  output after the new bias);
- the logits: the input of a Softmax/Sigmoid/LogSoftmax that produces a model output (through
  Identity ops).  A saturated softmax hides a 1% error in front of it; its input does not.

Probes come in the original graph's topological order, so the first failing probe is the first
place the error appears.  A BN folded into the same producer as a later one (``BN -> BN``) is
skipped: its replacement tensor now holds the later BN's values.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..graph import Graph, node_of, tensor_name

SQUASHERS = ("Softmax", "Sigmoid", "LogSoftmax")


@dataclass(frozen=True)
class Probe:
    name: str  # the layer's name, or "logits of <output>"
    original: str  # tensor in the original graph
    candidate: str  # tensor in the folded graph (also looked up in exported models)
    kind: str  # "bn" or "logits"

    @property
    def label(self) -> str:
        return self.original if self.original == self.candidate else f"{self.original} -> {self.candidate}"


def layer_probes(original_gd, folded_gd, layers: list[dict], outputs: list[str]) -> tuple[list[Probe], list[str]]:
    """Probes in topological order, and one note per layer that cannot be compared."""
    orig = Graph(original_gd, copy_nodes=False)
    folded_names = {n.name for n in folded_gd.node} if folded_gd is not None else None
    probes: list[Probe] = []
    skipped: list[str] = []
    usable = [ly for ly in layers if ly.get("action") in ("fold", "scale_shift") and ly.get("bn_output")]
    # a tensor that is a model output is compared as one, on every sample (the layer tensors
    # are fetched besides the outputs and may be cut to the first rows: not the same values)
    outs = {tensor_name(o) for o in outputs}
    for i, ly in enumerate(usable):
        src, dst = tensor_name(ly["bn_output"]), tensor_name(ly.get("replaced_by") or ly["bn_output"])
        later = next((x["name"] for x in usable[i + 1:] if x.get("replaced_by") == ly.get("replaced_by")), None)
        if later is not None:
            skipped.append(f"{ly['name']}: folded together with {later}; compared there")
        elif src in outs:
            continue
        elif node_of(src) not in orig:
            skipped.append(f"{ly['name']}: '{src}' is not in the original graph")
        elif folded_names is not None and node_of(dst) not in folded_names:
            skipped.append(f"{ly['name']}: '{dst}' is not in the folded graph")
        else:
            probes.append(Probe(ly["name"], src, dst, "bn"))
    for out in outputs:
        node = orig.get(out)
        while node is not None and node.op in ("Identity", "Snapshot"):
            node = orig.get(orig.inputs(node)[0])
        if node is None or node.op not in SQUASHERS:
            continue
        logits = tensor_name(orig.inputs(node)[0])
        if logits in outs or any(p.original == logits for p in probes):
            continue
        if folded_names is not None and node_of(logits) not in folded_names:
            skipped.append(f"logits of {out}: '{logits}' is not in the folded graph")
            continue
        probes.append(Probe(f"logits of {out}", logits, logits, "logits"))
    order = {name: i for i, name in enumerate(orig.topo_order())}
    probes.sort(key=lambda p: order.get(node_of(p.original), len(order)))
    return probes, skipped


def fold_changed(original_gd, layers: list[dict]) -> set[str]:
    """Nodes of the original graph whose value a fold changes: each folded producer and every
    node between it and its BN output (bias, reshape, identity).  The folded graph keeps their
    names, so a converted model's tensor named after one of them must not be compared with the
    original's value (TFLite names fused tensors after such nodes)."""
    g = Graph(original_gd, copy_nodes=False)
    out: set[str] = set()
    for ly in layers:
        prod, y = ly.get("producer"), ly.get("bn_output")
        if ly.get("action") != "fold" or not prod or not y or prod not in g:
            continue
        between = g.ancestors([y], control=False)
        stack, seen = [prod], set()
        while stack:
            n = stack.pop()
            if n in seen or (n not in between):
                continue
            seen.add(n)
            stack.extend(g.all_consumers(n))
        out |= seen - {node_of(y)}
    return out
