"""Sessions over blocking sockets, for threads that must not depend on an event loop.

The runner's log sender uses :class:`BlockingChannel`: a plugin may block its event loop for
seconds, and its logs must keep flowing. A synchronous :class:`~isoplug.logs.LogReceiver`
uses :func:`serve_blocking`: a thread per sender, woken by the kernel the moment a record
arrives. Both speak the same protocol through the same sans-IO
:class:`~isoplug.wire.Connection` as :class:`~isoplug.rpc.Peer`; a channel sends events and
log batches and reads what the other side sends, but does not serve requests.
"""

from __future__ import annotations

import contextlib
import logging
import selectors
import socket
import ssl
import threading
import time
from collections.abc import Callable
from typing import Any

from isoplug.errors import (
    ConnectionBroken,
    ConnectionClosed,
    IsoplugError,
    ProtocolError,
    TransportError,
)
from isoplug.rpc.gate import (
    DEFAULT_HELLO_TIMEOUT,
    DEFAULT_MAX_HANDSHAKES,
    HandshakeGate,
    busy_reject,
)
from isoplug.rpc.handshake import (
    DEFAULT_HANDSHAKE_TIMEOUT,
    PeerAdmission,
    bind_admission,
    blocking_client_handshake,
    blocking_server_handshake,
    peer_pid_text,
)
from isoplug.transport import Address, connect_blocking
from isoplug.transport.blocking import BlockingListener, listen_blocking
from isoplug.transport.stream import peer_credentials_of
from isoplug.wire import (
    ConnectionState,
    Event,
    Goodbye,
    Message,
    encode_value,
)
from isoplug.wire.connection import Connection, TokenLookup
from isoplug.wire.sanitize import clean_text

__all__ = ["BlockingChannel", "BlockingServer", "serve_blocking"]

#: Cap for the other side's text (a close reason, a refused hello's name) in our messages.
MAX_REASON_CHARS = 1000

_log = logging.getLogger("isoplug.rpc")

#: How long closing a server waits for its connections' threads to end.
_CLOSE_TIMEOUT = 5.0
#: After accept() failed (out of file descriptors...), as asyncio's servers do.
_ACCEPT_RETRY_DELAY = 1.0
#: Most connections a blocking server serves at once, a thread each; past it new ones are
#: refused (said once, then counted). Far above a program's children or a host's runners, it
#: keeps a runaway client (a plugin that forks without end) from taking every thread.
DEFAULT_MAX_CONNECTIONS = 1024

#: The most one read takes: a flood of log batches is read in few system calls.
RECEIVE_SIZE = 256 * 1024


