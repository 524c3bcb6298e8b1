"""What a peer writes: every message in the order sent, answers gathered into one write.

Separate from :mod:`isoplug.rpc.peer`, whose session (opening, calling, reading, ending) it
serves, because writing has a trick of its own: the answers that the tasks started by one read
send in their first step go out together, in one ``write()`` (see :meth:`Outbox.hold_answers`),
and anything else sent meanwhile writes them first, so that the order on the wire is the
order sent.
"""

from __future__ import annotations

import asyncio
from typing import Final

from isoplug.errors import TransportError
from isoplug.log_guard import guarded_logger
from isoplug.transport import Stream
from isoplug.wire import Connection, ErrorResponse, Message, Response

__all__ = ["Outbox"]

_log = guarded_logger("isoplug.rpc")

_ANSWERS: Final = (Response, ErrorResponse)


class Outbox:
    """Encodes messages on ``connection`` and writes them to ``stream``."""

    __slots__ = ("_connection", "_holding", "_loop", "_stream")

    def __init__(self, stream: Stream, connection: Connection) -> None:
        self._stream = stream
        self._connection = connection
        self._loop = asyncio.get_running_loop()
        #: Answers are being gathered into one write (see hold_answers).
        self._holding = False

    def send(self, message: Message) -> None:
        """Send ``message`` (raises what the connection or the stream raises)."""
        connection = self._connection
        connection.send(message)
        if self._holding and type(message) in _ANSWERS:
            return  # written by release_answers, with the others
        # Anything else goes out at once, after any answers held (the order is kept).
        self._stream.write(connection.data_to_send())

    def hold_answers(self, until_next_round: bool) -> None:
        """Gather the answers sent from now into one write: until the loop's next round is
        through (``until_next_round``), or until :meth:`release_answers` is called. The
        requests of one read start tasks that all answer in that round (or, started eagerly,
        at once), and pipelined calls then cost the sender one system call per read instead
        of one per answer. A single call loses nothing: its answer goes out in that round."""
        if not self._holding:
            self._holding = True
            if until_next_round:
                # After the tasks' first steps: they were scheduled before this callback.
                self._loop.call_soon(self.release_answers)

    def release_answers(self) -> None:
        self._holding = False
        data = self._connection.data_to_send()
        if not data:
            return
        try:
            self._stream.write(data)
        except TransportError as exc:
            # The session is ending (its end is handled where the stream reports it).
            _log.debug("could not send %d bytes of answers: %s", len(data), exc)

    def flush_failure_notice(self) -> None:
        """Write what the connection queued on failing (its goodbye saying why), if it can."""
        data = self._connection.data_to_send()
        if data:
            try:
                self._stream.write(data)
            except TransportError:
                _log.debug("peer already gone; could not tell it why the session failed")
