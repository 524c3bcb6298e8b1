"""The worker threads that run a runner's sync plugin methods and event handlers.

``asyncio.to_thread`` would hide what the host needs to know: a call whose caller gave up
(its timeout passed) is cancelled in the event loop, but its thread runs on, taking a thread of
the default pool (six on a 2-core machine: six such calls and every later sync call waited
forever). :class:`WorkerPool` keeps, for every call it runs or queues, which call it is, since
when, and whether its caller is gone, so that the runner's health thread
(:mod:`isoplug.runner.health`) can report threads stuck in abandoned calls and the host can
recycle the runner past a limit.

Its threads are daemon threads: a thread stuck in a plugin's method must not keep the runner
from exiting once it has been asked to (interpreter shutdown joins every non-daemon thread,
the default executor's included).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import functools
import itertools
import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

__all__ = ["WorkerPool", "default_threads"]

_log = logging.getLogger("isoplug.runner")


def default_threads() -> int:
    """The size of the standard library's default pool (``ThreadPoolExecutor``'s)."""
    return min(32, (os.cpu_count() or 1) + 4)


class Work:
    """One function call handed to the pool; read by the health thread."""

    __slots__ = ("abandoned", "call_id", "future", "queued", "run", "started", "thread", "what")

    def __init__(self, call_id: int, what: str, run: Callable[[], Any]) -> None:
        self.call_id = call_id
        self.what = what
        self.run = run
        self.future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        self.queued = time.monotonic()
        #: ``time.monotonic()`` when a thread took it (0: waiting).
        self.started = 0.0
        #: The ident of the thread running it (0: waiting).
        self.thread = 0
        self.abandoned = False


class WorkerPool:
    """Runs functions in up to ``max_threads`` daemon threads, started on demand."""

    def __init__(self, max_threads: int, name: str = "isoplug-worker") -> None:
        if max_threads < 1:
            raise ValueError(f"max_threads must be at least 1, got {max_threads}")
        self.max_threads = max_threads
        self._name = name
        self._queue: queue.SimpleQueue[Work] = queue.SimpleQueue()
        self._idle = threading.Semaphore(0)
        self._lock = threading.Lock()
        self._threads = 0
        self._numbers = itertools.count(1)
        #: Every call queued or running, in the order they came.
        self._work: dict[int, Work] = {}

    @property
    def threads(self) -> int:
        return self._threads

    async def run(self, call_id: int, what: str, function: Callable[[], Any]) -> Any:
        """``function()`` in a worker thread, in a copy of the caller's context (as
        ``asyncio.to_thread``); ``what`` names it in health reports. If the caller is cancelled
        while the function runs, the thread runs on: the call is marked abandoned (reported as
        stuck until it returns) and its result is dropped."""
        context = contextvars.copy_context()
        work = Work(call_id, what, functools.partial(context.run, function))
        key = next(self._numbers)
        with self._lock:
            self._work[key] = work
        self._queue.put(work)
        self._adjust()
        try:
            return await asyncio.wrap_future(work.future)
        except asyncio.CancelledError:
            # A work item not started yet is cancelled with the future (it never runs).
            work.abandoned = True
            raise
        finally:
            # At once if done or cancelled; else when the abandoned thread returns.
            work.future.add_done_callback(lambda _: self._forget(key))

    def snapshot(self) -> list[Work]:
        """The calls queued or running now, oldest first (cancelled ones left out)."""
        with self._lock:
            return [work for work in self._work.values() if not work.future.cancelled()]

    def _forget(self, key: int) -> None:
        with self._lock:
            self._work.pop(key, None)

    def _adjust(self) -> None:
        # As ThreadPoolExecutor: an idle thread takes the work, else a new one if allowed.
        if self._idle.acquire(blocking=False):
            return
        with self._lock:
            if self._threads >= self.max_threads:
                return
            self._threads += 1
            number = self._threads
        threading.Thread(target=self._serve, name=f"{self._name}-{number}", daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                work = self._queue.get_nowait()
            except queue.Empty:
                self._idle.release()
                work = self._queue.get()
            if not work.future.set_running_or_notify_cancel():
                continue
            work.thread = threading.get_ident()
            work.started = time.monotonic()
            try:
                result = work.run()
            except BaseException as exc:
                # Delivered to the awaiting task, as by ThreadPoolExecutor (SystemExit too).
                work.future.set_exception(exc)
            else:
                work.future.set_result(result)
            if work.abandoned:
                _log.info(
                    "%s returned after running %.1f s; its caller had given up on it, so its "
                    "result was dropped",
                    work.what,
                    time.monotonic() - work.started,
                )
            del work
