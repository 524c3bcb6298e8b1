"""Building connected peers for tests, over the in-memory pair or a real unix socket."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping

from isoplug.rpc import Handler, Peer, client_handshake, serve, server_handshake
from isoplug.transport import memory_stream_pair

TOKEN = "test-token-0123456789"


@contextlib.asynccontextmanager
async def memory_peers(
    client_handlers: Mapping[str, Handler] | None = None,
    server_handlers: Mapping[str, Handler] | None = None,
) -> AsyncIterator[tuple[Peer, Peer]]:
    """A client and a server peer joined by an in-memory stream pair."""
    left, right = memory_stream_pair()
    (client_conn, client_early), (server_conn, server_early) = await asyncio.gather(
        client_handshake(left, TOKEN, name="client"),
        server_handshake(right, TOKEN, name="server"),
    )
    client = Peer(left, client_conn, handlers=client_handlers, early_messages=client_early)
    server = Peer(right, server_conn, handlers=server_handlers, early_messages=server_early)
    try:
        yield client, server
    finally:
        await client.aclose()
        await server.aclose()


@contextlib.asynccontextmanager
async def socket_peers(
    client_handlers: Mapping[str, Handler] | None = None,
    server_handlers: Mapping[str, Handler] | None = None,
    address: str = "unix:",
) -> AsyncIterator[tuple[Peer, Peer]]:
    """A client and a server peer joined by a real socket (private unix socket by default)."""
    accepted: asyncio.Future[Peer] = asyncio.get_running_loop().create_future()

    async def on_peer(peer: Peer) -> None:
        accepted.set_result(peer)
        await peer.wait_closed()

    listener = await serve(address, TOKEN, on_peer, handlers=server_handlers, name="server")
    try:
        client = await Peer.connect(
            listener.address, TOKEN, name="client", handlers=client_handlers
        )
        try:
            server = await asyncio.wait_for(accepted, 10)
            yield client, server
        finally:
            await client.aclose()
    finally:
        await listener.aclose()
