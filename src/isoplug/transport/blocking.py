"""Blocking sockets for code that must not depend on an event loop.

The runner's log thread connects with :func:`connect_blocking`; a synchronous
:class:`~isoplug.logs.LogReceiver` listens with :func:`listen_blocking` and reads each sender
in a thread of its own. The same addresses and TLS contexts as the asyncio side; the same
sans-IO :class:`~isoplug.wire.Connection` drives the protocol over them.
"""

from __future__ import annotations

import selectors
import socket
import ssl
import threading

from isoplug.errors import ConnectError, NoTemporaryFolder, TransportError
from isoplug.transport.address import Address, Scheme, parse_address
from isoplug.transport.listening import (
    cannot_listen_again,
    private_unix_socket,
    private_unix_socket_again,
    tcp_listening_socket,
)
from isoplug.transport.private_places import PrivatePlace
from isoplug.transport.stream import host_port
from isoplug.transport.tls import tls_handshake_failed

__all__ = ["BlockingListener", "connect_blocking", "listen_blocking"]


def connect_blocking(
    address: str | Address,
    *,
    ssl_context: ssl.SSLContext | None = None,
    timeout: float | None = 10.0,
) -> socket.socket:
    """Open a blocking socket to ``address`` (``timeout`` applies to connecting only).

    Raises :class:`~isoplug.errors.ConnectError` when nothing listens there or TLS fails.
    """
    parsed = parse_address(address)
    sock: socket.socket
    try:
        if parsed.scheme is Scheme.UNIX:
            if not parsed.path:
                raise ConnectError("cannot connect to 'unix:' without a socket path")
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.settimeout(timeout)
                sock.connect(parsed.path)
            except BaseException:
                sock.close()
                raise
        else:
            sock = socket.create_connection((parsed.host, parsed.port), timeout=timeout)
            # Without it a small message waits for the peer's delayed ACK: ~40 ms.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if parsed.scheme is Scheme.TLS:
                context = ssl_context or ssl.create_default_context()
                try:
                    sock = context.wrap_socket(sock, server_hostname=parsed.host)
                except BaseException:
                    sock.close()
                    raise
        sock.settimeout(None)
    except (OSError, ValueError) as exc:  # ValueError: a host getaddrinfo refuses
        raise ConnectError(f"cannot connect to {parsed}: {exc}") from exc
    return sock