class BlockingChannel:
    """An open session over a blocking socket. Not thread-safe: one thread owns it (except
    for :meth:`interrupt`)."""

    def __init__(self, sock: socket.socket, connection: Connection, early: list[Message]) -> None:
        self.socket = sock
        self.connection = connection
        self._received: list[Message] = list(early)
        self._interrupted = False
        # interrupt() wakes a plain socket's blocked recv() with shutdown(SHUT_RD). Under TLS
        # that would break the session's TLS state, and the goodbye with it: a TLS channel
        # waits for data on a selector that a wake-up socket can end instead.
        self._waker: _Waker | None = _Waker(sock) if isinstance(sock, ssl.SSLSocket) else None

    @classmethod
    def connect(
        cls,
        address: str | Address,
        token: str,
        *,
        name: str = "",
        role: str = "control",
        ssl_context: ssl.SSLContext | None = None,
        timeout: float = DEFAULT_HANDSHAKE_TIMEOUT,
    ) -> BlockingChannel:
        """Connect and complete the handshake; raises like :meth:`isoplug.rpc.Peer.connect`."""
        sock = connect_blocking(address, ssl_context=ssl_context, timeout=timeout)
        try:
            connection, early = blocking_client_handshake(
                sock, token, name=name, role=role, timeout=timeout
            )
        except BaseException:
            sock.close()
            raise
        return cls(sock, connection, early)

    def send(self, message: Message) -> None:
        """Send one message, blocking until the kernel took all of it.

        Raises :class:`~isoplug.errors.ConnectionBroken` when the peer is gone.
        """
        self.connection.send(message)
        self._write(self.connection.data_to_send())

    def notify(self, method: str, params: Any = None) -> None:
        """Send a one-way event."""
        self.send(Event(method=method, params=encode_value(params)))

    def receive(self, timeout: float | None = None) -> list[Message]:
        """Return messages that arrived, waiting up to ``timeout`` (``None``: for ever) for data.

        Returns ``[]`` on timeout, or when the data held no whole message yet. Raises
        :class:`~isoplug.errors.ConnectionClosed` once the peer said goodbye,
        :class:`~isoplug.errors.ConnectionBroken` when it vanished (even mid-frame),
        :class:`~isoplug.errors.RemoteProtocolError` for garbage (the peer is told why).
        """
        if self._received:
            messages, self._received = self._received, []
            return messages
        connection = self.connection
        if connection.state is not ConnectionState.OPEN:
            raise ConnectionClosed(
                f"session closed: {clean_text(connection.close_reason or '', MAX_REASON_CHARS)}"
            )
        try:
            if self._waker is not None:
                data = self._waker.read(RECEIVE_SIZE, timeout)
                if data is None:
                    if self._interrupted:
                        raise ConnectionClosed("session ended by this side")
                    return []
            elif timeout is None:
                data = self.socket.recv(RECEIVE_SIZE)
            else:
                self.socket.settimeout(timeout)
                try:
                    data = self.socket.recv(RECEIVE_SIZE)
                finally:
                    self.socket.settimeout(None)
        except TimeoutError:
            return []
        except OSError as exc:
            if self._interrupted:
                raise ConnectionClosed("session ended by this side") from None
            raise ConnectionBroken(f"connection lost: {exc}") from exc
        if not data:
            if self._interrupted:
                # Our own end, not the peer's: the session stays open for close()'s goodbye.
                raise ConnectionClosed("session ended by this side")
            try:
                connection.receive_eof()
            except ProtocolError as exc:
                raise ConnectionBroken(f"connection lost: {exc}") from None
            return []
        try:
            return connection.receive_data(data)
        except ProtocolError:
            self._write_quietly(connection.data_to_send())
            raise

    def interrupt(self) -> None:
        """End the session from another thread: the owner's :meth:`receive` raises
        :class:`~isoplug.errors.ConnectionClosed` at once (after what already arrived), and
        its :meth:`close` still says goodbye. The one method that is safe from other threads.
        """
        self._interrupted = True
        if self._waker is not None:
            self._waker.wake()
        else:
            _shutdown_quietly(self.socket, socket.SHUT_RD)

    def close(self, reason: str = "closed") -> None:
        """Say goodbye if the session is still open, then close the socket. Idempotent."""
        try:
            if self.connection.state is ConnectionState.OPEN:
                self.connection.send(Goodbye(reason=reason))
                self._write_quietly(self.connection.data_to_send())
        finally:
            self.socket.close()
            if self._waker is not None:
                self._waker.close()

    def _write(self, data: bytes) -> None:
        try:
            self.socket.sendall(data)
        except OSError as exc:
            raise ConnectionBroken(f"connection lost while sending: {exc}") from exc

    def _write_quietly(self, data: bytes) -> None:
        try:
            self.socket.sendall(data)
        except OSError:
            # Best effort: the peer is gone, and the caller already knows the session is over.
            return


class _Waker:
    """Waiting for a TLS socket's data in a way another thread can end (see BlockingChannel)."""

    def __init__(self, sock: ssl.SSLSocket) -> None:
        self._socket = sock
        self._wake_reader, self._wake_writer = socket.socketpair()
        self._selector = selectors.DefaultSelector()
        self._selector.register(sock, selectors.EVENT_READ)
        self._selector.register(self._wake_reader, selectors.EVENT_READ)

    def read(self, size: int, timeout: float | None) -> bytes | None:
        """What arrived (``b""`` at EOF), once it did; ``None`` on timeout, once woken, or
        while no whole TLS record is in (the wait must stay wakeable: no blocking read)."""
        sock = self._socket
        if not sock.pending():  # nothing decrypted yet: wait for the kernel
            ready = self._selector.select(timeout)
            if not ready or any(key.fileobj is self._wake_reader for key, _ in ready):
                return None
        sock.setblocking(False)
        try:
            return sock.recv(size)
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
            return None
        finally:
            sock.setblocking(True)

    def wake(self) -> None:
        with contextlib.suppress(OSError):  # already closed by the owner: nothing to wake
            self._wake_writer.send(b"x")

    def close(self) -> None:
        self._selector.close()
        self._wake_reader.close()
        self._wake_writer.close()


SessionHandler = Callable[[BlockingChannel], None]


