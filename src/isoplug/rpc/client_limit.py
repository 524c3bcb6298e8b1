"""Connections per client, for a listener whose clients are several: :class:`ClientLimit`.

One client that opens connections without end (a plugin forking a pool, a sender process tree
forking in a loop) must not take the places of the others. Both servers enforce the same
limit the same way, through :class:`ClientPlaces`: the threaded one
(:func:`~isoplug.rpc.blocking.serve_blocking`, where a place is a thread) and the asyncio one
(:func:`~isoplug.rpc.serve`, where a place is a socket and the state a session keeps). A
connection counts for its client from its accept when the kernel's word on its peer names the
client (``peer_client``, or the listener's kinship), else from the moment its hello is
admitted; past the client's limit it is refused, and the limit's owner reports it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading
from collections.abc import Callable
from typing import Any

from isoplug.rpc.handshake import PeerAdmission, bind_admission
from isoplug.rpc.waiting_room import Ticket, Turn, WaitingRoom
from isoplug.transport.stream import PeerCredentials
from isoplug.wire import Hello
from isoplug.wire.connection import Admission

__all__ = ["ClientLimit", "ClientPlaces"]


@dataclasses.dataclass(frozen=True)
class ClientLimit:
    """At most ``max_connections`` open at once per client, for a server whose clients are
    several (a host's runners, each with a token of its own; a receiver's sender process
    trees): one client that opens connections without end must not take the places of the
    others.

    ``client_of(hello, credentials)`` says which client a connection whose token matched (and
    that ``admit`` let in) belongs to, from its hello and the kernel's word on its peer (None:
    the socket cannot say); None counts it for no client (the server's ``max_connections``
    alone bounds it). Past its limit, the client's new connection is refused in its handshake
    (an ``authentication`` reject saying why) and ``refused(client, credentials)`` reports
    it, rather than the listener's own warning: the owner knows whom to name, and how often
    to say it. Connections in their handshake count from the moment they are admitted, so
    that many at once cannot slip past the limit together.

    ``own_places`` (threaded server): each client's connections are places of its own, which
    the server's ``max_connections`` does not count; that limit then bounds only the
    connections no client holds (strangers in their handshake), and no set of clients can
    fill it and keep another client out. For a server whose clients are few and known (a
    host's runners): it serves at most its ``max_connections`` plus this limit's
    ``max_connections`` per client at once.

    ``peer_client(pid)``: the client of the process the kernel says connected (on a socket
    that can say), asked before a byte is read (in the threaded server's accepting thread; on
    the event loop in the asyncio one, so it must be quick: a few ``/proc`` reads); without
    it, on a server given a ``kinship``, the family it names (family names must then be
    client names). A connection so named counts for that client from the moment it is
    accepted, its handshake included, and past the limit is refused at once (a ``busy``
    reject; ``refused`` reports it too). So a client's connections that say nothing cannot
    take threads, sockets or handshake seats beyond its places either.

    ``waiting_room``: a connection so named past its client's limit waits there, unread, for
    one of the client's places, instead of being refused (see
    :mod:`isoplug.rpc.waiting_room`); refused as before once the room is full. For one
    server only."""

    client_of: Callable[[Hello, PeerCredentials | None], str | None]
    max_connections: int
    refused: Callable[[str, PeerCredentials | None], None]
    own_places: bool = False
    peer_client: Callable[[int], str | None] | None = None
    waiting_room: WaitingRoom | None = None

    def __post_init__(self) -> None:
        if self.max_connections < 1:
            raise ValueError(f"max_connections must be at least 1, got {self.max_connections}")

    def reason(self, client: str) -> str:
        return f"{client}: at its limit of {self.max_connections} open connections"


class ClientPlaces:
    """The places each client of one server's :class:`ClientLimit` holds. Thread-safe.

    A connection's place is kept in a list of its own (``claimed``: empty, or the one client
    it counts for), given back with :meth:`release` whatever way the connection ends.
    ``lock`` is the server's, when a count of its own must change in the same step as the
    clients' (it must then be reentrant: a :class:`threading.Condition` or ``RLock``)."""

    def __init__(
        self, limit: ClientLimit, lock: contextlib.AbstractContextManager[Any] | None = None
    ) -> None:
        self.limit = limit
        self._lock = lock if lock is not None else threading.RLock()
        self._per_client: dict[str, int] = {}
        #: Places held by all clients together.
        self.held = 0
        self.waiting_room = limit.waiting_room
        if self.waiting_room is not None:
            self.waiting_room.open(self._lock)

    def owner(self, credentials: PeerCredentials | None, family: str | None) -> str | None:
        """The client a connection counts for from its accept (see
        :attr:`ClientLimit.peer_client`): ``family`` is the listener's kinship's word."""
        if self.limit.peer_client is None:
            return family
        return None if credentials is None else self.limit.peer_client(credentials.pid)

    def claim(self, client: str, claimed: list[str]) -> bool:
        """Take a place of ``client`` for the connection whose ``claimed`` this is, giving
        back the one it held; False at the client's limit."""
        with self._lock:
            held = self._per_client.get(client, 0)
            if held >= self.limit.max_connections:
                return False
            self._per_client[client] = held + 1
            self.held += 1
            if claimed:
                self._give_back(claimed.pop())
            claimed.append(client)
            return True

    def claim_or_wait(self, ticket: Ticket) -> Turn:
        """Take a place of ``ticket.client`` for a connection at its accept; or, at the
        client's limit, let it wait in the :attr:`waiting_room` (its server then says so with
        :meth:`WaitingRoom.told`, and ``ticket.serve`` serves it in its turn). A client with
        connections waiting takes no place before them."""
        room = self.waiting_room
        with self._lock:
            if (room is None or not room.waiting_for(ticket.client)) and self.claim(
                ticket.client, ticket.claimed
            ):
                return Turn.PLACED
            return Turn.WAITS if room is not None and room.enter(ticket) else Turn.REFUSED

    def release(self, claimed: list[str]) -> None:
        """The connection whose ``claimed`` this is ended: its place goes to the oldest
        connection of its client waiting, if any, which is served now; else back."""
        if not claimed:
            return
        with self._lock:
            if not claimed:
                return
            room = self.waiting_room
            if room is None or not room.hand_place(claimed[-1], claimed):
                self._give_back(claimed.pop())

    def connections(self, client: str) -> int:
        """Connections of ``client`` open now."""
        with self._lock:
            return self._per_client.get(client, 0)

    def admission(
        self,
        admit: PeerAdmission | None,
        credentials: PeerCredentials | None,
        claimed: list[str],
        over_limit: list[str],
        outside_limit: str | None = None,
    ) -> Admission:
        """The handshake's last word on one connection: ``admit``'s, then the client's limit.
        A connection admitted is counted for its client in ``claimed`` (a place taken at its
        accept is moved, if its hello names another client); one refused for its limit is
        reported and put in ``over_limit`` (its handshake failure is said already).
        ``outside_limit``: the client whose waiting room served the connection without a place
        (its peer hung up, see :mod:`~isoplug.rpc.waiting_room`); a hello naming that client
        counts it for none, as its accept did, rather than refuse it at the limit it waited
        past."""
        bound = bind_admission(admit, credentials)
        limit = self.limit

        def admission(hello: Hello) -> str | None:
            refusal = bound(hello) if bound is not None else None
            if refusal is not None:
                return refusal
            client = limit.client_of(hello, credentials)
            if client is None or client in claimed or client == outside_limit:
                return None
            if not self.claim(client, claimed):
                over_limit.append(client)
                # Said before the reject is sent: whoever sees it finds the refusal told.
                limit.refused(client, credentials)
                return limit.reason(client)
            return None

        return admission

    def refuse(self, client: str, credentials: PeerCredentials | None) -> str:
        """A connection of ``client`` refused at its accept: reported by the limit's owner
        (before the client is told, so whoever sees the reject finds it told); returns the
        reason to send."""
        self.limit.refused(client, credentials)
        return self.limit.reason(client)

    def _give_back(self, client: str) -> None:
        self.held -= 1
        left = self._per_client[client] - 1
        if left:
            self._per_client[client] = left
        else:
            del self._per_client[client]
