"""Entry point: parses arguments, dispatches to a subcommand module, turns errors into exit codes.

A user error prints one line ``bnconvert: error: …`` and exits with the error's code (2 for bad
input, 1 for failed verification); ``--debug`` shows the traceback.  SIGTERM is handled like
Ctrl-C: the running conversion cleans up its temporary files and exits with 130.
"""
from __future__ import annotations

import argparse
import importlib
import signal
import sys

from .. import __version__

#: subcommand name -> module in bnconvert.cli (each defines add_arguments(parser) and run(args))
SUBCOMMANDS = {
    "fold": "fold",
    "inspect": "inspect_cmd",
    "verify": "verify",
    "verify-onnx": "verify_onnx",
    "mnist-check": "mnist_check",
}


class _ArgumentParser(argparse.ArgumentParser):
    def error(self, message):  # usage errors: one line, exit 2
        self.print_usage(sys.stderr)
        print(f"bnconvert: error: {message}", file=sys.stderr)
        sys.exit(2)


def build_parser() -> argparse.ArgumentParser:
    p = _ArgumentParser(prog="bnconvert", description="Fold batch normalization out of TensorFlow 1.x graphs, "
                        "export ONNX/TFLite and verify them against the original.")
    p.add_argument("--version", action="version", version=f"bnconvert {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_ArgumentParser)
    for name, module in SUBCOMMANDS.items():
        mod = importlib.import_module(f"bnconvert.cli.{module}")
        sp = sub.add_parser(name, help=mod.HELP, description=mod.__doc__)
        sp.add_argument("--debug", action="store_true", help="show tracebacks and TensorFlow's logging")
        mod.add_arguments(sp)
        sp.set_defaults(_run=mod.run)
    return p


def _sigterm(signum, frame):
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    debug = getattr(args, "debug", False)
    _quiet_logs(debug)
    old = signal.signal(signal.SIGTERM, _sigterm)
    from ..errors import BNConvertError

    try:
        return int(args._run(args) or 0)
    except BNConvertError as e:
        if debug:
            raise
        print(f"bnconvert: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("bnconvert: error: interrupted; no output written", file=sys.stderr)
        return 130
    except Exception as e:  # an unexpected failure is still one line unless --debug
        if debug:
            raise
        msg = " ".join(str(e).split())[:300]
        print(f"bnconvert: error: internal error: {type(e).__name__}: {msg} (run with --debug for the traceback)",
              file=sys.stderr)
        return 3
    finally:
        signal.signal(signal.SIGTERM, old)


def _quiet_logs(debug: bool) -> None:
    import logging
    import os

    if not debug:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        os.environ.setdefault("ABSL_MIN_LOG_LEVEL", "3")
        logging.getLogger("tensorflow").setLevel(logging.ERROR)
        logging.getLogger("tf2onnx").setLevel(logging.ERROR)
    else:
        logging.basicConfig(level=logging.INFO)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
