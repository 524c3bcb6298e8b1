"""A limit per client holds on the asyncio server as on the threaded one (same ClientLimit,
same ClientPlaces): by the hello's word once admitted, or by the kernel's from the accept."""

from __future__ import annotations

import os

import pytest

from isoplug.errors import AuthenticationFailed, IsoplugError
from isoplug.rpc import Peer, serve
from isoplug.rpc.client_limit import ClientLimit
from isoplug.transport.stream import PeerCredentials
from tests.record_waiter import eventually

TOKEN = "per-client-token"
WAIT = 20.0


class Served:
    """The server's side: sessions open now, held until the client closes."""

    def __init__(self) -> None:
        self.open = 0

    async def __call__(self, peer: Peer) -> None:
        self.open += 1
        try:
            await peer.wait_closed()
        finally:
            self.open -= 1


async def test_each_client_is_capped_on_its_own_and_counts_again_once_it_closes() -> None:
    told: list[tuple[str, int | None]] = []

    def refused(client: str, credentials: PeerCredentials | None) -> None:
        told.append((client, None if credentials is None else credentials.pid))

    served = Served()
    limit = ClientLimit(lambda hello, _credentials: hello.name, 2, refused)
    listener = await serve("unix:", TOKEN, served, name="per-client", client_limit=limit)
    peers: list[Peer] = []

    async def connect_as(name: str) -> Peer:
        return await Peer.connect(listener.address, TOKEN, name=name, handshake_timeout=WAIT)

    try:
        peers += [await connect_as("greedy"), await connect_as("greedy")]
        for _ in range(2):
            with pytest.raises(AuthenticationFailed, match="refused by the listener"):
                await connect_as("greedy")
        assert told == [("greedy", os.getpid())] * 2
        peers.append(await connect_as("modest"))
        await eventually(lambda: served.open == 3, WAIT)
        await peers.pop(0).aclose()
        # Its place comes back once the server's session is through with it.
        await eventually(lambda: served.open == 2, WAIT)
        peers.append(await connect_as("greedy"))
    finally:
        for peer in peers:
            await peer.aclose()
        await listener.aclose()


async def test_a_client_named_by_the_kernel_is_refused_at_its_accept() -> None:
    """``peer_client``: a connection counts from its accept, before a byte is read, and past
    its client's limit is told so at once (a busy reject), with the owner's report."""
    told: list[str] = []
    served = Served()
    limit = ClientLimit(
        lambda _hello, _credentials: None,
        1,
        lambda client, _credentials: told.append(client),
        peer_client=lambda pid: f"tree of {pid}",
    )
    listener = await serve("unix:", TOKEN, served, name="by-pid", client_limit=limit)
    try:
        first = await Peer.connect(listener.address, TOKEN, name="a", handshake_timeout=WAIT)
        try:
            with pytest.raises(IsoplugError, match=f"tree of {os.getpid()}: at its limit of 1"):
                await Peer.connect(listener.address, TOKEN, name="b", handshake_timeout=WAIT)
            assert told == [f"tree of {os.getpid()}"]
        finally:
            await first.aclose()
        await eventually(lambda: served.open == 0, WAIT)
        again = await Peer.connect(listener.address, TOKEN, name="c", handshake_timeout=WAIT)
        await again.aclose()
    finally:
        await listener.aclose()
