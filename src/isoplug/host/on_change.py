"""The ``on_change`` function of a :class:`~isoplug.Host`: checked when the host is made,
called for every state change.

``on_change`` is called on the host's event loop, in the order of the changes, and must be a
plain function: an ``async def`` one was called, its coroutine never awaited (only Python's
``RuntimeWarning`` said so), and the application never saw a change. Rather than run such a
function as a task of its own (in no order, its exceptions nobody's), the host refuses it
when it is made; a function that wants to await schedules its coroutine itself, with
``asyncio.create_task``.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable

from isoplug.arguments import is_async_function
from isoplug.host.status import StateChange
from isoplug.log_guard import guarded_logger

__all__ = ["OnChange", "call_on_change", "checked_on_change"]

_log = guarded_logger("isoplug.host")

OnChange = Callable[[StateChange], None]

_PLAIN = (
    "on_change must be a plain function; it is called on the host's loop for every state "
    "change; to run a coroutine, schedule it with asyncio.create_task in it"
)


def checked_on_change(on_change: OnChange | None) -> OnChange | None:
    """``on_change``, if a host can call it. Raises :class:`TypeError` for what is not
    callable, and for an ``async def`` function (or object whose ``__call__`` is one)."""
    if on_change is None:
        return None
    if not callable(on_change):
        raise TypeError(f"Host(on_change=...): {on_change!r} is not callable; {_PLAIN}")
    if is_async_function(on_change):
        raise TypeError(f"Host(on_change=...): {on_change!r} is an async function: {_PLAIN}")
    return on_change


def call_on_change(on_change: OnChange, change: StateChange) -> None:
    """Call ``on_change``; what it raises is logged (the host goes on)."""
    # Typed as returning None, which an async __call__ the check missed does not.
    function: Callable[[StateChange], object] = on_change
    try:
        result = function(change)
    except Exception:
        _log.exception("on_change callback failed")
        return
    if inspect.isawaitable(result):
        # What checked_on_change cannot see: a plain function returning a coroutine.
        if inspect.iscoroutine(result):
            result.close()
        elif isinstance(result, asyncio.Future):
            result.cancel()
        _log.error("on_change callback returned %r, which is never awaited: %s", result, _PLAIN)
