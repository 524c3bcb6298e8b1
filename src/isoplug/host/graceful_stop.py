"""Stopping a runner gracefully, step by step: tell it on its stdin that its stop began, ask
it (``runner.shutdown``), then SIGTERM to its process group, then SIGKILL; each step's deadline
runs from its start, and each step that is needed is logged with why (see
docs/operations.md, "Signals and shutdown").
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Awaitable, Callable

from isoplug.control import TERMINATE_NOTICE
from isoplug.host.descendants import read_stat
from isoplug.host.process import RunnerProcess, Unreaped
from isoplug.log_guard import guarded_logger

__all__ = ["stop_gracefully"]

_log = guarded_logger("isoplug.host")


#: Seconds between the host's notice that its SIGTERM comes next and that SIGTERM: enough for
#: the runner's lifeline thread to read it (see isoplug.runner.outside_stop), on a slow stop
#: only (the runner did not exit within its shutdown timeout).
_TERMINATE_NOTICE_HEAD_START = 0.05


async def stop_gracefully(
    process: RunnerProcess,
    ask: Callable[[], Awaitable[None]] | None,
    *,
    shutdown_timeout: float,
    terminate_timeout: float,
    name: str,
    unreaped: Unreaped | None = None,
) -> None:
    """Stop the runner ``process``: ``ask()`` it (if given) and wait ``shutdown_timeout`` from the
    request, for the answer and the exit together; then SIGTERM its group and wait
    ``terminate_timeout``; then SIGKILL. Returns once it has exited. ``unreaped()`` is asked
    after each wait that did not see the exit: True when the runner had exited, unseen (see
    :meth:`~isoplug.host.process.RunnerProcess.kill_and_wait`)."""
    # First: a runner whose loop is blocked reads its stdin all the same, and then takes the
    # SIGTERM below for the host's (an outside one would start its graceful stop).
    process.tell_stopping()
    if ask is not None and process.running:
        requested = time.monotonic()
        # The answer is not waited for on its own: a runner whose loop is blocked never
        # answers, and the deadline is the request's, not the answer's plus the exit's.
        asking = asyncio.ensure_future(ask())
        try:
            exited = await process.wait_exit(shutdown_timeout)
        finally:
            if not asking.done():
                asking.cancel()
                await asyncio.gather(asking, return_exceptions=True)
        if not asking.cancelled():
            asking.result()  # ask() swallows what a runner can cause: this is a bug
        if exited or (unreaped is not None and await unreaped()):
            return
        waited = time.monotonic() - requested
        _log.warning(
            "runner %s (pid %d) did not exit within %.1f s of the shutdown request; "
            "sending SIGTERM",
            name,
            process.pid,
            waited,
        )
        why = f"it did not exit within {waited:.1f} s of the shutdown request"
    else:
        why = "stopping it (no control connection to ask it)"
    if process.tell_stopping(TERMINATE_NOTICE):
        # The runner's lifeline thread gives SIGTERM its default action back when it reads
        # the notice: a moment for it (the GIL of a loop busy in Python code comes at least
        # every switch interval), else the SIGTERM finds the runner's handler, which takes
        # it for one coming during its stop, and only the SIGKILL ends a stuck runner.
        await asyncio.sleep(_TERMINATE_NOTICE_HEAD_START)
    terminated = time.monotonic()
    process.send(signal.SIGTERM, why)
    if await process.wait_exit(terminate_timeout) or (unreaped is not None and await unreaped()):
        return
    ignored = time.monotonic() - terminated
    stat = read_stat(process.pid)
    if stat is not None and stat.state in ("T", "t"):
        # Stopped (SIGSTOP, a debugger): it could not act on SIGTERM at all.
        why = f"it was stopped (SIGSTOP, or a debugger) and did not end {ignored:.1f} s "
        why += "after SIGTERM"
        _log.warning(
            "runner %s (pid %d) was stopped (SIGSTOP, or a debugger) and did not end "
            "%.1f s after SIGTERM; sending SIGKILL",
            name,
            process.pid,
            ignored,
        )
    else:
        why = f"it ignored SIGTERM for {ignored:.1f} s"
        _log.warning(
            "runner %s (pid %d) ignored SIGTERM for %.1f s; sending SIGKILL",
            name,
            process.pid,
            ignored,
        )
    await process.kill_and_wait(why, name, unreaped)
