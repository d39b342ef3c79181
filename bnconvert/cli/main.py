"""Entry point: parses arguments, dispatches to a subcommand module, turns errors into exit codes.

A user error prints one line ``bnconvert: error: …`` and exits with the error's code (2 for bad
input, 1 for failed verification); ``--debug`` shows the traceback.

Signals: SIGINT and SIGTERM are honoured from the first moment bnconvert's code runs (the
package's ``__init__`` installs the start-up handler when it is imported as the CLI).  Until the
subcommand starts (imports, argument parsing) nothing has been written, so a signal prints
"interrupted; no output written" and exits 130 at once; while the subcommand runs it becomes a
``KeyboardInterrupt`` that the conversion turns into cleaning up (and kills its child stages),
then 130; after it, the message says what was written.

A closed stdout (``bnconvert fold … --json | head -1``) is not an error: the rest of the output
is dropped quietly and the exit code is the run's own (0 after a successful conversion), not
141 — the files were written and verified, and a reader that stops early should not turn that
into a failure.
"""
from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys
import traceback

from .. import __version__, progress
from .common import DefaultsFormatter

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
        print(f"bnconvert: error: {message} (see '{self.prog} --help')", file=sys.stderr)
        sys.exit(2)


def build_parser() -> argparse.ArgumentParser:
    p = _ArgumentParser(prog="bnconvert", description="Fold batch normalization out of TensorFlow 1.x graphs, "
                        "export ONNX/TFLite and verify them against the original.")
    p.add_argument("--version", action="version", version=f"bnconvert {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_ArgumentParser)
    for name, module in SUBCOMMANDS.items():
        mod = importlib.import_module(f"bnconvert.cli.{module}")
        sp = sub.add_parser(name, help=mod.HELP, description=mod.__doc__, formatter_class=DefaultsFormatter)
        sp.add_argument("--debug", action="store_true", help="show tracebacks and TensorFlow's logging")
        sp.add_argument("-q", "--quiet", action="store_true", help="print nothing but errors (no progress, no tables)")
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
    from ..tfproto import no_home_state  # no ~/.keras, no ~/.cache (light: no TensorFlow import)

    no_home_state()
    if debug:
        os.environ["BNCONVERT_DEBUG"] = "1"  # child stages print their tracebacks too
    if getattr(args, "timeout", None) is not None:
        from .. import isolate

        isolate.set_timeout(args.timeout)
    import bnconvert

    as_process = signal.getsignal(signal.SIGINT) is bnconvert._interrupted_at_start  # not main() in a test
    old = {s: signal.signal(s, h) for s, h in ((signal.SIGTERM, _sigterm), (signal.SIGINT, signal.default_int_handler))}
    from ..errors import BNConvertError

    error, code = None, 0
    args._warnings = []
    try:
        with progress.session(enabled=not (args.quiet or getattr(args, "json", False))), \
                _Stderr(quiet=not debug):  # TensorFlow's C++ and the converters write to fd 2
            if getattr(args, "max_memory", None) is not None:
                from ..budget import configure

                configure(args.max_memory)
            code = int(args._run(args) or 0)
    except BNConvertError as e:
        if debug:
            traceback.print_exc()
        error, code = str(e), e.exit_code
    except KeyboardInterrupt:
        error, code = "interrupted; no output written", 130
    except BrokenPipeError:
        _drop_stdout()
    except Exception as e:  # an unexpected failure is still one line unless --debug
        if debug:
            traceback.print_exc()
        msg = " ".join(str(e).split())[:300]
        error, code = f"internal error: {type(e).__name__}: {msg} (run with --debug for the traceback)", 3
    finally:
        for s, h in old.items():  # from here on nothing more is written: a signal just ends the process
            signal.signal(s, _exit_quietly if as_process else h)
        _stop_children()
    for w in args._warnings:
        print(f"bnconvert: warning: {w}", file=sys.stderr)
    if error is not None:
        print(f"bnconvert: error: {error}", file=sys.stderr)
    sys.stderr.flush()
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        _drop_stdout()
    if code == 130 and as_process:  # interrupted: everything is said and cleaned; skip TensorFlow's slow teardown
        os._exit(130)
    return code


def _exit_quietly(signum, frame):  # pragma: no cover
    os._exit(130)


def _stop_children() -> None:
    isolate = sys.modules.get("bnconvert.isolate")
    if isolate is not None:
        try:
            isolate.shutdown()
        except Exception:  # noqa: BLE001 - best effort: the forkserver also stops by itself
            pass


def _drop_stdout() -> None:
    """The reader of stdout is gone: send what is left to /dev/null (no error at exit)."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass


class _Stderr:
    """With ``quiet``, send file descriptor 2 to /dev/null for the block, so the one line
    ``bnconvert: error: …`` is all a failed run prints there (``--debug`` keeps everything)."""

    def __init__(self, quiet: bool):
        self.quiet, self.saved = quiet, None

    def __enter__(self):
        import os

        if self.quiet:
            try:
                sys.stderr.flush()
                self.saved = os.dup(2)
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, 2)
                os.close(devnull)
            except OSError:
                self.saved = None
        return self

    def __exit__(self, *exc):
        import os

        if self.saved is not None:
            try:
                sys.stderr.flush()
            except (OSError, ValueError):
                pass
            os.dup2(self.saved, 2)
            os.close(self.saved)
            self.saved = None


def _quiet_logs(debug: bool) -> None:
    import logging
    import os

    if not debug:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        os.environ.setdefault("ABSL_MIN_LOG_LEVEL", "3")
        logging.getLogger("tensorflow").setLevel(logging.ERROR)
        logging.getLogger("tf2onnx").setLevel(logging.CRITICAL)  # its errors come back as one line
    else:
        logging.basicConfig(level=logging.INFO)
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "0")  # bnconvert.logs then leaves TF's logging alone


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
