"""The last lines a runner process wrote on its stderr, for the account of an early death.

A runner that exits before it reports ready has often said why on its stderr only (a
``ModuleNotFoundError`` from its interpreter, a syntax error of an old Python, a wrapper
script's complaint): those lines go to the ``plugin.<id>.stderr`` log records, but the
plugin's error (``PluginInfo.error``, ``PluginFailed``) would only say "exited before
reporting ready". The replay thread of its stdio (:mod:`isoplug.host.stdio_replay`) keeps the
last lines here too, and the runner's life quotes them in that account: sanitized, capped.
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Iterable

from isoplug.wire.sanitize import clean_text

__all__ = ["MAX_TAIL_CHARS", "MAX_TAIL_LINES", "StderrTail", "quote_lines"]

#: Lines quoted, at most, and characters of the quote, at most.
MAX_TAIL_LINES = 12
MAX_TAIL_CHARS = 1500
#: A longer line is kept cut to this (the quote is capped anyway).
_MAX_LINE_CHARS = 2 * MAX_TAIL_CHARS


class StderrTail:
    """The last :data:`MAX_TAIL_LINES` lines of one runner process's stderr; fed by its
    replay thread, read by the event loop once the process's output was replayed."""

    def __init__(self) -> None:
        self._lines: collections.deque[str] = collections.deque(maxlen=MAX_TAIL_LINES)
        self._lock = threading.Lock()

    def add(self, message: str) -> None:
        """Keep the lines of ``message`` (one record: a line, or a whole traceback)."""
        lines = [line[:_MAX_LINE_CHARS] for line in message.splitlines() if line.strip()]
        with self._lock:
            self._lines.extend(lines[-MAX_TAIL_LINES:])

    def quote(self) -> str:
        """The lines kept, sanitized, on one line (``" | "`` between them); "" for none."""
        with self._lock:
            lines = list(self._lines)
        return quote_lines(lines)


def quote_lines(lines: Iterable[str]) -> str:
    """The last of ``lines`` (those not blank) on one line, sanitized and capped at
    :data:`MAX_TAIL_CHARS` from the end (the last line is the one that says why)."""
    kept = [line.strip() for line in lines if line.strip()][-MAX_TAIL_LINES:]
    text = " | ".join(kept)
    if len(text) > MAX_TAIL_CHARS:
        text = "..." + text[-MAX_TAIL_CHARS:]
    return clean_text(text, MAX_TAIL_CHARS + 3)
