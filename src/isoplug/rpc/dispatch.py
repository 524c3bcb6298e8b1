"""What a peer does with each message the other side sends: answers, requests, events, logs.

:class:`~isoplug.rpc.Peer` owns the session (opening, calling, closing); its
:class:`Dispatcher` owns everything between a decoded message and the code that handles it:
the registered handlers, the tasks serving requests (and the queue of those waiting for a
place: :mod:`isoplug.rpc.admission`), the worker running ``async`` event handlers, the count
of messages no handler takes, and the backlog that pauses reading while a log batch's replay
is awaited. It is separate so that the peer reads as one session's life and
this as one message's path; the peer hands it what it needs (its stream, connection, pending
calls and three callbacks) at construction.

Handlers
--------
A request handler takes the decoded params and returns the result (anything msgpack can
carry). ``async def`` handlers run in their own task, so they may take their time and be
cancelled; plain functions run inline and must be quick. At most ``max_running`` requests
(256 by default) are served at once; past it they wait in a bounded queue, or are refused at
once (:mod:`isoplug.rpc.admission`). Reading never pauses for requests: a cancel, or a
request of a *control* handler (served at once whatever the load), is always read. Raising an
exception sends an error response carrying the exception's type, message and traceback; the
caller gets :class:`~isoplug.errors.RemoteError`. A handler marked with
:func:`private_errors` never sends a traceback, whatever failed (the handler, its params, the
encoding of its result, a cancellation): the side whose code must stay its own (the host,
towards a runner) marks its handlers so.

Event handlers have the same signature; their return value is ignored. Plain-function event
handlers run inline, in order of arrival; ``async def`` event handlers run one at a time, in
order, in a separate task, so that they may await requests on this same peer without blocking
the reading of the response. At most 1,024 wait; past it an event is dropped (counted, and
warned about at most once a minute), never read later: reading never pauses for events.
"""

from __future__ import annotations

import asyncio
import collections
import contextvars
import inspect
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Final

import msgspec

from isoplug.errors import ConnectionBroken, IsoplugError, LocalProtocolError, TransportError
from isoplug.rpc.admission import DEFAULT_LIMITS, Admission, AdmissionLimits
from isoplug.rpc.handlers import Handler, LogBatchHandler, Registered, private_errors
from isoplug.rpc.pending import PendingCalls
from isoplug.rpc.remote_errors import qualified_name
from isoplug.transport import Stream
from isoplug.wire import (
    Cancel,
    Connection,
    ConnectionState,
    ErrorInfo,
    ErrorResponse,
    Event,
    LogBatch,
    Message,
    Request,
    Response,
    decode_value,
    encode_value,
)
from isoplug.wire.sanitize import clean_text

__all__ = [
    "MAX_UNHANDLED_WARNINGS",
    "Dispatcher",
    "Handler",
    "LogBatchHandler",
    "private_errors",
]

_log = logging.getLogger("isoplug.rpc")

#: Cap for an event's name in this side's records (after clean_text).
MAX_EVENT_NAME_CHARS: Final = 200
#: Distinct messages with no handler (events by name, log batches) a peer warns about, each
#: once; past them such messages are only counted, and the count said at the session's end:
#: made-up event names can neither flood this side's log nor grow its memory.
MAX_UNHANDLED_WARNINGS: Final = 16
#: At most this many incoming requests run at once by default; past it they wait in a bounded
#: queue, or are refused (see isoplug.rpc.admission): tasks never pile up in memory, and the
#: reader never stops (a cancel or a shutdown request is always read).
MAX_CONCURRENT_INCOMING = DEFAULT_LIMITS.max_running
#: Async event handlers queue up to this many events; past it, events are dropped (counted).
_EVENT_QUEUE_SIZE = 1024
#: Dropped events are warned about at most once per this many seconds.
_DROP_REPORT_INTERVAL = 60.0
#: Python 3.12+: starts a task eagerly, running its first step at once. Used for the tasks
#: that serve requests when the loop has no task factory of its own (a program's factory is
#: left to make them), so that a handler that answers without waiting costs no task step in
#: the loop's next round.
_eager_start: Callable[..., asyncio.Task[Any]] | None = getattr(asyncio, "eager_task_factory", None)


