"""``neuro``: entry point.  Each sub-command lives in its own module with ``add_parser(subparsers)``.

Every :class:`~simulators.errors.UserFacingError` (``neuro.errors`` and the lower packages' errors) is printed as one line ``error: ...`` with exit
status 2; Ctrl-C exits with 130 after the last checkpoint, which ``--resume`` continues.
"""

from __future__ import annotations

import argparse
import logging
import sys

from neuro import __version__
from neuro.cli import demo, deploy, devices, evaluate, info, report, substrate, train
from neuro.errors import UserFacingError

COMMAND_MODULES = (train, evaluate, report, demo, info, devices, deploy, substrate)


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
    return parser


def configure_logging() -> None:
    """Warnings of the library (e.g. a serial link that recovered from a fault) go to stderr as
    ``devices.serial: ...`` lines; ``neuro devices emulate -v`` lowers the level to INFO."""
    root = logging.getLogger()
    if not root.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))
        root.addHandler(handler)
        root.setLevel(logging.WARNING)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    configure_logging()
    try:
        return int(args.func(args) or 0)
    except UserFacingError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; continue with `neuro train --resume runs/<name>`", file=sys.stderr)
        return 130
