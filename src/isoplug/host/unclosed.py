"""A :class:`~isoplug.Host` that is never closed, or is inherited by a forked child.

As asyncio does for an unclosed loop or transport, a host garbage-collected, or still running
at interpreter exit, without ``aclose()`` gets a :class:`ResourceWarning` "unclosed Host"
(shown with ``-X dev`` or ``-W default``), and what it holds outside its loop is released
then: its runners are killed, its zygote let go, its listeners closed and their socket files
removed, the log bridge's threads ended. While the host's loop still runs, the host is closed
on that loop instead: as ``aclose()`` would while its runners are still supervised. When
the loop is ending, a close awaited there could not finish: ``asyncio.run`` cancels every task
(the host's supervision too, which the host itself never cancels), waits for those tasks, then
for its default executor, and closes the loop, never waiting for a task started meanwhile.
So once its supervision has been cancelled, or has ended, the host is released without
awaiting anything, in one callback on the loop: as the last cancelled supervision ends, or at
once. A host whose close on its loop never finished (the loop closed first) is released at
exit. At exit, a host whose loop is open and idle in the thread that started it (a script's
``loop.run_until_complete()`` returned, IPython quit between cells) is closed on that loop,
run once more for ``aclose()``: its runners' teardown and exit accounts are not skipped.

Nothing refers to a host from its runners' tasks or the log bridge's threads but weakly
(:class:`HostNotifier`): a host the application drops can be collected.

A forked child's copy of a host is its parent's (see :mod:`isoplug.host.binding`): it is never
released here; its ``aclose()`` only drops the child's copies (:func:`drop_inherited`).
"""

from __future__ import annotations

import asyncio
import atexit
import functools
import threading
import warnings
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING

from isoplug.host import observers
from isoplug.host.binding import running_asyncio_loop
from isoplug.host.status import StateChange
from isoplug.log_guard import guarded_logger

if TYPE_CHECKING:
    from isoplug.host.host import Host

__all__ = ["HostNotifier", "drop_inherited", "left_unclosed"]

_log = guarded_logger("isoplug.host")

_WHY = "its host was not closed"

#: Hosts left unclosed whose close on their loop is scheduled or under way.
_closing_on_loop: set[Host] = set()


class HostNotifier:
    """A host's ``_state_changed``, which its supervisors call for every state change,
    reached through a weak reference to the host until :meth:`hold`."""

    def __init__(self, method: Callable[[StateChange], None]) -> None:
        self._weak = weakref.WeakMethod(method)
        self._held: Callable[[StateChange], None] | None = None

    def hold(self, method: Callable[[StateChange], None]) -> None:
        """Call ``method`` strongly from now on: the collector clears every weak reference to
        a host before its ``__del__``, and the close that follows tells each runner's end
        (the exit account ``aclose()`` logs) through this. The cycle this makes is taken by
        the collector once the host is released; its ``__del__`` does not run twice."""
        self._held = method

    def __call__(self, change: StateChange) -> None:
        method = self._held or self._weak()
        if method is not None:
            method(change)


def left_unclosed(host: Host, *, at_exit: bool) -> None:
    """``host`` is collected (``at_exit`` False: from ``__del__``) or the interpreter exits
    while it was started and not closed: warn, and release what it holds. Once per host."""
    if host._binding.foreign or host._abandoned:
        return
    host._abandoned = True
    host._notifier.hold(host._state_changed)
    try:
        warnings.warn(f"unclosed Host {host!r}", ResourceWarning, source=host, stacklevel=2)
    finally:
        # Under -W error (pytest's filterwarnings = error) the warning raises: the host is
        # released all the same, and the error is reported after.
        _close_or_release(host, at_exit=at_exit)


def _close_or_release(host: Host, *, at_exit: bool) -> None:
    """Close ``host`` on its loop while that runs, or at exit on its idle loop; else release
    what it holds."""
    loop = host._binding.loop
    if not at_exit and loop is not None and not loop.is_closed():
        # Its loop still runs its tasks: close it there, properly (this keeps it alive).
        _closing_on_loop.add(host)
        try:
            loop.call_soon_threadsafe(_close_on_loop, host)
            return
        except RuntimeError:  # the loop closed meanwhile: released below
            _closing_on_loop.discard(host)
    if at_exit and loop is not None and _idle_here(host, loop) and _close_at_exit(host, loop):
        return
    if at_exit:
        _release(host)
    else:
        # The collector may run in any thread, one of the log bridge's too (which the
        # release joins): release from a thread of its own.
        threading.Thread(target=_release, args=(host,), name="isoplug-unclosed-host").start()


