"""isoplug's own loggers, guarded: an application's log handler or filter that raises on one
of their records costs that record only.

isoplug logs on ``isoplug.host``, ``isoplug.rpc``, ``isoplug.logs``... where things happen:
in a supervisor task, a health check, a control link, a log thread. ``logging`` lets an
exception raised by a handler's ``emit`` (one without a ``try``/``handleError``: a network
handler during an outage) or by a filter (one reading a ``ContextVar`` that has no default)
through to whoever logged. There it ended a plugin's supervisor: a crash never restarted,
``host.restart()`` never returning. So every such logger is made by :func:`guarded_logger`, a
:class:`GuardedLogger`, whose ``handle()`` catches what the handlers and filters raise: the
record misses the handlers after the one that raised, and the code that logged goes on. Its
``makeRecord()`` likewise: an application's record factory (``logging.setLogRecordFactory``)
that raises (it reads a request's ``ContextVar``, which isoplug's threads never have) costs
the attributes it adds; the record is made as logging's default factory makes it.
Only isoplug's own loggers are guarded (a plugin's records, under ``plugin.``, are replayed
by the log bridge, which has its own accounting: :mod:`isoplug.logs.handler_errors`), and
they stay the objects ``logging.getLogger()`` returns: the application's levels, handlers,
``propagate``, ``dictConfig()`` and pytest's ``caplog`` apply to them as to any logger. (A
record a standalone ``LogReceiver`` replays under one of these names, a sender's own
``isoplug.*`` record, is guarded too: its failure is counted here, not in the receiver's
metrics.)

The failure is counted (:func:`handler_errors`) and said on ``sys.stderr``, as logging's own
``handleError`` says a handler's failure, never through the handlers (the raising one would
fail on its report too): the first one at once, with its traceback, then at most one summary
per :data:`SUMMARY_INTERVAL`, made when a later failure finds it due. Inside a
:func:`failure_report`, so that in a runner, whose ``sys.stderr`` makes records, the report
goes to the host alone, never to the plugin's handlers. What a record or an exception says
may quote a plugin: the report is sanitized (:mod:`isoplug.wire.sanitize`).
"""

from __future__ import annotations

import contextlib
import logging
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Mapping
from typing import Any, cast

from isoplug.wire.sanitize import clean_block, clean_text

__all__ = [
    "SUMMARY_INTERVAL",
    "GuardedLogger",
    "OwnRecordFailures",
    "describe_error",
    "failure_report",
    "guarded_logger",
    "handler_errors",
    "reporting_failure",
    "traceback_text",
]

#: Seconds between two summaries of failures on isoplug's own records, at most.
SUMMARY_INTERVAL = 60.0
#: The longest exception text quoted in a report.
_ERROR_CHARS = 500
#: The longest excerpt of the failed record's message quoted in a report.
_MESSAGE_CHARS = 200
#: The longest traceback attached to the first report.
_TRACEBACK_CHARS = 16 * 1024
_PREFIX = "isoplug"


class GuardedLogger(logging.Logger):
    """A logger whose handlers and filters cannot make logging raise: see the module
    docstring. Made by :func:`guarded_logger`, for isoplug's own loggers only."""

    def handle(self, record: logging.LogRecord) -> None:
        try:
            super().handle(record)
        except Exception as error:
            # Looked up at each failure: a test gives the module a fresh account.
            failures.failed(error, record)

    def makeRecord(  # noqa: PLR0917 (logging's signature)
        self,
        name: str,
        level: int,
        fn: str,
        lno: int,
        msg: object,
        args: Any,
        exc_info: Any,
        func: str | None = None,
        extra: Mapping[str, object] | None = None,
        sinfo: str | None = None,
    ) -> logging.LogRecord:
        # The application's record factory (logging.setLogRecordFactory) runs here, before
        # handle(): one that raises (it reads a request's ContextVar, which isoplug's threads
        # and tasks do not have) must cost its attributes only, as on replayed records.
        try:
            return super().makeRecord(name, level, fn, lno, msg, args, exc_info, func, extra, sinfo)
        except Exception as error:
            record = logging.LogRecord(name, level, fn, lno, msg, args, exc_info, func, sinfo)
            for key, value in (extra or {}).items():
                record.__dict__[key] = value
            failures.failed(error, record)
            return record


# The guarded class for each logger class an application gave logging (setLoggerClass), so
# that its loggers keep what its class adds.
_guarded_classes: dict[type[logging.Logger], type[GuardedLogger]] = {}
_classes_lock = threading.Lock()


def guarded_logger(name: str) -> logging.Logger:
    """The logger ``name`` (``isoplug`` or under it), guarded: the one ``logging.getLogger``
    returns, so that whatever configured it before (or configures it later) holds."""
    if name != _PREFIX and not name.startswith(f"{_PREFIX}."):
        raise ValueError(
            f"guarded_logger() is for isoplug's own loggers, not {name!r}: name one under "
            f"{_PREFIX!r} ('{_PREFIX}.host'), or use logging.getLogger() for any other"
        )
    logger = logging.getLogger(name)
    if not isinstance(logger, GuardedLogger):
        # The object itself is kept, not replaced: an application that configured the logger
        # before importing isoplug (handlers, level) holds references to it. Its class gains
        # the guard; a subclass adding no slots shares the object's layout, so the change is
        # allowed whatever class the application's logging made it with.
        logger.__class__ = _guarded_class(type(logger))
    return logger


