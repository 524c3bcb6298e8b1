"""The threads a runner's plugins leave running at stop, waited for until the teardown's
deadline and then left behind, named, instead of holding the runner's exit silently.

Once the runner has returned, the interpreter waits for two kinds of threads, with no limit:

- every non-daemon ``threading.Thread`` (interpreter shutdown joins them): a plugin's loop
  that nothing stops would keep the runner until the host's SIGTERM, ``shutdown_timeout``
  later, with nothing logged;
- the busy threads of the loop's default executor (``asyncio.to_thread``,
  ``loop.run_in_executor(None, ...)``): ``asyncio.run`` waits for that executor to shut down,
  on Python 3.11 with no timeout. A cancelled call cancels the awaiting task, not the thread.

So the runner looks for them (:func:`wait_for_plugin_threads`) after the teardown hooks ran
and the plugins' tasks ended (which may stop such threads their own way), and before log
forwarding ends: it waits for them until the teardown's deadline, then names each one still
running in a WARNING (its name, what it runs, the line it is at) and exits without them
(:func:`~isoplug.runner.leftover_tasks.exit_leaving`).

Not counted: daemon threads (every other isoplug thread is one: log sender, health, lifeline;
the interpreter does not wait for them), the main thread, an executor's idle threads (they end
as soon as their executor shuts down), and the runner's worker threads. Those are not daemons,
so that the threads a plugin starts in a ``def`` method are not either
(:mod:`isoplug.runner.workers`), but they are isoplug's: idle, they end as the pool shuts
down; one still running a call (cancelled at the stop, or stuck since a timeout, which the
host was told of) is left behind, as it always was, the runner ending without waiting for it
(:meth:`~isoplug.runner.workers.WorkerPool.busy`). What runs in an executor's busy thread is
said by its work item. In a group runner, the WARNING is the plugin's whose code started the
thread or submitted the work (its
:data:`~isoplug.logs.sources.current_source`: carried by a call made through
``asyncio.to_thread``, and by :mod:`isoplug.runner.thread_sources`' wrappers); a thread no
plugin's code is known to have started is the group's.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import sys
import threading
from collections.abc import Callable
from contextvars import Context
from dataclasses import dataclass
from types import FrameType
from typing import Any

from isoplug.log_guard import guarded_logger
from isoplug.logs.sources import attributed_to, current_source
from isoplug.runner.health import describe_frame
from isoplug.runner.leftover_tasks import MIN_GRACE
from isoplug.runner.thread_sources import CallAs, RunAs
from isoplug.runner.workers import WorkerThread

__all__ = ["LeftThread", "function_name", "lingering_threads", "wait_for_plugin_threads"]

_log = guarded_logger("isoplug.runner")

#: Seconds between two looks at the threads while waiting for them: a thread gives no event
#: to await when it ends, and this wait happens once, at stop.
_POLL = 0.02
#: Frames followed from a thread's innermost one at most, to find its executor's work item.
_MAX_DEPTH = 256
_EXECUTOR_MODULE = os.path.join("concurrent", "futures", "thread.py")


@dataclass(frozen=True, slots=True)
class LeftThread:
    """A thread that would hold the runner's exit: what the WARNING says of it."""

    thread: threading.Thread
    #: What it runs: its target, or the function an executor runs in it.
    runs: str
    #: ``path:line in function`` where it is now.
    where: str
    #: True for an executor's thread busy with a call.
    executor: bool
    #: The plugin source of the code it runs, when known (a ``to_thread`` call's).
    source: str | None


