"""Show every batch norm in a graph and what `bnconvert fold` would do with it. Writes nothing
and never executes the graph."""
from __future__ import annotations

from .common import add_model_arguments, split_list

HELP = "list batch norms, training flags and the planned action (writes nothing)"


def add_arguments(p) -> None:
    p.add_argument("model", help=".pb, .pbtxt, checkpoint .meta (or folder), or SavedModel folder")
    p.add_argument("--json", action="store_true", help="print JSON")
    add_model_arguments(p)


def run(args) -> int:
    from .. import api
    from ..inference import parse_set

    report = api.inspect(args.model, inputs=split_list(args.inputs), outputs=split_list(args.outputs),
                         set_flags=parse_set(args.set))
    if args.quiet:
        return 0
    if args.json:
        import json

        d = report.to_dict()
        print(json.dumps({k: d[k] for k in ("source", "bn", "layers", "training_flags", "inputs", "outputs",
                                               "outputs_guessed", "output_candidates",
                                               "inference", "ops_before", "ops_after", "notes")}, indent=2))
    else:
        print(report.summary())
        print()
        print(report.layer_table())
    return 0
