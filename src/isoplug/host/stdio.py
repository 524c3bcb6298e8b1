"""A runner's stdout and stderr, line by line, into the host's ``logging``. Nothing is dropped.

Three small steps, each usable on its own:

- :class:`LineSplitter` turns chunks of bytes into lines: invalid UTF-8 is replaced (never an
  exception), a line longer than :data:`MAX_LINE_BYTES` is cut and marked ``truncated``, and
  :meth:`LineSplitter.flush` returns the partial last line at end of stream.
- :class:`TracebackGrouper` keeps a Python traceback printed on stderr together: from
  ``Traceback (most recent call last):`` to the exception line, it becomes *one* record.
- :class:`StdioPump` is the asyncio protocol that reads a pipe and emits the records on
  ``plugin.<id>.stdout`` (INFO) and ``plugin.<id>.stderr`` (WARNING, tracebacks at ERROR).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable

__all__ = [
    "MAX_LINE_BYTES",
    "MAX_TRACEBACK_LINES",
    "CapturedLine",
    "LineSplitter",
    "StdioPump",
    "TracebackGrouper",
]

#: Longest line kept whole. A plugin that prints a huge blob without a newline must not make
#: the host buffer it all: past this, the line is cut, marked, and the rest of it skipped.
MAX_LINE_BYTES = 16 * 1024
#: A traceback longer than this (deep recursion prints thousands of lines) is emitted in parts
#: so that one record stays a sane size.
MAX_TRACEBACK_LINES = 400
TRACEBACK_START = "Traceback (most recent call last):"
_TRUNCATED_MARK = " [... line truncated by isoplug]"


@dataclasses.dataclass(frozen=True)
class CapturedLine:
    text: str
    truncated: bool = False


class LineSplitter:
    """Bytes in, complete lines out (without the newline)."""

    def __init__(self, max_line_bytes: int = MAX_LINE_BYTES) -> None:
        self._max = max_line_bytes
        self._buffer = bytearray()
        self._skipping = False  # inside the tail of a line that was already cut

    def feed(self, data: bytes) -> list[CapturedLine]:
        lines: list[CapturedLine] = []
        self._buffer += data
        while True:
            newline = self._buffer.find(b"\n")
            if newline < 0:
                break
            if self._skipping:
                self._skipping = False
            else:
                lines.append(self._line(bytes(self._buffer[:newline]), truncated=False))
            del self._buffer[: newline + 1]
        if len(self._buffer) > self._max:
            if not self._skipping:
                lines.append(self._line(bytes(self._buffer[: self._max]), truncated=True))
                self._skipping = True
            self._buffer.clear()
        return lines

    def flush(self) -> list[CapturedLine]:
        """The partial last line, if any (call at end of stream)."""
        if not self._buffer or self._skipping:
            self._buffer.clear()
            return []
        line = self._line(bytes(self._buffer), truncated=False)
        self._buffer.clear()
        return [line]

    @staticmethod
    def _line(raw: bytes, *, truncated: bool) -> CapturedLine:
        text = raw.removesuffix(b"\r").decode("utf-8", errors="replace")
        return CapturedLine(text + _TRUNCATED_MARK if truncated else text, truncated)


class TracebackGrouper:
    """Lines in, records out: a traceback block is one record, other lines one record each.

    A block starts at :data:`TRACEBACK_START`; indented lines (frames, source, carets) belong
    to it; the first non-indented line after them is the exception line and ends it.
    """

    def __init__(self, max_lines: int = MAX_TRACEBACK_LINES) -> None:
        self._max = max_lines
        self._block: list[str] | None = None

    def feed(self, line: str) -> list[tuple[str, bool]]:
        """Return ``(text, is_traceback)`` records completed by ``line``."""
        if self._block is None:
            if line.rstrip() == TRACEBACK_START:
                self._block = [line]
                return []
            return [(line, False)]
        self._block.append(line)
        if line[:1] in (" ", "\t") and len(self._block) < self._max:
            return []
        return self.flush()

    def flush(self) -> list[tuple[str, bool]]:
        """The block in progress, if any (call at end of stream)."""
        if self._block is None:
            return []
        text = "\n".join(self._block)
        self._block = None
        return [(text, True)]


Emit = Callable[[int, str, bool], None]
"""``emit(level, text, truncated)``: deliver one record."""


class StdioPump(asyncio.Protocol):
    """Reads one pipe of a runner (use with ``loop.connect_read_pipe``) and emits records.

    ``stream`` is ``"stdout"`` or ``"stderr"``. :attr:`closed` is set at end of stream, after
    the partial last line and any open traceback block were emitted.
    """

    def __init__(self, stream: str, emit: Emit) -> None:
        self.stream = stream
        self._emit = emit
        self._lines = LineSplitter()
        self._tracebacks = TracebackGrouper() if stream == "stderr" else None
        self._level = logging.INFO if stream == "stdout" else logging.WARNING
        self.closed = asyncio.Event()

    def data_received(self, data: bytes) -> None:
        self._deliver(self._lines.feed(data))

    def eof_received(self) -> bool | None:
        self._finish()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self._finish()

    def _finish(self) -> None:
        if self.closed.is_set():
            return
        self._deliver(self._lines.flush())
        if self._tracebacks is not None:
            for text, _ in self._tracebacks.flush():
                self._emit(logging.ERROR, text, False)
        self.closed.set()

    def _deliver(self, lines: list[CapturedLine]) -> None:
        for line in lines:
            if self._tracebacks is None:
                self._emit(self._level, line.text, line.truncated)
                continue
            for text, is_traceback in self._tracebacks.feed(line.text):
                self._emit(logging.ERROR if is_traceback else self._level, text, line.truncated)


def stdio_logger(runner_id: str, stream: str) -> logging.Logger:
    """The logger that receives a runner's ``stream``: ``plugin.<runner id>.<stream>``."""
    return logging.getLogger(f"plugin.{runner_id}.{stream}")
