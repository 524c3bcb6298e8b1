"""The bridge's loguru sink among the program's own: whether the program removed it, what the
host missed meanwhile, and sinks added one at a time.

A program that sets loguru up itself (``logger.remove()``) removes the sink
:mod:`isoplug.logs.loguru_bridge` added. Its messages then reach the host only through a sink
of its own on a console (whose text is made the record it renders) or a ``logging`` handler;
a runner looks whether one is there and puts the bridge's sink back if not
(:func:`~isoplug.logs.loguru_bridge.restore_bridge_sink`), saying how many messages the host
missed meanwhile: those handed only to sinks the host does not read (counted as loguru hands
them out), and those that reached no sink at all (counted by a wrapper of loguru's logging
method, which returns before any sink could see them). Separate from the bridge's sink itself,
which is the path of every message, because this is loguru's bookkeeping around it.
"""

from __future__ import annotations

import functools
import os
import sys
import threading
from types import ModuleType
from typing import Any, NamedTuple

__all__ = [
    "Unbridged",
    "add_sinks_one_at_a_time",
    "bridge_sink_removed",
    "bridge_sinks",
    "complete_enqueued_sinks",
    "count_if_unbridged",
    "count_messages_reaching_no_sink",
    "sinks_changing",
    "sinks_of",
    "take_unbridged",
    "writes_where_the_host_reads",
]

#: The loguru logger and the id of the sink :mod:`isoplug.logs.loguru_bridge` added to it
#: (none, or one).
bridge_sinks: list[tuple[Any, int]] = []


def sinks_of(logger: Any) -> dict[Any, Any] | None:
    """loguru's sinks (its handlers by id), or None where this loguru keeps them otherwise."""
    handlers = getattr(getattr(logger, "_core", None), "handlers", None)
    return handlers if isinstance(handlers, dict) else None


def bridge_sink_removed() -> bool:
    """True when the program removed the bridge's sink (``logger.remove()``)."""
    if not bridge_sinks:
        return False
    logger, sink_id = bridge_sinks[-1]
    sinks = sinks_of(logger)
    return sinks is not None and sink_id not in sinks


#: Messages loguru handed to the program's sinks while the bridge's was removed: (the last
#: one counted, how many).
_unbridged: list[Any] = [None, 0]


#: Messages logged while the bridge's sink was removed that loguru handed to no sink at all
#: (the program left none, or none at their level): its ``_log`` returns before any sink sees
#: them, so only a wrapper of that method counts them (:func:`count_messages_reaching_no_sink`).
_reaching_no_sink: list[int] = [0]
#: How many messages this thread handed to a sink, for the wrapper to tell whether its call did.
_handed = threading.local()


def count_if_unbridged(record: Any) -> None:
    """Count ``record`` (once, though loguru hands it to each sink) if it reaches no bridge."""
    _handed.count = getattr(_handed, "count", 0) + 1
    if _unbridged[0] is record or not bridge_sink_removed():
        return
    _unbridged[0] = record
    _unbridged[1] += 1


def writes_where_the_host_reads(handler: Any) -> bool:
    """True for a loguru sink whose output reaches the host anyway: one on ``sys.stdout`` or
    ``sys.stderr`` (what it writes is the record it renders, or text on the runner's pipes)
    or a ``logging`` handler."""
    sink = getattr(handler, "_sink", None)
    if hasattr(sink, "_handler"):  # loguru's StandardSink: logger.add(logging_handler)
        return True
    stream = getattr(sink, "_stream", None)
    return stream is not None and any(
        stream is console for console in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__)
    )


class Unbridged(NamedTuple):
    """The loguru messages logged while the bridge's sink was removed, which the host missed."""

    #: Handed to the program's own sinks (which write nowhere the host reads) only.
    only_to_own_sinks: int
    #: Handed to no sink at all (the program left none, or none at their level): lost. None:
    #: not counted (a loguru whose logging method isoplug cannot wrap).
    to_no_sink: int | None
    #: Whether the program had a sink of its own when the bridge's went back.
    had_own_sinks: bool = False


