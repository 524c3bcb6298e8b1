"""isoplug's blocking steps, each run in a thread of its own, off the application's loop:
the host's supervision, and the resolution of a TCP address's name (``loop.getaddrinfo`` would
queue it on the default executor too).

A :class:`~isoplug.Host` runs inside the application's event loop, whose default executor
(``asyncio.to_thread``, ``loop.run_in_executor(None, ...)``) is the application's: a web app
fills it with its own blocking work. A supervision step queued there (writing a runner's
bootstrap, accounting for its exit, closing the log bridge) would wait behind that work, and a
crashed runner would be told, and restarted, only once the application's jobs end. After
``asyncio.run`` has shut that executor down, a host closed then (an unclosed one collected) could
not use it at all.

So :func:`off_loop` starts a thread per step, as :func:`asyncio.to_thread` would use a pool's:
the steps are few (a runner's start, its exit, the host's start and close; never a call), so
a thread's start (tens of microseconds) costs nothing that matters, and a thread per step means
no pool that could be full, be shut down, or be a forked child's copy with threads that no
longer exist. Each step ends by itself (a wait has a deadline of seconds; the rest is short
work on files, /proc and pipes); the interpreter's exit waits for one under way, as it did
for the default executor's threads.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import threading
from collections.abc import Callable
from typing import ParamSpec, TypeVar

__all__ = ["off_loop"]

_P = ParamSpec("_P")
_T = TypeVar("_T")


async def off_loop(function: Callable[_P, _T], /, *args: _P.args, **kwargs: _P.kwargs) -> _T:
    """Run ``function(*args, **kwargs)`` in a new thread, in a copy of the current context
    (as :func:`asyncio.to_thread` does), and return its result or raise its exception. A
    cancelled caller stops waiting; the thread runs the step to its end regardless."""
    loop = asyncio.get_running_loop()
    outcome: asyncio.Future[_T] = loop.create_future()
    context = contextvars.copy_context()

    def run() -> None:
        try:
            result = context.run(function, *args, **kwargs)
        except BaseException as exc:
            _deliver(loop, outcome, functools.partial(outcome.set_exception, exc))
        else:
            _deliver(loop, outcome, functools.partial(outcome.set_result, result))

    name = getattr(function, "__qualname__", type(function).__name__)
    threading.Thread(target=run, name=f"isoplug-step-{name}").start()
    return await outcome


def _deliver(
    loop: asyncio.AbstractEventLoop, outcome: asyncio.Future[_T], settle: Callable[[], None]
) -> None:
    def settle_if_awaited() -> None:
        if not outcome.done():  # else its caller was cancelled: nobody waits for it
            settle()

    with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits for it
        loop.call_soon_threadsafe(settle_if_awaited)
