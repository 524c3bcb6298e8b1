"""A :class:`~isoplug.Host` that is never closed, or is inherited by a forked child.

As asyncio does for an unclosed loop or transport, a host garbage-collected, or still running
at interpreter exit, without ``aclose()`` gets a :class:`ResourceWarning` "unclosed Host"
(shown with ``-X dev`` or ``-W default``), and what it holds outside its loop is released
then: its runners are killed, its zygote let go, its listeners closed and their socket files
removed, the log bridge's threads ended. While the host's loop still runs, the host is closed
on that loop instead, as ``aclose()`` would.

Nothing refers to a host from its runners' tasks or the log bridge's threads but weakly
(:func:`weak_notify`): a host the application drops can be collected.

A forked child's copy of a host is its parent's (see :mod:`isoplug.host.binding`): it is never
released here; its ``aclose()`` only drops the child's copies (:func:`drop_inherited`).
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import logging
import threading
import warnings
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING

from isoplug.host import observers
from isoplug.host.status import StateChange

if TYPE_CHECKING:
    from isoplug.host.host import Host

__all__ = ["drop_inherited", "left_unclosed", "weak_notify"]

_log = logging.getLogger("isoplug.host")

_WHY = "its host was not closed"


def weak_notify(method: Callable[[StateChange], None]) -> Callable[[StateChange], None]:
    """``method`` (a host's bound method) called through a weak reference to its host."""
    ref = weakref.WeakMethod(method)

    def notify(change: StateChange) -> None:
        bound = ref()
        if bound is not None:
            bound(change)

    return notify


def left_unclosed(host: Host, *, at_exit: bool) -> None:
    """``host`` is collected (``at_exit`` False: from ``__del__``) or the interpreter exits
    while it was started and not closed: warn, and release what it holds. Once per host."""
    if host._binding.foreign or host._abandoned:
        return
    host._abandoned = True
    warnings.warn(f"unclosed Host {host!r}", ResourceWarning, source=host, stacklevel=2)
    loop = host._binding.loop
    if not at_exit and loop is not None and not loop.is_closed():
        # Its loop still runs its tasks: close it there, properly (this keeps it alive).
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
            loop.call_soon_threadsafe(_close_on_loop, host)
            return
    if at_exit:
        _release(host)
    else:
        # The collector may run in any thread, one of the log bridge's too (which the
        # release joins): release from a thread of its own.
        threading.Thread(target=_release, args=(host,), name="isoplug-unclosed-host").start()


def _close_on_loop(host: Host) -> None:
    task = asyncio.get_running_loop().create_task(host.aclose(), name="isoplug-unclosed-host")
    task.add_done_callback(_report_close)


def _report_close(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and (error := task.exception()) is not None:
        _log.error("closing an unclosed host failed: %r", error, exc_info=error)


def _release(host: Host) -> None:
    """Stop what ``host`` holds, without its loop (closed, or the interpreter exits)."""
    for supervisor in list(host._supervisors.values()):
        supervisor.kill_now(_WHY)
    if host._zygote is not None:
        host._zygote.close_now()
    if host._listener is not None:
        host._listener.close_now()
    host._log_bridge.close(drain_timeout=0)
    host._routes.close()
    host._capabilities.close()
    observers.host_closed(host)


def drop_inherited(host: Host) -> None:
    """A forked child's ``aclose()`` of its parent's host: the child lets its copies go, and
    tells nothing to the parent's runners, zygote or sockets."""
    host._abandoned = True
    if host._zygote is not None:
        host._zygote.drop_inherited()
    observers.host_closed(host)


def _at_exit() -> None:
    for host in observers.live_hosts():
        left_unclosed(host, at_exit=True)


atexit.register(_at_exit)
