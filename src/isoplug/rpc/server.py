"""The asyncio server: listen, gate and authenticate connections, run a peer for each.

:func:`serve` is separate from :mod:`isoplug.rpc.peer` because everything before a session
exists lives here: the handshake seats of :mod:`isoplug.rpc.gate`, the clients' places of
:mod:`isoplug.rpc.client_limit`, the server side of the handshake, the choice of handlers by
the client's hello. The peer starts once that is done.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
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
from isoplug.rpc.waiting_room import Ticket, Turn
from isoplug.transport import Address, Listener, Stream, listen
from isoplug.transport.sockets import secure_accepted
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
        if owner is not None and places is not None:
            turn = await _take_turn(places, owner, stream, credentials, claimed)
            if turn is Turn.REFUSED:
                _turn_away(stream, gate, places.refuse(owner, credentials))
                return
            if turn is Turn.WAITS:
                assert places.waiting_room is not None
                # Let in: counted as served once its session's handler runs (its owner
                # waits for it meanwhile), or once it ended before.
                served = _once(places.waiting_room.entered)
                try:
                    await serve_seated(stream, credentials, family, claimed, served)
                finally:
                    served()
                return
        await serve_seated(stream, credentials, family, claimed)

    async def serve_seated(
        stream: Stream,
        credentials: PeerCredentials | None,
        family: str | None,
        claimed: list[str],
        served: Callable[[], None] | None = None,
    ) -> None:
        # One that waited for a place (``served``) takes no seat: the room bounds those it
        # lets in, and a burst's children ending at once must not be refused after all.
        seat = gate.enter_family(family) if served is None else None
        if seat is not None and not seat:
            if ssl_context is None:
                _turn_away(stream, gate, seat.refused)
            # Over TLS, no word can reach the client before a handshake, and running one is
            # what the seats bound (a descriptor and a handshake's work, for anyone who
            # connects): the close, at once, is the refusal.
            return
        over_limit: list[str] = []
        refusal: IsoplugError | None = None
        # One deadline for the whole handshake, TLS included: TLS and then the hello do not
        # each get the timeout.
        started = time.monotonic()
        try:
            if ssl_context is not None:
                await secure_accepted(stream, ssl_context, handshake_timeout)
            connection, early = await server_handshake(
                stream,
                token,
                name=name,
                timeout=handshake_timeout,
                started=started,
                admit=bind_admission(admit, credentials)
                if places is None
                else places.admission(admit, credentials, claimed, over_limit),
                welcome_level=welcome_level,
            )
        except IsoplugError as exc:
            refusal = exc
        finally:
            if seat is not None:
                gate.leave(seat)
        if refusal is not None:
            if not over_limit:  # a client's limit was reported by its owner already
                # Said once the seat is free: whoever reads the warning may connect at once.
                gate.failed(refusal, peer_pid_text(credentials, stream.peer_address))
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
        if served is not None:
            served()  # on_peer counts it from its first step, before it awaits anything
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
        takes_descriptors=takes_descriptors,
        # In the seat the connection takes first (serve_seated): a stranger's TLS handshake
        # takes a descriptor and work, as long as its handshake timeout, as a hello does.
        tls_by_handler=True,
    )
    # The listener itself, shown as its address: the new one after listen_again_if_lost().
    gate.address = listener
    listener.on_close.append(gate.close)
    room = None if places is None else places.waiting_room
    if room is not None:
        # Its watcher ends; what still waits was cancelled with its task, or is now.
        listener.on_close.append(lambda: _close_all(room.close()))
    return listener


async def _take_turn(
    places: ClientPlaces,
    client: str,
    stream: Stream,
    credentials: PeerCredentials | None,
    claimed: list[str],
) -> Turn:
    """A place of ``client`` for ``stream``'s connection, or its turn in the waiting room
    (see :mod:`isoplug.rpc.waiting_room`), its stream paused meanwhile: what it sent stays
    in the kernel, the descriptor it passed too."""
    loop = asyncio.get_running_loop()
    turn_came: asyncio.Future[None] = loop.create_future()

    def serve() -> None:
        # With the room's lock held, maybe on its watcher thread.
        with contextlib.suppress(RuntimeError):  # the loop closed: nobody waits any more
            loop.call_soon_threadsafe(_come, turn_came)

    fd = stream.fileno()
    if fd is None:  # no socket to wait on: at once, as without a room
        return Turn.PLACED if places.claim(client, claimed) else Turn.REFUSED
    ticket = Ticket(client, fd, credentials, claimed, serve, close=lambda: None)
    turn = places.claim_or_wait(ticket)
    if turn is not Turn.WAITS:
        return turn
    room = places.waiting_room
    assert room is not None
    stream.pause_reading()
    room.told(ticket)
    try:
        await turn_came
    except asyncio.CancelledError:
        room.abandon(ticket)
        raise
    stream.resume_reading()
    return turn


def _close_all(tickets: list[Ticket]) -> None:
    for ticket in tickets:
        ticket.close()


def _come(turn: asyncio.Future[None]) -> None:
    if not turn.done():
        turn.set_result(None)


def _once(action: Callable[[], None]) -> Callable[[], None]:
    """``action``, done at the first call only."""
    done = False

    def call() -> None:
        nonlocal done
        if not done:
            done = True
            action()

    return call


def _turn_away(stream: Stream, gate: HandshakeGate, why: str) -> None:
    """Tell a connection refused before its handshake why, at once, before reading: the
    stream is closed when its handler returns."""
    with contextlib.suppress(TransportError):
        stream.write(busy_reject(f"{gate}: {why}"))
