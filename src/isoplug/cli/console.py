"""The console of ``isoplug run`` and ``isoplug demo``: one coloured line per record, attributed
to its plugin."""

from __future__ import annotations

import logging
import os
import time
import zlib
from typing import TextIO

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


#: Width of the source column (plugin id or "isoplug"): most ids fit, longer ones push.
_SOURCE_WIDTH = 13


#: Width of the stream-or-level column ("stdout", "stderr", "warning", "critical").
_LABEL_WIDTH = 8


def use_colour(stream: TextIO) -> bool:
    """Colour only on a terminal, and never when ``NO_COLOR`` is set (https://no-color.org)."""
    if os.environ.get("NO_COLOR"):
        return False
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


class ConsoleFormatter(logging.Formatter):
    """One line per record: time, source (the plugin id), stream or level, message.

    Records of ``plugin.<id>...`` are attributed to ``<id>``; the host's own records to
    ``isoplug``. Continuation lines (tracebacks) are indented under the message.
    """

    def __init__(self, *, colour: bool) -> None:
        super().__init__()
        self.colour = colour

    def format(self, record: logging.LogRecord) -> str:
        parts = record.name.split(".")
        if parts[0] == "plugin" and len(parts) > 1:
            source = parts[1]
            kind = parts[2] if len(parts) > 2 and parts[2] in ("stdout", "stderr") else "log"
        else:
            source = "isoplug"
            kind = "host"
        message = record.getMessage()
        if record.exc_info:
            message += "\n" + self.formatException(record.exc_info)
        stamp = time.strftime("%H:%M:%S", time.localtime(record.created))
        stamp += f".{int(record.msecs):03d}"
        # One column, one meaning: a plugin's printed lines say their stream; every logging
        # record (the plugin's or the host's) says its level.
        label = kind if kind in ("stdout", "stderr") else record.levelname.lower()
        head_plain = f"{stamp} {source:<{_SOURCE_WIDTH}} {label:<{_LABEL_WIDTH}} "
        lines = message.splitlines() or [""]
        indent = " " * len(head_plain)
        if not self.colour:
            return head_plain + f"\n{indent}".join(lines)
        source_colour = _BOLD if source == "isoplug" else _colour_of(source)
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


def configure_console_logging(level: str, stream: TextIO) -> None:
    handler = logging.StreamHandler(stream)
    handler.setFormatter(ConsoleFormatter(colour=use_colour(stream)))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # watchfiles says "1 change detected" for every batch; `--reload` says what it does.
    logging.getLogger("watchfiles").setLevel(logging.WARNING)
