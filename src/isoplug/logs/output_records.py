"""The records a :class:`~isoplug.logs.streams.LogStream` makes of printed text, and their
delivery to a logger's handlers.

Records are built directly (no ``findCaller``, no record factory) with exactly the standard
attributes, in the order ``LogRecord.__init__`` sets them, so that a plain line takes
:func:`~isoplug.logs.capture.capture_record`'s fast path: a plain ``print()`` must stay cheap.
A classified line's extras follow them: ``truncated`` (when cut), and a JSON line's fields (one
named like a record attribute or like a name its identity, level or message is read under,
``logger`` or ``level`` say, is renamed ``extra_<name>``: :mod:`isoplug.logs.record_names`).
The pid and process name are this process's, refreshed after a fork. A line's location is the
first frame of its writer that is not the stream's own code nor ``traceback``, ``logging`` or
``warnings``, nor structlog's or loguru's (their printers write a plugin's records: the
plugin's call of them is the line's source), known by module name so that neither need be
imported (:func:`location_of`).

:func:`deliver` hands a record to a logger's handlers; text the handlers write meanwhile on the
same thread goes to the original streams (see :class:`~isoplug.logs.stream_state.PerThread`),
so output never loops back into a stream. In a runner the record reaches its forwarding handler
whatever the plugin did to its loggers' handlers (a program of its own shows its prints and
crashes whatever its logging says), and a failed handler's report reaches it alone.
isoplug's own failures are said on the real stderr (:func:`report_failure`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
import traceback
import warnings
from types import FrameType, ModuleType
from typing import Any

from isoplug.log_guard import reporting_failure
from isoplug.logs import handler_errors
from isoplug.logs.capture import CapturedLineRecord, line_site
from isoplug.logs.handler import ForwardingHandler
from isoplug.logs.kept_forwarder import forward_aside, forward_once, kept_forwarder, reaches
from isoplug.logs.printed_tracebacks import read_back, read_back_budget
from isoplug.logs.record_names import TRUNCATED_KEYS, renamed, reserved_field
from isoplug.logs.source_names import SourceNamingHandler
from isoplug.logs.stream_state import LineState, PerThread, this_thread
from isoplug.logs.textlines import TextRecord
from isoplug.logs.trace_ids import add_trace_ids
from isoplug.logs.tracebacks import ExceptionRebuilder

__all__ = [
    "HAS_TASK_NAME",
    "NOWHERE",
    "SKIPPED_FILES",
    "SKIPPED_PACKAGES",
    "START_TIME",
    "Location",
    "deliver",
    "deliver_from",
    "location_of",
    "make_record",
    "output_enabled",
    "remember_site",
    "report_failure",
    "site_attributes",
    "skip_frames_of",
    "sole_forwarder",
    "stamp",
    "task_name",
    "text_record",
]

_new = object.__new__
_time = time.time
#: ``relativeCreated`` counts from here, as it does for the logging module's own records.
START_TIME: float = getattr(logging, "_startTime", time.time())
HAS_TASK_NAME = sys.version_info >= (3, 12)
#: Levels loguru and others use that the logging module may not know by name.
_EXTRA_LEVEL_NAMES = {5: "TRACE", 25: "SUCCESS"}


def _level_name(level: int) -> str:
    name = logging.getLevelName(level)
    if isinstance(name, str) and not name.startswith("Level "):
        return name
    return _EXTRA_LEVEL_NAMES.get(level, f"Level {level}")


class _Process:
    """This process's pid and name for records, refreshed after a fork."""

    pid = os.getpid()
    name: str | None = None

    @classmethod
    def refresh_name(cls) -> str:
        name = "MainProcess"
        mp = sys.modules.get("multiprocessing")
        if mp is not None:
            with contextlib.suppress(Exception):
                name = mp.current_process().name
        cls.name = name
        return name


def _after_fork_in_child() -> None:
    _Process.pid = os.getpid()
    _Process.name = None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def output_enabled(logger: logging.Logger, level: int) -> bool:
    """``logger.isEnabledFor(level)``, but for ``logging.disable()``: output that is no
    logging call of the plugin's (a print, a stderr write, a warning, an uncaught exception,
    loguru) obeys the loggers' levels, which the plugin and the host set, and their
    ``disabled``, but not a ``logging.disable()`` meant for logging calls, which in a program
    of its own would leave all of them shown."""
    if logger.isEnabledFor(level):
        return True
    return (
        not logger.disabled
        and logger.manager.disable >= level
        and level >= logger.getEffectiveLevel()
    )


