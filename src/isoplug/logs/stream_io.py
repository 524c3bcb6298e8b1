"""What a :class:`~isoplug.logs.streams.LogStream` is as an ``io`` object, and its binary side.

Both ``sys.stdout`` and ``sys.stdout.buffer`` say they are write-only, with no terminal and no
seeking (:class:`WriteOnly`). :class:`BinaryLogStream` is the ``buffer``: bytes written there
take the text stream's path (:meth:`~isoplug.logs.streams.LogStream.write_bytes`), decoded as
UTF-8 with invalid bytes replaced. Its frames are never a line's source.
"""

from __future__ import annotations

import io
import sys
from types import FrameType
from typing import TYPE_CHECKING, Any

from isoplug.logs.output_records import skip_frames_of

if TYPE_CHECKING:
    from isoplug.logs.streams import LogStream

__all__ = ["BinaryLogStream", "WriteOnly", "caller"]

_getframe = sys._getframe

skip_frames_of(sys.modules[__name__])


def caller(depth: int) -> FrameType | None:
    """The frame ``depth`` levels up from the caller's, or None (a call straight from C at
    interpreter shutdown has no Python frame above it)."""
    try:
        return _getframe(depth + 1)
    except ValueError:
        return None


class WriteOnly:
    """What both streams say of themselves: writable only, no terminal, no seeking."""

    def isatty(self) -> bool:
        return False

    def writable(self) -> bool:
        return True

    def readable(self) -> bool:
        return False

    def seekable(self) -> bool:
        return False


class BinaryLogStream(WriteOnly, io.BufferedIOBase):
    """``sys.stdout.buffer``: bytes written here take the text stream's path, decoded as UTF-8
    with invalid bytes replaced."""

    def __init__(self, text: LogStream) -> None:
        super().__init__()
        self._text = text

    def write(self, data: Any) -> int:
        view = memoryview(data)
        self._text.write_bytes(view.tobytes(), caller(1))
        return view.nbytes

    def flush(self) -> None:
        self._text.flush()

    def close(self) -> None:
        self.flush()

    def fileno(self) -> int:
        return self._text.fileno()

    def __repr__(self) -> str:
        return f"<isoplug LogStream {self._text.stream!r} buffer>"
