"""The ``isoplug`` command line: a thin synchronous shell over the async library."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from isoplug import __version__

__all__ = ["main"]


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="isoplug",
        description="Run plugins in isolated runner processes without losing their logs.",
    )
    parser.add_argument("--version", action="version", version=f"isoplug {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True
    commands.add_parser(
        "demo",
        help="show a host and a runner process talking over the isoplug protocol",
        description="Start a runner process and exchange requests, events and a log record "
        "with it over an authenticated private unix socket.",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``isoplug`` console script; returns the exit code."""
    arguments = _build_parser().parse_args(argv)
    if arguments.command == "demo":
        from isoplug._foundation_demo import run_demo

        try:
            return run_demo()
        except KeyboardInterrupt:
            return 130
    raise AssertionError(f"unhandled command {arguments.command!r}")


if __name__ == "__main__":
    sys.exit(main())
