"""What a peer does with the requests it receives: serving them, and sending their answers.

A request handler takes the decoded params and returns the result (anything msgpack can
carry). ``async def`` handlers run in their own task, so they may take their time and be
cancelled; plain functions run inline and must be quick. At most ``max_running`` requests
(256 by default) are served at once; past it they wait in a bounded queue, or are refused at
once (:mod:`isoplug.rpc.admission`). A request of a *control* handler is served at once
whatever the load. Raising an exception sends an error response carrying the exception's
type, message and traceback; a handler marked with
:func:`~isoplug.rpc.handlers.private_errors` never sends a traceback. Part of the
:class:`~isoplug.rpc.dispatch.Dispatcher`.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Callable
from typing import Any

import msgspec

from isoplug.errors import IsoplugError, LocalProtocolError, TransportError
from isoplug.log_guard import guarded_logger
from isoplug.rpc.admission import DEFAULT_LIMITS, NOT_STARTED_TYPE, Admission, AdmissionLimits
from isoplug.rpc.handlers import Handler, Registered
from isoplug.rpc.remote_errors import qualified_name
from isoplug.rpc.unhandled import MAX_EVENT_NAME_CHARS, MAX_UNHANDLED_WARNINGS
from isoplug.wire import (
    Cancel,
    Connection,
    ConnectionState,
    ErrorInfo,
    ErrorResponse,
    Message,
    Request,
    Response,
    decode_value,
    encode_value,
)
from isoplug.wire.sanitize import clean_text

__all__ = ["MAX_CONCURRENT_INCOMING", "RequestServer", "eager_start"]

_log = guarded_logger("isoplug.rpc")

#: At most this many incoming requests run at once by default; past it they wait in a bounded
#: queue, or are refused (see isoplug.rpc.admission): tasks never pile up in memory, and the
#: reader never stops (a cancel or a shutdown request is always read).
MAX_CONCURRENT_INCOMING = DEFAULT_LIMITS.max_running
#: Python 3.12+: starts a task eagerly, running its first step at once. Used for the tasks
#: that serve requests when the loop has no task factory of its own (a program's factory is
#: left to make them), so that a handler that answers without waiting costs no task step in
#: the loop's next round.
eager_start: Callable[..., asyncio.Task[Any]] | None = getattr(asyncio, "eager_task_factory", None)


class RequestServer:
    """One session's request handlers, the tasks serving requests, the queue of those waiting
    for a place, and the answers. ``send``, ``closing``: see
    :class:`~isoplug.rpc.dispatch.Dispatcher`."""

    def __init__(
        self,
        connection: Connection,
        *,
        send: Callable[[Message], None],
        closing: Callable[[], bool],
        peer_name: str,
        limits: AdmissionLimits = DEFAULT_LIMITS,
    ) -> None:
        self._connection = connection
        self._send = send
        self._is_closing = closing
        self._peer_name = peer_name
        self._loop = asyncio.get_running_loop()
        self._handlers: dict[str, Registered] = {}
        #: The tasks serving requests, by request id.
        self.serving: dict[int, asyncio.Task[None]] = {}
        #: Bytes of params of the requests started and not finished (see _finished), in all
        #: and by request id.
        self.serving_bytes = 0
        self._sizes: dict[int, int] = {}
        #: Requests waiting for a place (see isoplug.rpc.admission); its queue is read
        #: directly where every request passes, its truth costing no call.
        self.admission = Admission(limits)
        self._waiting = self.admission.queued
        #: Places for requests: the limit's, 0 once admission is closed (see close_admission).
        self.max_running = limits.max_running
        #: Queued requests start in a copy of this, not in the context of the task whose end
        #: freed their place (a plugin's context variables must not leak into the next call).
        self._context = contextvars.copy_context()
        #: Requests a private handler failed (see _answer_failure): logged up to a cap.
        self._private_failures = 0

    def register(
        self, method: str, handler: Handler, params_type: Any, control: bool = False
    ) -> None:
        self._handlers[method] = Registered(handler, params_type, control)

    def set_limits(self, limits: AdmissionLimits) -> None:
        """Serve at most ``limits.max_running`` requests at once from now on, and queue so."""
        self.admission.limits = limits
        if self.admission.closed_reason is None:
            self.max_running = limits.max_running
            self._start_queued()

    def close_admission(self, reason: str) -> None:
        """Start no more requests (control handlers' aside): answer the queued ones, and every
        later one, at once with a cancellation saying ``reason`` and that it never started."""
        self.max_running = 0
        for request_id, info in self.admission.close(reason):
            self._answer_error(request_id, info)

    def cancel(self, message: Cancel) -> None:
        """Cancel the request ``message`` names: its task, or its place in the queue."""
        task = self.serving.get(message.id)
        if task is not None:
            task.cancel()
            # Cancelled before its first step, a task never runs its coroutine: neither the
            # answer nor the end of its request (see _serve_async), which this then gives.
            task.add_done_callback(lambda _: self._never_ran(message.id))
        elif self._waiting:
            # Not started yet: taken out of the queue, and answered at once.
            info = self.admission.withdraw(message.id, len(self.serving))
            if info is not None:
                self._answer_error(message.id, info)

    def dispatch(self, request: Request, eager: bool = False) -> bool:
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
        size = len(request.params)
        if not registered.control and (
            len(self.serving) >= self.max_running
            or (
                self.serving and self.serving_bytes + size > self.admission.limits.max_running_bytes
            )
        ):
            refusal = self.admission.offer(request, len(self.serving))
            if refusal is not None:
                self._answer_error(request.id, refusal)
            return True
        self.serving_bytes += size
        self._sizes[request.id] = size
        serve = self._serve_async(request, registered)
        if eager:
            assert eager_start is not None
            # A handler that answers without waiting (most do) is done here: no task step in
            # the loop's next round, no round for its answer to wait for.
            task = eager_start(self._loop, serve)
            if task.done():
                return True  # its end took its bytes off again
        else:
            task = self._loop.create_task(serve)
        self.serving[request.id] = task
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
            self._finished(request.id)

    def _finished(self, request_id: int) -> bool:
        """The request's task is done: its place and bytes are free. False if it was so
        already (once only)."""
        self.serving.pop(request_id, None)
        size = self._sizes.pop(request_id, None)
        if size is None:
            return False
        self.serving_bytes -= size
        if self._waiting:
            self._start_queued()
        return True

    def _never_ran(self, request_id: int) -> None:
        if self._finished(request_id) and not self._is_closing():
            self._answer_error(
                request_id,
                ErrorInfo(
                    code="cancelled",
                    type=NOT_STARTED_TYPE,
                    message="cancelled before its handler started",
                ),
            )

    def _start_queued(self) -> None:
        """Places are free: start the requests that waited longest, in order."""
        if self._is_closing():
            return  # the session is ending: nobody would get their answers
        while len(self.serving) < self.max_running:
            request = self.admission.take(self.serving_bytes if self.serving else 0)
            if request is None:
                return
            registered = self._handlers.get(request.method)
            if registered is None or not registered.is_async:
                self.dispatch(request)  # its handler changed: answered at once
                continue
            self.serving_bytes += len(request.params)
            self._sizes[request.id] = len(request.params)
            self.serving[request.id] = self._loop.create_task(
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
