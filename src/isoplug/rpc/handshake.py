"""Opening a session over a stream: the hello/welcome exchange, with a deadline.

Two flavours over one sans-IO :class:`~isoplug.wire.Connection`: :func:`client_handshake` /
:func:`server_handshake` for asyncio streams, :func:`blocking_client_handshake` /
:func:`blocking_server_handshake` for a plain blocking socket (used by threads that must not
depend on an event loop).
"""

from __future__ import annotations

import asyncio
import os
import socket
import ssl
import time
from collections.abc import Callable

from isoplug.errors import (
    ConnectionBroken,
    HandshakeError,
    HandshakeTimeout,
    ProtocolError,
    RemoteProtocolError,
    TransportError,
)
from isoplug.transport.passed_descriptors import pass_with, receive_passing
from isoplug.transport.stream import PeerCredentials, Stream
from isoplug.wire import Connection, ConnectionState, Hello, Message, RejectCode, Role
from isoplug.wire.connection import Admission, TokenLookup, WelcomeLevel

__all__ = [
    "DEFAULT_HANDSHAKE_TIMEOUT",
    "PeerAdmission",
    "bind_admission",
    "blocking_client_handshake",
    "blocking_server_handshake",
    "client_handshake",
    "peer_pid_text",
    "server_handshake",
]

#: A runner connects back within milliseconds of starting; 10 s leaves room for a loaded
#: machine while keeping a silent or hostile peer from holding a connection open for long.
DEFAULT_HANDSHAKE_TIMEOUT = 10.0

PeerAdmission = Callable[[Hello, PeerCredentials | None], str | None]
"""``admit(hello, credentials)``: a listener's last word on a client whose token matched, with
the kernel's word on who it is (``None`` where the socket cannot say: TCP, TLS, not Linux);
returns why it is refused, or ``None`` to welcome it."""


def bind_admission(
    admit: PeerAdmission | None, credentials: PeerCredentials | None
) -> Admission | None:
    """``admit`` for one connection, whose peer the kernel says is ``credentials``."""
    if admit is None:
        return None
    return lambda hello: admit(hello, credentials)


def peer_pid_text(credentials: PeerCredentials | None, peer_address: str = "") -> str:
    """`` from pid N`` with the kernel's word on who connected, for a listener's messages (a
    hello's pid and name are only the client's claims); over TCP or TLS, where the socket
    gives no pid, `` from host:port``, the socket's word; empty where neither can be said."""
    if credentials is not None:
        return f" from pid {credentials.pid}"
    return f" from {peer_address}" if peer_address else ""


async def _drive(
    stream: Stream,
    connection: Connection,
    timeout: float,
    waiting_for: str,
    *,
    started: float | None = None,
) -> list[Message]:
    """Exchange handshake bytes until the connection opens, within ``timeout`` of
    ``started`` (:func:`time.monotonic`; None: now); return messages that followed it."""
    left = timeout if started is None else timeout - (time.monotonic() - started)

    def flush() -> None:
        data = connection.data_to_send()
        if data:
            stream.write(data)

    early: list[Message] = []
    try:
        flush()
        async with asyncio.timeout(left):
            # receive_data/receive_eof raise on every failure, so the loop ends only when open.
            while connection.state is ConnectionState.HANDSHAKE:
                data = await stream.receive_some()
                if not data:
                    _peer_closed(connection)
                early = connection.receive_data(data)
                flush()
    except TimeoutError:
        reason = f"no {waiting_for} within {timeout:g} s"
        connection.fail(RejectCode.TIMEOUT, reason)
        _flush_quietly(stream, connection)
        await stream.aclose()
        raise HandshakeTimeout(reason) from None
    except (HandshakeError, ProtocolError):
        _flush_quietly(stream, connection)
        await stream.aclose()
        raise
    except BaseException:
        await stream.aclose()
        raise
    return early


def _flush_quietly(stream: Stream, connection: Connection) -> None:
    """Send the reject/goodbye that explains a failure, if the stream still takes bytes."""
    data = connection.data_to_send()
    if data:
        try:
            stream.write(data)
        except TransportError:
            # The peer is already gone; the exception we are about to raise says why.
            return


