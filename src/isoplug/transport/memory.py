"""An in-process pair of connected streams, for testing protocol code without sockets.

It keeps the semantics of a socket that matter to callers: ordered bytes, ``b""`` after the
peer's close, :class:`~isoplug.errors.ConnectionBroken` after :meth:`MemoryStream.abort`, and
back-pressure (``drain()`` waits while the peer has more than the high-water mark unread).
"""

from __future__ import annotations

import asyncio
import collections

from isoplug.errors import ConnectionBroken, ConnectionClosed
from isoplug.transport.stream import Stream

__all__ = ["MemoryStream", "memory_stream_pair"]

#: Same order of magnitude as a socket buffer, so that tests exercise back-pressure.
_HIGH_WATER = 256 * 1024


class MemoryStream(Stream):
    def __init__(self, description: str) -> None:
        self.description = description
        self._peer: MemoryStream | None = None
        self._chunks: collections.deque[bytes] = collections.deque()
        self._unread = 0
        self._eof = False
        self._broken = False
        self._closed = False
        self._read_waiter: asyncio.Future[None] | None = None
        self._drain_waiters: list[asyncio.Future[None]] = []

    def write(self, data: bytes) -> None:
        if self._closed:
            raise ConnectionClosed(f"{self.description} is closed")
        peer = self._peer
        if self._broken or peer is None or peer._closed:
            raise ConnectionBroken(f"the other end of {self.description} is gone")
        if data:
            peer._chunks.append(bytes(data))
            peer._unread += len(data)
            peer._wake()

    def unsent_bytes(self) -> int:
        # Written straight into the other end: what it has not read yet is what waits.
        peer = self._peer
        return 0 if peer is None else peer._unread

    async def drain(self) -> None:
        if self._closed:
            raise ConnectionClosed(f"{self.description} is closed")
        peer = self._peer
        while peer is not None and not peer._closed and peer._unread > _HIGH_WATER:
            if self._broken:
                break
            waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            peer._drain_waiters.append(waiter)
            await waiter
        if self._broken:
            raise ConnectionBroken(f"the other end of {self.description} is gone")

    async def receive_some(self) -> bytes:
        while True:
            if self._closed:
                raise ConnectionClosed(f"{self.description} is closed")
            if self._chunks:
                data = b"".join(self._chunks)
                self._chunks.clear()
                self._unread = 0
                self._release_writers()
                return data
            if self._broken:
                raise ConnectionBroken(f"the other end of {self.description} aborted")
            if self._eof:
                return b""
            self._read_waiter = asyncio.get_running_loop().create_future()
            try:
                await self._read_waiter
            finally:
                self._read_waiter = None

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._wake()
        self._release_writers()
        peer = self._peer
        if peer is not None:
            peer._eof = True
            peer._wake()

    def abort(self) -> None:
        """Simulate a connection reset: the peer's next read raises ConnectionBroken."""
        self._closed = True
        self._wake()
        self._release_writers()
        peer = self._peer
        if peer is not None:
            peer._broken = True
            peer._wake()
            peer._release_writers()

    def _wake(self) -> None:
        if self._read_waiter is not None and not self._read_waiter.done():
            self._read_waiter.set_result(None)

    def _release_writers(self) -> None:
        for waiter in self._drain_waiters:
            if not waiter.done():
                waiter.set_result(None)
        self._drain_waiters.clear()


def memory_stream_pair() -> tuple[MemoryStream, MemoryStream]:
    """Two streams connected to each other: what one writes, the other receives."""
    left, right = MemoryStream("memory stream (left)"), MemoryStream("memory stream (right)")
    left._peer, right._peer = right, left
    return left, right
