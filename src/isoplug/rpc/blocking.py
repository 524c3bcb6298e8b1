"""A session over a blocking socket, for threads that must not depend on an event loop.

The runner's log sender uses it: a plugin may block its event loop for seconds, and its logs
must keep flowing. It speaks the same protocol through the same sans-IO
:class:`~isoplug.wire.Connection` as :class:`~isoplug.rpc.Peer`; it sends events and log
batches and reads what the other side sends back, but does not serve requests.
"""

from __future__ import annotations

import socket
import ssl
from typing import Any

from isoplug.errors import ConnectionBroken, ConnectionClosed, ProtocolError
from isoplug.rpc.handshake import DEFAULT_HANDSHAKE_TIMEOUT, blocking_client_handshake
from isoplug.transport import Address, connect_blocking
from isoplug.wire import ConnectionState, Event, Goodbye, Message, encode_value
from isoplug.wire.connection import Connection

__all__ = ["BlockingChannel"]


class BlockingChannel:
    """An open session over a blocking socket. Not thread-safe: one thread owns it."""

    def __init__(self, sock: socket.socket, connection: Connection, early: list[Message]) -> None:
        self.socket = sock
        self.connection = connection
        self._received: list[Message] = list(early)

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
        """Return messages that arrived, waiting up to ``timeout`` for at least one.

        Returns ``[]`` on timeout. Raises :class:`~isoplug.errors.ConnectionClosed` once the
        peer said goodbye, :class:`~isoplug.errors.ConnectionBroken` when it vanished,
        :class:`~isoplug.errors.RemoteProtocolError` for garbage.
        """
        if self._received:
            messages, self._received = self._received, []
            return messages
        if self.connection.state is not ConnectionState.OPEN:
            raise ConnectionClosed(f"session closed: {self.connection.close_reason}")
        self.socket.settimeout(timeout)
        try:
            data = self.socket.recv(65536)
        except TimeoutError:
            return []
        except OSError as exc:
            raise ConnectionBroken(f"connection lost: {exc}") from exc
        finally:
            self.socket.settimeout(None)
        try:
            if not data:
                self.connection.receive_eof()
                return []
            return self.connection.receive_data(data)
        except ProtocolError:
            self._write_quietly(self.connection.data_to_send())
            raise

    def close(self, reason: str = "closed") -> None:
        """Say goodbye if the session is still open, then close the socket. Idempotent."""
        try:
            if self.connection.state is ConnectionState.OPEN:
                self.connection.send(Goodbye(reason=reason))
                self._write_quietly(self.connection.data_to_send())
        finally:
            self.socket.close()

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