async def client_handshake(
    stream: Stream,
    token: str,
    *,
    name: str = "",
    role: str = "control",
    timeout: float = DEFAULT_HANDSHAKE_TIMEOUT,
) -> tuple[Connection, list[Message]]:
    """Present ``token`` over ``stream`` and wait for the welcome.

    Returns the open connection and any messages that arrived right behind the welcome.
    Raises :class:`~isoplug.errors.AuthenticationFailed`,
    :class:`~isoplug.errors.VersionMismatch`, :class:`~isoplug.errors.HandshakeTimeout` or
    :class:`~isoplug.errors.RemoteProtocolError`; the stream is closed in every failure.
    """
    connection = Connection(Role.CLIENT, token, name=name, pid=os.getpid(), connection_role=role)
    early = await _drive(stream, connection, timeout, "welcome")
    return connection, early


async def server_handshake(
    stream: Stream,
    token: str | TokenLookup,
    *,
    name: str = "",
    timeout: float = DEFAULT_HANDSHAKE_TIMEOUT,
    admit: Admission | None = None,
    welcome_level: WelcomeLevel | None = None,
    started: float | None = None,
) -> tuple[Connection, list[Message]]:
    """Wait for a hello on ``stream`` and check its token and versions.

    ``token`` is the expected token, or a :data:`~isoplug.wire.connection.TokenLookup` that
    returns the token expected from the client that sent a given hello (``None`` refuses it
    as unknown with :class:`~isoplug.errors.AuthenticationFailed`). ``admit`` may still refuse
    a client whose token matched, and ``welcome_level`` gives the level the welcome says (see
    :class:`~isoplug.wire.Connection`). ``timeout`` counts from ``started``
    (:func:`time.monotonic`), when the connection's handshake began (its TLS, say), or from
    now; a timeout says the whole of it.

    On success the connection is open and ``connection.peer_hello`` says who connected. On
    failure the peer is told why (reject message) before the stream is closed, and the same
    exceptions as :func:`client_handshake` are raised.
    """
    connection = Connection(
        Role.SERVER, token, name=name, pid=os.getpid(), admit=admit, welcome_level=welcome_level
    )
    early = await _drive(stream, connection, timeout, "hello", started=started)
    return connection, early


def blocking_client_handshake(
    sock: socket.socket,
    token: str,
    *,
    name: str = "",
    role: str = "control",
    timeout: float = DEFAULT_HANDSHAKE_TIMEOUT,
    after_hello: bytes = b"",
    passing: int | None = None,
    on_sent: Callable[[], None] | None = None,
) -> tuple[Connection, list[Message]]:
    """:func:`client_handshake` over a blocking socket; does not close ``sock`` on failure.

    ``after_hello``: frames written right behind the hello, in the same write, without
    waiting for the welcome; ``passing``: a descriptor passed with that write (``SCM_RIGHTS``,
    unix sockets: see :mod:`isoplug.transport.passed_descriptors`); ``on_sent`` is called once
    the kernel holds all of it, before the welcome is awaited."""
    connection = Connection(Role.CLIENT, token, name=name, pid=os.getpid(), connection_role=role)
    if after_hello or passing is not None:
        data = connection.data_to_send() + after_hello
        try:
            if passing is None:
                sock.sendall(data)
            else:
                pass_with(sock, data, passing)
        except OSError as exc:
            if isinstance(exc, BrokenPipeError | ConnectionResetError):
                # A full server rejects before it reads the hello, and closes: its Reject,
                # there to read, raises its error (why the connection was refused).
                _read_what_is_there(sock, connection)
            raise ConnectionBroken(f"connection lost during the handshake: {exc}") from exc
        if on_sent is not None:
            on_sent()
    early = _drive_blocking(sock, connection, timeout, "welcome")
    return connection, early


def blocking_server_handshake(
    sock: socket.socket,
    token: str | TokenLookup,
    *,
    name: str = "",
    timeout: float = DEFAULT_HANDSHAKE_TIMEOUT,
    admit: Admission | None = None,
    welcome_level: WelcomeLevel | None = None,
    passed: list[int] | None = None,
    started: float | None = None,
) -> tuple[Connection, list[Message]]:
    """:func:`server_handshake` over a blocking socket; does not close ``sock`` on failure.

    A refused client is told why (reject message) before the exception is raised. With
    ``passed`` (a unix socket), the descriptor a client passes with its hello is appended to
    it, the caller's to close, whatever happens (see
    :mod:`isoplug.transport.passed_descriptors`). ``started``: as :func:`server_handshake`'s.
    """
    connection = Connection(
        Role.SERVER, token, name=name, pid=os.getpid(), admit=admit, welcome_level=welcome_level
    )
    early = _drive_blocking(sock, connection, timeout, "hello", passed, started=started)
    return connection, early