class Dispatcher:
    """Hands every message a :class:`~isoplug.rpc.Peer` receives to whoever takes it.

    ``pending`` are the peer's calls awaiting answers (answers are delivered to them);
    ``send`` sends one message; ``closing`` says whether the peer is ending the session (a
    handler cancelled then gets no answer); ``hold_answers(until_next_round)`` asks the peer
    to gather the answers sent into one write, until the loop's next round is through or
    until ``release_answers()``; ``fail`` ends the session when dispatching itself failed.
    """

    def __init__(
        self,
        stream: Stream,
        connection: Connection,
        pending: PendingCalls,
        *,
        send: Callable[[Message], None],
        closing: Callable[[], bool],
        hold_answers: Callable[[bool], None],
        release_answers: Callable[[], None],
        fail: Callable[[ConnectionBroken], None],
        peer_name: str,
        limits: AdmissionLimits = DEFAULT_LIMITS,
    ) -> None:
        self._stream = stream
        self._connection = connection
        self._pending = pending
        self._send = send
        self._is_closing = closing
        self._hold_answers = hold_answers
        self._release_answers = release_answers
        self._loop = asyncio.get_running_loop()
        self._fail = fail
        self._peer_name = peer_name
        self._handlers: dict[str, Registered] = {}
        self._event_handlers: dict[str, Registered] = {}
        self._log_batch_handler: LogBatchHandler | None = None
        self._serving: dict[int, asyncio.Task[None]] = {}
        #: Requests waiting for a place (see isoplug.rpc.admission); its queue is read
        #: directly where every request passes, its truth costing no call.
        self._admission = Admission(limits)
        self._waiting = self._admission.queued
        #: Places for requests: the limit's, 0 once admission is closed (see close_admission).
        self._max_running = limits.max_running
        #: Queued requests start in a copy of this, not in the context of the task whose end
        #: freed their place (a plugin's context variables must not leak into the next call).
        self._context = contextvars.copy_context()
        self._event_queue: asyncio.Queue[tuple[Registered, Event]] | None = None
        self._event_worker: asyncio.Task[None] | None = None
        #: Messages received that no handler took (see MAX_UNHANDLED_WARNINGS).
        self.unhandled = 0
        #: Events dropped because their async handlers' queue was full.
        self.dropped_events = 0
        self._dropped_reported = 0
        self._next_drop_report = 0.0
        #: What was warned about (by kind, event name capped): never more than the cap.
        self.unhandled_warned: set[str] = set()
        self._unhandled_capped = False
        #: Requests a private handler failed (see _answer_failure): logged up to a cap.
        self._private_failures = 0
        # Messages that arrived while a log batch's replay still needed awaiting; reading is
        # paused until the drainer task has worked through them, in order.
        self._backlog: collections.deque[Message] = collections.deque()
        self._drainer: asyncio.Task[None] | None = None
        # What a log batch handler left to await (the rest of a long replay): the drainer
        # awaits it before the next message.
        self._unfinished: Awaitable[None] | None = None

    # -- handlers ---------------------------------------------------------------------------

    def register(
        self, method: str, handler: Handler, params_type: Any, control: bool = False
    ) -> None:
        self._handlers[method] = Registered(handler, params_type, control)

    def on_event(self, method: str, handler: Handler, params_type: Any) -> None:
        self._event_handlers[method] = Registered(handler, params_type)

    def on_log_batch(self, handler: LogBatchHandler | None) -> None:
        self._log_batch_handler = handler

    # -- admission ----------------------------------------------------------------------------

    @property
    def admission(self) -> Admission:
        """The queue of requests waiting for a place, and its limits."""
        return self._admission

    def set_limits(self, limits: AdmissionLimits) -> None:
        """Serve at most ``limits.max_running`` requests at once from now on, and queue so."""
        self._admission.limits = limits
        if self._admission.closed_reason is None:
            self._max_running = limits.max_running
            self._start_queued()

    def close_admission(self, reason: str) -> None:
        """Start no more requests (control handlers' aside): answer the queued ones, and every
        later one, at once with a cancellation saying ``reason`` and that it never started.
        For a side shutting down, whose running requests are cancelled next."""
        self._max_running = 0
        for request_id, info in self._admission.close(reason):
            self._answer_error(request_id, info)

    # -- the flow of messages ---------------------------------------------------------------

    @property
    def drainer(self) -> asyncio.Task[None] | None:
        """The task working through the backlog, while there is one (reading is paused)."""
        return self._drainer

    def dispatch(self, messages: list[Message]) -> None:
        """Handle ``messages`` in order; the first that needs awaiting starts the backlog."""
        if self._backlog or self._drainer is not None:
            self._backlog.extend(messages)
            return
        if len(messages) == 1 and type(messages[0]) is Response:
            # The answer to a call, alone in its read: the bulk of a caller's traffic.
            self._pending.answer(messages[0])
            return
        eager = _eager_start is not None and self._loop.get_task_factory() is None
        if len(messages) == 1:
            # A request alone in its read, the bulk of a callee's traffic.
            message = messages[0]
            if type(message) is Request and len(self._serving) < self._max_running:
                # Its answer has no other to go out with: nothing to hold.
                self._dispatch_request(message, eager)
                return
        serving = len(self._serving)
        if eager:
            # The handlers' first steps run as they are dispatched: what they answer at once
            # goes out together, in one write, once this read is through.
            self._hold_answers(False)
        try:
            for index, message in enumerate(messages):
                if not self._dispatch_now(message, eager):
                    self._backlog.extend(messages[index:])
                    self._start_drainer()
                    break
        finally:
            if eager:
                self._release_answers()
        if not eager and len(self._serving) > serving + 1:
            # The tasks just started take their first step in the loop's next round, one
            # after another: their answers go out together, in one write. (A single task's
            # answer has no other to go out with.)
            self._hold_answers(True)

    def queue(self, messages: list[Message]) -> None:
        """Put ``messages`` in the backlog, for :meth:`drain_queued` to start on."""
        self._backlog.extend(messages)

    def drain_queued(self) -> None:
        """Start working through the backlog, if anything is in it."""
        if self._backlog:
            self._start_drainer()

    def report_unhandled(self) -> None:
        """Say how many messages no handler took, if some went unreported (session's end)."""
        if self.dropped_events > self._dropped_reported:
            _log.warning(
                "dropped %d event(s) from %s in all: their handlers' queue was full",
                self.dropped_events,
                self._peer_name or "peer",
            )
        if self.unhandled > len(self.unhandled_warned):
            _log.warning(
                "ignored %d message(s) from %s in all that no handler takes",
                self.unhandled,
                self._peer_name or "peer",
            )

    def stop(self) -> list[asyncio.Task[None]]:
        """Drop what was left to await; return the tasks to cancel (the backlog's drainer
        aside: see :attr:`drainer`)."""
        if inspect.iscoroutine(self._unfinished):
            self._unfinished.close()  # the drainer never got to it: no "never awaited" warning
        self._unfinished = None
        self._admission.clear()
        tasks: list[asyncio.Task[None]] = list(self._serving.values())
        worker = self._event_worker
        if worker is not None and worker is not asyncio.current_task():
            tasks.append(worker)
        return tasks

    def _start_drainer(self) -> None:
        self._stream.pause_reading()
        self._drainer = asyncio.get_running_loop().create_task(
            self._drain_backlog(), name=f"isoplug-peer-backlog:{self._peer_name}"
        )

    async def _drain_backlog(self) -> None:
        backlog = self._backlog
        try:
            while backlog:
                message = backlog[0]
                # The first one was dispatched already: it left the work awaited here.
                if self._unfinished is None:
                    self._dispatch_now(message)
                unfinished = self._unfinished
                if unfinished is not None:
                    self._unfinished = None
                    try:
                        await unfinished
                    except Exception:
                        _log.exception("log batch handler failed")
                backlog.popleft()
        except Exception:
            _log.exception("session with %s failed unexpectedly", self._peer_name or "peer")
            self._fail(ConnectionBroken("session failed while dispatching"))
        finally:
            self._drainer = None
        if not self._is_closing():
            self._stream.resume_reading()

    def _dispatch_now(self, message: Message, eager: bool = False) -> bool:
        """Handle ``message`` without waiting; False if the next message must wait: a log
        batch's handler left :attr:`_unfinished` to await."""
        message_type = type(message)
        if message_type is Response or message_type is ErrorResponse:
            assert isinstance(message, Response | ErrorResponse)
            self._pending.answer(message)
            return True
        if message_type is Request:
            assert isinstance(message, Request)
            return self._dispatch_request(message, eager)
        if message_type is Event:
            assert isinstance(message, Event)
            return self._dispatch_event(message)
        if message_type is Cancel:
            assert isinstance(message, Cancel)
            task = self._serving.get(message.id)
            if task is not None:
                task.cancel()
            elif self._waiting:
                # Not started yet: taken out of the queue, and answered at once.
                info = self._admission.withdraw(message.id, len(self._serving))
                if info is not None:
                    self._answer_error(message.id, info)
            return True
        if message_type is LogBatch:
            assert isinstance(message, LogBatch)
            return self._dispatch_log_batch(message)
        # Goodbye: the connection is now CLOSED; the peer ends the session.
        return True

    # -- requests ---------------------------------------------------------------------------

    def _dispatch_request(self, request: Request, eager: bool = False) -> bool:
        """Answer ``request``, start its task (``eager``: Python 3.12+'s eager start, the
        handler's first step run now), or queue it when every place is taken. True."""
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
        if len(self._serving) >= self._max_running and not registered.control:
            refusal = self._admission.offer(request, len(self._serving))
            if refusal is not None:
                self._answer_error(request.id, refusal)
            return True
        serve = self._serve_async(request, registered)
        if eager:
            assert _eager_start is not None
            # A handler that answers without waiting (most do) is done here: no task step in
            # the loop's next round, no round for its answer to wait for.
            task = _eager_start(self._loop, serve)
            if task.done():
                return True
        else:
            task = self._loop.create_task(serve)
        self._serving[request.id] = task
        return True

    def _answer_inline(self, request: Request, registered: Registered) -> None:
        try:
            params = decode_value(request.params, registered.params_type)
        except (msgspec.ValidationError, msgspec.DecodeError) as exc:
            self._answer_error(request.id, registered.error("invalid_params", exc))
            return
        try:
            result = registered.function(params)
        except Exception as exc:
            self._answer_failure(request, registered, exc)
            return
        self._answer_result(request, registered, result)

    async def _serve_async(self, request: Request, registered: Registered) -> None:
        try:
            try:
                params = decode_value(request.params, registered.params_type)
            except (msgspec.ValidationError, msgspec.DecodeError) as exc:
                self._answer_error(request.id, registered.error("invalid_params", exc))
                return
            try:
                result = await registered.function(params)
            except asyncio.CancelledError as exc:
                if self._is_closing():
                    raise
                self._answer_error(request.id, registered.error("cancelled", exc))
                return
            except Exception as exc:
                self._answer_failure(request, registered, exc)
                return
            self._answer_result(request, registered, result)
        finally:
            self._serving.pop(request.id, None)
            if self._waiting:
                self._start_queued()

    def _start_queued(self) -> None:
        """Places are free: start the requests that waited longest, in order."""
        if self._is_closing():
            return  # the session is ending: nobody would get their answers
        while len(self._serving) < self._max_running:
            request = self._admission.take()
            if request is None:
                return
            registered = self._handlers.get(request.method)
            if registered is None or not registered.is_async:
                self._dispatch_request(request)  # its handler changed: answered at once
                continue
            self._serving[request.id] = self._loop.create_task(
                self._serve_async(request, registered), context=self._context.copy()
            )

    def _answer_failure(self, request: Request, registered: Registered, exc: Exception) -> None:
        """Answer ``request``, which its handler failed (or whose result cannot be sent)."""
        if registered.private and not isinstance(exc, IsoplugError):
            # The peer gets the type and message only; what it cannot see is said here, as
            # a failure of this side's own code (an isoplug refusal is said where it is made).
            self._private_failures += 1
            if self._private_failures <= MAX_UNHANDLED_WARNINGS:
                _log.warning(
                    "request %r of %s failed here (it is told the type and message only)%s",
                    clean_text(request.method, MAX_EVENT_NAME_CHARS),
                    self._peer_name or "the peer",
                    "; further such failures of this connection are not logged"
                    if self._private_failures == MAX_UNHANDLED_WARNINGS
                    else "",
                    exc_info=exc,
                )
        self._answer_error(request.id, registered.error("error", exc))

    def _answer_result(self, request: Request, registered: Registered, result: Any) -> None:
        try:
            encoded = encode_value(result)
        except LocalProtocolError as exc:
            self._answer_failure(request, registered, exc)
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
                    error=ErrorInfo(code="error", type=qualified_name(type(exc)), message=str(exc)),
                )
            )
        except TransportError as exc:
            _log.debug("could not send the answer to request %d: %s", answer.id, exc)

    # -- events and log batches -------------------------------------------------------------

    def _dispatch_event(self, event: Event) -> bool:
        registered = self._event_handlers.get(event.method)
        if registered is None:
            # The capped, cleaned name: the set never keeps the peer's own (maybe huge) text.
            self._unhandled(f"event {clean_text(event.method, MAX_EVENT_NAME_CHARS)!r}")
            return True
        if not registered.is_async:
            self._run_event_handler(registered, event)
            return True
        if self._event_queue is None:
            self._event_queue = asyncio.Queue(_EVENT_QUEUE_SIZE)
            self._event_worker = asyncio.get_running_loop().create_task(self._run_async_events())
        if self._event_queue.full():
            self._drop_event(event)
            return True
        self._event_queue.put_nowait((registered, event))
        return True

    def _drop_event(self, event: Event) -> None:
        """The async event handlers are ``_EVENT_QUEUE_SIZE`` events behind: drop ``event``
        rather than stop reading (the requests and cancels behind it would wait too)."""
        self.dropped_events += 1
        now = self._loop.time()
        if now < self._next_drop_report:
            return
        self._next_drop_report = now + _DROP_REPORT_INTERVAL
        _log.warning(
            "%s sends events faster than their handlers take them: %d dropped so far, the "
            "latest %r (at most %d wait; this is said at most once a minute)",
            self._peer_name or "peer",
            self.dropped_events,
            clean_text(event.method, MAX_EVENT_NAME_CHARS),
            _EVENT_QUEUE_SIZE,
        )
        self._dropped_reported = self.dropped_events

    def _unhandled(self, what: str) -> None:
        """Count a message no handler takes; warn about each ``what`` once, up to a cap."""
        self.unhandled += 1
        warned = self.unhandled_warned
        if what in warned or self._unhandled_capped:
            return
        if len(warned) == MAX_UNHANDLED_WARNINGS:
            self._unhandled_capped = True
            _log.warning(
                "%s sends more kinds of messages than this side handles; from now on they are "
                "ignored and counted, not reported one by one",
                self._peer_name or "peer",
            )
            return
        warned.add(what)
        _log.warning(
            "no handler for %s from %s; ignoring it (reported once)",
            what,
            self._peer_name or "peer",
        )

    def _run_event_handler(self, registered: Registered, event: Event) -> None:
        try:
            registered.function(decode_value(event.params, registered.params_type))
        except Exception:
            _log.exception(
                "handler for event %r failed", clean_text(event.method, MAX_EVENT_NAME_CHARS)
            )

    async def _run_async_events(self) -> None:
        assert self._event_queue is not None
        while True:
            registered, event = await self._event_queue.get()
            try:
                await registered.function(decode_value(event.params, registered.params_type))
            except Exception:
                _log.exception(
                    "handler for event %r failed", clean_text(event.method, MAX_EVENT_NAME_CHARS)
                )

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
