"""One behavioural contract for every :class:`~isoplug.transport.Stream`: unix, tcp, tls, memory.

Each test gets a connected ``(client, server)`` pair from the ``open_pair`` fixture, which is
parametrized over every transport kind. For socket kinds the server side comes out of a real
:func:`~isoplug.transport.listen` handler (handed out through a future; the handler then waits
on an event until the test is done) and the client side from :func:`~isoplug.transport.connect`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import random
import select
import socket
import struct
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
import trustme

from isoplug.errors import ConnectionBroken, ConnectionClosed
from isoplug.transport import (
    MemoryStream,
    SocketStream,
    Stream,
    connect,
    listen,
    memory_stream_pair,
    tls_client_context,
    tls_server_context,
)
from isoplug.transport.memory import _HIGH_WATER as MEMORY_HIGH_WATER
from isoplug.transport.stream import WRITE_HIGH_WATER

KINDS = ["unix", "tcp", "tls", "memory"]
SOCKET_KINDS = ["unix", "tcp", "tls"]

#: Generous bound on any single wait: a hang fails the test instead of the whole run.
WAIT = 20.0

PairFactory = Callable[[], contextlib.AbstractAsyncContextManager[tuple[Stream, Stream]]]


# -- certificates and the pair factory ----------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Certs:
    """PEM files from a throwaway CA: its certificate, and key+chain files for both ends."""

    ca: str
    server: str
    client: str


def make_certs(directory: Path) -> Certs:
    """Issue a CA, a server certificate for 127.0.0.1/localhost and a client certificate."""
    ca = trustme.CA()
    certs = Certs(
        ca=str(directory / "ca.pem"),
        server=str(directory / "server.pem"),
        client=str(directory / "client.pem"),
    )
    ca.cert_pem.write_to_path(certs.ca)
    ca.issue_cert("127.0.0.1", "localhost").private_key_and_cert_chain_pem.write_to_path(
        certs.server
    )
    ca.issue_cert("isoplug-client").private_key_and_cert_chain_pem.write_to_path(certs.client)
    return certs


@contextlib.asynccontextmanager
async def socket_pair(
    kind: str, certs: Certs | None = None
) -> AsyncIterator[tuple[Stream, Stream]]:
    """A connected (client, server) pair over a real listener of the given socket kind."""
    loop = asyncio.get_running_loop()
    accepted: asyncio.Future[Stream] = loop.create_future()
    test_done = asyncio.Event()

    async def handler(stream: Stream) -> None:
        if not accepted.done():
            accepted.set_result(stream)
        await test_done.wait()

    server_context = client_context = None
    if kind == "unix":
        address = "unix:"
    elif kind == "tcp":
        address = "tcp://127.0.0.1:0"
    else:
        assert kind == "tls"
        assert certs is not None
        address = "tls://127.0.0.1:0"
        server_context = tls_server_context(certs.server)
        client_context = tls_client_context(certs.ca)

    listener = await listen(address, handler, ssl_context=server_context)
    try:
        client = await connect(listener.address, ssl_context=client_context)
        try:
            async with asyncio.timeout(WAIT):
                server = await accepted
            yield client, server
        finally:
            test_done.set()
            await client.aclose()
    finally:
        test_done.set()
        await listener.aclose()


@contextlib.asynccontextmanager
async def memory_pair() -> AsyncIterator[tuple[Stream, Stream]]:
    """A connected (client, server) pair of in-memory streams."""
    client, server = memory_stream_pair()
    try:
        yield client, server
    finally:
        await client.aclose()
        await server.aclose()


@pytest.fixture(params=KINDS)
def kind(request: pytest.FixtureRequest) -> str:
    """The transport kind under test."""
    value: str = request.param
    return value


@pytest.fixture
def open_pair(kind: str, tmp_path: Path) -> PairFactory:
    """A factory of ``async with`` blocks that yield a connected (client, server) pair."""
    certs = make_certs(tmp_path) if kind == "tls" else None

    def factory() -> contextlib.AbstractAsyncContextManager[tuple[Stream, Stream]]:
        return memory_pair() if kind == "memory" else socket_pair(kind, certs)

    return factory


# -- helpers ------------------------------------------------------------------------------------


async def receive_exactly(stream: Stream, size: int) -> bytes:
    """Read until ``size`` bytes arrived; fail on a premature EOF."""
    buffer = bytearray()
    while len(buffer) < size:
        chunk = await stream.receive_some()
        assert chunk, f"EOF after {len(buffer)} of {size} bytes"
        buffer += chunk
    assert len(buffer) == size, f"{len(buffer) - size} bytes more than expected"
    return bytes(buffer)


async def receive_until_eof(stream: Stream) -> bytes:
    """Read everything until the peer's close."""
    buffer = bytearray()
    while chunk := await stream.receive_some():
        buffer += chunk
    return bytes(buffer)


