"""Length-prefixed framing: every message travels as ``uint32 big-endian length + payload``.

:class:`FrameDecoder` is an incremental parser: feed it whatever bytes arrived with
:meth:`~FrameDecoder.receive_data`, in chunks of any size, and it returns the complete frames
they finish. :func:`encode_frame` / :class:`FrameWriter` produce frames with the prefix written
in place, so a message is never copied after encoding.
"""

from __future__ import annotations

import struct

from isoplug.errors import FrameTooLarge, LocalProtocolError, RemoteProtocolError
from isoplug.wire.codec import ENCODE_ERRORS, encode_message_into
from isoplug.wire.messages import Message

__all__ = [
    "DEFAULT_MAX_FRAME_SIZE",
    "HANDSHAKE_MAX_FRAME_SIZE",
    "HEADER_SIZE",
    "FrameDecoder",
    "FrameWriter",
    "encode_frame",
]

HEADER_SIZE = 4
#: 16 MiB: the largest legitimate frame is a log batch, which the sender caps at far less
#: (records are truncated and batches split well below this); anything bigger is a broken or
#: hostile peer, and refusing it before buffering keeps a bad length from costing memory.
DEFAULT_MAX_FRAME_SIZE = 16 * 1024 * 1024
#: 64 KiB: the limit until the handshake completes. A hello is a few hundred bytes (its texts
#: are capped at 256 characters each), and whoever sends it has proven nothing yet: a peer
#: without the token must not make us hold megabytes.
HANDSHAKE_MAX_FRAME_SIZE = 64 * 1024
_LENGTH = struct.Struct(">I")
#: The length prefix can express at most this; a limit above it would be meaningless.
_PREFIX_LIMIT = 2**32 - 1


class FrameDecoder:
    """Splits a byte stream into frame payloads.

    After :class:`~isoplug.errors.RemoteProtocolError` the stream cannot be resynchronised;
    the decoder refuses further input and the connection must be closed.
    """

    __slots__ = ("_buffer", "_failed", "max_frame_size")

    def __init__(self, max_frame_size: int = DEFAULT_MAX_FRAME_SIZE) -> None:
        if not 0 < max_frame_size <= _PREFIX_LIMIT:
            raise ValueError(f"max_frame_size must be in 1..{_PREFIX_LIMIT}, got {max_frame_size}")
        self.max_frame_size = max_frame_size
        self._buffer = bytearray()
        self._failed = False

    @property
    def buffered(self) -> int:
        """Bytes received that do not yet form a complete frame."""
        return len(self._buffer)

    def receive_data(self, data: bytes) -> list[bytes | memoryview]:
        """Add ``data`` and return the payloads of every frame it completes, in order.

        Payloads are either ``bytes`` or read-only views of ``data`` (never of an internal
        buffer that is reused), so they stay valid after the call. Raises
        :class:`~isoplug.errors.RemoteProtocolError` when a frame announces a length above
        :attr:`max_frame_size`.
        """
        if self._failed:
            raise RemoteProtocolError("the byte stream already failed framing; close it")
        unpack = _LENGTH.unpack_from
        max_size = self.max_frame_size
        end = len(data)
        if not self._buffer and end >= HEADER_SIZE:
            # The usual case, one whole frame in one read: no loop, no buffer.
            (length,) = unpack(data)
            if end == HEADER_SIZE + length and length <= max_size:
                return [memoryview(data)[HEADER_SIZE:]]
        if self._buffer:
            self._buffer += data
            source: bytes | bytearray = self._buffer
            end = len(source)
        else:
            # Fast path: frames entirely inside ``data`` are sliced from it without a copy.
            source = data
        frames: list[bytes | memoryview] = []
        view = memoryview(source)
        position = 0
        while end - position >= HEADER_SIZE:
            (length,) = unpack(source, position)
            if length > max_size:
                self._failed = True
                view.release()
                raise _oversized(length, max_size)
            frame_end = position + HEADER_SIZE + length
            if frame_end > end:
                break
            if source is data:
                frames.append(view[position + HEADER_SIZE : frame_end])
            else:
                frames.append(bytes(view[position + HEADER_SIZE : frame_end]))
            position = frame_end
        if source is data:
            if position < end:
                self._buffer += view[position:]
        else:
            view.release()
            del self._buffer[:position]
        return frames

    def next_frame(self, data: bytes) -> bytes | None:
        """Add ``data`` and return the payload of the first frame it completes, if any.

        Whatever follows that frame stays buffered, its header not checked yet: the next call
        (to either method) checks it against :attr:`max_frame_size` as it is then. This is for
        a limit that changes after a frame, as the handshake's does (see
        :class:`~isoplug.wire.Connection`); it copies, so it is not for the bulk of a stream.
        An oversized frame is refused as soon as its header is in, without taking the rest of
        ``data``: raises :class:`~isoplug.errors.RemoteProtocolError`, like
        :meth:`receive_data`.
        """
        if self._failed:
            raise RemoteProtocolError("the byte stream already failed framing; close it")
        buffer = self._buffer
        chunk = memoryview(data)
        missing = HEADER_SIZE - len(buffer)
        if missing > 0:
            buffer += chunk[:missing]
            chunk = chunk[missing:]
            if len(buffer) < HEADER_SIZE:
                return None
        length = int.from_bytes(buffer[:HEADER_SIZE], "big")
        if length > self.max_frame_size:
            self._failed = True
            buffer.clear()
            raise _oversized(length, self.max_frame_size)
        buffer += chunk
        end = HEADER_SIZE + length
        if len(buffer) < end:
            return None
        payload = bytes(buffer[HEADER_SIZE:end])
        del buffer[:end]
        return payload

    def receive_eof(self) -> None:
        """Declare the end of the stream.

        Raises :class:`~isoplug.errors.RemoteProtocolError` when it cuts a frame short, saying
        how many bytes of it arrived and how many are missing.
        """
        if self._buffer and not self._failed:
            self._failed = True
            pending = len(self._buffer)
            if pending < HEADER_SIZE:
                detail = f"{pending} of {HEADER_SIZE} header bytes, {HEADER_SIZE - pending} missing"
            else:
                expected = int.from_bytes(self._buffer[:HEADER_SIZE], "big")
                received = pending - HEADER_SIZE
                detail = f"{received} of {expected} payload bytes, {expected - received} missing"
            raise RemoteProtocolError(f"stream ended in the middle of a frame ({detail})")


