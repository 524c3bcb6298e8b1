"""How the console of ``isoplug run`` and ``isoplug demo`` shows a record: one line, coloured
on a terminal that can show colours, attributed to its plugin."""

from __future__ import annotations

import logging
import os
import time
import zlib
from typing import TextIO

from isoplug.logs.attribution import attribute

__all__ = ["ConsoleFormatter", "use_colour"]

_RESET = "\033[0m"


_DIM = "\033[2m"


_BOLD = "\033[1m"


_PLUGIN_COLOURS = ("\033[36m", "\033[35m", "\033[34m", "\033[32m", "\033[96m", "\033[95m")


_LEVEL_COLOURS = {
    logging.DEBUG: _DIM,
    logging.WARNING: "\033[33m",
    logging.ERROR: "\033[31m",
    logging.CRITICAL: "\033[1;31m",
}


#: Width of the source column (plugin id, "isoplug" or "isoplug:<id>"): most fit, longer ones
#: push.
_SOURCE_WIDTH = 13


#: Width of the level column ("warning", "stdout", "stderr"; "stdout:error" and the like push).
_LABEL_WIDTH = 8


#: ``TERM`` values of terminals that show escape sequences as text: ``dumb`` (Emacs' shell and
#: compilation buffers, some CI consoles), and none at all (a terminal nobody described).
_NO_COLOUR_TERMS = frozenset({"", "dumb"})


def use_colour(stream: TextIO) -> bool:
    """Colour only on a terminal that shows it (``TERM`` set, and not ``dumb``, as ``ls``
    and ``git`` decide), and never when ``NO_COLOR`` is set (https://no-color.org); always
    when ``FORCE_COLOR`` is set, not empty, and ``NO_COLOR`` is not (https://force-color.org:
    a CI log viewer that shows colours reads a pipe)."""
    if os.environ.get("NO_COLOR"):
        return False
    if os.environ.get("FORCE_COLOR"):
        return True
    if os.environ.get("TERM", "") in _NO_COLOUR_TERMS:
        return False
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


class ConsoleFormatter(logging.Formatter):
    """One line per record: time, source (who speaks), level, message.

    The source column says who speaks, as :mod:`isoplug.logs.attribution` tells it: ``<id>``
    for a plugin's records, ``isoplug:<id>`` for the host's reports about it (records lost,
    dropped...), ``isoplug`` for the host's own records. The next column says the record's
    level; on a plugin's output streams it names the stream too: ``stdout`` (or ``stderr``)
    alone at that stream's own level (INFO, WARNING), ``stdout:error`` at any other, so that
    the stream never hides the level. Continuation lines (tracebacks) are indented under the
    message.
    """

    def __init__(self, *, colour: bool) -> None:
        super().__init__()
        self.colour = colour

    def format(self, record: logging.LogRecord) -> str:
        # Who says it, in the one form only the host can fill in (isoplug.logs.attribution).
        said = attribute(record)
        source = said.source
        label = said.label
        message = record.getMessage()
        if record.exc_info:
            message += "\n" + self.formatException(record.exc_info)
        stamp = time.strftime("%H:%M:%S", time.localtime(record.created))
        stamp += f".{int(record.msecs):03d}"
        head_plain = f"{stamp} {source:<{_SOURCE_WIDTH}} {label:<{_LABEL_WIDTH}} "
        lines = message.splitlines() or [""]
        indent = " " * len(head_plain)
        if not self.colour:
            return head_plain + f"\n{indent}".join(lines)
        source_colour = _BOLD if said.host else _colour_of(source)
        level_colour = _LEVEL_COLOURS.get(record.levelno, "")
        head = (
            f"{_DIM}{stamp}{_RESET} {source_colour}{source:<{_SOURCE_WIDTH}}{_RESET} "
            f"{_DIM}{label:<{_LABEL_WIDTH}}{_RESET} "
        )
        body = f"\n{indent}".join(lines)
        return head + (f"{level_colour}{body}{_RESET}" if level_colour else body)


def _colour_of(source: str) -> str:
    # crc32, not hash(): the same plugin keeps its colour from one run to the next.
    return _PLUGIN_COLOURS[zlib.crc32(source.encode()) % len(_PLUGIN_COLOURS)]
