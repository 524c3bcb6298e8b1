"""What a peer does with the events it receives: their handlers, run inline or in order.

Plain-function event handlers run inline, in order of arrival; ``async def`` event handlers run
one at a time, in order, in a separate task, so that they may await requests on this same peer
without blocking the reading of the response. At most ``_EVENT_QUEUE_SIZE`` (1,024) wait;
past it an event is dropped (counted, and warned about at most once a minute), never read
later: reading never pauses for events. Part of the
:class:`~isoplug.rpc.dispatch.Dispatcher`.
"""

from __future__ import annotations

import asyncio
from typing import Any

from isoplug.log_guard import guarded_logger
from isoplug.rpc.handlers import Handler, Registered
from isoplug.rpc.unhandled import MAX_EVENT_NAME_CHARS, Unhandled
from isoplug.wire import Event, decode_value
from isoplug.wire.sanitize import clean_text

__all__ = ["EventDispatch"]

_log = guarded_logger("isoplug.rpc")

#: Async event handlers queue up to this many events; past it, events are dropped (counted).
_EVENT_QUEUE_SIZE = 1024
#: Dropped events are warned about at most once per this many seconds.
_DROP_REPORT_INTERVAL = 60.0


class EventDispatch:
    """One session's event handlers, the worker running the ``async`` ones, and the count of
    events dropped because that worker was too far behind."""

    def __init__(self, unhandled: Unhandled, peer_name: str) -> None:
        self._unhandled = unhandled
        self._peer_name = peer_name
        self._loop = asyncio.get_running_loop()
        self._handlers: dict[str, Registered] = {}
        self._queue: asyncio.Queue[tuple[Registered, Event]] | None = None
        #: The task running the ``async`` handlers, once one was needed.
        self.worker: asyncio.Task[None] | None = None
        #: Events dropped because their async handlers' queue was full.
        self.dropped = 0
        self._dropped_reported = 0
        self._next_drop_report = 0.0

    def on_event(self, method: str, handler: Handler, params_type: Any) -> None:
        self._handlers[method] = Registered(handler, params_type)

    def dispatch(self, event: Event) -> bool:
        """Hand ``event`` to its handler (or drop it, counted); True: never waits."""
        registered = self._handlers.get(event.method)
        if registered is None:
            # The capped, cleaned name: the set never keeps the peer's own (maybe huge) text.
            self._unhandled.add(f"event {clean_text(event.method, MAX_EVENT_NAME_CHARS)!r}")
            return True
        if not registered.is_async:
            self._run_handler(registered, event)
            return True
        if self._queue is None:
            self._queue = asyncio.Queue(_EVENT_QUEUE_SIZE)
            self.worker = self._loop.create_task(self._run_async_events())
        if self._queue.full():
            self._drop(event)
            return True
        self._queue.put_nowait((registered, event))
        return True

    def report_dropped(self) -> None:
        """Say how many events were dropped, if some went unreported (session's end)."""
        if self.dropped > self._dropped_reported:
            _log.warning(
                "dropped %d event(s) from %s in all: their handlers' queue was full",
                self.dropped,
                self._peer_name or "peer",
            )

    def _drop(self, event: Event) -> None:
        """The async event handlers are ``_EVENT_QUEUE_SIZE`` events behind: drop ``event``
        rather than stop reading (the requests and cancels behind it would wait too)."""
        self.dropped += 1
        now = self._loop.time()
        if now < self._next_drop_report:
            return
        self._next_drop_report = now + _DROP_REPORT_INTERVAL
        _log.warning(
            "%s sends events faster than their handlers take them: %d dropped so far, the "
            "latest %r (at most %d wait; this is said at most once a minute)",
            self._peer_name or "peer",
            self.dropped,
            clean_text(event.method, MAX_EVENT_NAME_CHARS),
            _EVENT_QUEUE_SIZE,
        )
        self._dropped_reported = self.dropped

    def _run_handler(self, registered: Registered, event: Event) -> None:
        try:
            registered.function(decode_value(event.params, registered.params_type))
        except Exception:
            _log.exception(
                "handler for event %r failed", clean_text(event.method, MAX_EVENT_NAME_CHARS)
            )

    async def _run_async_events(self) -> None:
        assert self._queue is not None
        while True:
            registered, event = await self._queue.get()
            try:
                await registered.function(decode_value(event.params, registered.params_type))
            except Exception:
                _log.exception(
                    "handler for event %r failed", clean_text(event.method, MAX_EVENT_NAME_CHARS)
                )