def _idle_here(host: Host, loop: asyncio.AbstractEventLoop) -> bool:
    """Whether ``loop``, the host's, is open and idle in this thread, which started the host:
    a script's ``loop.run_until_complete()`` returned, or IPython between two cells."""
    return (
        not loop.is_closed()
        and not loop.is_running()
        and host._binding.thread_id == threading.get_ident()
        and running_asyncio_loop() is None
    )


def _close_at_exit(host: Host, loop: asyncio.AbstractEventLoop) -> bool:
    """Close ``host`` on its idle ``loop`` at interpreter exit, as ``aclose()`` would: each
    runner's teardown gets its chance (bounded by the host's timeouts) and its exit account is
    logged. Killing the runners instead, as for a host whose loop is gone, would skip both,
    though nothing stops this loop from running once more. Whether it did."""
    try:
        loop.run_until_complete(host.aclose())
    except BaseException as error:  # a Ctrl-C meanwhile too: the runners are killed still
        _log.error(
            "closing an unclosed host at exit failed (its runners are killed): %r",
            error,
            exc_info=error,
        )
        return False
    return True


def _close_on_loop(host: Host) -> None:
    running = [t for s in list(host._supervisors.values()) if (t := s.supervision) is not None]
    if host._reload_task is not None and not host._reload_task.done():
        running.append(host._reload_task)
    if running and not any(task.cancelling() for task in running):
        task = asyncio.get_running_loop().create_task(host.aclose(), name="isoplug-unclosed-host")
        task.add_done_callback(functools.partial(_report_close, host))
        return
    if running:
        # The host never cancels these: the loop's tasks were all cancelled (asyncio.run
        # ending), and the loop stops once they ended. Each says how its runner ended first,
        # which needs the zygote and the log bridge: released as the last one ends. Its done
        # callbacks run before the loop can stop (asyncio.run's own wait on these tasks is
        # told in the same turn, and only stops the loop in the next).
        remaining = set(running)

        def ended(task: asyncio.Task[None]) -> None:
            remaining.discard(task)
            if not remaining:
                _release_on_loop(host)

        for task in running:
            task.add_done_callback(ended)
        return
    _release_on_loop(host)


def _release_on_loop(host: Host) -> None:
    """Release ``host`` now, in this turn of its loop, which may be its last (see the module
    docstring); its blocking part in a thread."""
    _closing_on_loop.discard(host)
    _release(host, from_loop=True)


def _report_close(host: Host, task: asyncio.Task[None]) -> None:
    _closing_on_loop.discard(host)
    if not task.cancelled() and (error := task.exception()) is not None:
        _log.error("closing an unclosed host failed: %r", error, exc_info=error)


def _release(host: Host, *, from_loop: bool = False) -> None:
    """Stop what ``host`` holds, without its loop (closed, or the interpreter exits), or
    ``from_loop`` without awaiting anything there."""
    loop = host._binding.loop
    loop_gone = not from_loop and loop is not None and loop.is_closed()
    for supervisor in list(host._supervisors.values()):
        if loop_gone:
            supervisor.release_without_loop(_WHY)
        else:
            supervisor.kill_now(_WHY)
    if host._zygote is not None:
        host._zygote.close_now()
    if host._listener is not None:
        host._listener.close_now()
    if from_loop:
        # It waits for the log bridge's threads: never on the loop.
        threading.Thread(
            target=_close_log_bridge, args=(host,), name="isoplug-unclosed-host"
        ).start()
    else:
        _close_log_bridge(host)
    observers.host_closed(host)
    if loop_gone:
        _log.warning(
            "%r: its event loop was closed before the host was: its runners were killed "
            "(no teardown, no exit accounts) and its sockets closed; close a host "
            "(await host.aclose(), or async with) before closing its loop",
            host,
        )


def _close_log_bridge(host: Host) -> None:
    host._log_bridge.close(drain_timeout=0)
    host._routes.close()
    host._capabilities.close()


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
    for host in list(_closing_on_loop):
        # Its loop closed before the close there could finish.
        _closing_on_loop.discard(host)
        _release(host)


atexit.register(_at_exit)
