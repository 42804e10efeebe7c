"""The ``cvt`` command line: one sub-command per module in ``cvt.commands``.

Each command module defines ``add_arguments(parser)`` and ``run(args) -> int`` and a one-line
``HELP``; modules are imported only when their command runs, so ``cvt info`` never loads Qt.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import importlib
import os
import signal
import sys
import threading

from core import __version__

# command name -> module in cvt.commands
COMMANDS: dict[str, str] = {
    "info": "info",
    "simulate": "simulate",
    "demo": "demo",
    "ingest": "ingest",
    "watch": "watch",
    "catalog": "catalog",
    "trend": "trend",
    "check": "check",
    "bench": "bench",
    "serve": "serve",
    "view": "view",
}

HELP: dict[str, str] = {
    "info": "describe raw CCD files (instrument, detector, vendor, layout, compression)",
    "simulate": "write a realistic simulated raw exposure (with a truth file)",
    "demo": "simulate an LSSTCam exposure and show it",
    "ingest": "ingest raw CCD files into exposure stores (zarr) in a repository",
    "watch": "ingest each raw CCD file as it lands; exposures fill in and complete (run once)",
    "catalog": "the repository's exposure catalog: rebuild it from the stores, or list it",
    "trend": "one amp's metric across exposures: table, sparkline, --png plot",
    "check": "per-amp health of an exposure: which amps are out of spec and why (exit 1 if any fail)",
    "bench": "benchmarks: ingest, detect, view (not tests; they take minutes)",
    "serve": "serve a repository read-only over HTTP (Range requests, listing, new-exposure events)",
    "view": "the focal-plane viewer (or, with --screenshot, a picture of it)",
}


class Terminated(KeyboardInterrupt):
    """A stop by a signal other than Ctrl-C (``kill``: SIGTERM), handled as Ctrl-C is."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def interrupt(signum, frame) -> None:
    """A signal handler: the signal stops the command as Ctrl-C does (``Terminated``)."""
    raise Terminated(signum)


# batch commands whose process, run as the program, ends once its work is done (``_leave``)
LEAVE_AT_ONCE = {"info", "simulate", "ingest", "catalog", "trend", "check"}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cvt", description="Camera Visualization Tool for the Rubin LSST Camera."
    )
    parser.add_argument("--version", action="version", version=f"cvt {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        sub.add_parser(name, help=HELP[name], add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command. As the program (``argv`` None: the ``cvt`` script, ``python -m``), a
    batch command's process then ends without tearing the interpreter down (``_leave``)."""
    as_program = argv is None
    argv = sys.argv[1:] if argv is None else argv
    try:  # a Ctrl-C while the command's modules are still imported is an interrupt, too
        parser = build_parser()
        if not argv or argv[0] not in COMMANDS:
            parser.parse_args(argv)  # prints usage or the error and exits
            return 2
        name = argv[0]
        module = importlib.import_module(f"cvt.commands.{COMMANDS[name]}")
        cmd = argparse.ArgumentParser(prog=f"cvt {name}", description=HELP[name])
        module.add_arguments(cmd)
        args = cmd.parse_args(argv[1:])
        code = int(module.run(args) or 0)
    except KeyboardInterrupt as stop:
        print("interrupted", file=sys.stderr)
        signum = getattr(stop, "signum", signal.SIGINT)
        if as_program:
            _die_by(signum)
        return 128 + signum
    if as_program and name in LEAVE_AT_ONCE:
        _leave(code)
    return code


def _leave(code: int) -> None:
    """End the process now that the command's work is done and written: the exit handlers run
    and the output is flushed, but the interpreter's teardown (numba's LLVM, astropy, thousands
    of modules: 0.35-0.4 s after an ingest) is skipped. Only when no other thread would have
    been waited for; otherwise the ordinary exit."""
    main_thread = threading.main_thread()
    if any(t is not main_thread and not t.daemon for t in threading.enumerate()):
        return
    _run_exit_handlers()
    os._exit(code)


def _run_exit_handlers() -> None:
    """What an exit does before the interpreter's teardown: the exit handlers, flushed output."""
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):  # closed, or a reader gone: nothing to keep
            stream.flush()


def _die_by(signum: int) -> None:
    """End, once the command has cleaned up after an interrupt, killed by the signal that
    stopped it, as a program that does not catch it is: its caller sees that (a shell's loop or
    script stops at a Ctrl-C only if the command it ran died of it; ``$?`` is 128 + signal
    either way). Always so: CPython, run as ``python -m``, did so by itself, but only when the
    interrupt had come inside an ``exec`` of a string (a dataclass being made at import)."""
    _run_exit_handlers()
    signal.signal(signum, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signum})
    signal.raise_signal(signum)  # to this thread, where it is not blocked: delivered at once
    os._exit(128 + signum)  # not reached


if __name__ == "__main__":
    sys.exit(main())
