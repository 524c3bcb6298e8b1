"""What a LogReceiver on tls:// grants a stranger before it has authenticated, in both modes:
one of ``max_handshakes`` places, taken before its TLS handshake, refused at once past them;
one deadline for TLS and the hello together; and its refusals name it by the host:port it
connected from, even once it reset the connection (real sockets, real TLS, certificates made
for each test)."""

from __future__ import annotations

import asyncio
import contextlib
import selectors
import socket
import struct
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from isoplug.errors import IsoplugError
from isoplug.logs import LogReceiver
from isoplug.rpc.handshake import blocking_client_handshake
from isoplug.transport import tls_client_context, tls_server_context
from tests.record_waiter import watching
from tests.test_logs_forwarding import BOTH_MODES
from tests.test_logs_receiver_tls import host_port
from tests.test_transport_sockets import Certs, make_certs


@contextlib.asynccontextmanager
async def tls_receiver(
    mode: str, certs: Certs, *, handshake_timeout: float = 5.0, max_handshakes: int = 128
) -> AsyncIterator[LogReceiver]:
    """A LogReceiver on tls://127.0.0.1, on this loop or in threads of its own."""
    receiver = LogReceiver(
        "tls://127.0.0.1:0",
        ssl_context=tls_server_context(certs.server),
        handshake_timeout=handshake_timeout,
        max_handshakes=max_handshakes,
        drain_timeout=0.2,
    )
    if mode == "loop":
        async with receiver:
            yield receiver
    else:
        await asyncio.to_thread(receiver.open)
        try:
            yield receiver
        finally:
            await asyncio.to_thread(receiver.close)


def first_closed(connections: list[socket.socket], timeout: float = 20) -> bytes:
    """What the first of ``connections`` the receiver closes had been sent before (b"": not
    a byte, not a frame)."""
    with selectors.DefaultSelector() as selector:
        for connection in connections:
            selector.register(connection, selectors.EVENT_READ)
        ready = selector.select(timeout)
    assert ready, "the receiver closed none of the connections"
    closed = ready[0][0].fileobj
    assert isinstance(closed, socket.socket)
    connection = closed
    received = b""
    with contextlib.suppress(ConnectionResetError):
        while chunk := connection.recv(65536):
            received += chunk
    return received


@BOTH_MODES
async def test_a_tls_stranger_past_max_handshakes_is_refused_before_its_tls_handshake(
    mode: str, tmp_path: Path
) -> None:
    """On an event loop the TLS handshake ran before the handshake places were taken: 600
    silent strangers each held a descriptor for the whole timeout (and at the descriptor
    limit, asyncio's accept failed in a loop of tracebacks). Past ``max_handshakes``, a
    stranger is now refused at once, by the close alone (no word reaches a TLS client before
    a handshake)."""
    certs = make_certs(tmp_path)
    with watching("isoplug.rpc") as seen:
        async with tls_receiver(mode, certs, handshake_timeout=60, max_handshakes=2) as receiver:
            strangers = [
                socket.create_connection(host_port(receiver.address), timeout=20) for _ in range(3)
            ]
            try:
                record = await seen.take_record(text="refusing new connections")
                received = await asyncio.to_thread(first_closed, strangers)
            finally:
                for stranger in strangers:
                    stranger.close()
    assert record.getMessage().endswith(
        "refusing new connections: at its limit of 2 connections waiting to authenticate"
    )
    assert received == b""


def slow_but_valid_client(address: str, token: str, ca: str, pause: float) -> None:
    """Connect, wait ``pause`` before the TLS handshake and ``pause`` again before a valid
    hello (each well within the handshake timeout, not both): a stranger that trickles."""
    with socket.create_connection(host_port(address), timeout=30) as sock:
        time.sleep(pause)  # the client's own slowness is what is tested, not a wait
        context = tls_client_context(ca)
        with context.wrap_socket(sock, server_hostname="127.0.0.1") as secured:
            time.sleep(pause)
            with pytest.raises(IsoplugError):
                blocking_client_handshake(secured, token, name="slow", role="logs", timeout=30)


@BOTH_MODES
async def test_tls_and_the_hello_share_one_deadline(mode: str, tmp_path: Path) -> None:
    """A client that takes most of the timeout for its TLS handshake, and most of it again
    for its hello, is refused: on an event loop each had the whole timeout (a silent stranger
    stayed 9.5 s for a 5 s timeout). The refusal says the whole timeout, not what was left
    of it after TLS (threads mode said "no hello within 0.497279 s")."""
    certs = make_certs(tmp_path)
    with watching("isoplug.rpc") as seen:
        async with tls_receiver(mode, certs, handshake_timeout=4) as receiver:
            await asyncio.to_thread(
                slow_but_valid_client, receiver.address, receiver.token, certs.ca, 2.8
            )
            record = await seen.take_record(text="no hello")
    assert record.getMessage().endswith(f"on {receiver.address}: no hello within 4 s")


def connect_and_reset(address: str) -> int:
    """Connect and reset the connection at once (before the receiver may even have accepted
    it); return the client's own port."""
    sock = socket.create_connection(host_port(address), timeout=20)
    port = int(sock.getsockname()[1])
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()
    return port


@BOTH_MODES
async def test_a_tls_refusal_names_a_peer_that_reset_at_once(mode: str, tmp_path: Path) -> None:
    """In threads mode the peer's address was asked of the socket once its thread ran, too
    late for a peer that had reset it: the refusal named nobody. It is accept()'s word now."""
    certs = make_certs(tmp_path)
    with watching("isoplug.rpc") as seen:
        async with tls_receiver(mode, certs) as receiver:
            for _ in range(5):
                port = await asyncio.to_thread(connect_and_reset, receiver.address)
                record = await seen.take_record(text="TLS handshake with a client failed")
                assert f" from 127.0.0.1:{port} on {receiver.address}: " in record.getMessage()
