"""Checks that run before each replayed batch, on the thread that replays it.

For code that must see a change of the logging configuration before the next replayed record
reaches the loggers: the OpenTelemetry export (:mod:`isoplug.otel.logs`) attaches its handler
again where a ``dictConfig`` removed it, and a check on its own thread's schedule alone let
the records replayed meanwhile go unexported, with no count. A check must be quick (it runs
once per batch, on every replay thread) and safe to run from several threads at once.
"""

from __future__ import annotations

from collections.abc import Callable

__all__ = ["add_replay_check", "remove_replay_check", "run_replay_checks"]

#: Replaced, never changed in place: a replay thread iterates the tuple it read.
_checks: list[tuple[Callable[[], None], ...]] = [()]


def add_replay_check(check: Callable[[], None]) -> None:
    _checks[0] = (*_checks[0], check)


def remove_replay_check(check: Callable[[], None]) -> None:
    # == and not `is`: a bound method is a new object at each access, equal to the others.
    _checks[0] = tuple(c for c in _checks[0] if c != check)


def run_replay_checks() -> None:
    for check in _checks[0]:
        check()
