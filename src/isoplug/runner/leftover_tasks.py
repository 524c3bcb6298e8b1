"""The tasks a runner's plugins leave running at stop, ended while their records still reach
the host.

A plugin may start tasks (``asyncio.create_task`` / ``loop.create_task`` in ``setup``, a
method, an event handler) and never await them. asyncio would cancel them only as the runner's
loop closes, after log forwarding ended: what they log as they stop (``except CancelledError``,
``finally``), and what they raise, would reach the host as stderr text, or not at all. So the
runner ends them itself (:func:`end_plugin_tasks`), once the calls in flight were cancelled
and the teardown hooks ran, and before log forwarding ends:

- every pending task of a plugin is cancelled, then waited for until the teardown's deadline
  (:data:`MIN_GRACE` at least, so that a task gets to log its goodbye even when the hooks used
  all the time); tasks they start meanwhile are cancelled too;
- an exception one raises as it ends goes to the loop's exception handler, which makes it an
  ERROR record with its traceback on the logger of the plugin that started the task
  (:func:`isoplug.logs.hooks.asyncio_exception_handler`);
- one still running at the deadline (it ignores cancellation, or awaits something that does)
  is named in a WARNING, with the line it waits at; the runner exits without it
  (:func:`exit_leaving`), as asyncio would wait for it forever.

A task that failed and is still referenced (a plugin's ``self.task``) has its exception
reported by asyncio only once collected: at the interpreter's exit, after log forwarding
ended, as stderr text in pieces. :func:`report_unretrieved_exceptions` reports those before
forwarding ends, as the same ERROR records. (A bare future's, ``loop.create_future()``,
is left to asyncio up to Python 3.13: no registry holds futures, and the garbage collector's
scan that finds them costs every stop.)

Whose a task is: the plugin's whose :data:`~isoplug.logs.sources.current_source` it carries
(every plugin's code runs attributed to it, and the tasks it starts inherit that). A task with
no source (started from a bare thread) is a plugin's too, unless its coroutine is isoplug's own
code: the runner's connection to the host must outlive them, to say goodbye.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import sys
from collections.abc import Collection
from typing import Any

from isoplug.log_guard import guarded_logger
from isoplug.logs.hooks import task_source
from isoplug.logs.sources import attributed_to
from isoplug.runner.health import describe_frame
from isoplug.runner.outside_stop import end_if_only_signalled
from isoplug.runner.plugin_frames import awaited_frames
from isoplug.stdlib_paths import in_stdlib

__all__ = ["MIN_GRACE", "end_plugin_tasks", "exit_leaving", "report_unretrieved_exceptions"]

_log = guarded_logger("isoplug.runner")

#: Seconds a cancelled task gets at least to end, even past the teardown's deadline: enough for
#: a task that stops at once (one loop iteration or a few) to log that it does.
MIN_GRACE = 0.1
#: The isoplug package's folder (this module is in its ``runner`` folder).
#: Not resolved: code objects name their files as imported, from the same path entry.
_ISOPLUG_CODE = os.path.join(os.path.dirname(os.path.dirname(__file__)), "")
_CANCEL_MESSAGE = "the runner is shutting down"


async def end_plugin_tasks(sources: Collection[str], deadline: float) -> list[asyncio.Task[Any]]:
    """Cancel the pending tasks of the plugins whose sources are ``sources`` and wait for them
    until ``deadline`` (the loop's time; :data:`MIN_GRACE` at least), as the module docstring
    says; return those still running then (each named in a WARNING)."""
    loop = asyncio.get_running_loop()
    deadline = max(deadline, loop.time() + MIN_GRACE)
    cancelled: set[asyncio.Task[Any]] = set()
    while loop.time() < deadline:
        fresh = [task for task in plugin_tasks(sources) if task not in cancelled]
        if not fresh:
            break
        for task in fresh:
            task.cancel(_CANCEL_MESSAGE)
        cancelled.update(fresh)
        pending = {task for task in cancelled if not task.done()}
        if pending:
            await asyncio.wait(pending, timeout=deadline - loop.time())
    stuck: list[asyncio.Task[Any]] = []
    for task in cancelled:
        if not task.done():
            stuck.append(task)
        elif not task.cancelled() and (exception := task.exception()) is not None:
            # Retrieved here, so asyncio does not report it again when the task is freed.
            loop.call_exception_handler(
                {
                    "message": "a task of the plugin raised as it was ended at shutdown",
                    "exception": exception,
                    "task": task,
                }
            )
    for task in stuck:
        source = task_source(task)
        with attributed_to(source) if source else contextlib.nullcontext():
            _log.warning(
                "task %r (%s) was cancelled at shutdown and had not ended by the teardown "
                "timeout (does it catch CancelledError and go on?); it waits at %s; the "
                "runner exits without it",
                task.get_name(),
                _coroutine_name(task),
                where_waiting(task),
            )
    return stuck


def report_unretrieved_exceptions(loop: asyncio.AbstractEventLoop) -> int:
    """Retrieve the exception of every failed task of ``loop`` that nobody retrieved and that
    something still references, and report it to the loop's exception handler as asyncio
    would when collecting it ("Task exception was never retrieved"); return how many."""
    reported = 0
    for future in _live_tasks():
        if (
            future.get_loop() is not loop
            or not future.done()
            or future.cancelled()
            or not future._log_traceback  # asyncio's own flag, set until it is retrieved
        ):
            continue
        context: dict[str, Any] = {
            "message": f"{type(future).__name__} exception was never retrieved",
            "exception": future.exception(),  # retrieved now: never reported twice
            "future": future,
        }
        source_traceback = getattr(future, "_source_traceback", None)
        if source_traceback:
            context["source_traceback"] = source_traceback
        loop.call_exception_handler(context)
        reported += 1
    return reported


def _live_tasks() -> list[asyncio.Future[Any]]:
    """Every task still referenced, done or not: asyncio's own registry of them (a weak set,
    up to Python 3.13), which ``asyncio.all_tasks()`` filters to the pending ones. Where there is
    none (3.14 keeps its C tasks elsewhere), the futures among the objects the garbage
    collector tracks: about 2.5 ms for a runner's 25,000 objects, which every restart would
    pay."""
    if sys.version_info < (3, 14):
        registry = getattr(asyncio.tasks, "_all_tasks", None)  # 3.11
        if registry is None:
            registry = getattr(asyncio.tasks, "_scheduled_tasks", None)  # 3.12, 3.13
        if registry is not None:
            return list(registry)
    return [o for o in gc.get_objects() if isinstance(o, asyncio.Future)]


def plugin_tasks(sources: Collection[str]) -> list[asyncio.Task[Any]]:
    """The pending tasks of the running loop that are the plugins' (see the module docstring),
    the current task aside."""
    current = asyncio.current_task()
    return [
        task
        for task in asyncio.all_tasks()
        if task is not current and not task.done() and _is_plugins(task, sources)
    ]


def _is_plugins(task: asyncio.Task[Any], sources: Collection[str]) -> bool:
    source = task_source(task)
    if source is not None:
        return source in sources
    code = getattr(task.get_coro(), "cr_code", None)
    return code is None or not code.co_filename.startswith(_ISOPLUG_CODE)


def _coroutine_name(task: asyncio.Task[Any]) -> str:
    coro = task.get_coro()
    return str(getattr(coro, "__qualname__", None) or type(coro).__qualname__)


def where_waiting(task: asyncio.Task[Any]) -> str:
    """``path:line in function`` where ``task`` is suspended: the innermost coroutine of its
    await chain outside the standard library (``asyncio.sleep`` is not where a plugin waits),
    and what that coroutine awaits."""
    frames = awaited_frames(task)
    if not frames:
        return "an unknown place (its coroutine is not a Python coroutine)"
    outside = [frame for frame in frames if not in_stdlib(frame.f_code.co_filename)]
    where = describe_frame((outside or frames)[-1])
    inner = frames[-1]
    if inner is not (outside or frames)[-1]:
        where += f", awaiting {inner.f_code.co_qualname}()"
    return where


def exit_leaving(code: int) -> None:
    """End the process with ``code`` now, leaving the tasks that would not end: asyncio would
    cancel them again and wait for them forever as the loop closes. Call once the host was
    told goodbye and log forwarding ended; ``atexit`` hooks do not run."""
    if code == 0:
        # A stop that a SIGTERM from outside alone asked for ends by it, as a return does.
        end_if_only_signalled()
    for stream in (sys.__stdout__, sys.__stderr__):
        if stream is not None:
            with contextlib.suppress(OSError, ValueError):
                stream.flush()
    os._exit(code)