def task_name() -> str | None:
    """The name of the asyncio task running now, or None."""
    asyncio = sys.modules.get("asyncio")
    if asyncio is None:
        return None
    # Asked for every line printed: outside a loop (a worker thread) current_task() would raise,
    # and a raised and caught error costs a print() about a third of its price.
    loop = asyncio.events._get_running_loop()
    if loop is None:
        return None
    task = asyncio.current_task(loop)
    return None if task is None else task.get_name()


# -- where a line was written -----------------------------------------------------------------

#: (pathname, filename, module, lineno, funcName): where a line was written.
Location = tuple[str, str, str, int, str]
NOWHERE: Location = ("", "", "", 0, "")

#: Files whose frames are not a line's source: the writer that called them is (the code that
#: called traceback.print_exc(), logger.info() through a StreamHandler, this module, and the
#: modules given to :func:`skip_frames_of`).
SKIPPED_FILES = {
    path
    # handler_errors: logging.Handler.handleError as isoplug wraps it, printing a failed
    # handler's report for it; log_guard (found through a function of its own, as the layering
    # rules have no import of a module from the bare package) printing the report of a
    # failure on isoplug's own records.
    for module in (
        traceback,
        logging,
        warnings,
        handler_errors,
        sys.modules[reporting_failure.__module__],
        sys.modules[__name__],
    )
    for path in (getattr(module, "__file__", None),)
    if path
}
_file_names: dict[str, tuple[str, str]] = {}
_MAX_FILE_NAMES = 10_000


def skip_frames_of(module: ModuleType) -> None:
    """Count the frames of ``module`` as not a line's source (a stream's own code)."""
    path = getattr(module, "__file__", None)
    if path:
        SKIPPED_FILES.add(path)


#: Packages whose frames are not a line's source either: logging libraries that print a
#: plugin's records (structlog's PrintLogger, loguru's stream sinks). Known by the name of the
#: module a frame runs in, so that the runner need not import them to skip them.
SKIPPED_PACKAGES = frozenset({"structlog", "loguru"})


def _skipped(frame: FrameType) -> bool:
    if frame.f_code.co_filename in SKIPPED_FILES:
        return True
    module = frame.f_globals.get("__name__")
    return type(module) is str and module.partition(".")[0] in SKIPPED_PACKAGES


def location_of(frame: FrameType | None) -> Location:
    """Where the code of ``frame`` is, past the frames of :data:`SKIPPED_FILES` and
    :data:`SKIPPED_PACKAGES`."""
    while frame is not None and _skipped(frame):
        frame = frame.f_back
    if frame is None:
        return NOWHERE
    code = frame.f_code
    pathname = code.co_filename
    names = _file_names.get(pathname)
    if names is None:
        filename = os.path.basename(pathname)
        names = (filename, os.path.splitext(filename)[0])
        if len(_file_names) < _MAX_FILE_NAMES:
            _file_names[pathname] = names
    return (pathname, names[0], names[1], frame.f_lineno, code.co_name)


# -- records -----------------------------------------------------------------------------------

#: Every standard attribute, in the order ``LogRecord.__init__`` sets them: a record whose
#: ``__dict__`` starts with these in this order has its extras found without a search.
_STANDARD = dict(logging.LogRecord("", logging.NOTSET, "", 0, "", None, None).__dict__)


def site_attributes(name: str, level: int, location: Location, owner: PerThread) -> dict[str, Any]:
    """A record's attributes, except those of each record (see :func:`stamp`)."""
    pathname, filename, module, lineno, func = location
    attributes = _STANDARD.copy()
    attributes["name"] = name
    attributes["levelname"] = _level_name(level)
    attributes["levelno"] = level
    attributes["pathname"] = pathname
    attributes["filename"] = filename
    attributes["module"] = module
    attributes["lineno"] = lineno
    attributes["funcName"] = func
    attributes["thread"] = owner.ident
    attributes["processName"] = _Process.name or _Process.refresh_name()
    attributes["process"] = _Process.pid
    return attributes