#: The first two bytes of a TLS handshake record (a ClientHello), read as a frame's length.
_TLS_HANDSHAKE_RECORD = 0x1603


def _oversized(length: int, limit: int) -> RemoteProtocolError:
    if length >> 16 == _TLS_HANDSHAKE_RECORD:
        # Else said as a frame of some 369 million bytes, which tells nobody what happened.
        return RemoteProtocolError(
            "a TLS client connected to a plaintext (tcp://) listener (its first bytes are a "
            "TLS ClientHello; use tls:// with an ssl_context on both sides)"
        )
    return RemoteProtocolError(f"frame of {length} bytes exceeds the limit of {limit} bytes")


def _check_size(size: int, max_frame_size: int) -> None:
    if size > max_frame_size:
        raise FrameTooLarge(size, max_frame_size)


def encode_frame(message: Message, max_frame_size: int = DEFAULT_MAX_FRAME_SIZE) -> bytes:
    """Encode ``message`` as one complete frame.

    Raises :class:`~isoplug.errors.FrameTooLarge` when it would exceed ``max_frame_size``.
    """
    writer = FrameWriter(max_frame_size)
    writer.add(message)
    return writer.take()


class FrameWriter:
    """Accumulates frames into one buffer so that many messages go out in one write."""

    __slots__ = ("_buffer", "max_frame_size")

    def __init__(self, max_frame_size: int = DEFAULT_MAX_FRAME_SIZE) -> None:
        self.max_frame_size = max_frame_size
        self._buffer = bytearray()

    def __len__(self) -> int:
        return len(self._buffer)

    def add(self, message: Message) -> None:
        """Append ``message`` as a frame.

        Raises :class:`~isoplug.errors.LocalProtocolError` (leaving the buffer as it was)
        when the frame would exceed ``max_frame_size`` or the message cannot be encoded.
        """
        buffer = self._buffer
        start = len(buffer)
        try:
            encode_message_into(message, buffer, start + HEADER_SIZE)
        except ENCODE_ERRORS as exc:
            del buffer[start:]
            raise LocalProtocolError(f"cannot encode {type(message).__name__}: {exc}") from exc
        size = len(buffer) - start - HEADER_SIZE
        if size > self.max_frame_size:
            del buffer[start:]
            _check_size(size, self.max_frame_size)
        buffer[start : start + HEADER_SIZE] = size.to_bytes(HEADER_SIZE, "big")

    def take(self) -> bytes:
        """Return everything added since the last call (``b""``: nothing) and start afresh."""
        buffer = self._buffer
        data = bytes(buffer)
        buffer.clear()
        return data
