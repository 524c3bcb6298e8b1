"""A blocking server's session threads: one connection each, from TLS to its goodbye.

Each connection :class:`~isoplug.rpc.blocking_server.BlockingServer` accepts is served by
a thread of its own: TLS (on a TLS listener), the hello checked within one deadline, the
handshake seat given back, then the application's handler on the channel, and the client's
place given back as it ends. Separate from :mod:`isoplug.rpc.blocking_server`, which accepts,
counts and refuses connections and ends them all at its close: this module is what one
accepted connection's thread does, and what it leaves registered for that close to end.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from isoplug.errors import IsoplugError
from isoplug.log_guard import guarded_logger
from isoplug.rpc.blocking_channel import BlockingChannel, shutdown_quietly
from isoplug.rpc.client_limit import ClientPlaces
from isoplug.rpc.gate import HandshakeGate, Seat
from isoplug.rpc.handshake import (
    PeerAdmission,
    bind_admission,
    blocking_server_handshake,
    peer_pid_text,
)
from isoplug.transport.blocking import BlockingListener
from isoplug.transport.stream import PeerCredentials
from isoplug.wire.connection import Admission, TokenLookup, WelcomeLevel

__all__ = ["Accepted", "SessionHandler", "SessionThreads", "end_connection"]

_log = guarded_logger("isoplug.rpc")

SessionHandler = Callable[[BlockingChannel], None]


@dataclass(frozen=True, slots=True)
class Accepted:
    """An accepted connection, as its session thread gets it: ``seat`` None for one that
    waited for a place (:mod:`isoplug.rpc.waiting_room`); ``claimed`` the client's place it
    holds (given back as it ends); ``outside_limit`` the client it waited for, when it is
    served without a place; ``peer_address`` the peer's host:port from accept()."""

    sock: socket.socket
    seat: Seat | None
    credentials: PeerCredentials | None
    claimed: list[str]
    outside_limit: str | None = None
    peer_address: str = ""


class SessionThreads:
    """The serving of each connection in a thread of its own, for
    :class:`~isoplug.rpc.blocking_server.BlockingServer`, which sets these attributes up and
    starts the threads."""

    _listener: BlockingListener
    _token: str | TokenLookup
    _admit: PeerAdmission | None
    _welcome_level: WelcomeLevel | None
    _on_channel: SessionHandler
    _name: str
    _handshake_timeout: float
    _takes_descriptors: bool
    _gate: HandshakeGate
    _places: ClientPlaces | None
    # Connection thread -> its socket while in the handshake (the TLS one once wrapped),
    # then its channel: what the server's close() ends.
    _connections: dict[threading.Thread, socket.socket | BlockingChannel]
    _changed: threading.Condition
    _closing: bool

    def _serve_connection(self, accepted: Accepted) -> None:
        # The client this connection counts for (``claimed``), from its accept or once
        # admitted (see ClientLimit), is given back as the connection leaves, in one step.
        try:
            self._serve_claimed(accepted)
        finally:
            self._forget(threading.current_thread(), accepted.claimed)

    def _serve_claimed(self, accepted: Accepted) -> None:
        sock, seat, credentials = accepted.sock, accepted.seat, accepted.credentials
        claimed, outside_limit = accepted.claimed, accepted.outside_limit
        peer_address = accepted.peer_address
        current = threading.current_thread()
        over_limit: list[str] = []
        # One deadline for TLS and the hello together: a trickling client gets no more.
        started = time.monotonic()
        # The descriptor the client passes with its hello, if it does and we take it.
        passed: list[int] | None = (
            [] if self._takes_descriptors and sock.family == socket.AF_UNIX else None
        )
        try:
            sock = self._listener.secure(sock, self._handshake_timeout)
            with self._changed:
                self._connections[current] = sock
                if self._closing:
                    # close() may have missed this socket while TLS swapped it: end it here.
                    end_connection(sock)
            connection, early = blocking_server_handshake(
                sock,
                self._token,
                name=self._name,
                timeout=self._handshake_timeout,
                started=started,
                admit=self._admission(credentials, claimed, over_limit, outside_limit),
                welcome_level=self._welcome_level,
                passed=passed,
            )
        except IsoplugError as exc:
            self._leave(seat)
            if not over_limit and not self._closing:
                # Said once the seat is free: whoever reads the warning may connect at once.
                self._gate.failed(exc, peer_pid_text(credentials, peer_address))
            sock.close()
            _close_passed(passed)
            return
        except BaseException:
            self._leave(seat)
            _close_passed(passed)
            raise
        self._leave(seat)
        channel = BlockingChannel(
            sock, connection, early, passed[0] if passed else None, peer_address=peer_address
        )
        with self._changed:
            self._connections[current] = channel
            if self._closing:
                channel.interrupt()  # close() ended the handshake's socket, not this channel
        try:
            self._on_channel(channel)
        except Exception:
            # A handler bug must not kill the server or other connections; it must be seen.
            _log.exception("connection handler for %s failed", self._listener.address)
        finally:
            channel.close("server closing" if self._closing else "closed")

    def _leave(self, seat: Seat | None) -> None:
        """Give the handshake's seat back, if it took one."""
        if seat is not None:
            self._gate.leave(seat)

    def _admission(
        self,
        credentials: PeerCredentials | None,
        claimed: list[str],
        over_limit: list[str],
        outside_limit: str | None,
    ) -> Admission | None:
        """The handshake's last word on one connection (see :meth:`ClientPlaces.admission`);
        ``claimed`` is given back by the caller, whatever happens next."""
        if self._places is None:
            return bind_admission(self._admit, credentials)
        return self._places.admission(self._admit, credentials, claimed, over_limit, outside_limit)

    def _forget(self, thread: threading.Thread | None, claimed: list[str]) -> None:
        """A connection ended (``thread`` None: it never had one): it leaves the server and
        gives back the client's place it held, together."""
        with self._changed:
            if thread is not None:
                self._connections.pop(thread, None)
            if self._places is not None:
                self._places.release(claimed)
            self._changed.notify_all()


def _close_passed(passed: list[int] | None) -> None:
    """Close the descriptor a client passed, whose connection is not served."""
    for descriptor in passed or ():
        os.close(descriptor)


def end_connection(connection: socket.socket | BlockingChannel) -> None:
    """End a connection's session from another thread; its own thread says goodbye."""
    if isinstance(connection, BlockingChannel):
        connection.interrupt()
    else:  # still in the handshake: nothing to say goodbye to
        shutdown_quietly(connection, socket.SHUT_RDWR)
