"""Tasks left pending on an event loop closed under them (``loop.close()`` while a host still
ran, and the host then dropped unclosed), ended from outside that loop.

Nothing can run such a task again, and when the collector takes it (at the latest at exit)
Python closes its coroutine anyway: its ``finally`` blocks then call into the closed loop and
raise ``RuntimeError: Event loop is closed``, which isoplug's handlers would report as a bug of
its own, and asyncio says "Task was destroyed but it is pending!". Ending it when its host is
released instead does the same at a known time, quietly: its handlers see that no loop runs it
(:func:`outside_any_loop`) and end without a report.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, Final

from isoplug.log_guard import guarded_logger

__all__ = ["end_orphaned_task", "outside_any_loop", "running_asyncio_loop"]

_log = guarded_logger("isoplug.host")


#: The asyncio loop running in this thread, if one is, else None: asyncio's own function (in
#: ``asyncio.events.__all__`` since 3.7, for loop implementations), with neither the exception
#: of ``get_running_loop()`` nor a frame around it to pay on every ``host.call``.
running_asyncio_loop: Final[Callable[[], asyncio.AbstractEventLoop | None]] = (
    asyncio.events._get_running_loop
)


def outside_any_loop() -> bool:
    """Whether no event loop runs in this thread: a coroutine that finds so in its error
    handler is being closed from outside, its loop gone (see the module docstring)."""
    return running_asyncio_loop() is None


def end_orphaned_task(task: asyncio.Task[Any] | None) -> None:
    """Close the coroutine of ``task``, pending on a closed loop, from outside it; its
    destruction is then not reported (it was ended on purpose)."""
    if task is None or task.done():
        return
    # asyncio's own switch for a task it ends on purpose (as its gather() does).
    task._log_destroy_pending = False  # type: ignore[attr-defined]
    try:
        task.get_coro().close()
    except RuntimeError as error:
        # Its cleanup called into the closed loop: nothing of it is left to release.
        _log.debug("ending task %s of a closed loop: %s", task.get_name(), error)
