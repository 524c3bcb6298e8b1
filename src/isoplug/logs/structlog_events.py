"""A structlog event printed by structlog's own loggers: the record it would have been.

structlog out of the box, and any configuration with its ``PrintLogger`` or ``WriteLogger``,
renders each event to text (``ConsoleRenderer``: ``2026-12-06 10:00:00 [error    ] failed
code=42``, an exception as a drawn box) and prints it. In a runner that text would arrive as
stdout lines at INFO, an error's level and exception lost. The event is still at hand while it
prints, in the frame of structlog's ``_proxy_to_logger`` (the method called, the event, its
keywords, the logger's bound context), so :mod:`isoplug.logs.rendered_records` asks
:func:`record_of_event` for the record it stands for: the level of the method called, the event
as the message, the bound context and keywords as extras (reserved names renamed, as the host
renames them), the exception of ``exc_info``, located at the code that logged, on the logger of
that code's module under the current source. structlog is never imported here.
"""

from __future__ import annotations

import logging
from types import FrameType

from isoplug.logs.exceptions import resolve_exc_info
from isoplug.logs.record_names import add_extras
from isoplug.logs.sources import current_source

__all__ = ["is_event_frame", "record_of_event"]

#: structlog's method names that are no level's name.
_METHOD_LEVELS = {
    "exception": logging.ERROR,
    "err": logging.ERROR,
    "failure": logging.ERROR,
    "fatal": logging.CRITICAL,
    "warn": logging.WARNING,
    "msg": logging.INFO,
    "log": logging.INFO,
}
#: Keywords structlog's processors read rather than show.
_NOT_EXTRAS = frozenset({"exc_info", "stack_info", "event"})
#: How many of structlog's own frames may lie between its logging method and the code that
#: called it (a bound logger's method, a filtering one's, a proxy's).
_MAX_STRUCTLOG_FRAMES = 8


def is_event_frame(frame: FrameType) -> bool:
    """True for the frame of structlog's ``_proxy_to_logger``, which prints an event."""
    return frame.f_code.co_name == "_proxy_to_logger" and _in_structlog(frame)


def record_of_event(frame: FrameType) -> tuple[logging.Logger, logging.LogRecord] | None:
    """The logger and record of the event the ``_proxy_to_logger`` frame ``frame`` prints;
    None when its locals are not what structlog's are."""
    names = frame.f_locals
    method = names.get("method_name")
    keywords = names.get("event_kw")
    bound = getattr(names.get("self"), "_context", None)
    if not isinstance(method, str) or not isinstance(keywords, dict):
        return None
    level = _METHOD_LEVELS.get(method)
    if level is None:
        named = logging.getLevelName(method.upper())
        level = named if isinstance(named, int) else logging.INFO
    caller = frame.f_back
    for _ in range(_MAX_STRUCTLOG_FRAMES):
        if caller is None or not _in_structlog(caller):
            break
        caller = caller.f_back
    module = caller.f_globals.get("__name__", "structlog") if caller is not None else "structlog"
    source = current_source.get()
    name = f"{source}.{module}" if source else str(module)
    event = names.get("event")
    record = logging.LogRecord(
        name,
        level,
        caller.f_code.co_filename if caller is not None else "",
        caller.f_lineno if caller is not None else 0,
        "" if event is None else str(event),
        None,
        resolve_exc_info(keywords.get("exc_info")),
        caller.f_code.co_name if caller is not None else None,
    )
    fields = {**bound, **keywords} if isinstance(bound, dict) else keywords
    add_extras(
        record.__dict__,
        {
            key: value
            for key, value in fields.items()
            if type(key) is str and key not in _NOT_EXTRAS
        },
    )
    return logging.getLogger(name), record


def _in_structlog(frame: FrameType) -> bool:
    module = frame.f_globals.get("__name__")
    return type(module) is str and module.partition(".")[0] == "structlog"
