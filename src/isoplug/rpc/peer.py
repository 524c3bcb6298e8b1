"""The RPC peer: requests, responses, events and cancellation over one connection.

Both ends use the same :class:`Peer` class over any :class:`~isoplug.transport.Stream`. Each
side registers handlers by method name and may call the other side's at any time, with any
number of requests in flight in both directions.

Handlers
--------
A request handler takes the decoded params and returns the result (anything msgpack can
carry). ``async def`` handlers run in their own task, so they may take their time and be
cancelled; plain functions run inline and must be quick. Raising an exception sends an error
response carrying the exception's type, message and traceback; the caller gets
:class:`~isoplug.errors.RemoteError`.

Event handlers have the same signature; their return value is ignored. Plain-function event
handlers run inline, in order of arrival; ``async def`` event handlers run one at a time, in
order, in a separate task, so that they may await requests on this same peer without blocking
the reading of the response.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import inspect
import logging
import math
import traceback
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, Final, TypeVar

import msgspec

from isoplug.errors import (
    REMOTE_ERROR_BY_CODE,
    ConnectionBroken,
    ConnectionClosed,
    IsoplugError,
    LocalProtocolError,
    ProtocolError,
    RemoteError,
    RemoteProtocolError,
    RequestTimeout,
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
    client_handshake,
    peer_pid_text,
    server_handshake,
)
from isoplug.transport import Address, Listener, Stream, connect, listen
from isoplug.wire import (
    Cancel,
    Connection,
    ConnectionState,
    ErrorInfo,
    ErrorResponse,
    Event,
    Goodbye,
    Hello,
    LogBatch,
    Message,
    Request,
    Response,
    decode_value,
    encode_value,
)
from isoplug.wire.connection import TokenLookup
from isoplug.wire.sanitize import clean_block, clean_text

__all__ = ["DEFAULT_REQUEST_TIMEOUT", "Handler", "Peer", "remote_error", "serve"]

_log = logging.getLogger("isoplug.rpc")

#: Caps for the other side's text in this side's records and exception messages (all of it
#: goes through :func:`~isoplug.wire.sanitize.clean_text` first).
MAX_PEER_NAME_CHARS: Final = 200
MAX_REASON_CHARS: Final = 1000
MAX_REMOTE_TYPE_CHARS: Final = 300
MAX_REMOTE_MESSAGE_CHARS: Final = 4 * 1024
MAX_REMOTE_TRACEBACK_CHARS: Final = 64 * 1024
#: Distinct messages with no handler (events by name, log batches) a peer warns about, each
#: once; past them such messages are only counted, and the count said at the session's end:
#: made-up event names can neither flood this side's log nor grow its memory.
MAX_UNHANDLED_WARNINGS: Final = 16


def remote_error(method: str, info: ErrorInfo) -> RemoteError:
    """The exception for an error answer ``info`` to ``method``, its remote texts sanitized."""
    error_class = REMOTE_ERROR_BY_CODE.get(info.code, RemoteError)
    return error_class(
        method,
        clean_text(info.type, MAX_REMOTE_TYPE_CHARS),
        clean_text(info.message, MAX_REMOTE_MESSAGE_CHARS),
        clean_block(info.traceback, MAX_REMOTE_TRACEBACK_CHARS) if info.traceback else "",
    )


T = TypeVar("T")
Handler = Callable[[Any], Any]
LogBatchHandler = Callable[[LogBatch], Awaitable[None] | None]

#: Default for :meth:`Peer.request`: long enough for real work, short enough that a hung peer
#: is noticed. Pass ``timeout=None`` to wait forever.
DEFAULT_REQUEST_TIMEOUT = 30.0
#: At most this many incoming requests run at once; past it, the peer stops reading and TCP
#: flow control slows the sender down, instead of tasks piling up in memory.
MAX_CONCURRENT_INCOMING = 256
#: Async event handlers queue up to this many events before the reader waits for them.
_EVENT_QUEUE_SIZE = 1024
#: When the session ends, messages that arrived before the end (typically the last log
#: records of a crashed sender) get this long to be handled before everything is torn down.
_BACKLOG_GRACE = 10.0
#: Traceback text sent with an error response is capped so that a deep recursion error does
#: not produce a frame the size of the limit.
_MAX_TRACEBACK_CHARS = 64 * 1024

_USE_DEFAULT: Final = object()


class _DeadlinePassed(Exception):
    """Set on a pending request's future when its timeout passes; never leaves this module."""


