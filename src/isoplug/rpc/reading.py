"""The reading side of an RPC session: bytes in, messages to their handlers, and how the
stream's end ends the session.

The stream either pushes what it reads (:meth:`SessionReader.on_data` and
:meth:`SessionReader.on_end` are its callbacks: no task switch per message) or, for streams
that cannot push, a task pulls (:meth:`SessionReader.pull`). Either way a malformed frame, a
handler path's bug or the end of the stream ends the session through the peer's
``end_session``, with an error saying what happened, so that no caller waits on a session
nobody reads.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from isoplug.errors import (
    ConnectionBroken,
    ConnectionClosed,
    ProtocolError,
    TransportError,
)
from isoplug.log_guard import guarded_logger
from isoplug.rpc.dispatch import Dispatcher
from isoplug.rpc.outbox import Outbox
from isoplug.transport import Stream
from isoplug.wire import Connection, ConnectionState
from isoplug.wire.sanitize import clean_text

__all__ = ["MAX_REASON_CHARS", "SessionReader"]

_log = guarded_logger("isoplug.rpc")

#: Cap for the other side's text in this side's records and exception messages (all of it
#: goes through :func:`~isoplug.wire.sanitize.clean_text` first).
MAX_REASON_CHARS: Final = 1000

SessionEnd = Callable[[TransportError | ProtocolError], None]


class SessionReader:
    """Decodes what a session's stream reads and hands it to the dispatcher."""

    __slots__ = ("_closing", "_connection", "_dispatcher", "_end_session", "_outbox", "_peer_name")

    def __init__(
        self,
        connection: Connection,
        dispatcher: Dispatcher,
        outbox: Outbox,
        *,
        closing: Callable[[], bool],
        end_session: SessionEnd,
        peer_name: Callable[[], str],
    ) -> None:
        self._connection = connection
        self._dispatcher = dispatcher
        self._outbox = outbox
        self._closing = closing
        self._end_session = end_session
        self._peer_name = peer_name

    async def pull(self, stream: Stream) -> None:
        """For streams that cannot push: read, and wait for the backlog before reading on."""
        dispatcher = self._dispatcher
        try:
            dispatcher.drain_queued()
            while True:
                drainer = dispatcher.drainer
                if drainer is not None:
                    await drainer
                data = await stream.receive_some()
                if not data:
                    self.on_end(None)
                    return
                self.on_data(data)
                if self._closing():
                    return
        except TransportError as exc:
            self.on_end(exc)

    def on_data(self, data: bytes) -> None:
        """Bytes arrived: decode and dispatch them (called by the stream, or :meth:`pull`)."""
        if self._closing():
            return
        connection = self._connection
        try:
            messages = connection.receive_data(data)
        except ProtocolError as exc:
            self._outbox.flush_failure_notice()
            _log.warning(
                "closing session with %s: %s",
                self._peer_name() or "peer",
                clean_text(str(exc), MAX_REASON_CHARS),
            )
            self._end_session(exc)
            return
        try:
            self._dispatcher.dispatch(messages)
        except Exception as exc:
            # A bug in a handler path must end this session visibly, never hang its callers.
            _log.exception("session with %s failed unexpectedly", self._peer_name() or "peer")
            reason = clean_text(str(exc), MAX_REASON_CHARS)
            self._end_session(ConnectionBroken(f"session failed: {type(exc).__name__}: {reason}"))
            return
        if connection.state is ConnectionState.CLOSED:
            self._end_session(
                ConnectionClosed(
                    f"{self._peer_name() or 'peer'} ended the session: "
                    f"{clean_text(connection.close_reason or '', MAX_REASON_CHARS)}"
                )
            )

    def on_end(self, error: TransportError | None) -> None:
        """The stream ended: cleanly (``None``: EOF) or with ``error``."""
        if self._closing():
            return
        if error is not None:
            broken = error if isinstance(error, ConnectionBroken) else ConnectionBroken(str(error))
            self._end_session(broken)
            return
        try:
            self._connection.receive_eof()
        except ProtocolError as exc:
            # A peer that exits or crashes: whoever owns this peer reports that better (the
            # supervisor knows the exit code); it is no protocol problem of ours.
            _log.debug(
                "session with %s ended: %s",
                self._peer_name() or "peer",
                clean_text(str(exc), MAX_REASON_CHARS),
            )
            self._end_session(exc)
            return
        self._end_session(ConnectionClosed(f"{self._peer_name() or 'peer'} closed the connection"))