class BlockingServer:
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
    ) -> None:
        self._listener = listener
        self._token = token
        self._admit = admit
        self._on_channel = on_channel
        self._name = name
        self._handshake_timeout = handshake_timeout
        self._max_connections = max_connections
        # Seats for connections in their handshake; says what the server refused.
        self._gate = HandshakeGate(name, max_handshakes)
        self._gate.address = listener.address
        # Connection thread -> its socket while in the handshake (the TLS one once wrapped),
        # then its channel: what close() ends.
        self._connections: dict[threading.Thread, socket.socket | BlockingChannel] = {}
        self._changed = threading.Condition()
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

    def close(self, timeout: float = _CLOSE_TIMEOUT) -> None:
        """Stop accepting, end every open session (each handler sees its connection end, then
        says goodbye), and wait up to ``timeout`` for their threads. Idempotent."""
        with self._changed:
            self._closing = True
            connections = list(self._connections.values())
        self._closed.set()
        self._listener.close()
        self._gate.close()
        for connection in connections:
            _end(connection)
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
            _shutdown_quietly(sock, socket.SHUT_RDWR)

    def __str__(self) -> str:
        return f"{self._name or 'server'} on {self._listener.address}"

    def _accept_loop(self) -> None:
        while True:
            try:
                sock = self._listener.accept()
            except TransportError as exc:
                # Out of descriptors or memory, most likely: pause rather than spin or quit.
                _log.error("%s: %s; retrying in %g s", self, exc, _ACCEPT_RETRY_DELAY)
                self._closed.wait(_ACCEPT_RETRY_DELAY)
                continue
            if sock is None:
                return
            thread = threading.Thread(
                target=self._serve_connection,
                args=(sock,),
                name=f"isoplug-{self._name or 'server'}-session",
                daemon=True,
            )
            with self._changed:
                if self._closing:
                    sock.close()
                    return
                full = len(self._connections) >= self._max_connections
                seated = not full and self._gate.enter()
                if seated:
                    self._connections[thread] = sock
            if not seated:
                self._refuse(
                    sock,
                    f"at its limit of {self._max_connections} open connections"
                    if full
                    else self._gate.full_reason,
                )
                continue
            # Said before the session starts: whoever it serves finds this logged.
            self._gate.admitted()
            try:
                thread.start()
            except RuntimeError as exc:  # "can't start new thread": out of memory or threads
                self._forget(thread)
                self._gate.leave()
                self._refuse(sock, f"cannot start a thread for another connection: {exc}")

    def _refuse(self, sock: socket.socket, why: str) -> None:
        """Close a connection we cannot serve, telling the client why; its handshake fails.
        Said once, until the server accepts again: a client connecting in a loop must not
        flood the log."""
        # Said before the client is told: whoever sees the reject finds the warning logged.
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

    def _serve_connection(self, sock: socket.socket) -> None:
        current = threading.current_thread()
        credentials = None
        # One deadline for TLS and the hello together: a trickling client gets no more.
        deadline = time.monotonic() + self._handshake_timeout
        try:
            sock = self._listener.secure(sock, self._handshake_timeout)
            with self._changed:
                self._connections[current] = sock
                if self._closing:
                    # close() may have missed this socket while TLS swapped it: end it here.
                    _end(sock)
            credentials = peer_credentials_of(sock)
            connection, early = blocking_server_handshake(
                sock,
                self._token,
                name=self._name,
                timeout=max(0.001, deadline - time.monotonic())
                if self._listener.is_tls
                else self._handshake_timeout,
                admit=bind_admission(self._admit, credentials),
            )
        except IsoplugError as exc:
            self._gate.leave()
            # Said once the seat is free: whoever reads the warning may connect at once.
            if not self._closing:
                self._gate.failed(exc, peer_pid_text(credentials))
            sock.close()
            self._forget(current)
            return
        except BaseException:
            self._gate.leave()
            raise
        self._gate.leave()
        channel = BlockingChannel(sock, connection, early)
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
            self._forget(current)

    def _forget(self, thread: threading.Thread) -> None:
        with self._changed:
            self._connections.pop(thread, None)
            self._changed.notify_all()


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
) -> BlockingServer:
    """Listen on ``address``; for every connection that passes the handshake, call
    ``on_channel(channel)`` in a thread of that connection's own.

    At most ``max_connections`` are served at once; past it, and when no thread can be
    started, a new connection gets a ``busy`` reject (its client's handshake fails, saying
    why) and is closed, and a warning says so, once until the server accepts again. The same
    goes past ``max_handshakes`` connections in their handshake: until its hello is checked, a
    connection has ``handshake_timeout`` for the whole handshake (TLS included) and frames of
    at most 64 KiB (see :mod:`isoplug.rpc.gate`).

    Like :func:`~isoplug.rpc.serve`: the channel is closed (with a goodbye) when
    ``on_channel`` returns; refused connections (wrong token, wrong version, no hello in time,
    garbage, a failed TLS handshake) are logged at WARNING on the ``isoplug.rpc`` logger and
    never reach ``on_channel``; ``admit`` may refuse a client whose token matched (see
    :data:`~isoplug.rpc.handshake.PeerAdmission`). Raises
    :class:`~isoplug.errors.TransportError` when the address cannot be bound.
    """
    listener = listen_blocking(address, ssl_context=ssl_context)
    return BlockingServer(
        listener,
        token,
        on_channel,
        name=name,
        handshake_timeout=handshake_timeout,
        max_connections=max_connections,
        max_handshakes=max_handshakes,
        admit=admit,
    )


def _end(connection: socket.socket | BlockingChannel) -> None:
    """End a connection's session from another thread; its own thread says goodbye."""
    if isinstance(connection, BlockingChannel):
        connection.interrupt()
    else:  # still in the handshake: nothing to say goodbye to
        _shutdown_quietly(connection, socket.SHUT_RDWR)


def _shutdown_quietly(sock: socket.socket, how: int) -> None:
    try:
        # socket.socket's own: ssl.SSLSocket.shutdown() would also drop the TLS state the
        # connection's thread is still reading with.
        socket.socket.shutdown(sock, how)
    except OSError:
        return  # already closed by its own thread: nothing left to end
