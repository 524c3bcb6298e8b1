"""A pipe's bytes as lines: invalid UTF-8 replaced, over-long lines cut and marked, carriage
returns (a progress bar's updates) ending lines.

:class:`LineSplitter` is what the stdio reader (:mod:`isoplug.host.stdio_reader`) splits each
of a runner's stdout and stderr pipes with.
"""

from __future__ import annotations

import dataclasses
import re

from isoplug.wire.sanitize import cut_mark

__all__ = [
    "FRAME_END",
    "MAX_LINE_BYTES",
    "REDRAWN",
    "CapturedLine",
    "CutLine",
    "LineSplitter",
    "cut_line",
]

#: Longest line kept whole. A plugin that prints a huge blob without a newline must not make
#: the host buffer it all: past this, the line is cut, and the rest of it skipped (counted).
MAX_LINE_BYTES = 16 * 1024


def _character_start(line: bytes | bytearray, limit: int, first: int) -> int:
    """Where to cut ``line`` (its text from ``first`` on) at ``limit`` bytes at most, so that
    the cut never splits a UTF-8 character, whose kept bytes would decode as U+FFFD: before
    the character's first byte, when it is at most three bytes back (the bytes after it are
    0x80-0xBF) and not the text's first. Bytes that are no UTF-8 are cut where they fall."""
    end = limit
    while end > first and end > limit - 3 and 0x80 <= line[end] < 0xC0:
        end -= 1
    return end if end > first and line[end] >= 0xC0 else limit


def cut_line(text: str, cut: int) -> str:
    """The text of a line whose raw bytes were cut ``cut`` bytes short: it says how many (in
    bytes, the unit cut: the skipped bytes are never decoded)."""
    return text + cut_mark(cut, "bytes")


@dataclasses.dataclass(frozen=True)
class CapturedLine:
    text: str
    truncated: bool = False
    #: It followed a carriage return: a progress bar's update, drawn over the line before.
    redrawn: bool = False
    #: A carriage return alone ended it: a status frame, which the next line draws over.
    frame: bool = False


#: A crash dump's first line, as faulthandler and ``Py_FatalError`` write it, piece by piece.
_DUMP_START = b"Fatal Python error"
#: That line after unfinished text, in one chunk: followed by what follows a dump's first line
#: (a blank line before the stacks, or the runtime state), or unfinished at the chunk's end (the
#: rest not written yet). Text that only quotes one, in a line written whole, is neither.
_GLUED_DUMP = re.compile(
    rb"(?<=[^\n])(?=Fatal Python error(?:[^\n]*\n(?:\n|Python runtime state: )|[^\n]*\Z))"
)

#: The first byte of a raw line that followed a carriage return (see :class:`LineSplitter`).
REDRAWN = b"\r"
#: The last byte of a raw line that a carriage return alone ended (see :class:`LineSplitter`).
#: Never an empty line's: a CR alone ends none.
FRAME_END = b"\r"


class CutLine(bytes):
    """The head of a line that was cut (``cut`` bytes of it skipped). A subclass of bytes, so
    that whole lines, nearly all of them, stay the plain ``bytes`` objects ``bytes.split``
    made: no tuple per line on the reader's path."""

    cut: int

    def __new__(cls, head: bytes, cut: int) -> CutLine:
        line = super().__new__(cls, head)
        line.cut = cut
        return line