class _Registered:
    __slots__ = ("function", "is_async", "params_type")

    def __init__(self, function: Handler, params_type: Any) -> None:
        self.function = function
        self.params_type = params_type
        self.is_async = inspect.iscoroutinefunction(function)


def _qualified_name(exc_type: type[BaseException]) -> str:
    return f"{exc_type.__module__}.{exc_type.__qualname__}"


def _safe_str(exc: BaseException) -> str:
    try:
        return str(exc)
    except Exception as str_failure:
        return f"<str() of {type(exc).__name__} failed: {type(str_failure).__name__}>"


def _error_info(code: str, exc: BaseException) -> ErrorInfo:
    text = "".join(traceback.format_exception(exc))
    if len(text) > _MAX_TRACEBACK_CHARS:
        text = (
            text[: _MAX_TRACEBACK_CHARS // 2]
            + "\n[... traceback truncated ...]\n"
            + text[-_MAX_TRACEBACK_CHARS // 2 :]
        )
    return ErrorInfo(
        code=code, type=_qualified_name(type(exc)), message=_safe_str(exc), traceback=text
    )


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
        self._handlers: dict[str, _Registered] = {}
        self._event_handlers: dict[str, _Registered] = {}
        for method, function in (handlers or {}).items():
            self.register(method, function)
        self._log_batch_handler: LogBatchHandler | None = None
        self._pending: dict[int, tuple[str, asyncio.Future[Message]]] = {}
        #: Request id -> loop time at which the request times out (see _arm_deadline_timer).
        self._deadlines: dict[int, float] = {}
        self._deadline_timer: asyncio.TimerHandle | None = None
        self._timer_at = math.inf
        self._serving: dict[int, asyncio.Task[None]] = {}
        self._slot_freed = asyncio.Event()
        self._event_queue: asyncio.Queue[tuple[_Registered, Event]] | None = None
        self._event_worker: asyncio.Task[None] | None = None
        #: Messages received that no handler took (see MAX_UNHANDLED_WARNINGS).
        self.unhandled = 0
        self._unhandled_warned: set[str] = set()
        self._unhandled_capped = False
        # Messages that arrived while an earlier one still needed awaiting; reading is paused
        # until the drainer task has worked through them, in order.
        self._backlog: collections.deque[Message] = collections.deque()
        self._drainer: asyncio.Task[None] | None = None
        # What a log batch handler left to await (the rest of a long replay): the drainer
        # awaits it before the next message.
        self._unfinished: Awaitable[None] | None = None
        self._closing = False
        self._closed = asyncio.Event()
        #: Why the session ended: ``None`` while open, else the exception that describes it.
        self.close_error: TransportError | ProtocolError | None = None
        loop = asyncio.get_running_loop()
        self._reader: asyncio.Task[None] | None = None
        if stream.set_data_listener(self._on_data, self._on_end):
            # Push mode: bytes are handled in the transport's callback, without a task
            # switch per message (a round trip costs two event-loop iterations fewer).
            if early_messages:
                loop.call_soon(self._dispatch_messages, list(early_messages))
        else:
            self._backlog.extend(early_messages)
            self._reader = loop.create_task(
                self._pull_loop(), name=f"isoplug-peer-reader:{self.peer_name}"
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

    # -- handlers ---------------------------------------------------------------------------

    def register(self, method: str, handler: Handler, *, params_type: Any = Any) -> None:
        """Serve requests for ``method`` with ``handler``; ``params_type`` validates params."""
        self._handlers[method] = _Registered(handler, params_type)

    def on_event(self, method: str, handler: Handler, *, params_type: Any = Any) -> None:
        """Call ``handler(params)`` for every event named ``method``."""
        self._event_handlers[method] = _Registered(handler, params_type)

    def on_log_batch(self, handler: LogBatchHandler | None) -> None:
        """Hand every :class:`~isoplug.wire.LogBatch` received to ``handler``.

        It runs inline in the reader, in order. When it returns an awaitable (an ``async``
        handler does; a synchronous one may, for work it could not finish at once), reading
        pauses until that is done, which applies back-pressure to the sender.
        """
        self._log_batch_handler = handler

    # -- calling the other side -------------------------------------------------------------

    async def request(
        self,
        method: str,
        params: Any = None,
        *,
        timeout: float | object | None = _USE_DEFAULT,
        result_type: type[T] | Any = Any,
    ) -> Any:
        """Call ``method`` on the other side and return its result. A cancel point.

        Raises :class:`~isoplug.errors.RequestTimeout` after ``timeout`` seconds (default:
        :attr:`default_timeout`), :class:`~isoplug.errors.RemoteError` (or a subclass) when
        the remote handler failed, :class:`~isoplug.errors.ConnectionClosed` /
        :class:`~isoplug.errors.ConnectionBroken` when the session ends first. Cancelling the
        calling task, or a timeout, sends a cancel to the other side.
        """
        limit = self.default_timeout if timeout is _USE_DEFAULT else timeout
        assert limit is None or isinstance(limit, int | float)
        self._check_open()
        connection = self._connection
        request_id = connection.next_request_id()
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Message] = loop.create_future()
        self._send(Request(id=request_id, method=method, params=encode_value(params)))
        self._pending[request_id] = (method, future)
        if limit is not None:
            deadline = loop.time() + limit
            self._deadlines[request_id] = deadline
            if deadline < self._timer_at:
                self._arm_deadline_timer(deadline)
        try:
            answer = await future
        except _DeadlinePassed:
            self._cancel_remote(request_id)
            raise RequestTimeout(
                f"{method!r} got no response from {self.peer_name or 'the peer'} within {limit:g} s"
            ) from None
        except asyncio.CancelledError:
            self._cancel_remote(request_id)
            raise
        finally:
            self._pending.pop(request_id, None)
            self._deadlines.pop(request_id, None)
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
        self._send(Event(method=method, params=encode_value(params)))
        await self._stream.drain()

    def notify_nowait(self, method: str, params: Any = None) -> None:
        """Send a one-way event without waiting for the send buffer to drain."""
        self._check_open()
        self._send(Event(method=method, params=encode_value(params)))

    async def send_log_batch(self, batch: LogBatch) -> None:
        """Send a batch of log records (see :mod:`isoplug.logs`)."""
        self._check_open()
        self._send(batch)
        await self._stream.drain()

    def _arm_deadline_timer(self, when: float) -> None:
        # One timer per peer, not one per request: arming and cancelling a timer per call cost
        # ~6 us (asyncio.timeout ~10 us), a tenth of a round trip. The timer is moved only
        # when a request's deadline comes before it; when it fires it expires what is due and
        # re-arms for the earliest deadline left.
        if self._deadline_timer is not None:
            self._deadline_timer.cancel()
        self._timer_at = when
        self._deadline_timer = asyncio.get_running_loop().call_at(when, self._expire_requests)

    def _expire_requests(self) -> None:
        self._deadline_timer = None
        self._timer_at = math.inf
        now = asyncio.get_running_loop().time()
        earliest = math.inf
        for request_id, deadline in list(self._deadlines.items()):
            if deadline <= now:
                del self._deadlines[request_id]
                pending = self._pending.get(request_id)
                if pending is not None and not pending[1].done():
                    pending[1].set_exception(_DeadlinePassed())
            elif deadline < earliest:
                earliest = deadline
        if earliest < math.inf:
            self._arm_deadline_timer(earliest)

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

    def _send(self, message: Message) -> None:
        connection = self._connection
        connection.send(message)
        self._stream.write(connection.data_to_send())

    def _cancel_remote(self, request_id: int) -> None:
        if self._closing or self._connection.state is not ConnectionState.OPEN:
            return
        try:
            self._send(Cancel(id=request_id))
        except TransportError as exc:
            _log.debug("could not send cancel for request %d: %s", request_id, exc)

    # -- receiving ----------------------------------------------------------------------------

    async def _pull_loop(self) -> None:
        """For streams that cannot push: read, and wait for the backlog before reading on."""
        try:
            if self._backlog:
                self._start_drainer()
            while True:
                if self._drainer is not None:
                    await self._drainer
                data = await self._stream.receive_some()
                if not data:
                    self._on_end(None)
                    return
                self._on_data(data)
                if self._closing:
                    return
        except TransportError as exc:
            self._on_end(exc)

    def _on_data(self, data: bytes) -> None:
        """Bytes arrived: decode and dispatch them (called by the stream, or the pull loop)."""
        if self._closing:
            return
        connection = self._connection
        try:
            messages = connection.receive_data(data)
        except ProtocolError as exc:
            self._flush_failure_notice()
            _log.warning(
                "closing session with %s: %s",
                self.peer_name or "peer",
                clean_text(str(exc), MAX_REASON_CHARS),
            )
            self._end_session(exc)
            return
        try:
            self._dispatch_messages(messages)
        except Exception as exc:
            # A bug in a handler path must end this session visibly, never hang its callers.
            _log.exception("session with %s failed unexpectedly", self.peer_name or "peer")
            reason = clean_text(str(exc), MAX_REASON_CHARS)
            self._end_session(ConnectionBroken(f"session failed: {type(exc).__name__}: {reason}"))
            return
        if connection.state is ConnectionState.CLOSED:
            self._end_session(
                ConnectionClosed(
                    f"{self.peer_name or 'peer'} ended the session: "
                    f"{clean_text(connection.close_reason or '', MAX_REASON_CHARS)}"
                )
            )

    def _on_end(self, error: TransportError | None) -> None:
        """The stream ended: cleanly (``None``: EOF) or with ``error``."""
        if self._closing:
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
                self.peer_name or "peer",
                clean_text(str(exc), MAX_REASON_CHARS),
            )
            self._end_session(exc)
            return
        self._end_session(ConnectionClosed(f"{self.peer_name or 'peer'} closed the connection"))

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
            drainer = self._drainer
            if drainer is not None and drainer is not asyncio.current_task():
                # The last log records before a crash may be in the backlog: replay them.
                await asyncio.wait([drainer], timeout=_BACKLOG_GRACE)
            await self._shutdown()
        finally:
            self._closed.set()

    def _flush_failure_notice(self) -> None:
        data = self._connection.data_to_send()
        if data:
            try:
                self._stream.write(data)
            except TransportError:
                _log.debug("peer already gone; could not tell it why the session failed")

    async def _shutdown(self) -> None:
        if self.unhandled > len(self._unhandled_warned):
            _log.warning(
                "ignored %d message(s) from %s in all that no handler takes",
                self.unhandled,
                self.peer_name or "peer",
            )
        if self._deadline_timer is not None:
            self._deadline_timer.cancel()
            self._deadline_timer = None
        error = self.close_error or ConnectionClosed("session closed")
        for method, future in self._pending.values():
            if not future.done():
                future.set_exception(_pending_failure(method, error))
        self._pending.clear()
        if inspect.iscoroutine(self._unfinished):
            self._unfinished.close()  # the drainer never got to it: no "never awaited" warning
        self._unfinished = None
        tasks: list[asyncio.Task[None]] = list(self._serving.values())
        current = asyncio.current_task()
        for task in (self._event_worker, self._reader, self._drainer):
            if task is not None and task is not current:
                tasks.append(task)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        await self._stream.aclose()

    def _dispatch_messages(self, messages: list[Message]) -> None:
        """Handle ``messages`` in order; the first that needs awaiting starts the backlog."""
        if self._backlog or self._drainer is not None:
            self._backlog.extend(messages)
            return
        for index, message in enumerate(messages):
            if not self._dispatch_now(message):
                self._backlog.extend(messages[index:])
                self._start_drainer()
                return

    def _start_drainer(self) -> None:
        self._stream.pause_reading()
        self._drainer = asyncio.get_running_loop().create_task(
            self._drain_backlog(), name=f"isoplug-peer-backlog:{self.peer_name}"
        )

    async def _drain_backlog(self) -> None:
        backlog = self._backlog
        try:
            while backlog:
                message = backlog[0]
                # A message already dispatched may have left work to await (then it is not
                # dispatched again); one that could not be dispatched at all is awaited whole.
                if (
                    self._unfinished is None
                    and not self._dispatch_now(message)
                    and self._unfinished is None
                ):
                    await self._dispatch_waiting(message)
                unfinished = self._unfinished
                if unfinished is not None:
                    self._unfinished = None
                    try:
                        await unfinished
                    except Exception:
                        _log.exception("log batch handler failed")
                backlog.popleft()
        except Exception:
            _log.exception("session with %s failed unexpectedly", self.peer_name or "peer")
            self._end_session(ConnectionBroken("session failed while dispatching"))
        finally:
            self._drainer = None
        if not self._closing:
            self._stream.resume_reading()

    def _dispatch_now(self, message: Message) -> bool:
        """Handle ``message`` without waiting; False if the next message must wait: either
        nothing was done (see :meth:`_dispatch_waiting`), or :attr:`_unfinished` is set."""
        message_type = type(message)
        if message_type is Response or message_type is ErrorResponse:
            assert isinstance(message, Response | ErrorResponse)
            pending = self._pending.get(message.id)
            if pending is not None and not pending[1].done():
                pending[1].set_result(message)
            # else: the caller gave up (timeout or cancel) before the answer came.
            return True
        if message_type is Request:
            assert isinstance(message, Request)
            return self._dispatch_request(message)
        if message_type is Event:
            assert isinstance(message, Event)
            return self._dispatch_event(message)
        if message_type is Cancel:
            assert isinstance(message, Cancel)
            task = self._serving.get(message.id)
            if task is not None:
                task.cancel()
            return True
        if message_type is LogBatch:
            assert isinstance(message, LogBatch)
            return self._dispatch_log_batch(message)
        # Goodbye: the connection is now CLOSED; _on_data ends the session.
        return True

    async def _dispatch_waiting(self, message: Message) -> None:
        """Handle a message that :meth:`_dispatch_now` could not handle without waiting."""
        if type(message) is Request:
            assert isinstance(message, Request)
            while len(self._serving) >= MAX_CONCURRENT_INCOMING:
                self._slot_freed.clear()
                await self._slot_freed.wait()
            self._dispatch_request(message)
        elif type(message) is Event:
            assert isinstance(message, Event)
            registered = self._event_handlers[message.method]
            assert self._event_queue is not None
            await self._event_queue.put((registered, message))

    def _dispatch_request(self, request: Request) -> bool:
        registered = self._handlers.get(request.method)
        if registered is None:
            self._answer_error(
                request.id,
                ErrorInfo(
                    code="method_not_found",
                    type="isoplug.errors.MethodNotFound",
                    message=f"no handler for method {request.method!r}",
                ),
            )
            return True
        if not registered.is_async:
            self._answer_inline(request, registered)
            return True
        if len(self._serving) >= MAX_CONCURRENT_INCOMING:
            return False
        task = asyncio.get_running_loop().create_task(self._serve_async(request, registered))
        self._serving[request.id] = task
        return True

    def _answer_inline(self, request: Request, registered: _Registered) -> None:
        try:
            params = decode_value(request.params, registered.params_type)
        except (msgspec.ValidationError, msgspec.DecodeError) as exc:
            self._answer_error(request.id, _error_info("invalid_params", exc))
            return
        try:
            result = registered.function(params)
        except Exception as exc:
            self._answer_error(request.id, _error_info("error", exc))
            return
        self._answer_result(request, result)

    async def _serve_async(self, request: Request, registered: _Registered) -> None:
        try:
            try:
                params = decode_value(request.params, registered.params_type)
            except (msgspec.ValidationError, msgspec.DecodeError) as exc:
                self._answer_error(request.id, _error_info("invalid_params", exc))
                return
            try:
                result = await registered.function(params)
            except asyncio.CancelledError as exc:
                if self._closing:
                    raise
                self._answer_error(request.id, _error_info("cancelled", exc))
                return
            except Exception as exc:
                self._answer_error(request.id, _error_info("error", exc))
                return
            self._answer_result(request, result)
        finally:
            self._serving.pop(request.id, None)
            self._slot_freed.set()

    def _answer_result(self, request: Request, result: Any) -> None:
        try:
            encoded = encode_value(result)
        except LocalProtocolError as exc:
            self._answer_error(request.id, _error_info("error", exc))
            return
        self._send_answer(Response(id=request.id, result=encoded))

    def _answer_error(self, request_id: int, info: ErrorInfo) -> None:
        self._send_answer(ErrorResponse(id=request_id, error=info))

    def _send_answer(self, answer: Response | ErrorResponse) -> None:
        if self._connection.state is not ConnectionState.OPEN:
            return  # The session ended while the handler ran; nobody is listening.
        try:
            self._send(answer)
        except LocalProtocolError as exc:
            # Too large for a frame, typically: the caller must still get an answer.
            _log.warning("cannot send the answer to request %d: %s", answer.id, exc)
            self._send(
                ErrorResponse(
                    id=answer.id,
                    error=ErrorInfo(
                        code="error", type=_qualified_name(type(exc)), message=str(exc)
                    ),
                )
            )
        except TransportError as exc:
            _log.debug("could not send the answer to request %d: %s", answer.id, exc)

    def _dispatch_event(self, event: Event) -> bool:
        registered = self._event_handlers.get(event.method)
        if registered is None:
            # The capped, cleaned name: the set never keeps the peer's own (maybe huge) text.
            self._unhandled(f"event {clean_text(event.method, MAX_PEER_NAME_CHARS)!r}")
            return True
        if not registered.is_async:
            self._run_event_handler(registered, event)
            return True
        if self._event_queue is None:
            self._event_queue = asyncio.Queue(_EVENT_QUEUE_SIZE)
            self._event_worker = asyncio.get_running_loop().create_task(self._run_async_events())
        if self._event_queue.full():
            return False
        self._event_queue.put_nowait((registered, event))
        return True

    def _unhandled(self, what: str) -> None:
        """Count a message no handler takes; warn about each ``what`` once, up to a cap."""
        self.unhandled += 1
        warned = self._unhandled_warned
        if what in warned or self._unhandled_capped:
            return
        if len(warned) == MAX_UNHANDLED_WARNINGS:
            self._unhandled_capped = True
            _log.warning(
                "%s sends more kinds of messages than this side handles; from now on they are "
                "ignored and counted, not reported one by one",
                self.peer_name or "peer",
            )
            return
        warned.add(what)
        _log.warning(
            "no handler for %s from %s; ignoring it (reported once)",
            what,
            self.peer_name or "peer",
        )

    def _run_event_handler(self, registered: _Registered, event: Event) -> None:
        try:
            registered.function(decode_value(event.params, registered.params_type))
        except Exception:
            _log.exception("handler for event %r failed", clean_text(event.method, 200))

    async def _run_async_events(self) -> None:
        assert self._event_queue is not None
        while True:
            registered, event = await self._event_queue.get()
            try:
                await registered.function(decode_value(event.params, registered.params_type))
            except Exception:
                _log.exception("handler for event %r failed", clean_text(event.method, 200))

    def _dispatch_log_batch(self, batch: LogBatch) -> bool:
        handler = self._log_batch_handler
        if handler is None:
            self._unhandled("log batches")
            return True
        try:
            unfinished = handler(batch)
        except Exception:
            _log.exception("log batch handler failed")
            return True
        if unfinished is None:
            return True
        # Awaited by the backlog drainer while reading is paused: a flood is replayed in
        # slices and the sender is slowed down by the socket instead of our memory growing.
        self._unfinished = unfinished
        return False


def _pending_failure(method: str, error: IsoplugError) -> IsoplugError:
    text = f"{method!r} has no answer: {error}"
    if isinstance(error, ConnectionClosed):
        return ConnectionClosed(text)
    return ConnectionBroken(text)


async def serve(
    address: str | Address,
    token: str | TokenLookup,
    on_peer: Callable[[Peer], Awaitable[None]],
    *,
    handlers: Mapping[str, Handler] | Callable[[Hello], Mapping[str, Handler]] | None = None,
    name: str = "",
    ssl_context: Any = None,
    handshake_timeout: float = DEFAULT_HELLO_TIMEOUT,
    max_handshakes: int = DEFAULT_MAX_HANDSHAKES,
    default_timeout: float | None = DEFAULT_REQUEST_TIMEOUT,
    admit: PeerAdmission | None = None,
) -> Listener:
    """Listen on ``address``; for every connection that passes the handshake, run ``on_peer``.

    ``token`` is the token every client must present, or a function that returns the token
    expected from the client that sent a given hello (``None``: unknown client, refused); see
    :func:`~isoplug.rpc.server_handshake`.

    ``handlers`` is a mapping, or a function that picks the mapping from the client's hello;
    handlers are in place before the first message is read. The peer is closed when
    ``on_peer`` returns. Refused connections (wrong token, wrong version, no hello in time,
    garbage) are logged at WARNING on the ``isoplug.rpc`` logger and never reach ``on_peer``.
    ``admit`` may refuse a client whose token matched, before any handler sees a message of it
    (see :data:`~isoplug.rpc.handshake.PeerAdmission`).

    Until its hello is checked, a connection has ``handshake_timeout`` for the whole handshake
    (TLS included) and frames of at most 64 KiB; at most ``max_handshakes`` connections are in
    their handshake at once, and past it a new one gets a ``busy`` reject at once (see
    :mod:`isoplug.rpc.gate`).
    """

    async def handle(stream: Stream) -> None:
        if not gate.enter():
            gate.turn_away(gate.full_reason)
            # At once, before reading: the stream is closed when this returns.
            with contextlib.suppress(TransportError):
                stream.write(busy_reject(f"{gate}: {gate.full_reason}"))
            return
        gate.admitted()
        credentials = stream.peer_credentials
        refusal: IsoplugError | None = None
        try:
            connection, early = await server_handshake(
                stream,
                token,
                name=name,
                timeout=handshake_timeout,
                admit=bind_admission(admit, credentials),
            )
        except IsoplugError as exc:
            refusal = exc
        finally:
            gate.leave()
        if refusal is not None:
            # Said once the seat is free: whoever reads the warning may connect at once.
            gate.failed(refusal, peer_pid_text(credentials))
            return
        assert connection.peer_hello is not None
        chosen = handlers(connection.peer_hello) if callable(handlers) else handlers
        peer = Peer(
            stream,
            connection,
            handlers=chosen,
            early_messages=early,
            default_timeout=default_timeout,
        )
        try:
            await on_peer(peer)
        finally:
            await peer.aclose()

    gate = HandshakeGate(name, max_handshakes)
    listener = await listen(
        address, handle, ssl_context=ssl_context, ssl_handshake_timeout=handshake_timeout
    )
    gate.address = listener.address
    listener.on_close.append(gate.close)
    return listener
