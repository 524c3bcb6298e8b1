"""A pipe's bytes as lines: invalid UTF-8 replaced, over-long lines cut and marked.

:class:`LineSplitter` is what the stdio reader (:mod:`isoplug.host.stdio_reader`) splits each
of a runner's stdout and stderr pipes with.
"""

from __future__ import annotations

import dataclasses

from isoplug.wire.sanitize import cut_mark

__all__ = ["MAX_LINE_BYTES", "CapturedLine", "LineSplitter", "cut_line"]

#: Longest line kept whole. A plugin that prints a huge blob without a newline must not make
#: the host buffer it all: past this, the line is cut, and the rest of it skipped (counted).
MAX_LINE_BYTES = 16 * 1024


def cut_line(text: str, cut: int) -> str:
    """The text of a line whose raw bytes were cut ``cut`` bytes short: it says how many (in
    bytes, the unit cut: the skipped bytes are never decoded)."""
    return text + cut_mark(cut, "bytes")


@dataclasses.dataclass(frozen=True)
class CapturedLine:
    text: str
    truncated: bool = False


class LineSplitter:
    """Bytes in, complete lines out (without the newline).

    A line longer than ``max_line_bytes`` is cut there, marked ``truncated`` and with how many
    bytes were cut. The rest of it is skipped up to its newline, only counted, so a huge blob
    never makes the splitter hold more than ``max_line_bytes``; the cut line comes out when its
    end arrives (or at the end of the stream), when the count is known.
    """

    def __init__(self, max_line_bytes: int = MAX_LINE_BYTES) -> None:
        self._max = max_line_bytes
        self._buffer = bytearray()
        self._skipping = False  # inside the tail of a line that was cut
        self._cut = 0  # bytes of that tail skipped so far; the line's head is in _buffer

    def feed(self, data: bytes) -> list[CapturedLine]:
        return [self.decode(raw, cut) for raw, cut in self.split(data)]

    def flush(self) -> list[CapturedLine]:
        """The partial last line, if any (call at end of stream)."""
        return [self.decode(raw, cut) for raw, cut in self.split_end()]

    def split(self, data: bytes) -> list[tuple[bytes, int]]:
        """Like :meth:`feed`, but the lines stay bytes: ``(raw line, bytes cut)`` (0: whole).
        The work is done in C (one ``split`` per chunk), so reading stays cheap; decode later."""
        limit = self._max
        buffer = self._buffer
        if b"\n" not in data:
            if self._skipping:
                self._cut += len(data)
            else:
                buffer += data
                if len(buffer) > limit:
                    self._cut = len(buffer) - limit
                    del buffer[limit:]
                    self._skipping = True
            return []
        parts = data.split(b"\n")
        tail = parts.pop()
        lines: list[tuple[bytes, int]]
        if self._skipping:
            # The first part is the end of the line being cut: its head waits in the buffer.
            end = parts[0]
            lines = [(bytes(buffer), self._cut + len(end) - end.endswith(b"\r"))]
            self._skipping = False
            self._cut = 0
            del parts[0]
        else:
            lines = []
            if buffer:
                buffer += parts[0]
                parts[0] = bytes(buffer)
        buffer.clear()
        if parts and max(map(len, parts)) > limit:
            lines += [
                (part[:limit], len(part) - limit - part.endswith(b"\r"))
                if len(part) > limit
                else (part, 0)
                for part in parts
            ]
        elif lines:
            lines += [(part, 0) for part in parts]
        else:
            lines = [(part, 0) for part in parts]
        if tail:
            buffer += tail
            if len(buffer) > limit:
                self._cut = len(buffer) - limit
                del buffer[limit:]
                self._skipping = True
        return lines

    def split_end(self) -> list[tuple[bytes, int]]:
        """Like :meth:`flush`, as bytes."""
        if not self._buffer:
            return []
        line = bytes(self._buffer), self._cut
        self._buffer.clear()
        self._skipping = False
        self._cut = 0
        return [line]

    @staticmethod
    def decode(raw: bytes, cut: int = 0) -> CapturedLine:
        """A raw line as text: invalid UTF-8 replaced, a trailing CR dropped, a cut marked."""
        text = raw.removesuffix(b"\r").decode("utf-8", errors="replace")
        return CapturedLine(cut_line(text, cut) if cut else text, cut > 0)
