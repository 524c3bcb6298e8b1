"""The threaded server of blocking sessions, for programs without an event loop.

A synchronous :class:`~isoplug.logs.LogReceiver` uses :func:`serve_blocking`: a thread per
sender, woken by the kernel the moment a record arrives, each with its own
:class:`~isoplug.rpc.blocking.BlockingChannel`. Separate from
:mod:`isoplug.rpc.blocking_channel` because everything here is about the listening side: the
accepting thread, the limits on connections and handshakes, refusing, and ending every
session when the server closes; what each connection's thread does, from TLS to its goodbye,
is in :mod:`isoplug.rpc.blocking_sessions`. Import both from :mod:`isoplug.rpc.blocking`.
"""

from __future__ import annotations

import socket
import ssl
import threading
import time

from isoplug.errors import TransportError
from isoplug.log_guard import guarded_logger
from isoplug.rpc.blocking_channel import BlockingChannel, shutdown_quietly
from isoplug.rpc.blocking_sessions import (
    Accepted,
    SessionHandler,
    SessionThreads,
    end_connection,
)
from isoplug.rpc.client_limit import ClientLimit, ClientPlaces
from isoplug.rpc.gate import (
    DEFAULT_HELLO_TIMEOUT,
    DEFAULT_MAX_HANDSHAKES,
    HandshakeGate,
    Kinship,
    busy_reject,
)
from isoplug.rpc.handshake import PeerAdmission
from isoplug.rpc.waiting_room import Ticket, Turn
from isoplug.transport import Address
from isoplug.transport.blocking import BlockingListener, listen_blocking
from isoplug.transport.stream import PeerCredentials, peer_credentials_of
from isoplug.wire.connection import TokenLookup, WelcomeLevel

__all__ = [
    "DEFAULT_MAX_CONNECTIONS",
    "BlockingServer",
    "ClientLimit",
    "SessionHandler",
    "serve_blocking",
]

_log = guarded_logger("isoplug.rpc")

#: How long closing a server waits for its connections' threads to end.
_CLOSE_TIMEOUT = 5.0
#: After accept() failed (out of file descriptors...), as asyncio's servers do.
_ACCEPT_RETRY_DELAY = 1.0
#: Most connections a blocking server serves at once, a thread each; past it new ones are
#: refused (said once, then summed up). Far above a program's children or a host's runners, it
#: keeps a runaway client (a plugin that forks without end) from taking every thread.
DEFAULT_MAX_CONNECTIONS = 1024


