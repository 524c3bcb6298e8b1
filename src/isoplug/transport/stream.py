"""The asyncio socket implementation of the byte stream every transport provides.

:class:`Stream`, the contract (in :mod:`isoplug.transport.stream_interface`), and what the
kernel says of a peer (in :mod:`isoplug.transport.peers`) are imported from here too.

The socket implementation sits directly on :class:`asyncio.Protocol` rather than on
``asyncio.StreamReader``: it saves a copy and a few layers per read, which matters when
100,000 small events per second pass through.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import socket
import ssl
from collections.abc import Callable
from typing import cast

from isoplug.errors import ConnectionBroken, ConnectionClosed
from isoplug.transport.passed_descriptors import peek_passed_now
from isoplug.transport.peers import (
    PeerCredentials,
    host_port,
    peer_address_of,
    peer_credentials_of,
)
from isoplug.transport.stream_interface import DataCallback, EndCallback, Stream

__all__ = [
    "PeerCredentials",
    "SocketStream",
    "Stream",
    "host_port",
    "peer_address_of",
    "peer_credentials_of",
]

#: Stop reading from the socket once this much received data waits for the application: the
#: kernel buffer then fills and the sender is slowed down instead of our memory growing.
RECEIVE_BUFFER_LIMIT = 1024 * 1024
#: ``drain()`` waits while more than this is queued for sending.
WRITE_HIGH_WATER = 1024 * 1024
WRITE_LOW_WATER = 256 * 1024


class SocketStream(Stream, asyncio.Protocol):
    """A :class:`Stream` over an asyncio socket transport (unix, TCP or TLS)."""

    def __init__(
        self,
        description: str = "",
        on_connection_made: Callable[[SocketStream], None] | None = None,
        *,
        takes_descriptor: bool = False,
    ) -> None:
        self.description = description
        self._on_connection_made = on_connection_made
        self._takes_descriptor = takes_descriptor
        # Taken on a unix socket with ``takes_descriptor`` (see
        # isoplug.transport.passed_descriptors), closed with the stream.
        self.passed_descriptor = None
        # While the first bytes are awaited for their descriptor: a duplicate of the socket's
        # descriptor (the loop watches no transport's own), reading held meanwhile.
        self._peeker: socket.socket | None = None
        self._transport: asyncio.Transport | None = None
        self._chunks: collections.deque[bytes] = collections.deque()
        self._buffered = 0
        self._eof = False
        self._lost: BaseException | None = None
        self._closed = False
        self._reading_paused = False
        self._read_waiter: asyncio.Future[None] | None = None
        self._write_paused = False
        self._drain_waiters: list[asyncio.Future[None]] = []
        self._connection_lost = asyncio.get_running_loop().create_future()
        self._credentials: PeerCredentials | None = None
        self._on_data: DataCallback | None = None
        self._on_end: EndCallback | None = None
        self._end_delivered = False
        self._listener_paused = False

    # -- asyncio.Protocol -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A cast, not an isinstance check: uvloop's transports are no asyncio.Transport.
        transport = cast(asyncio.Transport, transport)
        self._transport = transport
        transport.set_write_buffer_limits(high=WRITE_HIGH_WATER, low=WRITE_LOW_WATER)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            if sock.family in (socket.AF_INET, socket.AF_INET6):
                # Without it a small message waits for the peer's delayed ACK: ~40 ms.
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                self.peer_address = host_port(transport.get_extra_info("peername"))
            self._credentials = peer_credentials_of(sock)
            if self._takes_descriptor and sock.family == socket.AF_UNIX:
                self._hold_for_descriptor(sock.fileno())
        if self._on_connection_made is not None:
            self._on_connection_made(self)

    def abort_if_open(self) -> None:
        """Drop the connection at once unless :meth:`aclose` released it already."""
        if not self._closed and self._transport is not None:
            self._transport.abort()

    async def secure_as_server(self, context: ssl.SSLContext, timeout: float | None) -> None:
        """Run the server's side of a TLS handshake on this accepted connection, whose
        reading the listener paused at its accept (so that the client's first bytes reach
        TLS, not this stream); the stream speaks TLS once it returns. Raises what the
        handshake raised (OSError, ssl.SSLError, ConnectionAbortedError at the timeout)."""
        transport = self._transport
        assert transport is not None
        try:
            secured = await asyncio.get_running_loop().start_tls(
                transport, self, context, server_side=True, ssl_handshake_timeout=timeout
            )
        except BaseException:
            # start_tls closed the socket while TLS was its protocol: this stream may never
            # hear of the loss, and its close would wait for it.
            transport.abort()
            if not self._connection_lost.done():
                self.connection_lost(None)
            raise
        if secured is None:  # the connection was closed meanwhile
            raise ConnectionResetError("the connection closed during the TLS handshake")
        self._transport = secured
        self._transport.set_write_buffer_limits(high=WRITE_HIGH_WATER, low=WRITE_LOW_WATER)

    def _hold_for_descriptor(self, fd: int) -> None:
        """Take the descriptor passed with the first bytes before the transport reads them
        (which would drop it): now if they are there, else once they come, reading held
        until then."""
        peeker = socket.socket(fileno=os.dup(fd))
        if self._peek(peeker):
            peeker.close()
            return
        transport = self._transport
        assert transport is not None
        self._peeker = peeker
        transport.pause_reading()
        loop = asyncio.get_running_loop()
        # uvloop starts reading once connection_made() returned, paused or not.
        loop.call_soon(self._still_holding)
        loop.add_reader(peeker.fileno(), self._first_bytes_came)

    def _peek(self, peeker: socket.socket) -> bool:
        """Whether the first bytes came (or the end): the descriptor with them is taken then."""
        seen, self.passed_descriptor = peek_passed_now(peeker)
        return seen

    def _still_holding(self) -> None:
        transport = self._transport
        if self._peeker is not None and transport is not None and not transport.is_closing():
            transport.pause_reading()

    def _first_bytes_came(self) -> None:
        peeker = self._peeker
        if peeker is None or not self._peek(peeker):
            return
        self._stop_holding(peeker)
        transport = self._transport
        if transport is not None and not transport.is_closing() and not self._reading_paused:
            transport.resume_reading()

    def _stop_holding(self, peeker: socket.socket) -> None:
        self._peeker = None
        with contextlib.suppress(RuntimeError):  # the loop closed: nothing watches it
            asyncio.get_running_loop().remove_reader(peeker.fileno())
        peeker.close()

    def _release_descriptors(self) -> None:
        peeker = self._peeker
        if peeker is not None:
            self._stop_holding(peeker)
        passed, self.passed_descriptor = self.passed_descriptor, None
        if passed is not None:
            os.close(passed)

    def data_received(self, data: bytes) -> None:
        on_data = self._on_data
        if on_data is not None and not self._chunks and not self._listener_paused:
            on_data(data)
            return
        self._chunks.append(data)
        self._buffered += len(data)
        if self._buffered > RECEIVE_BUFFER_LIMIT and not self._reading_paused:
            assert self._transport is not None
            self._transport.pause_reading()
            self._reading_paused = True
        self._wake_reader()

    def eof_received(self) -> bool:
        self._eof = True
        self._wake_reader()
        self._deliver_buffered()
        # Keep our write side open: the peer may still read our goodbye or last responses.
        # TLS cannot half-close: asyncio closes the transport anyway and warns if we say True.
        transport = self._transport
        return transport is None or transport.get_extra_info("sslcontext") is None

    def connection_lost(self, exc: Exception | None) -> None:
        # EPIPE: we wrote after the peer closed. asyncio closes the socket right after this
        # call, which would discard what the peer sent before closing (its goodbye); read it.
        peer_closed = isinstance(exc, BrokenPipeError) and self._read_what_is_left()
        if exc is not None and self._lost is None and not peer_closed:
            self._lost = exc
        self._eof = True
        self._wake_reader()
        # Push mode: what _read_what_is_left() rescued must reach the listener before the end.
        self._deliver_buffered()
        error = ConnectionBroken(f"connection to {self.description} lost: {exc}") if exc else None
        for waiter in self._drain_waiters:
            if not waiter.done():
                if error is None:
                    waiter.set_result(None)
                else:
                    waiter.set_exception(error)
        self._drain_waiters.clear()
        if self._peeker is not None:
            self._stop_holding(self._peeker)
        if not self._connection_lost.done():
            self._connection_lost.set_result(None)

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        for waiter in self._drain_waiters:
            if not waiter.done():
                waiter.set_result(None)
        self._drain_waiters.clear()

    # -- Stream -----------------------------------------------------------------------------

    @property
    def peer_credentials(self) -> PeerCredentials | None:
        return self._credentials

    def fileno(self) -> int | None:
        transport = self._transport
        sock = None if transport is None else transport.get_extra_info("socket")
        fd = -1 if sock is None else sock.fileno()
        return fd if fd >= 0 else None

    def write(self, data: bytes) -> None:
        if self._closed:
            raise ConnectionClosed(f"connection to {self.description} is closed")
        transport = self._transport
        if transport is None or transport.is_closing():
            raise ConnectionBroken(
                f"connection to {self.description} was lost"
                + (f": {self._lost}" if self._lost else "")
            )
        transport.write(data)

    def unsent_bytes(self) -> int:
        transport = self._transport
        return 0 if transport is None else transport.get_write_buffer_size()

    async def drain(self) -> None:
        if self._closed:
            raise ConnectionClosed(f"connection to {self.description} is closed")
        transport = self._transport
        # Closing without our aclose(): lost, or TLS shutting down after the peer's EOF. Either
        # way write() already refuses, so drain() must not report success.
        if self._connection_lost.done() or transport is None or transport.is_closing():
            raise ConnectionBroken(f"connection to {self.description} was lost")
        if not self._write_paused:
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._drain_waiters.append(waiter)
        await waiter

    async def receive_some(self) -> bytes:
        while True:
            if self._closed:
                raise ConnectionClosed(f"connection to {self.description} is closed")
            if self._chunks:
                data = self._chunks.popleft() if len(self._chunks) == 1 else b"".join(self._chunks)
                self._chunks.clear()
                self._buffered = 0
                if self._reading_paused and self._transport is not None:
                    self._reading_paused = False
                    self._transport.resume_reading()
                return data
            if self._lost is not None:
                raise ConnectionBroken(
                    f"connection to {self.description} broke: {self._lost}"
                ) from self._lost
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
        self._wake_reader()
        self._release_descriptors()
        transport = self._transport
        if transport is None:
            return
        transport.close()
        try:
            # close() flushes the write buffer first; wait for that, but not forever.
            async with asyncio.timeout(_CLOSE_FLUSH_TIMEOUT):
                await asyncio.shield(self._connection_lost)
        except TimeoutError:
            transport.abort()
        except asyncio.CancelledError:
            transport.abort()
            raise

    def _read_what_is_left(self) -> bool:
        """Move the bytes still in the kernel's receive buffer to ours; True if they end in EOF.

        Only for plain sockets: under TLS those bytes are encrypted records.
        """
        transport = self._transport
        if self._closed or transport is None or transport.get_extra_info("sslcontext"):
            return False
        sock = transport.get_extra_info("socket")
        if sock is None or sock.fileno() < 0:
            return False
        while True:
            try:
                data = os.read(sock.fileno(), 256 * 1024)  # non-blocking, like every asyncio socket
            except OSError:  # BlockingIOError: nothing more for now; or a reset
                return False
            if not data:
                return True
            self._chunks.append(data)
            self._buffered += len(data)

    def set_data_listener(self, on_data: DataCallback, on_end: EndCallback) -> bool:
        self._on_data = on_data
        self._on_end = on_end
        if self._chunks or self._eof:
            asyncio.get_running_loop().call_soon(self._deliver_buffered)
        return True

    def pause_reading(self) -> None:
        self._listener_paused = True
        transport = self._transport
        if transport is not None and not transport.is_closing() and not self._reading_paused:
            transport.pause_reading()
            self._reading_paused = True

    def resume_reading(self) -> None:
        self._listener_paused = False
        if self._chunks or self._eof:
            asyncio.get_running_loop().call_soon(self._deliver_buffered)
        transport = self._transport
        if transport is not None and not transport.is_closing() and self._reading_paused:
            self._reading_paused = False
            # Paused before its first bytes came (a connection that waited for a place,
            # isoplug.rpc.waiting_room): the transport reads once their descriptor is taken,
            # or would drop it.
            if self._peeker is None:
                transport.resume_reading()

    def _deliver_buffered(self) -> None:
        """Hand chunks that arrived before the listener (or while paused) to the listener."""
        on_data = self._on_data
        if on_data is None or self._closed:
            return
        while self._chunks and not self._listener_paused and not self._closed:
            chunk = self._chunks.popleft()
            self._buffered -= len(chunk)
            on_data(chunk)
        if not self._chunks:
            self._deliver_end()

    def _deliver_end(self) -> None:
        """Tell the listener the stream ended, once, after every buffered chunk."""
        on_end = self._on_end
        if on_end is None or self._end_delivered or self._chunks or not self._eof:
            return
        self._end_delivered = True
        lost = self._lost
        on_end(
            ConnectionBroken(f"connection to {self.description} broke: {lost}") if lost else None
        )

    def _wake_reader(self) -> None:
        waiter = self._read_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


#: How long :meth:`SocketStream.aclose` lets queued bytes drain before aborting the socket.
_CLOSE_FLUSH_TIMEOUT = 5.0