def _guarded_class(base: type[logging.Logger]) -> type[GuardedLogger]:
    if base is logging.Logger:
        return GuardedLogger
    with _classes_lock:
        guarded = _guarded_classes.get(base)
        if guarded is None:
            made = type(f"Guarded{base.__name__}", (GuardedLogger, base), {})
            guarded = _guarded_classes[base] = cast(type[GuardedLogger], made)
        return guarded


def handler_errors() -> int:
    """How many times, in this process, a log handler, filter or record factory raised on a
    record of isoplug's own loggers (each time, that record missed the handlers after it, or
    the factory's attributes)."""
    return failures.count


class OwnRecordFailures:
    """Counts and says the failures of handlers and filters on isoplug's own records (see the
    module docstring). Thread-safe: every thread that logs reports through one instance.
    ``interval``: seconds between two summaries, at most; ``clock``: where time comes from."""

    def __init__(
        self,
        interval: float = SUMMARY_INTERVAL,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.interval = interval
        self._clock = clock
        self._lock = threading.Lock()
        #: Every failure so far.
        self.count = 0
        # Failures since the last line said, the latest described, and when that line was.
        self._unsaid = 0
        self._latest = ""
        self._said_at: float | None = None
        self._reporting = threading.local()

    def failed(self, error: Exception, record: logging.LogRecord) -> None:
        """A handler or filter raised ``error`` on ``record``: count it, and say it if due."""
        what = describe_error(error)
        where = f"a record of {clean_text(record.name, 200)}"
        with self._lock:
            self.count += 1
            if getattr(self._reporting, "active", False):
                # Writing this thread's report made another record fail (a stderr that logs):
                # counted, and said in the next summary, never reported from inside a report.
                self._unsaid += 1
                self._latest = f"{what} on {where}"
                return
            now = self._clock()
            if self._said_at is None:
                text = self._first(what, where, record, error)
            elif now - self._said_at >= self.interval:
                text = self._summary(what, where, now - self._said_at)
            else:
                self._unsaid += 1
                self._latest = f"{what} on {where}"
                return
            self._said_at, self._unsaid, self._latest = now, 0, ""
        self._say(text)

    def _first(self, what: str, where: str, record: logging.LogRecord, error: Exception) -> str:
        return (
            f"isoplug: a log handler, filter or record factory raised {what} on {where} "
            f"({record.levelname}: {_message_of(record)}); that record missed the handlers "
            "after it, and isoplug went on (later failures on isoplug's own records are "
            "counted, isoplug.log_guard.handler_errors(), and summed up here at most every "
            f"{self.interval:g} s)\n{clean_block(traceback_text(error), _TRACEBACK_CHARS)}"
        )

    def _summary(self, what: str, where: str, seconds: float) -> str:
        # The pending failures and this one.
        more = self._unsaid + 1
        return (
            f"isoplug: log handlers, filters or record factories raised {more:,} more time(s) on "
            f"isoplug's own records over {seconds:.0f} s (the latest: {what} on {where}); each "
            "cost that record only"
        )

    def _say(self, text: str) -> None:
        self._reporting.active = True
        try:
            with failure_report():
                stream = sys.stderr
                if stream is not None:
                    stream.write(text + "\n")
        except Exception as error:
            # The application's stderr failed too (closed, or one that logs): the process's
            # own stderr is the last place left to say it.
            with contextlib.suppress(Exception):
                real = sys.__stderr__
                if real is not None:
                    real.write(f"{text}\n(sys.stderr raised {describe_error(error)})\n")
                    real.flush()
        finally:
            self._reporting.active = False


#: The account of this process's failures on isoplug's own records.
failures = OwnRecordFailures()


def _message_of(record: logging.LogRecord) -> str:
    """The record's message, sanitized and cut; its template when the message cannot be made
    (the arguments not matching it may be what failed)."""
    try:
        message = record.getMessage()
    except Exception:
        message = f"{record.msg!r} (its arguments do not fit it)"
    return clean_text(message, _MESSAGE_CHARS)


# -- reports of failed handlers ---------------------------------------------------------------

#: How deep this thread is in reports of handlers that failed.
_reports = threading.local()


@contextlib.contextmanager
def failure_report() -> Iterator[None]:
    """Mark this thread as writing a failed handler's report (``--- Logging error ---``, or a
    guarded logger's) until the block ends: a runner's streams make its lines records for the
    host alone (:func:`~isoplug.logs.output_records.deliver`), never handed to the plugin's
    handlers, among them the one that failed, which would fail on each line and report again.
    In a program of its own the report is stderr's, which no handler sees."""
    _reports.depth = getattr(_reports, "depth", 0) + 1
    try:
        yield
        # The report's last lines, a traceback the stream holds for a chained one included,
        # are records before the mark goes.
        stream = sys.stderr
        if stream is not None:
            with contextlib.suppress(OSError, ValueError):  # closed: nothing is held then
                stream.flush()
    finally:
        _reports.depth -= 1


def reporting_failure() -> bool:
    """True on a thread inside a :func:`failure_report`."""
    return getattr(_reports, "depth", 0) > 0


def describe_error(error: BaseException) -> str:
    """``Type: message``, sanitized; never raises (an exception's __str__ may)."""
    try:
        message = str(error)
    except Exception:
        message = "(its message cannot be shown: str() raised)"
    text = f"{type(error).__name__}: {message}" if message else type(error).__name__
    return clean_text(text, _ERROR_CHARS)


def traceback_text(error: BaseException) -> str:
    """The traceback of ``error`` as Python prints it (not sanitized); never raises."""
    try:
        return "".join(traceback.format_exception(error)).rstrip("\n")
    except Exception:
        return "(the traceback cannot be formatted)"