class BlockingServer(SessionThreads):
    """Sessions served by threads: one accepts, and each connection gets a thread of its own.

    The counterpart of :func:`~isoplug.rpc.serve` for programs without an event loop; made by
    :func:`serve_blocking`. A thread blocked in ``recv()`` wakes as soon as bytes arrive, with
    no event loop between the socket and the handler.
    """

    def __init__(
        self,
        listener: BlockingListener,
        token: str | TokenLookup,
        on_channel: SessionHandler,
        *,
        name: str,
        handshake_timeout: float,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        max_handshakes: int = DEFAULT_MAX_HANDSHAKES,
        admit: PeerAdmission | None = None,
        kinship: Kinship | None = None,
        client_limit: ClientLimit | None = None,
        welcome_level: WelcomeLevel | None = None,
        takes_descriptors: bool = False,
    ) -> None:
        self._listener = listener
        self._takes_descriptors = takes_descriptors and not listener.is_tls
        self._token = token
        self._admit = admit
        self._welcome_level = welcome_level
        self._on_channel = on_channel
        self._name = name
        self._handshake_timeout = handshake_timeout
        self._max_connections = max_connections
        # Seats for connections in their handshake; says what the server refused.
        self._gate = HandshakeGate(name, max_handshakes, kinship=kinship)
        # The listener itself, shown as its address: the new one after listen_again_if_lost().
        self._gate.address = listener
        # Connection thread -> its socket while in the handshake (the TLS one once wrapped),
        # then its channel: what close() ends.
        self._connections: dict[threading.Thread, socket.socket | BlockingChannel] = {}
        self._changed = threading.Condition()
        # Connections open (or admitted and finishing their handshake) per client: counted
        # under ``_changed``'s lock, in one step with ``_connections``.
        self._places = (
            None if client_limit is None else ClientPlaces(client_limit, lock=self._changed)
        )
        self._closing = False
        self._closed = threading.Event()  # wakes an accept loop that pauses after an error
        self._acceptor = threading.Thread(
            target=self._accept_loop, name=f"isoplug-{name or 'server'}-accept", daemon=True
        )
        self._acceptor.start()

    @property
    def address(self) -> Address:
        return self._listener.address

    @property
    def closing(self) -> bool:
        """True once :meth:`close` began: a session that ends now was ended by us."""
        return self._closing

    def wait_idle(self, timeout: float) -> int:
        """Wait up to ``timeout`` until no connection is open; return how many still are."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while self._connections:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._changed.wait(remaining)
            return len(self._connections)

    def listen_again_if_lost(self) -> str | None:
        """Listen again (at the same path if it can be made again) when the socket's folder was
        deleted; return what was lost (see
        :meth:`isoplug.transport.Listener.listen_again_if_lost`). The sessions open go on; the
        limits count them with the new ones."""
        return self._listener.listen_again_if_lost()

    def stop_accepting(self) -> None:
        """Stop listening now, from any thread, without waiting: the socket is closed, its
        file and private directory removed, the accepting thread woken to end; the sessions
        open go on until :meth:`close`. Idempotent."""
        self._closed.set()
        self._listener.close()

    def close(self, timeout: float = _CLOSE_TIMEOUT) -> None:
        """Stop accepting, end every open session (each handler sees its connection end, then
        says goodbye), and wait up to ``timeout`` for their threads. Idempotent."""
        with self._changed:
            self._closing = True
            connections = list(self._connections.values())
            room = None if self._places is None else self._places.waiting_room
            waiting = [] if room is None else room.close()
        for ticket in waiting:
            ticket.close()
        self._closed.set()
        self._listener.close()
        self._gate.close()
        for connection in connections:
            end_connection(connection)
        deadline = time.monotonic() + timeout
        self._acceptor.join(max(0.0, deadline - time.monotonic()))
        with self._changed:
            threads = list(self._connections)
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        with self._changed:
            stuck = list(self._connections.items())
        for thread, connection in stuck:
            # Blocked writing to a client that does not read: cut it off entirely.
            _log.warning(
                "%s: %s did not end within %g s; closing its socket",
                self,
                thread.name,  # sanitized: our own thread, named by us
                timeout,
            )
            sock = connection.socket if isinstance(connection, BlockingChannel) else connection
            shutdown_quietly(sock, socket.SHUT_RDWR)

    def __str__(self) -> str:
        return f"{self._name or 'server'} on {self._listener.address}"

    def _accept_loop(self) -> None:
        while True:
            try:
                accepted = self._listener.accept_from()
            except TransportError as exc:
                # Out of descriptors or memory, most likely: pause rather than spin or quit.
                _log.error("%s: %s; retrying in %g s", self, exc, _ACCEPT_RETRY_DELAY)
                self._closed.wait(_ACCEPT_RETRY_DELAY)
                continue
            if accepted is None:
                return
            # The peer's host:port (TCP, TLS), as accept() gave it: the socket's word.
            sock, peer_address = accepted
            # The kernel's word on the peer, before anything it sent is read: which lane of
            # handshake seats it may take (TLS, over TCP, has none to give), and which
            # client's own places it takes (see ClientLimit.own_places).
            credentials = peer_credentials_of(sock)
            family = self._gate.family_of(credentials)
            if credentials is not None and family is not None:
                # Its admission may come after its process ended: only this word names it then.
                credentials = credentials.placed_in(family)
            owner = None if self._places is None else self._places.owner(credentials, family)
            # The client this connection counts for (at most one; see ClientPlaces.claim).
            claimed: list[str] = []
            ticket = None
            with self._changed:
                if self._closing:
                    sock.close()
                    return
                full = (owner is None or not self._own_places()) and (
                    self._counted() >= self._max_connections
                )
                turn = Turn.PLACED
                if not full and owner is not None and self._places is not None:
                    ticket = self._ticket(owner, sock, credentials, claimed)
                    turn = self._places.claim_or_wait(ticket)
            if turn is Turn.WAITS:
                assert self._places is not None and self._places.waiting_room is not None
                assert ticket is not None
                self._places.waiting_room.told(ticket)
                continue
            if turn is Turn.REFUSED:
                assert self._places is not None and owner is not None
                self._refuse(sock, self._places.refuse(owner, credentials), counted=True)
                continue
            if full:
                self._refuse(sock, f"at its limit of {self._max_connections} open connections")
                continue
            seat = self._gate.enter_family(family)
            if not seat:
                self._forget(None, claimed)
                self._refuse(sock, seat.refused, counted=True)
                continue
            self._start_session(
                Accepted(sock, seat, credentials, claimed, peer_address=peer_address)
            )

    def _start_session(self, accepted: Accepted) -> None:
        """Serve ``accepted`` in a thread of its own; one without a seat waited for a place
        (:mod:`isoplug.rpc.waiting_room`), whose room bounds it instead (served without a
        place, as its peer hung up: the client it waited for is ``outside_limit``)."""
        sock, seat, claimed = accepted.sock, accepted.seat, accepted.claimed
        thread = threading.Thread(
            target=self._serve_connection,
            args=(accepted,),
            name=f"isoplug-{self._name or 'server'}-session",
            daemon=True,
        )
        with self._changed:
            self._connections[thread] = sock
        try:
            thread.start()
        except RuntimeError as exc:  # "can't start new thread": out of memory or threads
            self._forget(thread, claimed)
            if seat is not None:
                self._gate.leave(seat)
            self._refuse(sock, f"cannot start a thread for another connection: {exc}")

    def _ticket(
        self,
        client: str,
        sock: socket.socket,
        credentials: PeerCredentials | None,
        claimed: list[str],
    ) -> Ticket:
        """What lets ``sock`` wait for a place of ``client`` (see
        :mod:`~isoplug.rpc.waiting_room`)."""

        def serve() -> None:
            # With the server's lock held (the room's): a connection that ends, handing its
            # place on, is not gone from the server before this one is there to wait for.
            # No handshake seat: the room bounds those it lets in, and a burst's children
            # ending at once must not find the seats taken and be refused after all.
            assert self._places is not None and self._places.waiting_room is not None
            self._places.waiting_room.entered()
            # Its peer hung up when no place was handed to it: its hello counts it for none.
            self._start_session(
                Accepted(sock, None, credentials, claimed, None if claimed else client)
            )

        return Ticket(client, sock.fileno(), credentials, claimed, serve, sock.close)

    def _own_places(self) -> bool:
        return self._places is not None and self._places.limit.own_places

    def _counted(self) -> int:
        """Connections the server's ``max_connections`` counts (under ``_changed``'s lock):
        all, or with ``own_places`` those that hold no client's place."""
        if self._own_places():
            assert self._places is not None
            return len(self._connections) - self._places.held
        return len(self._connections)

    def _refuse(self, sock: socket.socket, why: str, *, counted: bool = False) -> None:
        """Close a connection we cannot serve, telling the client why; its handshake fails.
        Rate limited (see :mod:`isoplug.rpc.gate`): a client connecting in a loop must not
        flood the log. ``counted``: the gate (or a client's limit) has counted it already."""
        # Said before the client is told: whoever sees the reject finds the warning logged.
        if not counted:
            self._gate.turn_away(why)
        if not self._listener.is_tls:  # in TLS, telling would need a handshake, hence a thread
            reject = busy_reject(f"{self}: {why}")
            try:
                # Non-blocking: the accepting thread must never wait on a client. A fresh
                # socket's buffer takes this small frame whole.
                sock.send(reject, socket.MSG_DONTWAIT)
            except OSError as exc:
                _log.debug("could not tell a refused client why: %s", exc)
        sock.close()

    def client_connections(self, client: str) -> int:
        """Connections of ``client`` open now (see :class:`ClientLimit`)."""
        return 0 if self._places is None else self._places.connections(client)


