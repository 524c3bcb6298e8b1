"""The byte stream every transport provides: what the layers above may ask of one.

A :class:`Stream` moves bytes and nothing else. Writing is buffered and never blocks
(:meth:`Stream.write`); :meth:`Stream.drain` is where a writer waits when the peer reads too
slowly. Reading returns whatever arrived (:meth:`Stream.receive_some`), ``b""`` once the peer
closed its end. :meth:`Stream.aclose` always releases the socket, whatever state it is in.

Separate from its socket implementation (:mod:`isoplug.transport.stream`, where it is
imported from): the in-memory pair implements it too, and the contract reads on its own.
"""

from __future__ import annotations

import abc
from collections.abc import Callable

from isoplug.errors import TransportError
from isoplug.transport.peers import PeerCredentials

__all__ = ["DataCallback", "EndCallback", "Stream"]

DataCallback = Callable[[bytes], None]
EndCallback = Callable[[TransportError | None], None]


class Stream(abc.ABC):
    """A reliable, ordered, bidirectional byte stream."""

    #: A short description of the other end, for messages ("unix:/tmp/x/sock", "127.0.0.1:5").
    description: str = ""
    #: The descriptor the peer passed with its first bytes (see
    #: :class:`SocketStream`'s ``takes_descriptor``); the stream's. None: none was.
    passed_descriptor: int | None = None
    #: ``host:port`` of the peer of a TCP or TLS socket, as the socket says when it connected
    #: (the only word on a TCP peer a listener can trust); empty elsewhere.
    peer_address: str = ""

    @abc.abstractmethod
    def write(self, data: bytes) -> None:
        """Queue ``data`` for sending; never blocks.

        Raises :class:`~isoplug.errors.ConnectionClosed` after :meth:`aclose` and
        :class:`~isoplug.errors.ConnectionBroken` once the connection was lost.
        """

    @abc.abstractmethod
    async def drain(self) -> None:
        """Wait until the send buffer is below its high-water mark. A cancel point.

        Raises :class:`~isoplug.errors.ConnectionBroken` if the connection is lost meanwhile.
        """

    def unsent_bytes(self) -> int:
        """The bytes written that wait in this process to be sent (the peer reads more slowly
        than they come); what the kernel holds already is not counted."""
        return 0

    @abc.abstractmethod
    async def receive_some(self) -> bytes:
        """Return the next bytes that arrived, or ``b""`` when the peer closed its end.

        A cancel point. Raises :class:`~isoplug.errors.ConnectionBroken` when the connection
        was reset, :class:`~isoplug.errors.ConnectionClosed` after :meth:`aclose`.
        """

    @abc.abstractmethod
    async def aclose(self) -> None:
        """Flush what can be flushed quickly, close, and release everything. Idempotent."""

    @property
    def peer_credentials(self) -> PeerCredentials | None:
        """The peer's pid/uid/gid for unix sockets on Linux; ``None`` elsewhere."""
        return None

    def fileno(self) -> int | None:
        """The descriptor of the socket under this stream (None where there is none)."""
        return None

    def set_data_listener(self, on_data: DataCallback, on_end: EndCallback) -> bool:
        """Ask the stream to push what it receives instead of buffering it for receive_some().

        When this returns True, ``on_data(bytes)`` is called with every chunk as it arrives
        (bytes already buffered are delivered at the next loop iteration), then ``on_end(None)``
        at a clean end of stream or ``on_end(error)`` when the connection broke, exactly once;
        :meth:`receive_some` must no longer be used. Streams that cannot push return False.
        Callbacks must not raise.
        """
        return False

    def pause_reading(self) -> None:  # noqa: B027 - optional: pull-only streams have no-op
        """Stop delivering data to the listener until :meth:`resume_reading` (push mode)."""

    def resume_reading(self) -> None:  # noqa: B027 - optional: pull-only streams have no-op
        """Resume delivering data to the listener (push mode)."""
