"""Which event loop a runner (and the command line) runs on: uvloop when it is installed.

uvloop (the ``isoplug[uvloop]`` extra) halves the cost of the loop's own work per call: its
sockets, callbacks and futures' wake-ups are C. isoplug runs the same code on either loop; the
choice is only speed. The environment variable :data:`EVENT_LOOP_VARIABLE` overrides it (a
plugin's manifest can set it in ``[environment]``, for its runner alone):

- ``auto`` (the default, also when unset or empty): uvloop if it can be imported, else asyncio;
- ``asyncio``: the standard library's loop, even where uvloop is installed;
- ``uvloop``: uvloop; where it cannot be imported, asyncio, with a warning.

An application that embeds a :class:`~isoplug.Host` chooses its own loop: the host runs on
whatever loop it is given.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Coroutine
from typing import Any, Final, TypeVar

from isoplug.log_guard import guarded_logger

__all__ = ["EVENT_LOOP_VARIABLE", "loop_factory", "loop_name", "run"]

T = TypeVar("T")

EVENT_LOOP_VARIABLE: Final = "ISOPLUG_EVENT_LOOP"
_CHOICES: Final = ("auto", "asyncio", "uvloop")

_log = guarded_logger("isoplug.runner")

LoopFactory = Callable[[], asyncio.AbstractEventLoop]


def loop_factory(choice: str | None = None) -> LoopFactory:
    """The factory of the loop ``choice`` names (default: :data:`EVENT_LOOP_VARIABLE`'s value).

    An unknown choice, or ``uvloop`` where it cannot be imported, falls back to asyncio with
    a warning: the process must still run.
    """
    if choice is None:
        choice = os.environ.get(EVENT_LOOP_VARIABLE, "")
    choice = choice.strip().lower() or "auto"
    if choice not in _CHOICES:
        _log.warning(
            "%s=%.40r is not one of %s: using the asyncio loop",
            EVENT_LOOP_VARIABLE,
            choice,
            ", ".join(_CHOICES),
        )
        return asyncio.new_event_loop
    if choice == "asyncio":
        return asyncio.new_event_loop
    try:
        import uvloop
    except ImportError as exc:
        if choice == "uvloop":
            _log.warning(
                "%s=uvloop, but uvloop cannot be imported (%s): using the asyncio loop "
                "(install isoplug[uvloop])",
                EVENT_LOOP_VARIABLE,
                exc,
            )
        return asyncio.new_event_loop
    factory: LoopFactory = uvloop.new_event_loop
    return factory


def loop_name(loop: asyncio.AbstractEventLoop) -> str:
    """``"uvloop"`` or ``"asyncio"``: which kind ``loop`` is (for reports and tests)."""
    return "uvloop" if type(loop).__module__.startswith("uvloop") else "asyncio"


def run(
    main: Coroutine[Any, Any, T],
    choice: str | None = None,
    *,
    wrap_factory: Callable[[LoopFactory], LoopFactory] | None = None,
) -> T:
    """``asyncio.run(main)`` on the loop :func:`loop_factory` picks (made through
    ``wrap_factory(factory)``, if given)."""
    factory = loop_factory(choice)
    if wrap_factory is not None:
        factory = wrap_factory(factory)
    try:
        with asyncio.Runner(loop_factory=factory) as runner:
            return runner.run(main)
    finally:
        # A loop that could not be made or run (out of descriptors) never started it:
        # closed, it is not reported as "never awaited" over the error that says why.
        main.close()
