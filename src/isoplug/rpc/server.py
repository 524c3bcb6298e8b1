"""The asyncio server: listen, gate and authenticate connections, run a peer for each.

:func:`serve` is separate from :mod:`isoplug.rpc.peer` because everything before a session
exists lives here: the handshake seats of :mod:`isoplug.rpc.gate`, the clients' places of
:mod:`isoplug.rpc.client_limit`, the server side of the handshake, the choice of handlers by
the client's hello. The peer starts once that is done.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from isoplug.errors import IsoplugError, TransportError
from isoplug.rpc.client_limit import ClientLimit, ClientPlaces
from isoplug.rpc.dispatch import Handler
from isoplug.rpc.gate import (
    DEFAULT_HELLO_TIMEOUT,
    DEFAULT_MAX_HANDSHAKES,
    HandshakeGate,
    Kinship,
    busy_reject,
)
from isoplug.rpc.handshake import (
    PeerAdmission,
    bind_admission,
    peer_pid_text,
    server_handshake,
)
from isoplug.rpc.peer import DEFAULT_REQUEST_TIMEOUT, Peer
from isoplug.transport import Address, Listener, Stream, listen
from isoplug.transport.stream import PeerCredentials
from isoplug.wire import Hello
from isoplug.wire.connection import TokenLookup, WelcomeLevel

__all__ = ["serve"]


async def serve(
    address: str | Address,
    token: str | TokenLookup,
    on_peer: Callable[[Peer], Awaitable[None]],
    *,
    handlers: Mapping[str, Handler] | Callable[[Hello], Mapping[str, Handler]] | None = None,
    name: str = "",
    ssl_context: Any = None,
    handshake_timeout: float = DEFAULT_HELLO_TIMEOUT,
    max_handshakes: int = DEFAULT_MAX_HANDSHAKES,
    default_timeout: float | None = DEFAULT_REQUEST_TIMEOUT,
    admit: PeerAdmission | None = None,
    kinship: Kinship | None = None,
    client_limit: ClientLimit | None = None,
    welcome_level: WelcomeLevel | None = None,
    takes_descriptors: bool = False,
) -> Listener:
    """Listen on ``address``; for every connection that passes the handshake, run ``on_peer``.

    ``token`` is the token every client must present, or a function that returns the token
    expected from the client that sent a given hello (``None``: unknown client, refused); see
    :func:`~isoplug.rpc.server_handshake`.

    ``handlers`` is a mapping, or a function that picks the mapping from the client's hello;
    handlers are in place before the first message is read. The peer is closed when
    ``on_peer`` returns. Refused connections (wrong token, wrong version, no hello in time,
    garbage) are logged at WARNING on the ``isoplug.rpc`` logger and never reach ``on_peer``.
    ``admit`` may refuse a client whose token matched, before any handler sees a message of it
    (see :data:`~isoplug.rpc.handshake.PeerAdmission`).

    Until its hello is checked, a connection has ``handshake_timeout`` for the whole handshake
    (TLS included) and frames of at most 64 KiB; at most ``max_handshakes`` connections are in
    their handshake at once, and past it a new one gets a ``busy`` reject at once (see
    :mod:`isoplug.rpc.gate`). ``kinship`` names the family of a peer by the pid the kernel
    gives (unix sockets on Linux): a family's connections have ``max_handshakes`` seats of
    their own, which strangers cannot take. ``client_limit`` caps the connections of each
    client, as :func:`~isoplug.rpc.blocking.serve_blocking` does (see
    :class:`~isoplug.rpc.client_limit.ClientLimit`; ``own_places`` means nothing here, where
    the server has no limit of its own). ``welcome_level`` gives the level each welcome says
    (see :class:`~isoplug.wire.Connection`). With ``takes_descriptors``, the descriptor a
    client passes with its hello on a unix socket is its stream's
    :attr:`~isoplug.transport.SocketStream.passed_descriptor` (see
    :mod:`isoplug.transport.passed_descriptors`).
    """

    async def handle(stream: Stream) -> None:
        credentials = stream.peer_credentials
        family = gate.family_of(credentials)
        # The client this connection counts for (see ClientPlaces), given back as it ends.
        claimed: list[str] = []
        try:
            await serve_counted(stream, credentials, family, claimed)
        finally:
            if places is not None:
                places.release(claimed)

    async def serve_counted(
        stream: Stream,
        credentials: PeerCredentials | None,
        family: str | None,
        claimed: list[str],
    ) -> None:
        # Asked before a byte is read, and before the handshake's seat: a client's silent
        # connections take no more than its places (see ClientLimit.peer_client).
        owner = None if places is None else places.owner(credentials, family)
        if owner is not None and places is not None and not places.claim(owner, claimed):
            _turn_away(stream, gate, places.refuse(owner, credentials))
            return
        seat = gate.enter_family(family)
        if not seat:
            _turn_away(stream, gate, seat.refused)
            return
        over_limit: list[str] = []
        refusal: IsoplugError | None = None
        try:
            connection, early = await server_handshake(
                stream,
                token,
                name=name,
                timeout=handshake_timeout,
                admit=bind_admission(admit, credentials)
                if places is None
                else places.admission(admit, credentials, claimed, over_limit),
                welcome_level=welcome_level,
            )
        except IsoplugError as exc:
            refusal = exc
        finally:
            gate.leave(seat)
        if refusal is not None:
            if not over_limit:  # a client's limit was reported by its owner already
                # Said once the seat is free: whoever reads the warning may connect at once.
                gate.failed(refusal, peer_pid_text(credentials))
            return
        assert connection.peer_hello is not None
        chosen = handlers(connection.peer_hello) if callable(handlers) else handlers
        peer = Peer(
            stream,
            connection,
            handlers=chosen,
            early_messages=early,
            default_timeout=default_timeout,
        )
        try:
            await on_peer(peer)
        finally:
            await peer.aclose()

    places = None if client_limit is None else ClientPlaces(client_limit)
    gate = HandshakeGate(name, max_handshakes, kinship=kinship)
    listener = await listen(
        address,
        handle,
        ssl_context=ssl_context,
        ssl_handshake_timeout=handshake_timeout,
        takes_descriptors=takes_descriptors,
    )
    # The listener itself, shown as its address: the new one after listen_again_if_lost().
    gate.address = listener
    listener.on_close.append(gate.close)
    return listener


def _turn_away(stream: Stream, gate: HandshakeGate, why: str) -> None:
    """Tell a connection refused before its handshake why, at once, before reading: the
    stream is closed when its handler returns."""
    with contextlib.suppress(TransportError):
        stream.write(busy_reject(f"{gate}: {why}"))