class BlockingListener:
    """A listening socket for threads: :meth:`accept` blocks until a client or :meth:`close`.

    One thread accepts at a time. Closing from any thread wakes a blocked :meth:`accept`:
    closing the socket under it would not, on Linux, and would let the descriptor be reused
    while it waits. The accepting thread then releases the socket itself. So does it take the
    socket made by :meth:`listen_again_if_lost` in place of the lost one.
    """

    def __init__(
        self,
        sock: socket.socket,
        address: Address,
        *,
        ssl_context: ssl.SSLContext | None,
        place: PrivatePlace | None,
        backlog: int = 128,
    ) -> None:
        self.address = address
        self._socket = sock
        self._ssl_context = ssl_context
        self._place = place
        self._backlog = backlog
        #: A socket listening in place of a lost one, for the accepting thread to take.
        self._replacement: socket.socket | None = None
        self._wake_reader, self._wake_writer = socket.socketpair()
        self._selector = selectors.DefaultSelector()
        self._selector.register(sock, selectors.EVENT_READ)
        self._selector.register(self._wake_reader, selectors.EVENT_READ)
        sock.setblocking(False)
        self._lock = threading.Lock()
        self._accepting = False
        self._closed = False

    def __str__(self) -> str:
        return str(self.address)

    @property
    def is_tls(self) -> bool:
        """Whether accepted connections speak TLS (once :meth:`secure` has wrapped them)."""
        return self._ssl_context is not None

    def accept(self) -> socket.socket | None:
        """The next connection (blocking, still in plain text for TLS: see :meth:`secure`);
        ``None`` once the listener is closed."""
        accepted = self.accept_from()
        return None if accepted is None else accepted[0]

    def accept_from(self) -> tuple[socket.socket, str] | None:
        """:meth:`accept`, with the peer's ``host:port`` (empty on a unix socket) as accept()
        gave it: a peer that resets the connection right away (a failed TLS handshake) can no
        longer be asked for (getpeername() fails then)."""
        with self._lock:
            if self._closed:
                return None
            self._accepting = True
        try:
            while True:
                self._selector.select()
                if self._closed:
                    return None
                if self._take_replacement():
                    continue
                try:
                    connection, peer = self._socket.accept()
                except (BlockingIOError, InterruptedError, ConnectionAbortedError):
                    continue  # the client gave up before we took it
                except OSError as exc:
                    raise TransportError(f"cannot accept on {self.address}: {exc}") from exc
                connection.setblocking(True)
                if connection.family in (socket.AF_INET, socket.AF_INET6):
                    # Without it a small message waits for the peer's delayed ACK: ~40 ms.
                    connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    return connection, host_port(peer)
                return connection, ""
        finally:
            with self._lock:
                self._accepting = False
                if self._closed:
                    self._release()

    def secure(self, connection: socket.socket, timeout: float) -> socket.socket:
        """Run the TLS handshake on an accepted connection (a no-op for unix and TCP).

        Meant for the connection's own thread, so a slow client delays nobody else. Raises
        :class:`~isoplug.errors.TransportError` when the handshake fails or takes too long;
        the connection is closed then.
        """
        if self._ssl_context is None:
            return connection
        connection.settimeout(timeout)
        try:
            # A peer that reset the connection already: asked by wrap_socket(), the reset
            # raises from within the SSLSocket it made, which nobody can close then (the
            # garbage collector does, with a ResourceWarning).
            _still_connected(connection)
            secured = self._ssl_context.wrap_socket(connection, server_side=True)
        except (OSError, ValueError) as exc:
            connection.close()
            raise tls_handshake_failed(exc) from exc
        secured.settimeout(None)
        return secured

    def close(self) -> None:
        """Stop listening (waking :meth:`accept`) and release everything. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            place = self._place
            if self._accepting:
                self._wake_writer.send(b"x")  # the accepting thread releases the rest
            else:
                self._release()
        if place is not None:
            place.remove()

    def listen_again_if_lost(self) -> str | None:
        """:meth:`isoplug.transport.Listener.listen_again_if_lost`, for threads: from any
        thread; the accepting thread takes the new socket at once (connections made meanwhile
        wait in its backlog). Raises :class:`~isoplug.errors.TransportError` when it cannot
        listen again (it stays as it was then)."""
        with self._lock:
            place = self._place
            if self._closed or place is None or place.folder is None:
                return None
        lost = place.lost()
        if lost is None:
            return None
        try:
            sock, fresh = private_unix_socket_again(place, self._backlog)
        except OSError as exc:
            raise cannot_listen_again(place, lost, exc) from exc
        with self._lock:
            if self._closed or self._place is not place:
                # Closed meanwhile, or another thread listened again first.
                sock.close()
                fresh.remove()
                return None
            self._place = fresh
            self.address = Address(Scheme.UNIX, path=fresh.path)
            if self._replacement is not None:
                self._replacement.close()  # lost too, before the accepting thread took it
            self._replacement = sock
            if self._accepting:
                self._wake_writer.send(b"x")  # the accepting thread takes it
            else:
                self._listen_on_replacement()
        if fresh.path != place.path:
            # Else the same path, made again: what is there now is the new socket's.
            place.remove(reported=True)
        return lost

    def _take_replacement(self) -> bool:
        """From the accepting thread, woken: listen on the replacement socket instead, if
        there is one (its wake-up byte, sent with it, read here)."""
        with self._lock:
            if self._replacement is None:
                return False
            self._wake_reader.recv(64)
            self._listen_on_replacement()
            return True

    def _listen_on_replacement(self) -> None:
        """Under the lock, with no thread in :meth:`accept`'s wait: the replacement socket
        takes the lost one's place."""
        replacement, self._replacement = self._replacement, None
        assert replacement is not None
        self._selector.unregister(self._socket)
        self._socket.close()
        replacement.setblocking(False)
        self._selector.register(replacement, selectors.EVENT_READ)
        self._socket = replacement

    def _release(self) -> None:
        self._selector.close()
        self._socket.close()
        if self._replacement is not None:
            self._replacement.close()
        self._wake_reader.close()
        self._wake_writer.close()


def _still_connected(connection: socket.socket) -> None:
    """Raise ``ConnectionResetError`` when the peer of ``connection`` is gone already."""
    try:
        connection.getpeername()
    except OSError as exc:
        raise ConnectionResetError(
            exc.errno, "the client closed the connection before its TLS handshake"
        ) from exc


def listen_blocking(
    address: str | Address,
    *,
    ssl_context: ssl.SSLContext | None = None,
    backlog: int = 128,
) -> BlockingListener:
    """Listen on ``address`` like :func:`~isoplug.transport.listen`, for threads.

    ``unix:`` without a path makes a private directory for the socket; a given path replaces a
    stale socket file, never one a live process listens on. ``tcp://host:0`` picks a free port
    (:attr:`BlockingListener.address` tells which). ``tls://`` requires ``ssl_context``.
    Raises :class:`~isoplug.errors.TransportError` when the address cannot be bound;
    :class:`~isoplug.errors.NoTemporaryFolder` when no temporary folder can take the private
    directory of ``unix:``.
    """
    parsed = parse_address(address)
    place: PrivatePlace | None = None
    try:
        if parsed.scheme is Scheme.UNIX:
            sock, place = private_unix_socket(parsed, backlog)
            bound = Address(Scheme.UNIX, path=place.path)
        else:
            if parsed.scheme is Scheme.TLS and ssl_context is None:
                raise TransportError(f"listening on {parsed} needs an ssl_context")
            resolved = socket.getaddrinfo(parsed.host, parsed.port, type=socket.SOCK_STREAM)
            sock = tcp_listening_socket(resolved, backlog)
            # The host as given, with the port bound: a name a certificate names stays one.
            bound = Address(parsed.scheme, host=parsed.host, port=sock.getsockname()[1])
    except NoTemporaryFolder:
        raise  # the system's refusal, said as such, not a failure of this address
    except (OSError, ValueError) as exc:
        raise TransportError(f"cannot listen on {parsed}: {exc}") from exc
    context = ssl_context if parsed.scheme is Scheme.TLS else None
    try:
        return BlockingListener(sock, bound, ssl_context=context, place=place, backlog=backlog)
    except BaseException:
        # Out of descriptors for its wake-up pair, say: nobody else would close the socket
        # or remove its private folder.
        sock.close()
        if place is not None:
            place.remove()
        raise