class LineSplitter:
    """Bytes in, complete lines out (without their end).

    A line ends at LF, CRLF, or a CR alone: a progress bar (curl's, ffmpeg's, tqdm's) writes
    ``\r 10%``, ``\r 20%``... with no newline for as long as it runs, which a terminal shows
    one over the other; each is a line as it comes, rather than one line that grows until it
    is cut. A CR alone that ends nothing (``\r`` right after a line's end) makes no line.
    A line that follows a CR alone is a redraw: :meth:`split` leaves it that CR in front
    (:data:`REDRAWN`); one that a CR alone ends is a status frame, which the next line draws
    over: it keeps that CR at its end (:data:`FRAME_END`). Neither counts against the line's
    length, a cut line keeps both, and :meth:`decode` says so. No other CR is left in a line,
    so ``strip(b"\r")`` takes both away.

    A line longer than ``max_line_bytes`` is cut there (or up to three bytes before, not to
    split a UTF-8 character), marked ``truncated`` and with how many bytes were cut. The rest
    of it is skipped up to its end, only counted, so a huge blob never makes the splitter hold
    more than ``max_line_bytes``; the cut line comes out when its end arrives (or at the end
    of the stream), when the count is known.
    """

    def __init__(self, max_line_bytes: int = MAX_LINE_BYTES) -> None:
        self._max = max_line_bytes
        self._buffer = bytearray()
        self._skipping = False  # inside the tail of a line that was cut
        self._cut = 0  # bytes of that tail skipped so far; the line's head is in _buffer
        # The last chunk ended with a CR: a CRLF's if the next one starts with LF, else a
        # line's end.
        self._held_cr = False

    def feed(self, data: bytes) -> list[CapturedLine]:
        return [self.decode(raw) for raw in self.split(data)]

    def flush(self) -> list[CapturedLine]:
        """The partial last line, if any (call at end of stream)."""
        return [self.decode(raw) for raw in self.split_end()]

    def split(self, data: bytes) -> list[bytes]:
        """Like :meth:`feed`, but the lines stay bytes: a whole line as ``bytes``, a cut one as
        a :class:`CutLine`. The work is done in C (one ``split`` per chunk, a few ``replace``
        for a chunk with a CR), so reading stays cheap however the plugin writes; decode
        later."""
        if self._held_cr or b"\r" in data:
            data = self._newlines_for_carriage_returns(data)
        if _DUMP_START in data:
            data = self._dump_on_a_line_of_its_own(data)
        limit = self._max
        buffer = self._buffer
        if b"\n" not in data:
            if self._skipping:
                self._cut += len(data)
            else:
                buffer += data
                self._start_skipping_past(limit)
            return []
        lines: list[bytes] = data.split(b"\n")
        tail = lines.pop()
        first = 0
        if self._skipping:
            # The first line is the end of the line being cut: its head waits in the buffer.
            # A CR alone that ended it stays its last byte, uncounted.
            end = len(lines[0]) - (lines[0][-1:] == FRAME_END)
            lines[0] = CutLine(bytes(buffer) + lines[0][end:], self._cut + end)
            self._skipping = False
            self._cut = 0
            first = 1
        elif buffer:
            buffer += lines[0]
            lines[0] = bytes(buffer)
        buffer.clear()
        if len(lines) > first and len(max(lines[first:], key=len)) > limit:
            for index in range(first, len(lines)):
                line = lines[index]
                start = int(line[:1] == REDRAWN)
                # A line of one CR is an empty redraw; no frame is empty.
                end = len(line) - int(len(line) > 1 and line[-1:] == FRAME_END)
                if end - start > limit:
                    own = _character_start(line, start + limit, start)
                    lines[index] = CutLine(line[:own] + line[end:], end - own)
        if tail:
            buffer += tail
            self._start_skipping_past(limit)
        return lines

    def _dump_on_a_line_of_its_own(self, data: bytes) -> bytes:
        """``data`` with a line end before each crash dump that starts after unfinished text:
        faulthandler writes straight to the fd, after whatever a line the process left
        unfinished (a ``write(2, "partial")``, then ``abort()``), and its first line must start
        a line to make the dump one record (see :mod:`isoplug.logs.textlines`)."""
        if data.startswith(_DUMP_START) and (self._buffer or self._skipping):
            # A write of its own after an unfinished line: the dump's, begun by its first piece.
            data = b"\n" + data
        return _GLUED_DUMP.sub(b"\n", data)

    def _newlines_for_carriage_returns(self, data: bytes) -> bytes:
        """``data`` with every line end an LF, a CR left at the end of each line a CR alone
        ends (:data:`FRAME_END`) and in front of each line that follows one (:data:`REDRAWN`):
        the same lines as the CRs would give, found by
        :meth:`split`'s ``bytes.split`` (a chunk of binary noise holds a CR every 256 bytes, and
        a loop over them in Python would make the plugin's writes wait on the host)."""
        if self._held_cr:
            self._held_cr = False
            if data[:1] != b"\n":
                data = b"\r" + data
        if data[-1:] == b"\r":
            self._held_cr = True
            data = data[:-1]
        data = data.replace(b"\r\n", b"\n")
        if b"\r" not in data:
            return data
        # A CR right after a CR or a line's end ends an empty line: none.
        while b"\r\r" in data:
            data = data.replace(b"\r\r", b"\r")
        # Each CR ends the line before it, and marks both (none at the very start, or right
        # after a line's end: no line before it; the line after it is marked still).
        first = data[:1] == b"\r" and not self._skipping and self._buffer in (b"", REDRAWN)
        if first:
            self._buffer.clear()  # an empty redraw, redrawn again: none
        data = data.replace(b"\r", b"\r\n\r").replace(b"\n\r\n\r", b"\n\r")
        return data[2:] if first else data

    def _start_skipping_past(self, limit: int) -> None:
        """Cut the buffered line at ``limit`` bytes, if it is longer; skip the rest of it."""
        buffer = self._buffer
        first = int(buffer[:1] == REDRAWN)
        limit += first
        if len(buffer) > limit:
            limit = _character_start(buffer, limit, first)
            self._cut = len(buffer) - limit
            del buffer[limit:]
            self._skipping = True

    def split_end(self) -> list[bytes]:
        """Like :meth:`flush`, as bytes (a CR at the very end ends the last line, a frame)."""
        ended = self._held_cr
        self._held_cr = False
        if not self._buffer or self._buffer == REDRAWN:  # nothing, or an empty redraw
            self._buffer.clear()
            return []
        if ended:
            self._buffer += FRAME_END
        line = CutLine(bytes(self._buffer), self._cut) if self._cut else bytes(self._buffer)
        self._buffer.clear()
        self._skipping = False
        self._cut = 0
        return [line]

    @staticmethod
    def decode(raw: bytes) -> CapturedLine:
        """A raw line as text: invalid UTF-8 replaced, a cut marked, a redraw and a frame
        said."""
        cut = raw.cut if type(raw) is CutLine else 0
        redrawn = raw[:1] == REDRAWN
        frame = len(raw) > 1 and raw[-1:] == FRAME_END
        text = raw.strip(b"\r").decode("utf-8", errors="replace")
        return CapturedLine(cut_line(text, cut) if cut else text, cut > 0, redrawn, frame)
