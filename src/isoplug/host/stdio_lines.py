"""A pipe's bytes as lines: invalid UTF-8 replaced, over-long lines cut and marked.

:class:`LineSplitter` is what the stdio reader (:mod:`isoplug.host.stdio_reader`) splits each
of a runner's stdout and stderr pipes with.
"""

from __future__ import annotations

import dataclasses

__all__ = ["MAX_LINE_BYTES", "TRUNCATED_MARK", "CapturedLine", "LineSplitter"]

#: Longest line kept whole. A plugin that prints a huge blob without a newline must not make
#: the host buffer it all: past this, the line is cut, marked, and the rest of it skipped.
MAX_LINE_BYTES = 16 * 1024
#: Appended to the text of a line that was cut.
TRUNCATED_MARK = " [... line truncated by isoplug]"


@dataclasses.dataclass(frozen=True)
class CapturedLine:
    text: str
    truncated: bool = False


class LineSplitter:
    """Bytes in, complete lines out (without the newline).

    A line longer than ``max_line_bytes`` is cut there and marked ``truncated``; when its end
    has not arrived yet, the rest of it is skipped up to its newline, so a huge blob never
    makes the splitter hold more than ``max_line_bytes``.
    """

    def __init__(self, max_line_bytes: int = MAX_LINE_BYTES) -> None:
        self._max = max_line_bytes
        self._buffer = bytearray()
        self._skipping = False  # inside the tail of a line that was already cut

    def feed(self, data: bytes) -> list[CapturedLine]:
        return [self.decode(raw, cut) for raw, cut in self.split(data)]

    def flush(self) -> list[CapturedLine]:
        """The partial last line, if any (call at end of stream)."""
        return [self.decode(raw, cut) for raw, cut in self.split_end()]

    def split(self, data: bytes) -> list[tuple[bytes, bool]]:
        """Like :meth:`feed`, but the lines stay bytes: ``(raw line, truncated)``. The work
        is done in C (one ``split`` per chunk), so reading stays cheap; decode later."""
        limit = self._max
        buffer = self._buffer
        if b"\n" not in data:
            if not self._skipping:
                buffer += data
                if len(buffer) > limit:
                    line = bytes(buffer[:limit])
                    buffer.clear()
                    self._skipping = True
                    return [(line, True)]
            return []
        parts = data.split(b"\n")
        tail = parts.pop()
        if self._skipping:
            # The first part is the end of a line already cut and emitted.
            self._skipping = False
            del parts[0]
        elif buffer:
            buffer += parts[0]
            parts[0] = bytes(buffer)
        buffer.clear()
        if parts and max(map(len, parts)) > limit:
            lines = [(part[:limit], True) if len(part) > limit else (part, False) for part in parts]
        else:
            lines = [(part, False) for part in parts]
        if tail:
            buffer += tail
            if len(buffer) > limit:
                lines.append((bytes(buffer[:limit]), True))
                buffer.clear()
                self._skipping = True
        return lines

    def split_end(self) -> list[tuple[bytes, bool]]:
        """Like :meth:`flush`, as bytes."""
        if not self._buffer or self._skipping:
            self._buffer.clear()
            self._skipping = False
            return []
        line = bytes(self._buffer)
        self._buffer.clear()
        return [(line, False)]

    @staticmethod
    def decode(raw: bytes, truncated: bool = False) -> CapturedLine:
        """A raw line as text: invalid UTF-8 replaced, a trailing CR dropped, a cut marked."""
        text = raw.removesuffix(b"\r").decode("utf-8", errors="replace")
        return CapturedLine(text + TRUNCATED_MARK if truncated else text, truncated)
