"""In a group runner, a thread a plugin's code starts, and work it hands to a thread pool, run
as that plugin's.

The members of a group share one process, and the runner tells their output apart by
:data:`~isoplug.logs.sources.current_source`, which a plugin's calls, event handlers and tasks
carry (a context variable: tasks and ``asyncio.to_thread`` inherit it). A plain
``threading.Thread`` starts with an empty context (before Python 3.14, and on 3.14's default
build), and ``ThreadPoolExecutor.submit`` (``loop.run_in_executor`` included) does not pass the
context on: what such a thread printed or logged, and its uncaught exception, was the group's
and not the member's. :func:`attribute_threads` makes both remember whose code started them:

- ``Thread.start`` called by a member's code sets the thread's source before its ``run``
  (on the thread object, so a subclass's ``run`` is covered), for the thread's whole life, its
  ``threading.excepthook`` included. Not threads that serve every member, which a member's
  code may happen to start: isoplug's own (the runner's worker pool grows during a call, the
  quiet-flush timer starts at a print), and a logging ``QueueListener``'s, which handles
  every logger's records (they keep their own names);
- ``_thread.start_new_thread`` called by a member's code (the low-level start, which
  ``threading`` does not go through once imported) runs the function as that member's;
- ``ThreadPoolExecutor.submit`` called by a member's code runs the function under that member's
  source, and restores the worker's own afterwards. An executor's worker threads themselves
  belong to no member: they run every member's work, whoever's submit happened to start them.

Code of no member (the runner's own) starts threads and submits work as before, at no cost.
Only group runners install this: in a runner of one plugin, everything is that plugin's.
"""

from __future__ import annotations

import _thread
import concurrent.futures
import concurrent.futures.thread
import logging.handlers
import threading
from collections.abc import Callable
from typing import Any

from isoplug.logs.sources import current_source

__all__ = ["CallAs", "RunAs", "StartAs", "attribute_threads"]

_start = threading.Thread.start
_start_new_thread = _thread.start_new_thread
_submit = concurrent.futures.ThreadPoolExecutor.submit
#: The function an executor's worker threads run: started by whoever submitted first, they are
#: nobody's. Private to ``concurrent.futures``; without it, every submit is wrapped.
_EXECUTOR_WORKER = getattr(concurrent.futures.thread, "_worker", None)


def attribute_threads() -> None:
    """Make threads started, and work submitted, by a member's code run as that member's (see
    the module docstring). Idempotent."""
    threading.Thread.start = _start_attributed  # type: ignore[method-assign]
    _thread.start_new_thread = _start_new_thread_attributed
    concurrent.futures.ThreadPoolExecutor.submit = _submit_attributed  # type: ignore[method-assign,assignment]


def _start_attributed(self: threading.Thread) -> None:
    source = current_source.get()
    if source is not None and not _serves_everyone(self):
        self.run = RunAs(source, self.run)  # type: ignore[method-assign]
    _start(self)


def _start_new_thread_attributed(
    function: Callable[..., object], args: tuple[Any, ...], kwargs: dict[str, Any] | None = None, /
) -> int:
    source = current_source.get()
    if source is not None:
        function = StartAs(source, function)
    return _start_new_thread(function, args, kwargs or {})


class StartAs:
    """A low-level thread's function, called with :data:`current_source` set to ``source``
    for the rest of the thread's life (Python reports its uncaught exception after it
    returns, in the same thread); shown as the function itself in that report."""

    __slots__ = ("function", "source")

    def __init__(self, source: str, function: Callable[..., object]) -> None:
        self.source = source
        self.function = function

    def __call__(self, *args: Any, **kwargs: Any) -> object:
        current_source.set(self.source)
        return self.function(*args, **kwargs)

    def __repr__(self) -> str:
        return repr(self.function)


def _serves_everyone(thread: threading.Thread) -> bool:
    """Whether ``thread`` is an executor's worker, a ``QueueListener``'s or one of isoplug's."""
    target = getattr(thread, "_target", None)
    if target is not None and (
        target is _EXECUTOR_WORKER
        or isinstance(getattr(target, "__self__", None), logging.handlers.QueueListener)
    ):
        return True
    runs = target if target is not None else type(thread).run
    return str(getattr(runs, "__module__", "")).startswith("isoplug.")


class RunAs:
    """A thread's ``run``, in the thread, with :data:`current_source` set to ``source`` for the
    rest of the thread's life (its excepthook runs after ``run``, in the same thread)."""

    __slots__ = ("run", "source")

    def __init__(self, source: str, run: Callable[[], object]) -> None:
        self.source = source
        self.run = run

    def __call__(self) -> None:
        current_source.set(self.source)
        self.run()


def _submit_attributed(
    self: concurrent.futures.ThreadPoolExecutor,
    fn: Callable[..., Any],
    /,
    *args: Any,
    **kwargs: Any,
) -> concurrent.futures.Future[Any]:
    source = current_source.get()
    if source is None and _EXECUTOR_WORKER is not None:
        return _submit(self, fn, *args, **kwargs)
    return _submit(self, CallAs(source, fn), *args, **kwargs)


class CallAs:
    """A function submitted to a thread pool, called with :data:`current_source` set to
    ``source`` (the submitter's), the worker's own restored afterwards."""

    __slots__ = ("fn", "source")

    def __init__(self, source: str | None, fn: Callable[..., Any]) -> None:
        self.source = source
        self.fn = fn

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        token = current_source.set(self.source)
        try:
            return self.fn(*args, **kwargs)
        finally:
            current_source.reset(token)