def _drive_blocking(
    sock: socket.socket,
    connection: Connection,
    timeout: float,
    waiting_for: str,
    passed: list[int] | None = None,
    *,
    started: float | None = None,
) -> list[Message]:
    """:func:`_drive` over a blocking socket."""
    deadline = (time.monotonic() if started is None else started) + timeout
    previous_timeout = sock.gettimeout()
    early: list[Message] = []
    try:
        while True:
            data = connection.data_to_send()
            if data:
                try:
                    sock.sendall(data)
                except (BrokenPipeError, ConnectionResetError):
                    if connection.role is Role.SERVER and connection.state is ConnectionState.OPEN:
                        # The client's hello passed, and it is gone already (it ended right
                        # after writing it, or gave up waiting): the session goes on with what
                        # it wrote, to its end without a goodbye. A log sender's records are
                        # there, or in the memory it passed with its hello.
                        return early
                    # The peer closed first, and may have said why before it did (a full
                    # server rejects before reading the hello): a Reject here raises its error.
                    _read_what_is_there(sock, connection)
                    raise
            if connection.state is not ConnectionState.HANDSHAKE:
                return early
            remaining = deadline - time.monotonic()
            try:
                if remaining <= 0:
                    raise TimeoutError
                sock.settimeout(remaining)
                data = sock.recv(65536) if passed is None else receive_passing(sock, 65536, passed)
            except TimeoutError:
                reason = f"no {waiting_for} within {timeout:g} s"
                connection.fail(RejectCode.TIMEOUT, reason)
                _send_quietly(sock, connection)
                raise HandshakeTimeout(reason) from None
            try:
                if not data:
                    _peer_closed(connection)
                early = connection.receive_data(data)
            except (HandshakeError, ProtocolError):
                _send_quietly(sock, connection)
                raise
    except OSError as exc:
        if isinstance(exc, HandshakeTimeout) and connection.role is Role.SERVER:
            # The listener's own deadline (a TimeoutError, so an OSError): a refusal, as an
            # event loop's listener says, not a connection lost; the peer may still be there.
            raise
        raise ConnectionBroken(f"connection lost during the handshake: {exc}") from exc
    finally:
        sock.settimeout(previous_timeout)


#: What a connection says of a peer that closed during the handshake, mid-frame or not.
_PLAIN_END = "peer closed the connection during the handshake"


def _peer_closed(connection: Connection) -> None:
    """The peer closed its end during the handshake: raises. On the server's side,
    :class:`~isoplug.errors.ConnectionBroken`: a client that leaves before its hello is whole
    (it gave up waiting, or ended) was not refused, and its listener must not say it was."""
    before = connection.close_reason
    try:
        connection.receive_eof()
    except RemoteProtocolError as exc:
        if connection.role is not Role.SERVER:
            raise
        # A frame it left half-written is worth saying; the plain end says no more than this.
        detail = "" if before is None and connection.close_reason == _PLAIN_END else f" ({exc})"
        raise ConnectionBroken(
            f"the peer closed the connection before its hello was complete{detail}"
        ) from exc


def _read_what_is_there(sock: socket.socket, connection: Connection) -> None:
    """Feed ``connection`` what the peer sent before it closed, without waiting for more."""
    if isinstance(sock, ssl.SSLSocket):
        return  # takes no recv flags; and a TLS server never rejects before the hello
    try:
        data = sock.recv(65536, socket.MSG_DONTWAIT)
    except OSError:
        return  # nothing left to read: the caller's error stands
    connection.receive_data(data)


def _send_quietly(sock: socket.socket, connection: Connection) -> None:
    """:func:`_flush_quietly` over a blocking socket."""
    data = connection.data_to_send()
    if data:
        try:
            sock.sendall(data)
        except OSError:
            # The peer is already gone; the exception we are about to raise says why.
            return
