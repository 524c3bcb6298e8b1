"""The worker threads that run a runner's sync plugin methods and event handlers.

``asyncio.to_thread`` would hide what the host needs to know: a call whose caller gave up
(its timeout passed) is cancelled in the event loop, but its thread runs on, taking a thread of
the default pool (six on a 2-core machine: six such calls and every later sync call waited
forever). :class:`WorkerPool` keeps, for every call it runs or queues, which call it is, since
when, and whether its caller is gone, so that the runner's health thread
(:mod:`isoplug.runner.health`) can report threads stuck in abandoned calls and the host can
recycle the runner past a limit.

Its threads are not daemon threads, although they are the runner's: a ``threading.Thread``
started without ``daemon=`` takes its flag from the thread that starts it, so a thread a plugin
starts in a ``def`` method would have been a daemon, unlike in any program of its own and
unlike one started in an ``async def`` method, on the loop's thread: never waited for at a
stop, nor named when it would not end, and killed mid-work. The runner's exit stays bounded
all the same: :meth:`WorkerPool.shutdown` ends the idle threads (``threading``'s exit
callbacks call it, which the runner runs at its stop before it waits for the plugin's threads,
and the interpreter at any other exit), and a runner whose pool is still :meth:`busy` at its
end (a call cancelled at the stop, or stuck since a timeout: a thread cannot be stopped) exits
without joining it, as it did when they were daemons.
"""

from __future__ import annotations

import asyncio
import contextvars
import itertools
import os
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

from isoplug.log_guard import guarded_logger
from isoplug.runner.forked_away import end_if_forked
from isoplug.runner.vital_fds import vital
from isoplug.thread_limits import ThreadShortage, start_thread

__all__ = ["WorkerPool", "WorkerThread", "default_threads"]

_log = guarded_logger("isoplug.runner")


def default_threads() -> int:
    """The size of the standard library's default pool (``ThreadPoolExecutor``'s)."""
    return min(32, (os.cpu_count() or 1) + 4)


class Work:
    """One function call handed to the pool; read by the health thread."""

    __slots__ = (
        "abandoned",
        "call_id",
        "cancelled",
        "context",
        "function",
        "loop",
        "queued",
        "started",
        "thread",
        "waiter",
        "what",
    )

    def __init__(
        self,
        call_id: int,
        what: str,
        function: Callable[[], Any],
        context: contextvars.Context,
        waiter: asyncio.Future[Any],
    ) -> None:
        self.call_id = call_id
        self.what = what
        self.function = function
        self.context = context
        #: Where the caller awaits the outcome (set on its loop, never from the thread).
        self.waiter = waiter
        self.loop = waiter.get_loop()
        self.queued = time.monotonic()
        #: ``time.monotonic()`` when a thread took it (0: waiting).
        self.started = 0.0
        #: The ident of the thread running it (0: waiting).
        self.thread = 0
        #: The caller gave up while it ran: its thread runs on, its outcome is dropped.
        self.abandoned = False
        #: The caller gave up before a thread took it: it never runs.
        self.cancelled = False


class WorkerThread(threading.Thread):
    """A thread of a :class:`WorkerPool` (no daemon: see the module docstring)."""

    def __init__(self, pool: WorkerPool, name: str) -> None:
        super().__init__(target=pool._serve, name=name, daemon=False)
        self.pool = pool