def pending_send_bytes(stream: Stream) -> int:
    """How many written bytes wait in user space for the peer (the amount drain() bounds)."""
    if isinstance(stream, MemoryStream):
        assert stream._peer is not None
        return stream._peer._unread
    assert isinstance(stream, SocketStream)
    assert stream._transport is not None
    return stream._transport.get_write_buffer_size()


def held_back(stream: Stream) -> bool:
    """Whether drain() on ``stream`` would wait now (its peer is not reading fast enough)."""
    if isinstance(stream, MemoryStream):
        assert stream._peer is not None
        return stream._peer._unread > MEMORY_HIGH_WATER
    assert isinstance(stream, SocketStream)
    return stream._write_paused


def abort(stream: Stream) -> None:
    """Make ``stream`` vanish without an orderly goodbye (like a killed process)."""
    if isinstance(stream, MemoryStream):
        stream.abort()
    else:
        assert isinstance(stream, SocketStream)
        assert stream._transport is not None
        stream._transport.abort()


async def reset(stream: Stream, peer: Stream) -> None:
    """Make ``stream`` vanish so that the kernel reports a connection reset to ``peer``."""
    if isinstance(stream, MemoryStream):
        stream.abort()
        return
    assert isinstance(stream, SocketStream)
    transport = stream._transport
    assert transport is not None
    sock = transport.get_extra_info("socket")
    if sock.family == socket.AF_UNIX:
        # Linux resets a unix connection closed with unread data: leave some in the kernel.
        transport.pause_reading()
        peer.write(b"never read")
        readable, _, _ = await asyncio.to_thread(select.select, [sock.fileno()], [], [], WAIT)
        assert readable, "the peer's bytes never arrived"
    else:
        # SO_LINGER with a zero timeout makes close() send RST instead of FIN.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


async def write_until_error(stream: Stream) -> BaseException:
    """Keep writing (yielding to the loop between writes) until the stream reports a failure."""
    try:
        async with asyncio.timeout(WAIT):
            while True:
                stream.write(b"x" * 1024)
                await stream.drain()
                await asyncio.sleep(0)
    except (ConnectionBroken, ConnectionClosed) as exc:
        return exc
    raise AssertionError("unreachable")  # pragma: no cover


# -- ordered, complete delivery -----------------------------------------------------------------


async def test_bytes_arrive_in_order(open_pair: PairFactory) -> None:
    """Bytes written on one side arrive on the other complete and in order, both ways."""
    async with open_pair() as (client, server):
        for i in range(20):
            client.write(b"ping %d;" % i)
        await client.drain()
        expected = b"".join(b"ping %d;" % i for i in range(20))
        assert await receive_exactly(server, len(expected)) == expected
        server.write(b"pong")
        await server.drain()
        assert await receive_exactly(client, 4) == b"pong"


async def test_empty_write_sends_nothing(open_pair: PairFactory) -> None:
    """Writing b"" is allowed and delivers nothing (in particular not an EOF)."""
    async with open_pair() as (client, server):
        client.write(b"")
        client.write(b"after")
        await client.drain()
        assert await receive_exactly(server, 5) == b"after"


