"""What a peer does with each message the other side sends: answers, requests, events, logs.

:class:`~isoplug.rpc.Peer` owns the session (opening, calling, closing); its
:class:`Dispatcher` owns everything between a decoded message and the code that handles it:
the registered handlers, the tasks serving requests (and the queue of those waiting for a
place: :mod:`isoplug.rpc.admission`), the worker running ``async`` event handlers, the count
of messages no handler takes, and the backlog that pauses reading while a log batch's replay
is awaited. It is separate so that the peer reads as one session's life and
this as one message's path; the peer hands it what it needs (its stream, connection, pending
calls and three callbacks) at construction. This module holds the path itself (the order of
messages, the backlog, log batches); requests are served by :mod:`isoplug.rpc.requests`,
events by :mod:`isoplug.rpc.event_dispatch`, and what no handler takes is counted by
:mod:`isoplug.rpc.unhandled`.

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
import inspect
from collections.abc import Awaitable, Callable
from typing import Any

from isoplug.errors import ConnectionBroken
from isoplug.log_guard import guarded_logger
from isoplug.rpc.admission import DEFAULT_LIMITS, Admission, AdmissionLimits
from isoplug.rpc.event_dispatch import EventDispatch
from isoplug.rpc.handlers import Handler, LogBatchHandler, private_errors
from isoplug.rpc.pending import PendingCalls
from isoplug.rpc.requests import MAX_CONCURRENT_INCOMING, RequestServer, eager_start
from isoplug.rpc.unhandled import MAX_EVENT_NAME_CHARS, MAX_UNHANDLED_WARNINGS, Unhandled
from isoplug.transport import Stream
from isoplug.wire import (
    Cancel,
    Connection,
    ErrorResponse,
    Event,
    LogBatch,
    Message,
    Request,
    Response,
)

__all__ = [
    "MAX_CONCURRENT_INCOMING",
    "MAX_EVENT_NAME_CHARS",
    "MAX_UNHANDLED_WARNINGS",
    "Dispatcher",
    "Handler",
    "LogBatchHandler",
    "private_errors",
]

_log = guarded_logger("isoplug.rpc")


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
        self._pending = pending
        self._is_closing = closing
        self._hold_answers = hold_answers
        self._release_answers = release_answers
        self._loop = asyncio.get_running_loop()
        self._fail = fail
        self._peer_name = peer_name
        self._requests = RequestServer(
            connection, send=send, closing=closing, peer_name=peer_name, limits=limits
        )
        #: The same dict as the request server's: read where every request passes.
        self._serving = self._requests.serving
        self._unhandled = Unhandled(peer_name)
        self._events = EventDispatch(self._unhandled, peer_name)
        self._log_batch_handler: LogBatchHandler | None = None
        # Messages that arrived while a log batch's replay still needed awaiting; reading is
        # paused until the drainer task has worked through them, in order.
        self._backlog: collections.deque[Message] = collections.deque()
        self._drainer: asyncio.Task[None] | None = None
        # What a log batch handler left to await (the rest of a long replay): the drainer
        # awaits it before the next message.
        self._unfinished: Awaitable[None] | None = None

    @property
    def unhandled(self) -> int:
        """Messages received that no handler took (see MAX_UNHANDLED_WARNINGS)."""
        return self._unhandled.count

    @property
    def unhandled_warned(self) -> set[str]:
        """What was warned about (by kind, event name capped): never more than the cap."""
        return self._unhandled.warned

    @property
    def dropped_events(self) -> int:
        """Events dropped because their async handlers' queue was full."""
        return self._events.dropped

    # -- handlers ---------------------------------------------------------------------------

    def register(
        self, method: str, handler: Handler, params_type: Any, control: bool = False
    ) -> None:
        self._requests.register(method, handler, params_type, control)

    def on_event(self, method: str, handler: Handler, params_type: Any) -> None:
        self._events.on_event(method, handler, params_type)

    def on_log_batch(self, handler: LogBatchHandler | None) -> None:
        self._log_batch_handler = handler

    # -- admission ----------------------------------------------------------------------------

    @property
    def admission(self) -> Admission:
        """The queue of requests waiting for a place, and its limits."""
        return self._requests.admission

    def set_limits(self, limits: AdmissionLimits) -> None:
        """Serve at most ``limits.max_running`` requests at once from now on, and queue so."""
        self._requests.set_limits(limits)

    def close_admission(self, reason: str) -> None:
        """Start no more requests (control handlers' aside): answer the queued ones, and every
        later one, at once with a cancellation saying ``reason`` and that it never started.
        For a side shutting down, whose running requests are cancelled next."""
        self._requests.close_admission(reason)

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
        if len(messages) == 1:
            message = messages[0]
            kind = type(message)
            if kind is Response:
                # The answer to a call, alone in its read: the bulk of a caller's traffic.
                self._pending.answer(message)  # type: ignore[arg-type]
                return
            # A request alone in its read, the bulk of a callee's traffic.
            if kind is Request and len(self._serving) < self._requests.max_running:
                # Its answer has no other to go out with: nothing to hold.
                self._requests.dispatch(
                    message,  # type: ignore[arg-type]
                    eager_start is not None and self._loop.get_task_factory() is None,
                )
                return
        eager = eager_start is not None and self._loop.get_task_factory() is None
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
        self._events.report_dropped()
        self._unhandled.report()

    def stop(self) -> list[asyncio.Task[None]]:
        """Drop what was left to await; return the tasks to cancel (the backlog's drainer
        aside: see :attr:`drainer`)."""
        if inspect.iscoroutine(self._unfinished):
            self._unfinished.close()  # the drainer never got to it: no "never awaited" warning
        self._unfinished = None
        self._requests.admission.clear()
        tasks: list[asyncio.Task[None]] = list(self._serving.values())
        worker = self._events.worker
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
            return self._requests.dispatch(message, eager)
        if message_type is Event:
            assert isinstance(message, Event)
            return self._events.dispatch(message)
        if message_type is Cancel:
            assert isinstance(message, Cancel)
            self._requests.cancel(message)
            return True
        if message_type is LogBatch:
            assert isinstance(message, LogBatch)
            return self._dispatch_log_batch(message)
        # Goodbye: the connection is now CLOSED; the peer ends the session.
        return True

    # -- log batches --------------------------------------------------------------------------

    def _dispatch_log_batch(self, batch: LogBatch) -> bool:
        handler = self._log_batch_handler
        if handler is None:
            self._unhandled.add("log batches")
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
