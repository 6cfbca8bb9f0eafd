"""``neuro``: entry point.  Each sub-command lives in its own module with ``add_parser(subparsers)``.

Every :class:`~simulators.errors.UserFacingError` (``neuro.errors`` and the lower packages' errors) is printed
as one line ``error: ...`` with exit
status 2; so is an :class:`OSError` that reaches the top (a folder that is a file or read-only,
a full disk, a missing path): one line naming the path and the system's reason.  Ctrl-C exits
with 130 after the last checkpoint, which ``--resume`` continues.
"""

from __future__ import annotations

import argparse
import logging
import sys

from neuro import __version__
from neuro.cli import demo, deploy, devices, evaluate, info, report, substrate, sweep, train
from neuro.errors import UserFacingError

COMMAND_MODULES = (train, evaluate, report, demo, info, devices, deploy, substrate, sweep)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="neuro",
        description="NeuroHIL: train spiking and physical neural networks on simulators and hardware.",
    )
    parser.add_argument("--version", action="version", version=f"neurohil {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for module in COMMAND_MODULES:
        module.add_parser(sub)
    _add_verbosity(sub)
    return parser


def _add_verbosity(sub) -> None:
    """``-v`` (INFO, ``-vv`` DEBUG) and ``-q`` (errors only) on every command and sub-command."""
    for p in set(sub.choices.values()):
        if "-q" not in p._option_string_actions:
            p.add_argument(
                "-q",
                "--quiet",
                dest="quiet",
                action="count",
                default=0,
                help="log errors only (library warnings, e.g. recovered device faults, are hidden)",
            )
        if "-v" not in p._option_string_actions:
            option = ["-v"] + (["--verbose"] if "--verbose" not in p._option_string_actions else [])
            p.add_argument(
                *option,
                dest="verbosity",
                action="count",
                default=0,
                help="log more: -v info (e.g. every recovered device fault), -vv debug",
            )
        for action in p._actions:
            if isinstance(action, argparse._SubParsersAction):
                _add_verbosity(action)


def configure_logging(verbosity: int = 0, quiet: int = 0) -> None:
    """Library log records go to stderr as ``logger: message`` lines (e.g. ``devices.serial: ...``), at WARNING,
    or INFO / DEBUG with ``-v`` / ``-vv``, or ERROR with ``-q``."""
    root = logging.getLogger()
    if not root.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))
        root.addHandler(handler)
    level = logging.WARNING - 10 * int(verbosity) + 10 * int(quiet)
    root.setLevel(min(max(level, logging.DEBUG), logging.ERROR))


def os_error_line(exc: OSError) -> str:
    """One line for an operating-system error: the path(s), the reason, what to check."""
    paths = " -> ".join(str(p) for p in (exc.filename, exc.filename2) if p is not None)
    reason = exc.strerror or (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    where = f"{paths}: " if paths else ""
    return (
        f"{where}{reason}; check that the path exists, is a folder where one is expected, is writable, "
        "and that the disk has space"
    )


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    configure_logging(getattr(args, "verbosity", 0), getattr(args, "quiet", 0))
    try:
        return int(args.func(args) or 0)
    except UserFacingError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"error: {os_error_line(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        # workflow.RunInterrupted carries the command that continues the run; other work just stops
        print(exc.args[0] if exc.args else "interrupted", file=sys.stderr)
        return 130