def count_messages_reaching_no_sink(module: ModuleType) -> None:
    """Wrap loguru's ``Logger._log`` (every logging method's) to count the messages that reach
    no sink while the bridge's is removed: with no sink of the program's own, or none at their
    level, loguru makes no record of them at all, so no sink or filter could. Once."""
    logger_class = getattr(sys.modules.get(f"{module.__name__}._logger"), "Logger", None)
    log = getattr(logger_class, "_log", None)
    if logger_class is None or not callable(log) or getattr(log, "_isoplug", False):
        return

    def log_counted(
        self: Any, level: Any, from_decorator: Any, options: Any, *args: Any, **kwargs: Any
    ) -> Any:
        handed = getattr(_handed, "count", 0)
        # One frame deeper than loguru counts on: its record names the caller's module, not
        # this one.
        deeper = (options[0], options[1] + 1, *options[2:])
        try:
            return log(self, level, from_decorator, deeper, *args, **kwargs)
        finally:
            if getattr(_handed, "count", 0) == handed and bridge_sink_removed():
                _reaching_no_sink[0] += 1

    # Only where loguru's options carry the caller's depth second, as in loguru 0.6 to 0.8:
    # elsewhere its records would name this module; their loss is then said uncounted.
    options = getattr(module.logger, "_options", None)
    if isinstance(options, tuple) and len(options) > 2 and type(options[1]) is int:
        log_counted._isoplug = True  # type: ignore[attr-defined]
        logger_class._log = log_counted
        _counting_no_sink.append(True)


#: Held while a sink is added to loguru, by the program or by
#: :func:`~isoplug.logs.loguru_bridge.restore_bridge_sink`.
sinks_changing = threading.RLock()


def _sinks_changing_anew_in_child() -> None:
    # A thread of the parent's adding a sink at the fork held it, and no thread of the child
    # would ever let it go. Not taken before the fork instead (as logging's lock is): loguru's
    # own fork handler takes its lock first, and an add holds this one and then waits for
    # loguru's: that fork and that add waited for each other for good.
    reinit = getattr(sinks_changing, "_at_fork_reinit", None)
    if reinit is not None:
        reinit()


os.register_at_fork(after_in_child=_sinks_changing_anew_in_child)


def add_sinks_one_at_a_time(module: ModuleType) -> None:
    """Make loguru's ``add`` wait for
    :func:`~isoplug.logs.loguru_bridge.restore_bridge_sink`, which looks whether the program
    left a sink of its own on a console and adds the bridge's back if not: else a program
    adding its console sink right after ``logger.remove()`` (in another thread than the look)
    could get it in first, ahead of the bridge's, which hands each message to the forwarding
    handler in time for the program's console sink to know it only when it comes
    first. Each message of the program's then arrived twice. Once."""
    logger_class = getattr(sys.modules.get(f"{module.__name__}._logger"), "Logger", None)
    add = getattr(logger_class, "add", None)
    if logger_class is None or not callable(add) or getattr(add, "_isoplug", False):
        return

    @functools.wraps(add)
    def add_one_at_a_time(self: Any, *args: Any, **kwargs: Any) -> Any:
        with sinks_changing:
            return add(self, *args, **kwargs)

    add_one_at_a_time._isoplug = True  # type: ignore[attr-defined]
    logger_class.add = add_one_at_a_time


#: Whether the messages reaching no sink are counted (:func:`count_messages_reaching_no_sink`).
_counting_no_sink: list[bool] = []


def take_unbridged(had_own_sinks: bool) -> Unbridged:
    """What the host missed since the bridge's sink was removed (see :class:`Unbridged`), the
    counts started again: the bridge's sink goes back."""
    lost = Unbridged(
        int(_unbridged[1]),
        _reaching_no_sink[0] if _counting_no_sink else None,
        had_own_sinks=had_own_sinks,
    )
    _unbridged[:] = [None, 0]
    _reaching_no_sink[0] = 0
    return lost


def complete_enqueued_sinks() -> None:
    """Wait until loguru's ``enqueue=True`` sinks have written what is queued
    (``logger.complete()``), if the program imported loguru. At exit, after the plugins'
    ``atexit`` hooks: loguru's own hook (``logger.remove``, which drains the queues) may have
    run before a hook added such a sink, or never run (loguru imported inside a hook is
    registered while the hooks run, too late to be called), and the sink's daemon thread then
    wrote its messages after the forwarding handler closed, or not at all."""
    module = sys.modules.get("loguru")
    complete = getattr(getattr(module, "logger", None), "complete", None)
    if callable(complete):
        complete()
