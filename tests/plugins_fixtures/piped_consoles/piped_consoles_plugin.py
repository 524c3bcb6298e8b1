"""A test plugin printing through the runner's pipes (stdio = "pipe") whose console handler
is no StreamHandler: rich's RichHandler, or one of its own writing as rich does."""

from __future__ import annotations

import logging
import sys
from typing import TextIO

import isoplug


class Drawing(logging.Handler):
    """Writes each record, boxed, to whatever ``sys.stdout`` is at the time, through helper
    calls: as rich's RichHandler writes through a Console made without a file."""

    def emit(self, record: logging.LogRecord) -> None:
        self._draw(self.format(record))

    def _draw(self, text: str) -> None:
        self._line("+--------+")
        self._line(f"| {text} |")
        self._line("+--------+")

    def _line(self, text: str) -> None:
        sys.stdout.write(text + "\n")


class Console:
    """A console of the handler's own, holding the stream it was given when made."""

    def __init__(self, file: TextIO) -> None:
        self.file = file

    def print(self, text: str) -> None:
        self.file.write(f"| {text} |\n")
        self.file.flush()


class Holding(logging.Handler):
    """Writes through a console that holds ``sys.stderr`` as it was at the handler's making."""

    def __init__(self) -> None:
        super().__init__()
        self.console = Console(sys.stderr)

    def emit(self, record: logging.LogRecord) -> None:
        self.console.print(self.format(record))


def _handler(kind: str) -> logging.Handler:
    if kind == "rich":
        from rich.logging import RichHandler

        return RichHandler(rich_tracebacks=True)
    return Drawing() if kind == "drawing" else Holding()


class PipedConsoles(isoplug.Plugin):
    @isoplug.method
    def configured(self, kind: str) -> None:
        """Configure the root's console handler of ``kind``, log through it, then print a
        line on each pipe: the host reads each pipe in order, so once those lines are records,
        whatever the handler wrote before them is too."""
        logging.basicConfig(
            level=logging.DEBUG, format="%(message)s", handlers=[_handler(kind)], force=True
        )
        log = logging.getLogger("app")
        log.warning("%s: warned", kind)
        try:
            1 / 0  # noqa: B018
        except ZeroDivisionError:
            log.exception("%s: failed", kind)
        print(f"{kind}: the end of stdout")
        print(f"{kind}: the end of stderr", file=sys.stderr)