async def wait_for_plugin_threads(deadline: float) -> list[LeftThread]:
    """Wait until ``deadline`` (the loop's time; :data:`MIN_GRACE` at least) for the threads
    that would hold the runner's exit to end, as the module docstring says; return those still
    running then, each named in a WARNING."""
    loop = asyncio.get_running_loop()
    deadline = max(deadline, loop.time() + MIN_GRACE)
    left = lingering_threads()
    while left and loop.time() < deadline:
        await asyncio.sleep(min(_POLL, max(0.0, deadline - loop.time())))
        left = lingering_threads()
    for item in left:
        with attributed_to(item.source) if item.source else contextlib.nullcontext():
            if item.executor:
                _log.warning(
                    "thread %r of an executor still runs %s at shutdown, after its caller "
                    "was cancelled (asyncio.to_thread / run_in_executor cannot stop it), and "
                    "had not returned by the teardown timeout; it is at %s; the runner exits "
                    "without it",
                    item.thread.name,
                    item.runs,
                    item.where,
                )
            else:
                _log.warning(
                    "thread %r (%s) is still running at shutdown and had not ended by the "
                    "teardown timeout (a non-daemon thread: the interpreter would wait for it "
                    "at exit; stop it in teardown(), or make it a daemon); it is at %s; the "
                    "runner exits without it",
                    item.thread.name,
                    item.runs,
                    item.where,
                )
    return left


def lingering_threads() -> list[LeftThread]:
    """The threads alive now that the interpreter would wait for at exit (see the module
    docstring), the calling thread and the main thread aside."""
    frames = sys._current_frames()
    skip = {threading.get_ident(), threading.main_thread().ident}
    left: list[LeftThread] = []
    for thread in threading.enumerate():
        if thread.daemon or thread.ident in skip or not thread.is_alive():
            continue
        frame = frames.get(thread.ident or 0)
        if isinstance(thread, WorkerThread):
            continue  # isoplug's: see the module docstring
        if _is_executor_worker(thread, frame):
            work = _running_work(frame)
            if work is None:
                continue  # idle: it ends with its executor
            function, context, source = _unwrap(getattr(work, "fn", None))
            if source is None and context is not None:
                source = context.get(current_source)
            left.append(
                LeftThread(thread, function_name(function), describe_frame(frame), True, source)
            )
        else:
            target = getattr(thread, "_target", None)
            runs = (
                function_name(target) if target is not None else f"{type(thread).__qualname__}.run"
            )
            run = getattr(thread, "run", None)
            source = run.source if isinstance(run, RunAs) else None
            left.append(LeftThread(thread, runs, describe_frame(frame), False, source))
    return left


def _is_executor_worker(thread: threading.Thread, frame: FrameType | None) -> bool:
    target = getattr(thread, "_target", None)
    if target is not None:
        return bool(
            getattr(target, "__module__", None) == "concurrent.futures.thread"
            and getattr(target, "__name__", None) == "_worker"
        )
    return any(_is_executor_code(f, "_worker") for f in _stack(frame))


def _running_work(frame: FrameType | None) -> Any:
    """The executor work item the thread whose innermost frame is ``frame`` runs, or None."""
    for f in _stack(frame):
        if _is_executor_code(f, "run"):
            # Read once, under the GIL: the frame's locals as they are now.
            return f.f_locals.get("self")
    return None


def _stack(frame: FrameType | None) -> list[FrameType]:
    stack: list[FrameType] = []
    while frame is not None and len(stack) < _MAX_DEPTH:
        stack.append(frame)
        frame = frame.f_back
    return stack


def _is_executor_code(frame: FrameType, name: str) -> bool:
    code = frame.f_code
    return code.co_name == name and code.co_filename.endswith(_EXECUTOR_MODULE)


def _unwrap(function: Any) -> tuple[Any, Context | None, str | None]:
    """The function an executor's work item calls, the context it runs in, and the source it
    was submitted under, if known: ``to_thread`` hands the executor
    ``functools.partial(context.run, function, ...)``, and in a group runner a member's submit
    wraps it in a :class:`~isoplug.runner.thread_sources.CallAs`."""
    source = None
    if isinstance(function, CallAs):
        source, function = function.source, function.fn
    if isinstance(function, functools.partial):
        runner = function.func
        context = getattr(runner, "__self__", None)
        if isinstance(context, Context) and function.args:
            return function.args[0], context, source
        return function.func, None, source
    return function, None, source


def function_name(function: Callable[..., Any] | Any) -> str:
    """``module.qualified.name`` of ``function`` (a thread's target, an ``atexit`` hook)."""
    if function is None:
        return "an unknown function"
    name = getattr(function, "__qualname__", None) or type(function).__qualname__
    module = getattr(function, "__module__", None)
    return f"{module}.{name}" if module else str(name)
