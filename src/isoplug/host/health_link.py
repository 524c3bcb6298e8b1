"""The host end of a runner's health channel: a socket pair whose other end the runner inherits.

A thread of the runner answers on it (:mod:`isoplug.runner.health`), so an answer comes even
while the runner's event loop is blocked, and says what the thread saw
(:class:`~isoplug.control.HealthReport`). Nothing but the runner process holds the other end
(it is passed to it alone, at its spawn), so the channel needs no token. What it reports is
the runner's word: every text in it is sanitized before it is quoted (:mod:`isoplug.host.health`).
"""

from __future__ import annotations

import asyncio
import socket
import time
from typing import cast

import msgspec

from isoplug.control import HealthQuery, HealthReport
from isoplug.errors import RemoteProtocolError
from isoplug.wire import FrameDecoder

__all__ = ["HealthLink"]

#: A report lists at most 64 calls of a few hundred characters each.
_MAX_REPORT_BYTES = 256 * 1024


class HealthLink(asyncio.Protocol):
    """Queries a runner's health thread. Create with :meth:`pair`, then :meth:`open` once the
    runner was spawned; :meth:`close` at the end of its life."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock: socket.socket | None = sock
        self._transport: asyncio.Transport | None = None
        self._decoder = FrameDecoder(_MAX_REPORT_BYTES)
        self._reports = msgspec.msgpack.Decoder(HealthReport)
        self._queries = msgspec.msgpack.Encoder()
        self._waiting: dict[int, asyncio.Future[HealthReport | None]] = {}
        self._seq = 0
        #: Why the channel no longer works (None while it does).
        self.failure: str | None = None

    @classmethod
    def pair(cls) -> tuple[HealthLink, socket.socket]:
        """A link, and the socket to hand the runner (close it once the runner has it)."""
        ours, theirs = socket.socketpair()
        return cls(ours), theirs

    async def open(self) -> None:
        sock, self._sock = self._sock, None
        if sock is None:
            return
        loop = asyncio.get_running_loop()
        await loop.create_unix_connection(lambda: self, sock=sock)

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        if self._transport is not None:
            self._transport.close()
        self._fail("closed by the host")

    async def query(self, timeout: float, since: float = 0.0) -> HealthReport | None:
        """Ask; return the report, or None when none came within ``timeout`` seconds or the
        channel failed (:attr:`failure` then says why). ``since``: see
        :attr:`HealthQuery.since`. A cancel point."""
        transport = self._transport
        if transport is None or self.failure is not None:
            return None
        self._seq += 1
        seq = self._seq
        future: asyncio.Future[HealthReport | None] = asyncio.get_running_loop().create_future()
        self._waiting[seq] = future
        try:
            payload = self._queries.encode(HealthQuery(seq, time.monotonic(), since))
            transport.write(len(payload).to_bytes(4, "big") + payload)
            # Not asyncio.timeout: its cancel would cancel the future, and a report read after
            # the timeout fired would find no one waiting.
            await asyncio.wait([future], timeout=timeout)
            if future.done():
                return future.result()
            # The report may have come in time and still be unread: after a SIGSTOP/SIGCONT of
            # the host, epoll_wait fails with EINTR and Python returns no events once its
            # timeout has passed, so the timeout ran in a round that read nothing. This task
            # resumed in the next round, which polled the socket; its reads run before this
            # task's next step, and an answer there wins over the timeout.
            await asyncio.sleep(0)
            return future.result() if future.done() else None
        finally:
            self._waiting.pop(seq, None)

    # -- asyncio.Protocol -----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A cast, not an isinstance check: uvloop's transports are no asyncio.Transport.
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        try:
            for frame in self._decoder.receive_data(data):
                report = self._reports.decode(frame)
                future = self._waiting.get(report.seq)
                if future is not None and not future.done():
                    future.set_result(report)
        except (RemoteProtocolError, msgspec.DecodeError) as exc:
            # The runner's text, kept for a message: sanitized where it is quoted.
            self._fail(f"it sent what is not a health report ({exc})")
            if self._transport is not None:
                self._transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail("the runner closed it" if exc is None else f"it broke ({exc})")

    def _fail(self, why: str) -> None:
        if self.failure is None:
            self.failure = why
        for future in self._waiting.values():
            if not future.done():
                future.set_result(None)
