"""Connections past their client's limit that wait, unread, for one of its places:
:class:`WaitingRoom` (see :class:`~isoplug.rpc.client_limit.ClientLimit`).

A client's connection refused at its limit is told so and closed; the client tries again. A
log sender cannot, once it has ended: its hello carried the memory that holds its unsent
records (:mod:`isoplug.transport.passed_descriptors`), and a refused connection closed that
unread, so a fork burst's children that logged and ended before a place freed lost their
records uncounted. A connection that waits here instead is served, in its turn, by the same
path as any other (its hello checked, its token, what it passed read), whatever became of
its client meanwhile:

- when one of its client's connections ends, the oldest one waiting takes that place at once
  (:meth:`ClientPlaces.release <isoplug.rpc.client_limit.ClientPlaces.release>`), before a
  newer connection of the client could;
- when its peer hangs up (the sender ended, or gave up waiting for its welcome), it is
  served at once, outside its client's limit: a connection that cannot grow any more costs
  a bounded amount, as one whose sender had ended before its accept does (it counts for no
  client then).

What a waiting connection holds is its socket: no thread, no handshake seat, nothing read
(the asyncio server pauses its transport; what the transport read before that, a single
read, stays in its buffer). At most ``max_per_client`` wait per client and ``max_in_all`` in
all; past either a connection is refused as before, which its owner counts and says. Let in,
it takes no handshake seat either (its handshake keeps its deadline): the room's bounds bound
those, and a fork burst's children ending at once, served together, must not find the seats
taken and be turned away after all. One
watcher thread per room, started when a connection waits and ending when none does, polls
their sockets for the hang-up (``POLLRDHUP``): one thread for every client together, not one
per connection. Closing the server closes the connections still waiting, unread; the room
counts them (:attr:`WaitingRoom.closed_unread`) for its owner to say.

Decided against: taking the descriptors a refused connection passed with its hello and
keeping those, without the connection, until its client ends. That reads an unauthenticated
hello on the accepting thread (its token unchecked: a stranger's memory would be replayed as
a sender's records), waits there for the hello when it is late, and needs a second way to
recover a sender's records beside the one every connection's end takes.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import enum
import select
import threading
from collections.abc import Callable
from typing import Any

from isoplug.log_guard import guarded_logger
from isoplug.transport.stream import PeerCredentials
from isoplug.transport.wake_pipe import WakePipe

__all__ = ["DEFAULT_MAX_WAITING", "Ticket", "Turn", "WaitingRoom", "full_for"]

_log = guarded_logger("isoplug.rpc")

#: Connections that may wait at once, all clients together, unless the owner says otherwise.
DEFAULT_MAX_WAITING = 512
#: What the watcher asks poll() about a waiting socket (hang-ups and errors come anyway).
_HUNG_UP = select.POLLRDHUP


class Turn(enum.Enum):
    """What became of a connection at its client's limit's door."""

    #: It holds a place of its client.
    PLACED = "placed"
    #: It waits in the room for one.
    WAITS = "waits"
    #: Neither: the client is at its limit, and the room full (or there is none).
    REFUSED = "refused"


@dataclasses.dataclass(eq=False)
class Ticket:
    """One waiting connection, made by its server."""

    client: str
    #: Its socket's descriptor, watched for the peer's hang-up (the server's, kept open
    #: while the ticket is in the room).
    fd: int
    #: The kernel's word on who connected, for the owner's report.
    credentials: PeerCredentials | None
    #: The place it counts for once one is handed to it (see ClientPlaces); empty when it
    #: is served outside the limit.
    claimed: list[str]
    #: Serve the connection now (with the room's lock held: quick, never blocking).
    serve: Callable[[], None]
    #: Close it unread: its server closes (see :meth:`WaitingRoom.close`).
    close: Callable[[], None]
    #: Taken out of the room to be served (set by the room).
    served: bool = False


class WaitingRoom:
    """Connections waiting for a place of their client (see the module docstring), for one
    server. Its state is guarded by the lock the server gives :meth:`open` (its places').

    ``waits(client, credentials)`` is told of each connection that starts to wait (outside
    the lock), to say so as its owner likes."""

    def __init__(
        self,
        max_per_client: int,
        max_in_all: int = DEFAULT_MAX_WAITING,
        *,
        waits: Callable[[str, PeerCredentials | None], None] | None = None,
    ) -> None:
        if max_per_client < 0 or max_in_all < 0:
            raise ValueError(
                f"a waiting room's bounds must not be negative, got {max_per_client} per "
                f"client and {max_in_all} in all"
            )
        self.max_per_client = max_per_client
        self.max_in_all = max_in_all
        self._waits = waits
        self._lock: contextlib.AbstractContextManager[Any] = threading.RLock()
        self._queues: dict[str, collections.deque[Ticket]] = {}
        self._count = 0
        #: Connections taken out to be served that their server has not counted as served
        #: yet (see :meth:`entered`): a closing owner waits for them too.
        self.entering = 0
        #: Connections closed unread, still waiting, when their server closed.
        self.closed_unread = 0
        self._closed = False
        self._watcher: threading.Thread | None = None
        # Wakes the watcher when the connections it watches change (opened with it).
        self._wake_pipe = WakePipe()

    def open(self, lock: contextlib.AbstractContextManager[Any]) -> None:
        """Used by one server, whose ``lock`` (reentrant) guards the room from now on."""
        self._lock = lock

    def waiting_for(self, client: str) -> int:
        """Connections of ``client`` waiting now (lock held)."""
        queue = self._queues.get(client)
        return len(queue) if queue else 0

    def enter(self, ticket: Ticket) -> bool:
        """Let ``ticket`` wait, unless a bound is reached or the room is closed (lock held);
        whether it waits. Its owner is told after the lock is let go (see :meth:`told`)."""
        if self._closed or self._count >= self.max_in_all:
            return False
        if self.waiting_for(ticket.client) >= self.max_per_client:
            return False
        self._queues.setdefault(ticket.client, collections.deque()).append(ticket)
        self._count += 1
        self._start_watcher()
        self._wake_pipe.wake()
        return True

    def told(self, ticket: Ticket) -> None:
        """Say that ``ticket`` waits (called by its server once it let go of the lock)."""
        if self._waits is not None:
            self._waits(ticket.client, ticket.credentials)

    def hand_place(self, client: str, place: list[str]) -> bool:
        """A connection of ``client`` ended, its place in ``place``: give that place to the
        oldest connection of ``client`` waiting, and serve it (lock held); whether one was."""
        queue = self._queues.get(client)
        if not queue:
            return False
        ticket = self._take(queue, queue[0])
        ticket.claimed.append(place.pop())
        self._serve(ticket)
        return True

    def abandon(self, ticket: Ticket) -> None:
        """The server gives up ``ticket`` before it served it (it closes): out of the room,
        or no longer entering; counted closed unread (unless :meth:`close` counted it)."""
        with self._lock:
            queue = self._queues.get(ticket.client)
            if queue is not None and ticket in queue:
                self._take(queue, ticket)
            elif ticket.served:
                self.entering -= 1
            else:
                return  # closed with the room, and counted there
            self.closed_unread += 1

    def entered(self) -> None:
        """A connection taken out of the room is counted as served by its server now (or
        ended before it could be)."""
        with self._lock:
            self.entering -= 1

    def close(self) -> list[Ticket]:
        """The server closes: every ticket still waiting leaves the room, counted closed
        unread, and is returned for the server to close (``ticket.close``); none enters
        from now on."""
        with self._lock:
            self._closed = True
            tickets = [ticket for queue in self._queues.values() for ticket in queue]
            self._queues.clear()
            self._count = 0
            self.closed_unread += len(tickets)
            if self._watcher is None:
                self._wake_pipe.close()
            else:
                self._wake_pipe.wake()
        return tickets

    # -- the watcher ---------------------------------------------------------------------

    def _take(self, queue: collections.deque[Ticket], ticket: Ticket) -> Ticket:
        queue.remove(ticket)
        if not queue:
            del self._queues[ticket.client]
        self._count -= 1
        return ticket

    def _serve(self, ticket: Ticket) -> None:
        ticket.served = True
        self.entering += 1
        try:
            ticket.serve()
        except Exception:
            # A bug of ours: said with its traceback, never the end of the room.
            self.entering -= 1
            _log.exception("serving a connection that waited for a place failed")

    def _start_watcher(self) -> None:
        if self._watcher is not None:
            return
        self._wake_pipe.open()
        self._watcher = threading.Thread(target=self._watch, name="isoplug-waiting", daemon=True)
        self._watcher.start()

    def _watch(self) -> None:
        """Serve each waiting connection whose peer hung up, outside its client's limit;
        ends once none waits (the pipe stays for the next watcher, unless the room closed)."""
        while True:
            with self._lock:
                if not self._count:
                    self._watcher = None
                    if self._closed:
                        # close() left the pipe to us: we may have been polling it.
                        self._wake_pipe.close()
                    return
                tickets = {t.fd: t for queue in self._queues.values() for t in queue}
            poller = select.poll()
            poller.register(self._wake_pipe.read_end, select.POLLIN)
            for fd in tickets:
                poller.register(fd, _HUNG_UP)
            ready = poller.poll()
            self._wake_pipe.drain()
            for fd, _ in ready:
                ticket = tickets.get(fd)
                if ticket is None:
                    continue
                with self._lock:
                    queue = self._queues.get(ticket.client)
                    # Served or closed meanwhile (its number may name another socket now).
                    if queue is not None and ticket in queue:
                        self._serve(self._take(queue, ticket))


def full_for(room: WaitingRoom, client: str, *, per_client: str, in_all: str, clients: str) -> str:
    """Which of ``room``'s bounds turned a connection of ``client`` away, in its owner's words:
    ``per_client`` and ``in_all`` name the settings of the two bounds, ``clients`` what its
    clients are ("trees", "runners")."""
    # Read without the room's lock: a report's words, which a moment may change.
    if room.waiting_for(client) >= room.max_per_client:
        if not room.max_per_client:
            return f"none may wait for one ({per_client}=0)"
        return f"{room.max_per_client} more waiting for one ({per_client})"
    return f"all {clients}' {room.max_in_all} waiting places taken ({in_all})"
