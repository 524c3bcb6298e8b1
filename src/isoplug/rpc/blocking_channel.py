"""A session over a blocking socket, for threads that must not depend on an event loop.

The runner's log sender uses :class:`BlockingChannel`: a plugin may block its event loop for
seconds, and its logs must keep flowing. It speaks the same protocol through the same sans-IO
:class:`~isoplug.wire.Connection` as :class:`~isoplug.rpc.Peer`; a channel sends events and
log batches and reads what the other side sends, but does not serve requests. Separate from
:mod:`isoplug.rpc.blocking_server`, which makes channels on the listening side: a client
needs this module alone. Import both from :mod:`isoplug.rpc.blocking`.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import socket
import ssl
from collections.abc import Callable
from typing import Any

from isoplug.errors import ConnectionBroken, ConnectionClosed, ProtocolError
from isoplug.rpc.handshake import DEFAULT_HANDSHAKE_TIMEOUT, blocking_client_handshake
from isoplug.transport import Address, connect_blocking
from isoplug.wire import ConnectionState, Goodbye, Message
from isoplug.wire.codec import event_message
from isoplug.wire.connection import Connection
from isoplug.wire.sanitize import clean_text

__all__ = ["RECEIVE_SIZE", "BlockingChannel", "shutdown_quietly"]

#: Cap for the other side's text (a close reason, a refused hello's name) in our messages.
MAX_REASON_CHARS = 1000

#: The most one read takes: a flood of log batches is read in few system calls.
RECEIVE_SIZE = 256 * 1024


class BlockingChannel:
    """An open session over a blocking socket. Not thread-safe: one thread owns it (except
    for :meth:`interrupt`)."""

    def __init__(
        self,
        sock: socket.socket,
        connection: Connection,
        early: list[Message],
        passed_descriptor: int | None = None,
        *,
        peer_address: str = "",
    ) -> None:
        self.socket = sock
        self.connection = connection
        #: The descriptor the peer passed with its hello (a listener that takes them: see
        #: :mod:`isoplug.transport.passed_descriptors`); the channel's, closed with it.
        self.passed_descriptor = passed_descriptor
        #: The peer's ``host:port`` as a listener accepted it (TCP, TLS; empty otherwise): the
        #: socket's word on who it is, kept from the accept (getpeername() fails once the peer
        #: reset the connection).
        self.peer_address = peer_address
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
        after_hello: Callable[[socket.socket], tuple[bytes, int | None]] | None = None,
        on_sent: Callable[[], None] | None = None,
    ) -> BlockingChannel:
        """Connect and complete the handshake; raises like :meth:`isoplug.rpc.Peer.connect`.

        ``after_hello(sock)``, once connected, gives frames to write in the hello's own write
        and a descriptor to pass with it (or None); ``on_sent`` is called once the kernel
        holds them, before the welcome is awaited (see
        :func:`~isoplug.rpc.handshake.blocking_client_handshake`)."""
        sock = connect_blocking(address, ssl_context=ssl_context, timeout=timeout)
        try:
            frames, passing = after_hello(sock) if after_hello is not None else (b"", None)
            connection, early = blocking_client_handshake(
                sock,
                token,
                name=name,
                role=role,
                timeout=timeout,
                after_hello=frames,
                passing=passing,
                on_sent=on_sent,
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
        self.send(event_message(method, params))

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
            shutdown_quietly(self.socket, socket.SHUT_RD)

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
            passed, self.passed_descriptor = self.passed_descriptor, None
            if passed is not None:
                os.close(passed)

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


def shutdown_quietly(sock: socket.socket, how: int) -> None:
    """Shut ``sock`` down for ``how`` from a thread other than its owner's."""
    try:
        # socket.socket's own: ssl.SSLSocket.shutdown() would also drop the TLS state the
        # connection's thread is still reading with.
        socket.socket.shutdown(sock, how)
    except OSError:
        return  # already closed by its own thread: nothing left to end