async def test_five_megabytes_both_ways_concurrently(open_pair: PairFactory) -> None:
    """5 MB sent in both directions at once arrive intact, and drain() bounds the send buffer."""
    size = 5 * 1024 * 1024
    chunk_size = 64 * 1024
    rng = random.Random(20240501)
    upstream, downstream = rng.randbytes(size), rng.randbytes(size)
    largest_backlog = 0

    async def send_all(stream: Stream, data: bytes) -> None:
        nonlocal largest_backlog
        for offset in range(0, len(data), chunk_size):
            stream.write(data[offset : offset + chunk_size])
            largest_backlog = max(largest_backlog, pending_send_bytes(stream))
            await stream.drain()

    async with open_pair() as (client, server):
        async with asyncio.timeout(WAIT), asyncio.TaskGroup() as group:
            group.create_task(send_all(client, upstream))
            group.create_task(send_all(server, downstream))
            received_up = group.create_task(receive_exactly(server, size))
            received_down = group.create_task(receive_exactly(client, size))
        assert received_up.result() == upstream
        assert received_down.result() == downstream
    # Without drain() waiting, a slow reader would let the backlog grow to the full 5 MB.
    # (TLS counts encrypted bytes: allow record overhead on top of one chunk.)
    assert largest_backlog <= WRITE_HIGH_WATER + 2 * chunk_size


async def test_many_small_writes_arrive_intact(open_pair: PairFactory) -> None:
    """10,000 writes of 10 bytes each arrive as exactly those 100,000 bytes in order."""
    messages = [b"%09d;" % i for i in range(10_000)]
    assert all(len(m) == 10 for m in messages)

    async def send() -> None:
        for message in messages:
            client.write(message)
            await client.drain()
        await client.aclose()

    async with open_pair() as (client, server):
        async with asyncio.timeout(WAIT), asyncio.TaskGroup() as group:
            group.create_task(send())
            received = group.create_task(receive_until_eof(server))
        assert received.result() == b"".join(messages)


# -- orderly close ------------------------------------------------------------------------------


async def test_receive_returns_empty_after_peer_close(open_pair: PairFactory) -> None:
    """After the peer's aclose, receive_some returns what was sent and then b"" (repeatedly)."""
    async with open_pair() as (client, server):
        client.write(b"last words")
        await client.aclose()
        async with asyncio.timeout(WAIT):
            assert await receive_until_eof(server) == b"last words"
            assert await server.receive_some() == b""
            assert await server.receive_some() == b""


async def test_pending_receive_wakes_on_peer_close(open_pair: PairFactory) -> None:
    """A receive_some already waiting when the peer closes returns b""."""
    async with open_pair() as (client, server):
        pending = asyncio.create_task(server.receive_some())
        await client.aclose()
        async with asyncio.timeout(WAIT):
            assert await pending == b""


async def test_write_after_own_close_raises_closed(open_pair: PairFactory) -> None:
    """write() and drain() after our own aclose raise ConnectionClosed."""
    async with open_pair() as (client, _server):
        await client.aclose()
        with pytest.raises(ConnectionClosed):
            client.write(b"too late")
        with pytest.raises(ConnectionClosed):
            await client.drain()


async def test_receive_after_own_close_raises_closed(open_pair: PairFactory) -> None:
    """receive_some after our own aclose raises ConnectionClosed, even with data waiting."""
    async with open_pair() as (client, server):
        server.write(b"unread")
        await server.drain()
        await client.aclose()
        with pytest.raises(ConnectionClosed):
            await client.receive_some()


async def test_pending_receive_raises_closed_on_own_close(open_pair: PairFactory) -> None:
    """A receive_some waiting in another task raises ConnectionClosed when we aclose."""
    async with open_pair() as (client, _server):
        pending = asyncio.create_task(client.receive_some())
        await asyncio.sleep(0)  # let it start waiting
        await client.aclose()
        with pytest.raises(ConnectionClosed):
            async with asyncio.timeout(WAIT):
                await pending


async def test_aclose_is_idempotent(open_pair: PairFactory) -> None:
    """aclose may be called repeatedly and concurrently, on both sides, without error."""
    async with open_pair() as (client, server):
        await client.aclose()
        await client.aclose()
        await asyncio.gather(server.aclose(), server.aclose())
        await server.aclose()
        with pytest.raises(ConnectionClosed):
            server.write(b"x")


# -- the peer vanishing -------------------------------------------------------------------------

#: What ``receive_some`` does after the peer aborted (closed without an orderly goodbye).
#: Sockets cannot tell an abort from a close: the kernel sends FIN either way (and asyncio's TLS
#: layer treats a missing close_notify as EOF). A memory stream's abort() is a reset.
AFTER_ABORT: dict[str, type[Exception] | bytes] = {
    "unix": b"",
    "tcp": b"",
    "tls": b"",
    "memory": ConnectionBroken,
}