def stamp(
    attributes: dict[str, Any],
    message: str,
    owner: PerThread,
    kind: type[logging.LogRecord] = logging.LogRecord,
) -> logging.LogRecord:
    """A record of ``attributes`` (from :func:`site_attributes`), with its message and time;
    a ``kind`` (a plain ``LogRecord``, or a :class:`CapturedLineRecord`)."""
    created = _time()
    attributes["msg"] = message
    attributes["created"] = created
    attributes["msecs"] = int((created - int(created)) * 1000) + 0.0
    attributes["relativeCreated"] = (created - START_TIME) * 1000
    attributes["threadName"] = owner.thread.name
    if HAS_TASK_NAME:
        attributes["taskName"] = task_name()
    add_trace_ids(attributes)
    record = _new(kind)
    record.__dict__ = attributes
    return record


def make_record(
    name: str,
    level: int,
    message: str,
    location: Location,
    owner: PerThread,
    *,
    extra: dict[str, Any] | None = None,
) -> logging.LogRecord:
    """A complete record: the standard attributes first, in ``LogRecord.__init__``'s order (so
    the encoder finds the extras at the end), then ``extra``. A record with ``extra`` is a
    :class:`CapturedLineRecord`: the capture's own flags in it are sent as they are."""
    attributes = site_attributes(name, level, location, owner)
    if extra:
        attributes.update(extra)
        return stamp(attributes, message, owner, CapturedLineRecord)
    return stamp(attributes, message, owner)


def text_record(
    name: str, text: TextRecord, location: Location, owner: PerThread
) -> logging.LogRecord:
    """The record of what the classifier made of a line or a block: its level and message,
    its fields (renamed where they would overwrite an attribute) and ``truncated``; a printed
    traceback's, its exception (see :mod:`isoplug.logs.printed_tracebacks`)."""
    if text.traceback and not text.truncated:
        record = printed_traceback_record(name, text, location, owner)
        if record is not None:
            return record
    extra: dict[str, Any] | None = None
    if text.extra or text.truncated:
        extra = {}
        for field, value in text.extra.items():
            key = field
            # A JSON line's field named as the host's rule reserves (a record attribute, a
            # name its identity, severity or message is read under...: the host renames them
            # too), or as isoplug's own ``truncated`` flag, is renamed extra_<name>; the
            # classifier's own count of the fields it left out is the one marker kept.
            if field == "truncated" or (field != TRUNCATED_KEYS and reserved_field(field, value)):
                key = renamed(field, text.extra, extra)
            extra[key] = value
        if text.truncated:
            extra["truncated"] = True
    return make_record(name, text.level, text.message, location, owner, extra=extra)


#: The first failure to rebuild a printed traceback's exception, once there was one.
_rebuild_failed: list[Exception] = []
#: This process's printed tracebacks read back, at most READ_BACK_RATE a second.
_read_back_budget = read_back_budget()


def printed_traceback_record(
    name: str, text: TextRecord, location: Location, owner: PerThread
) -> logging.LogRecord | None:
    """The record of a printed traceback with its exception as ``exc_info``, a genuine one
    (this process's handlers read it, the forwarding handler sends it as a logged one's); None
    when the text is not one Python printed, its exception cannot be rebuilt here, the rebuilt
    frames would not show the source lines the text shows, or this process printed more than
    :data:`~isoplug.logs.printed_tracebacks.READ_BACK_RATE` tracebacks a second."""
    if not _read_back_budget.take():
        return None
    try:
        # A rebuilder of its own each time: the source files a rebuilder may read are counted
        # against a budget for its whole life (see isoplug.logs.sourcelines), and these are
        # the files of this very process, whose printed tracebacks never stop coming.
        read = read_back(text.message, ExceptionRebuilder())
    except Exception as exc:
        # Once: a Python whose code objects isoplug cannot build fails every time.
        if not _rebuild_failed:
            _rebuild_failed.append(exc)
            report_failure(f"isoplug: printed tracebacks stay text: {exc!r}")
        return None
    if read is None:
        return None
    printed, exc_info = read
    attributes = site_attributes(name, text.level, location, owner)
    attributes["exc_info"] = exc_info
    return stamp(attributes, printed.message, owner)


