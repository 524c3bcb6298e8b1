"""The RPC peer: requests, responses, events and cancellation over one connection.

Both ends use the same :class:`Peer` class over any :class:`~isoplug.transport.Stream`. Each
side registers handlers by method name and may call the other side's at any time, with any
number of requests in flight in both directions. How handlers run is told in
:mod:`isoplug.rpc.dispatch`, which takes each message the peer receives to its handler;
:func:`~isoplug.rpc.serve` (:mod:`isoplug.rpc.server`) is the listening side.

This module is the session's life: opening it, calling the other side (the calls awaiting
answers are kept in :mod:`isoplug.rpc.pending`), and ending it, from either side, so that no
caller, task or stream outlives it. What it reads is decoded by :mod:`isoplug.rpc.reading`,
what it writes goes through :mod:`isoplug.rpc.outbox`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable, Mapping
from typing import Any, Final, TypeVar

import msgspec

from isoplug.errors import (
    ConnectionBroken,
    ConnectionClosed,
    LocalProtocolError,
    ProtocolError,
    RemoteProtocolError,
    RequestTimeout,
    TransportError,
    hidden_from_pytest,
)
from isoplug.log_guard import guarded_logger
from isoplug.rpc.admission import AdmissionLimits
from isoplug.rpc.dispatch import Dispatcher, Handler, LogBatchHandler
from isoplug.rpc.handshake import (
    DEFAULT_HANDSHAKE_TIMEOUT,
    client_handshake,
    server_handshake,
)
from isoplug.rpc.outbox import Outbox
from isoplug.rpc.pending import DeadlinePassed, PendingCalls
from isoplug.rpc.reading import MAX_REASON_CHARS, SessionReader
from isoplug.rpc.remote_errors import remote_error
from isoplug.transport import Address, Stream, connect
from isoplug.wire import (
    Cancel,
    Connection,
    ConnectionState,
    ErrorResponse,
    Goodbye,
    Hello,
    LogBatch,
    Message,
    Request,
    Response,
    decode_value,
    encode_value,
)
from isoplug.wire.codec import event_message
from isoplug.wire.sanitize import clean_text

__all__ = ["DEFAULT_REQUEST_TIMEOUT", "Handler", "Peer", "remote_error"]

#: Left out of a failing test's report (see isoplug.errors.hidden_from_pytest).
__tracebackhide__ = hidden_from_pytest

_log = guarded_logger("isoplug.rpc")

#: Cap for the other side's name in this side's records and exception messages (see
#: :mod:`isoplug.rpc.reading` for the other caps).
MAX_PEER_NAME_CHARS: Final = 200

T = TypeVar("T")

#: Default for :meth:`Peer.request`: long enough for real work, short enough that a hung peer
#: is noticed. Pass ``timeout=None`` to wait forever.
DEFAULT_REQUEST_TIMEOUT = 30.0
#: When the session ends, messages that arrived before the end (typically the last log
#: records of a crashed sender) get this long to be handled before everything is torn down.
_BACKLOG_GRACE = 10.0

_USE_DEFAULT: Final = object()


class Peer:
    """One end of an open isoplug session.

    Obtain one with :meth:`connect` (client side), :meth:`accept` or :func:`serve` (server
    side). Use it as ``async with`` or call :meth:`aclose`, which always releases the stream
    and every task.
    """

    def __init__(
        self,
        stream: Stream,
        connection: Connection,
        *,
        handlers: Mapping[str, Handler] | None = None,
        early_messages: Iterable[Message] = (),
        default_timeout: float | None = DEFAULT_REQUEST_TIMEOUT,
    ) -> None:
        if connection.state is not ConnectionState.OPEN:
            raise LocalProtocolError("a Peer needs a connection whose handshake has completed")
        self._stream = stream
        self._connection = connection
        self.default_timeout = default_timeout
        self._pending = PendingCalls()
        self._outbox = outbox = Outbox(stream, connection)
        self._send = outbox.send
        self._dispatcher = Dispatcher(
            stream,
            connection,
            self._pending,
            send=outbox.send,
            closing=lambda: self._closing,
            hold_answers=outbox.hold_answers,
            release_answers=outbox.release_answers,
            fail=self._end_session,
            peer_name=self.peer_name,
        )
        for method, function in (handlers or {}).items():
            self.register(method, function)
        self._closing = False
        self._closed = asyncio.Event()
        #: Why the session ended: ``None`` while open, else the exception that describes it.
        self.close_error: TransportError | ProtocolError | None = None
        self._loop = loop = asyncio.get_running_loop()
        self._reader: asyncio.Task[None] | None = None
        reading = SessionReader(
            connection,
            self._dispatcher,
            outbox,
            closing=lambda: self._closing,
            end_session=self._end_session,
            peer_name=lambda: self.peer_name,
        )
        if stream.set_data_listener(reading.on_data, reading.on_end):
            # Push mode: bytes are handled in the transport's callback, without a task
            # switch per message (a round trip costs two event-loop iterations fewer).
            if early_messages:
                loop.call_soon(self._dispatcher.dispatch, list(early_messages))
        else:
            self._dispatcher.queue(list(early_messages))
            self._reader = loop.create_task(
                reading.pull(stream), name=f"isoplug-peer-reader:{self.peer_name}"
            )

    # -- opening ----------------------------------------------------------------------------

    @classmethod
    async def connect(
        cls,
        address: str | Address,
        token: str,
        *,
        handlers: Mapping[str, Handler] | None = None,
        name: str = "",
        role: str = "control",
        ssl_context: Any = None,
        connect_timeout: float | None = 10.0,
        handshake_timeout: float = DEFAULT_HANDSHAKE_TIMEOUT,
        default_timeout: float | None = DEFAULT_REQUEST_TIMEOUT,
    ) -> Peer:
        """Connect to ``address``, present ``token``, and return the open peer.

        Raises :class:`~isoplug.errors.ConnectError` or a
        :class:`~isoplug.errors.HandshakeError` subclass; nothing stays open on failure.
        """
        stream = await connect(address, ssl_context=ssl_context, timeout=connect_timeout)
        connection, early = await client_handshake(
            stream, token, name=name, role=role, timeout=handshake_timeout
        )
        return cls(
            stream,
            connection,
            handlers=handlers,
            early_messages=early,
            default_timeout=default_timeout,
        )

    @classmethod
    async def accept(
        cls,
        stream: Stream,
        token: str,
        *,
        handlers: Mapping[str, Handler] | None = None,
        name: str = "",
        handshake_timeout: float = DEFAULT_HANDSHAKE_TIMEOUT,
        default_timeout: float | None = DEFAULT_REQUEST_TIMEOUT,
    ) -> Peer:
        """Run the server side of the handshake on ``stream`` and return the open peer."""
        connection, early = await server_handshake(
            stream, token, name=name, timeout=handshake_timeout
        )
        return cls(
            stream,
            connection,
            handlers=handlers,
            early_messages=early,
            default_timeout=default_timeout,
        )

    async def __aenter__(self) -> Peer:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    # -- who is there -----------------------------------------------------------------------

    @property
    def remote_hello(self) -> Hello | None:
        """The hello the other side sent (server side only)."""
        return self._connection.peer_hello

    @property
    def peer_name(self) -> str:
        """The name the other side gave in its hello or welcome."""
        if self._connection.peer_hello is not None:
            name = self._connection.peer_hello.name
        elif self._connection.peer_welcome is not None:
            name = self._connection.peer_welcome.name
        else:
            return ""
        # The other side's text: safe for this side's records and messages (see sanitize).
        return clean_text(name, MAX_PEER_NAME_CHARS)

    @property
    def stream(self) -> Stream:
        return self._stream

    @property
    def is_open(self) -> bool:
        return not self._closing and self._connection.state is ConnectionState.OPEN

    @property
    def unsent_bytes(self) -> int:
        """What was sent that waits in this process for the other side to read it."""
        return self._stream.unsent_bytes()

    @property
    def unhandled(self) -> int:
        """Messages received that no handler took (each kind is warned about once)."""
        return self._dispatcher.unhandled

    # -- handlers ---------------------------------------------------------------------------

    def register(
        self, method: str, handler: Handler, *, params_type: Any = Any, control: bool = False
    ) -> None:
        """Serve requests for ``method`` with ``handler``; ``params_type`` validates params.

        A ``control`` handler is served at once whatever the load: its requests never wait in
        the queue of those past the limit of requests served at once, nor are refused (see
        :meth:`set_limits`)."""
        self._dispatcher.register(method, handler, params_type, control)

    def set_limits(self, limits: AdmissionLimits) -> None:
        """Serve at most ``limits.max_running`` requests of ``async`` handlers at once; queue
        the next ones up to ``limits.max_queued`` (and ``max_queued_bytes`` of params), and
        refuse the rest at once (:class:`~isoplug.errors.PluginBusy` on the other side). See
        :mod:`isoplug.rpc.admission`."""
        self._dispatcher.set_limits(limits)

    def close_admission(self, reason: str) -> None:
        """Start no more requests (a control handler's aside): the queued ones, and every one
        that arrives from now, are answered at once as cancelled before they started,
        saying ``reason``. For a side that is shutting down."""
        self._dispatcher.close_admission(reason)

    def on_event(self, method: str, handler: Handler, *, params_type: Any = Any) -> None:
        """Call ``handler(params)`` for every event named ``method``."""
        self._dispatcher.on_event(method, handler, params_type)

    def on_log_batch(self, handler: LogBatchHandler | None) -> None:
        """Hand every :class:`~isoplug.wire.LogBatch` received to ``handler``.

        It runs inline in the reader, in order. When it returns an awaitable (an ``async``
        handler does; a synchronous one may, for work it could not finish at once), reading
        pauses until that is done, which applies back-pressure to the sender.
        """
        self._dispatcher.on_log_batch(handler)

    # -- calling the other side -------------------------------------------------------------

    async def request(
        self,
        method: str,
        params: Any = None,
        *,
        timeout: float | object | None = _USE_DEFAULT,
        result_type: type[T] | Any = Any,
        late_answer: float = 0.0,
    ) -> Any:
        """Call ``method`` on the other side and return its result. A cancel point.

        Raises :class:`~isoplug.errors.RequestTimeout` after ``timeout`` seconds (default:
        :attr:`default_timeout`), :class:`~isoplug.errors.RemoteError` (or a subclass) when
        the remote handler failed, :class:`~isoplug.errors.ConnectionClosed` /
        :class:`~isoplug.errors.ConnectionBroken` when the session ends first. Cancelling the
        calling task, or a timeout, sends a cancel to the other side. With ``late_answer``
        seconds, the timeout's ``late_answer`` is a task giving the answer the other side
        sends within that long after the cancel (what became of the request), or None.
        """
        limit = self.default_timeout if timeout is _USE_DEFAULT else timeout
        connection = self._connection
        if self._closing or connection.state is not ConnectionState.OPEN:
            self._check_open()
        request_id = connection.next_request_id()
        future: asyncio.Future[Message] = self._loop.create_future()
        self._send(Request(id=request_id, method=method, params=encode_value(params)))
        self._pending.add(request_id, method, future, limit)  # type: ignore[arg-type]
        try:
            answer = await future
        except DeadlinePassed:
            sent = self._cancel_remote(request_id)
            error = RequestTimeout(
                f"{method!r} got no response from {self.peer_name or 'the peer'} within {limit:g} s"
            )
            if late_answer > 0 and sent:
                error.late_answer = self._loop.create_task(
                    self._pending.late_answer(request_id, method, late_answer)
                )
            raise error from None
        except asyncio.CancelledError:
            self._cancel_remote(request_id)
            raise
        finally:
            self._pending.forget(request_id)
        if type(answer) is Response:
            try:
                return decode_value(answer.result, result_type)
            except (msgspec.ValidationError, msgspec.DecodeError) as exc:
                raise RemoteProtocolError(
                    f"result of {method!r} does not fit {result_type}: "
                    f"{clean_text(str(exc), MAX_REASON_CHARS)}"
                ) from exc
        assert isinstance(answer, ErrorResponse)
        raise remote_error(method, answer.error)

    async def notify(self, method: str, params: Any = None) -> None:
        """Send a one-way event. Waits only if the peer reads too slowly (a cancel point)."""
        self._check_open()
        self._send(event_message(method, params))
        await self._stream.drain()

    def notify_nowait(self, method: str, params: Any = None) -> None:
        """Send a one-way event without waiting for the send buffer to drain."""
        self._check_open()
        self._send(event_message(method, params))

    async def send_log_batch(self, batch: LogBatch) -> None:
        """Send a batch of log records (see :mod:`isoplug.logs`)."""
        self._check_open()
        self._send(batch)
        await self._stream.drain()

    # -- closing ----------------------------------------------------------------------------

    async def aclose(self, reason: str = "closed") -> None:
        """Say goodbye, stop every task, fail pending requests, close the stream. Idempotent.

        Requests still waiting for an answer raise :class:`~isoplug.errors.ConnectionClosed`.
        """
        if self._closing:
            await self._closed.wait()
            return
        self._closing = True
        try:
            if self._connection.state is ConnectionState.OPEN:
                with contextlib.suppress(TransportError, ProtocolError):
                    self._send(Goodbye(reason=reason))
            if self.close_error is None:
                self.close_error = ConnectionClosed(f"closed by this side: {reason}")
            await self._shutdown()
        finally:
            self._closed.set()

    async def wait_closed(self) -> None:
        """Wait until the session has ended, for whatever reason. A cancel point."""
        await self._closed.wait()

    # -- internals --------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closing or self._connection.state is not ConnectionState.OPEN:
            error = self.close_error
            if isinstance(error, ConnectionBroken):
                raise ConnectionBroken(
                    f"session with {self.peer_name or 'peer'} is broken: "
                    f"{clean_text(str(error), MAX_REASON_CHARS)}"
                )
            raise ConnectionClosed(
                f"session with {self.peer_name or 'peer'} is closed"
                + (f": {clean_text(str(error), MAX_REASON_CHARS)}" if error else "")
            )

    def _cancel_remote(self, request_id: int) -> bool:
        """Send a cancel for ``request_id``; False if it could not be sent."""
        if self._closing or self._connection.state is not ConnectionState.OPEN:
            return False
        try:
            self._send(Cancel(id=request_id))
        except TransportError as exc:
            _log.debug("could not send cancel for request %d: %s", request_id, exc)
            return False
        return True

    def _end_session(self, error: TransportError | ProtocolError) -> None:
        """The session ended from the other side or failed. Clean up in the background, after
        the messages that arrived before the end are handled, so that wait_closed() returns
        once everything is released."""
        if self._closing:
            return
        self._closing = True
        if self.close_error is None:
            self.close_error = error
        asyncio.get_running_loop().create_task(self._finish_after_backlog())

    async def _finish_after_backlog(self) -> None:
        try:
            drainer = self._dispatcher.drainer
            if drainer is not None and drainer is not asyncio.current_task():
                # The last log records before a crash may be in the backlog: replay them.
                await asyncio.wait([drainer], timeout=_BACKLOG_GRACE)
            await self._shutdown()
        finally:
            self._closed.set()

    async def _shutdown(self) -> None:
        dispatcher = self._dispatcher
        dispatcher.report_unhandled()
        self._pending.fail_all(self.close_error or ConnectionClosed("session closed"))
        tasks = dispatcher.stop()
        current = asyncio.current_task()
        for task in (self._reader, dispatcher.drainer):
            if task is not None and task is not current:
                tasks.append(task)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        await self._stream.aclose()
