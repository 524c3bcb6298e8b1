"""Accounting for an ended log connection on the receiver's event loop, in slices.

An event loop's :class:`~isoplug.logs.LogReceiver` accounts for some connections' ends later
(:mod:`isoplug.logs.pending_ends`): when their sender reconnects (on the loop, as the new
connection's first batch is replayed), exits (seen by the watcher thread) or the receiver
closes (up to 256 ends at once). Each replays what the old ring gives back: up to a ring's
4 MiB of records. In one piece on the loop that stalled the host's loop for as long; so a
:class:`LoopSettler` runs each as a task of the loop that replays in slices and yields
between them (:meth:`~isoplug.logs.replay_end.ReplayEnd.finish_async`), as a connection's
batches are replayed (:meth:`~isoplug.logs.replay.LogReplayer.receive`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from isoplug.log_guard import guarded_logger

__all__ = ["LoopSettler"]

_log = guarded_logger("isoplug.logs")


class LoopSettler:
    """Runs ended connections' accounting on ``loop`` as tasks, and waits for them."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._tasks: set[asyncio.Task[None]] = set()

    def run(
        self, settle: Callable[[], None], settle_async: Callable[[], Coroutine[Any, Any, None]]
    ) -> Awaitable[None] | None:
        """Account for an end: ``settle_async()`` as a task of the loop, returned when called
        on the loop's thread (a reconnection's first batch waits for it: the old records come
        first); from another thread it is handed to the loop. Once the loop is closed,
        ``settle()`` at once, on the caller's thread: the accounting must be done somewhere,
        and that thread is not the loop's."""
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self._loop:
            return self._start(settle_async)
        try:
            self._loop.call_soon_threadsafe(self._start, settle_async)
        except RuntimeError:
            settle()
        return None

    async def wait(self) -> None:
        """Until every accounting started so far, and any it led to, is done."""
        while self._tasks:
            await asyncio.wait(list(self._tasks))

    def _start(self, settle_async: Callable[[], Coroutine[Any, Any, None]]) -> asyncio.Task[None]:
        task = self._loop.create_task(settle_async(), name="isoplug-log-end")
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and (error := task.exception()) is not None:
            # The end's own reports are guarded (handler errors are counted there): this is
            # a bug of ours, said with its traceback rather than lost with the task.
            _log.error("accounting for an ended log connection failed", exc_info=error)