async def test_peer_abort(open_pair: PairFactory, kind: str) -> None:
    """After the peer aborts, receive_some gives AFTER_ABORT[kind] and writes fail; no hang."""
    async with open_pair() as (client, server):
        client.write(b"hello")
        await client.drain()
        assert await receive_exactly(server, 5) == b"hello"
        abort(client)
        expected = AFTER_ABORT[kind]
        async with asyncio.timeout(WAIT):
            if isinstance(expected, bytes):
                assert await server.receive_some() == expected
            else:
                with pytest.raises(expected):
                    await server.receive_some()
        await write_until_error(server)
        # Once failed, the stream stays failed.
        with pytest.raises((ConnectionBroken, ConnectionClosed)):
            server.write(b"more")
        with pytest.raises((ConnectionBroken, ConnectionClosed)):
            await server.drain()


async def test_peer_reset(open_pair: PairFactory) -> None:
    """After a connection reset, receive_some raises ConnectionBroken, and so do writes."""
    async with open_pair() as (client, server):
        client.write(b"hello")
        await client.drain()
        assert await receive_exactly(server, 5) == b"hello"
        await reset(client, server)
        with pytest.raises(ConnectionBroken):
            async with asyncio.timeout(WAIT):
                await receive_until_eof(server)
        with pytest.raises(ConnectionBroken):
            server.write(b"more")
        with pytest.raises(ConnectionBroken):
            await server.drain()


async def test_pending_receive_wakes_on_peer_abort(open_pair: PairFactory) -> None:
    """A receive_some waiting when the peer aborts returns b"" or raises ConnectionBroken."""
    async with open_pair() as (client, server):
        pending = asyncio.create_task(server.receive_some())
        await asyncio.sleep(0)  # let it start waiting
        abort(client)
        async with asyncio.timeout(WAIT):
            with contextlib.suppress(ConnectionBroken):
                assert await pending == b""


async def test_drain_blocked_on_vanished_peer_fails(open_pair: PairFactory) -> None:
    """A drain() waiting for a peer that never reads ends with an error when the peer aborts."""
    async with open_pair() as (client, server):
        # The client never reads; write until the server is held back by back-pressure.
        async def flood() -> None:
            while True:
                server.write(b"x" * 65536)
                await server.drain()

        flooding = asyncio.create_task(flood())
        async with asyncio.timeout(WAIT):
            while not held_back(server) and not flooding.done():
                await asyncio.sleep(0)
        assert not flooding.done()
        await reset(client, server)
        with pytest.raises((ConnectionBroken, ConnectionClosed)):
            async with asyncio.timeout(WAIT):
                await flooding


# -- memory-specific back-pressure --------------------------------------------------------------


async def test_memory_drain_waits_for_reader() -> None:
    """A memory stream's drain() waits while the peer has more than its high-water mark unread."""
    async with memory_pair() as (client, server):
        client.write(b"x" * (1024 * 1024))
        draining = asyncio.create_task(client.drain())
        for _ in range(10):  # nothing else runs: only a read can release it
            await asyncio.sleep(0)
        assert not draining.done()
        assert len(await server.receive_some()) == 1024 * 1024
        async with asyncio.timeout(WAIT):
            await draining


def stop_reading(stream: Stream) -> None:
    """Leave incoming bytes in the kernel, as a SocketStream does once 1 MB waits unread."""
    if isinstance(stream, SocketStream):
        assert stream._transport is not None
        stream._transport.pause_reading()
        stream._reading_paused = True


async def test_peer_goodbye_survives_our_failed_write(open_pair: PairFactory, kind: str) -> None:
    """Bytes the peer sent before closing stay readable even after our write to it failed."""
    if kind == "tls":
        # A TLS close waits for the other side's close_notify, which a stream that is not
        # reading never sends: the peer's aclose() gives up after 5 s and resets instead.
        pytest.skip("TLS cannot close while the other side does not read")
    async with open_pair() as (client, server):
        stop_reading(client)
        server.write(b"goodbye")
        async with asyncio.timeout(WAIT):
            await server.aclose()
        await write_until_error(client)
        async with asyncio.timeout(WAIT):
            assert await receive_until_eof(client) == b"goodbye"