class WorkerPool:
    """Runs functions in up to ``max_threads`` threads, started on demand, until
    :meth:`shutdown`."""

    def __init__(self, max_threads: int, name: str = "isoplug-worker") -> None:
        if max_threads < 1:
            raise ValueError(f"max_threads must be at least 1, got {max_threads}")
        self.max_threads = max_threads
        self._name = name
        #: Work, or None: the end of a thread (one per thread, put by shutdown()).
        self._queue: queue.SimpleQueue[tuple[int, Work] | None] = queue.SimpleQueue()
        self._shut_down = False
        #: Guards the counts below, and each work item's move from waiting to running or
        #: cancelled (the thread and the cancelled caller race for it).
        self._lock = threading.Lock()
        #: Threads waiting for work that no caller has counted on yet (a semaphore's count,
        #: without a semaphore's Python-level condition: see _adjust).
        self._idle = 0
        self._threads = 0
        self._numbers = itertools.count(1)
        #: Every call queued or running, in the order they came.
        self._work: dict[int, Work] = {}
        # Where the interpreter (and the runner's stop, which runs these callbacks itself)
        # ends the threads it is about to join: without it, an idle thread would hold the
        # exit for good.
        register = getattr(threading, "_register_atexit", None)
        if register is not None:
            register(self.shutdown)

    @property
    def threads(self) -> int:
        return self._threads

    def shutdown(self) -> None:
        """End the threads once they are idle (a call running goes on to its end); calls
        made from now on fail with RuntimeError. Returns at once."""
        with self._lock:
            if self._shut_down:
                return
            self._shut_down = True
            threads = self._threads
        for _ in range(threads):
            self._queue.put(None)

    def busy(self) -> bool:
        """Whether a thread runs a call now (it would hold the interpreter's exit)."""
        with self._lock:
            return any(work.started and not work.cancelled for work in self._work.values())

    async def run(self, call_id: int, what: str, function: Callable[[], Any]) -> Any:
        """``function()`` in a worker thread, in a copy of the caller's context (as
        ``asyncio.to_thread``); ``what`` names it in health reports. If the caller is cancelled
        while the function runs, the thread runs on: the call is marked abandoned (reported as
        stuck until it returns) and its result is dropped."""
        # The thread hands the outcome straight to this future through call_soon_threadsafe:
        # a concurrent future wrapped by asyncio.wrap_future cost two more futures, a
        # condition variable and three callbacks per call.
        waiter: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        work = Work(call_id, what, function, contextvars.copy_context(), waiter)
        key = next(self._numbers)
        with self._lock:
            if self._shut_down:
                raise RuntimeError(f"{what}: the runner is shutting down; it was not run")
            self._work[key] = work
        self._queue.put((key, work))
        if not self._adjust():
            # No thread at all, and none may start: nothing would ever run it.
            with self._lock:
                work.cancelled = True
                self._work.pop(key, None)
            raise ThreadShortage(f"a worker thread to run {what}")
        try:
            return await waiter
        except asyncio.CancelledError:
            with self._lock:
                if work.started:
                    work.abandoned = True  # forgotten when its thread returns
                else:
                    work.cancelled = True  # its thread will skip it
                    self._work.pop(key, None)
            raise

    def snapshot(self) -> list[Work]:
        """The calls queued or running now, oldest first (cancelled ones left out)."""
        with self._lock:
            return [work for work in self._work.values() if not work.cancelled]

    def _adjust(self) -> bool:
        """As ThreadPoolExecutor: an idle thread takes the work, else a new one if allowed.
        False when no thread is there to take it, and the kernel refused a new one."""
        with self._lock:
            if self._idle:
                self._idle -= 1
                return True
            if self._threads >= self.max_threads:
                return True
            self._threads += 1
            number = self._threads
            ending = self._shut_down
        try:
            start_thread(WorkerThread(self, f"{self._name}-{number}"), "a worker thread")
        except ThreadShortage as exc:
            with self._lock:
                self._threads -= 1
                others = self._threads > 0
            if others:
                _log.warning("%s; the call waits for a worker thread that runs already", exc)
            return others
        if ending:
            # Work queued as shutdown() began: it counted the threads before this one.
            self._queue.put(None)
        return True

    def _serve(self) -> None:
        lock = self._lock
        get = self._queue.get
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                with lock:
                    self._idle += 1
                item = get()
            if item is None:
                return  # shut down
            key, work = item
            with lock:
                if work.cancelled:
                    continue
                work.thread = threading.get_ident()
                work.started = time.monotonic()
            try:
                value = work.context.run(work.function)
            except BaseException as exc:
                # Delivered to the awaiting task, as by ThreadPoolExecutor (SystemExit too).
                failed, value = True, exc
            else:
                failed = False
            # A child the method forked returns here, its only thread: no loop of its own
            # would ever end it.
            end_if_forked(work.what, value if failed else None)
            with lock:
                self._work.pop(key, None)
                abandoned = work.abandoned
            if abandoned:
                _log.info(
                    "%s returned after running %.1f s; its caller had given up on it, so its "
                    "result was dropped",
                    work.what,
                    time.monotonic() - work.started,
                )
            else:
                # Waking the loop writes to its descriptor: gone (the method closed the
                # runner's descriptors), uvloop would abort the process here.
                vital.exit_if_closed()
                try:
                    work.loop.call_soon_threadsafe(_deliver, work.waiter, failed, value)
                except RuntimeError:
                    # The loop closed meanwhile (the runner is exiting): nobody awaits it.
                    _log.debug("%s finished after its event loop closed", work.what)
            del work, value


def _deliver(waiter: asyncio.Future[Any], failed: bool, value: Any) -> None:
    if waiter.done():
        return  # the caller was cancelled between the thread's check and now
    if failed:
        waiter.set_exception(value)
    else:
        waiter.set_result(value)