def serve_blocking(
    address: str | Address,
    token: str | TokenLookup,
    on_channel: SessionHandler,
    *,
    name: str = "",
    ssl_context: ssl.SSLContext | None = None,
    handshake_timeout: float = DEFAULT_HELLO_TIMEOUT,
    max_connections: int = DEFAULT_MAX_CONNECTIONS,
    max_handshakes: int = DEFAULT_MAX_HANDSHAKES,
    admit: PeerAdmission | None = None,
    kinship: Kinship | None = None,
    client_limit: ClientLimit | None = None,
    welcome_level: WelcomeLevel | None = None,
    takes_descriptors: bool = False,
) -> BlockingServer:
    """Listen on ``address``; for every connection that passes the handshake, call
    ``on_channel(channel)`` in a thread of that connection's own.

    At most ``max_connections`` are served at once; past it, and when no thread can be
    started, a new connection gets a ``busy`` reject (its client's handshake fails, saying
    why) and is closed, and a warning says so (once, then at most once per interval: see
    :mod:`isoplug.rpc.gate`). The same
    goes past ``max_handshakes`` connections in their handshake: until its hello is checked, a
    connection has ``handshake_timeout`` for the whole handshake (TLS included) and frames of
    at most 64 KiB (see :mod:`isoplug.rpc.gate`).

    Like :func:`~isoplug.rpc.serve`: the channel is closed (with a goodbye) when
    ``on_channel`` returns; refused connections (wrong token, wrong version, no hello in time,
    garbage, a failed TLS handshake) are logged at WARNING on the ``isoplug.rpc`` logger and
    never reach ``on_channel``; ``admit`` may refuse a client whose token matched (see
    :data:`~isoplug.rpc.handshake.PeerAdmission`). ``kinship`` gives the server's own
    clients handshake seats of their own (see :mod:`isoplug.rpc.gate`); ``client_limit``
    caps the connections of each client (see :class:`ClientLimit`); ``welcome_level`` gives
    the level each welcome says (see :class:`~isoplug.wire.Connection`). With
    ``takes_descriptors``, the descriptor a client passes with its hello on a unix socket is
    the channel's :attr:`~BlockingChannel.passed_descriptor` (see
    :mod:`isoplug.transport.passed_descriptors`). Raises
    :class:`~isoplug.errors.TransportError` when the address cannot be bound.
    """
    listener = listen_blocking(address, ssl_context=ssl_context)
    try:
        return BlockingServer(
            listener,
            token,
            on_channel,
            name=name,
            handshake_timeout=handshake_timeout,
            max_connections=max_connections,
            max_handshakes=max_handshakes,
            admit=admit,
            kinship=kinship,
            client_limit=client_limit,
            welcome_level=welcome_level,
            takes_descriptors=takes_descriptors,
        )
    except BaseException:
        # Its accepting thread could not start (out of threads): the socket is nobody's.
        listener.close()
        raise