def remember_site(
    state: LineState, logger: logging.Logger, level: int, frame: FrameType
) -> dict[str, Any]:
    """The attributes of a line written from ``frame`` to ``logger``, remembered in
    ``state`` for the next line from there (a loop that prints)."""
    location = location_of(frame)
    attributes = site_attributes(logger.name, level, location, state.owner)
    if _skipped(frame):
        # The location is that of an outer frame, which the next call may not share.
        state.site_code = None
    else:
        state.site_code = frame.f_code
        state.site_lineno = frame.f_lineno
        state.site_logger = logger
        state.site_attributes = attributes.copy()
        state.site_thread_name = thread_name = state.owner.thread.name
        try:
            state.site_line = line_site(attributes, thread_name)
        except (ValueError, TypeError):
            # A path or name msgpack cannot carry (lone surrogates): records carry it safely.
            state.site_line = None
    return attributes


# -- delivery ----------------------------------------------------------------------------------


def sole_forwarder(logger: logging.Logger, level: int) -> ForwardingHandler | None:
    """The :class:`~isoplug.logs.ForwardingHandler` that is the only handler a record of
    ``level`` from ``logger`` would reach, with no filter on the way; else None. Then a plain
    line may skip the record (see :meth:`~isoplug.logs.ForwardingHandler.forward_line`): it
    reaches exactly what it would have reached. Checked for every line, so that handlers and
    filters added at any time take effect at once (a walk up two or three loggers)."""
    if logger.filters:
        return None
    found: logging.Handler | None = None
    current: logging.Logger | None = logger
    while current is not None:
        handlers = current.handlers
        if handlers:
            if found is not None or len(handlers) != 1:
                return None
            found = handlers[0]
        if not current.propagate:
            break
        current = current.parent
    if (
        (
            type(found) is not ForwardingHandler
            # Its handle() renames no line: a line's logger is named for its source already.
            and type(found) is not SourceNamingHandler
        )
        or found.filters
        or level < found.level
    ):
        return None
    return found


def deliver(logger: logging.Logger, record: logging.LogRecord) -> None:
    """Hand ``record`` to ``logger``'s handlers (its filters apply; its level is the caller's
    to check). Text the handlers write meanwhile on this thread (an error report) goes to the
    original streams, not back into a :class:`~isoplug.logs.streams.LogStream`; a failure is
    reported there too."""
    per_thread = this_thread()
    deliver_from(per_thread, logger, record)


def deliver_from(per_thread: PerThread, logger: logging.Logger, record: logging.LogRecord) -> None:
    """:func:`deliver`, from the thread whose state is ``per_thread``."""
    was_emitting = per_thread.emitting
    per_thread.emitting = True
    try:
        forwarder = kept_forwarder()
        if forwarder is None:
            if logger.filters:
                logger.handle(record)
            else:
                logger.callHandlers(record)
        else:
            _deliver_forwarding(forwarder, logger, record)
    except Exception as exc:
        report_failure(f"isoplug: handling a record of {logger.name} failed: {exc!r}")
    finally:
        per_thread.emitting = was_emitting


def _deliver_forwarding(
    forwarder: ForwardingHandler, logger: logging.Logger, record: logging.LogRecord
) -> None:
    """Deliver in a process whose output goes to ``forwarder`` (a runner's), which it reaches
    whatever the plugin did to the loggers' handlers: a program of its own shows its prints,
    stderr writes, warnings and crashes whatever its logging says. A failed handler's report
    (:func:`~isoplug.log_guard.failure_report`) goes to ``forwarder`` alone."""
    if reporting_failure():
        forward_once(record, record, forwarder.handle)
        return
    if logger.filters:
        passed = not logger.disabled and logger.filter(record)
        if not passed:
            return
        if isinstance(passed, logging.LogRecord):  # Python 3.12+: a filter's new record
            record = passed
    if reaches(forwarder, logger):
        logger.callHandlers(record)
        return
    # Off the handler's way (root handlers cleared or replaced, propagation turned off): to it
    # first, once; then to the handlers there are, not to logging's last resort when there are
    # none, which would write the record to stderr, or say "No handlers could be found".
    forward_aside(record, forwarder)
    if logger.hasHandlers():
        logger.callHandlers(record)


def report_failure(text: str) -> None:
    """isoplug's own trouble, said where the host still listens: the real stderr."""
    with contextlib.suppress(Exception):
        stream = sys.__stderr__
        if stream is not None:
            stream.write(text + "\n")
            stream.flush()
