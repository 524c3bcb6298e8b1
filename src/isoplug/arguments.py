"""Checks of what a caller passes to isoplug's API, in one place, so that one mistake is said
in the same words wherever it is made: a timeout that is no number (``timeout="5"`` reached
asyncio as a raw ``TypeError``) or below its floor, a lone string where a list of names goes
(it was read letter by letter), an ``async def`` function where a plain one is called (its
coroutine was never awaited: a truthy object, and only a ``RuntimeWarning`` said so).
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Iterable
from typing import overload

__all__ = ["checked_names", "checked_timeout", "is_async_function"]


@overload
def checked_timeout(
    value: float,
    name: str = ...,
    *,
    above_zero: bool = ...,
    none: bool = ...,
    finite: bool = ...,
) -> float: ...


@overload
def checked_timeout(
    value: float | None,
    name: str = ...,
    *,
    above_zero: bool = ...,
    none: bool = ...,
    finite: bool = ...,
) -> float | None: ...


def checked_timeout(
    value: float | None,
    name: str = "timeout",
    *,
    above_zero: bool = False,
    none: bool = True,
    finite: bool = False,
) -> float | None:
    """``value``, a number of seconds of 0 or more (more than 0 with ``above_zero``; not
    infinite with ``finite``), or None (no limit) unless ``none`` is false. Raises
    :class:`TypeError` for what is no number (a bool neither), :class:`ValueError` for a
    number below the floor (NaN too) or an infinite one where ``finite`` is asked."""
    if value is None and none:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(
            f"{name} must be a number of seconds{' or None' if none else ''}, got "
            f"{type(value).__name__} {value!r:.60}"
        )
    if above_zero and not value > 0:
        raise ValueError(f"{name} must be more than 0 seconds, got {value!r}")
    if not value >= 0:
        raise ValueError(f"{name} must be 0 or more seconds, got {value!r}")
    if finite and math.isinf(value):
        raise ValueError(
            f"{name} must be a finite number of seconds (a wait that has to end), got {value!r}"
        )
    return value


def checked_names(names: Iterable[str], name: str, what: str) -> tuple[str, ...]:
    """``names`` (an iterable of ``what``: "capability names", say), as a tuple. Raises
    :class:`TypeError` for a lone string, which iterates as its letters, naming the list to
    write instead, and for an item that is not a string."""
    if isinstance(names, str | bytes):
        raise TypeError(
            f"{name} must be a list of {what}, not the single string {names!r:.60}: write "
            f"{name}=[{names!r:.60}]"
        )
    if not isinstance(names, Iterable):
        raise TypeError(f"{name} must be a list of {what}, got {type(names).__name__}")
    items = tuple(names)
    for item in items:
        if not isinstance(item, str):
            raise TypeError(
                f"{name} must be a list of {what} (strings), but holds "
                f"{type(item).__name__} {item!r:.60}"
            )
    return items


def is_async_function(function: object) -> bool:
    """Whether calling ``function`` makes a coroutine by its definition: an ``async def``
    function, or an object whose ``__call__`` is one."""
    return inspect.iscoroutinefunction(function) or inspect.iscoroutinefunction(
        getattr(function, "__call__", None)  # noqa: B004 (an object with an async __call__)
    )
