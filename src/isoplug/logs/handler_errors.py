"""Host handlers that raise on a replayed record: :class:`HandlerErrors`.

A replayed record is handed to ``logger.handle()``; a handler (or a filter) of the host's that
raises there must cost that record at most, never the sender's connection. ``logging`` lets
such an exception through, so the replayer catches it, counts it in
:attr:`~isoplug.logs.LogMetrics.handler_errors`, and tells :class:`HandlerErrors`, which
reports on the host's own logger (``isoplug.host`` in a Host, ``isoplug.logs`` in a
``LogReceiver``), not on the sender's, whose handlers are likely the broken ones: the first
error at once, with its type, message and traceback, then at most one summary per interval
(:mod:`isoplug.logs.report_throttle`). If reporting raises too, the report goes to the host's
stderr instead.

The standard handlers catch their own failures and call ``handleError``, which prints
``--- Logging error ---``, a traceback and the call stack for every record: a host handler
writing to a closed file printed 12,668 of them (85.9 MB) for one plugin's burst, and took so
long over it that the records themselves came late. So while a replayer replays (on its
thread: :class:`Replaying`), ``logging.Handler.handleError`` counts and reports the failure as
above instead, once with a count; the handler goes on with the next record as it would have.
Elsewhere, and with ``logging.raiseExceptions`` off (then it is counted, not reported), it does
what it did, inside a :func:`~isoplug.log_guard.failure_report`: in a runner, whose stderr
makes records, the report's lines go to the host alone, never to the plugin's handlers (the
failing one among them failed on each line and reported again: one record logged through a
console whose formatter raised became 665).

The record factory (``logging.setLogRecordFactory``) failing on a replayed record, or on a
report, is the host's trouble too: :meth:`HandlerErrors.factory_failed` says it, once per
factory (see :mod:`isoplug.logs.record_factory`).

One instance serves every connection of a receiver: a broken handler is the host's trouble,
and a thousand plugins must not make a thousand reports of it. The exception's text may quote
a record, whose text came from the sender: it is sanitized (:mod:`isoplug.wire.sanitize`).
"""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Callable

from isoplug.log_guard import describe_error, failure_report, traceback_text
from isoplug.logs.record_factory import RecordFactory, report_record
from isoplug.logs.report_throttle import ReportThrottle, Tally
from isoplug.wire.sanitize import clean_block

__all__ = ["HandlerErrors", "Replaying"]

#: The longest traceback attached to the first report.
_TRACEBACK_CHARS = 16 * 1024
_KIND = "handler_error"


#: The record factory whose failure was said last (see HandlerErrors.factory_failed).
_factory_said: list[RecordFactory | None] = [None]
_factory_said_lock = threading.Lock()

#: Told of a handler that failed on the record it handles (it calls ``handleError``).
ErrorSink = Callable[[logging.Handler, BaseException], None]

_stdlib_handle_error = logging.Handler.handleError
# The sink of the replay running on this thread, if any.
_replay = threading.local()


def _handle_error(self: logging.Handler, record: logging.LogRecord) -> None:
    """``logging.Handler.handleError`` while isoplug is imported: the replay's sink on a
    replay's thread, the original elsewhere (a :func:`~isoplug.log_guard.failure_report`)."""
    sink: ErrorSink | None = getattr(_replay, "sink", None)
    error = sys.exc_info()[1]
    if sink is None or error is None:
        with failure_report():
            _stdlib_handle_error(self, record)
        return
    sink(self, error)


logging.Handler.handleError = _handle_error  # type: ignore[method-assign]


class Replaying:
    """While a ``with`` block of this runs on this thread, a handler's ``handleError`` tells
    ``sink`` instead of printing (see the module docstring). Reusable, not reentrant; a class
    rather than a generator: a replayer enters one for every batch."""

    __slots__ = ("_outer", "_sink")

    def __init__(self, sink: ErrorSink) -> None:
        self._sink = sink
        self._outer: ErrorSink | None = None

    def __enter__(self) -> None:
        self._outer = getattr(_replay, "sink", None)
        _replay.sink = self._sink

    def __exit__(self, *exc_info: object) -> None:
        _replay.sink = self._outer


class HandlerErrors:
    """Reports exceptions that host handlers raised on replayed records; see the module
    docstring. ``logger`` is the host's own; ``interval`` how often a summary may follow the
    first report. Thread-safe: every connection's thread reports through one instance."""

    def __init__(self, logger: logging.Logger, interval: float = 1.0) -> None:
        self.logger = logger
        # A timer sends the summary when its interval ends, though no error follows.
        self._throttle = ReportThrottle(interval, timer=True)

    def failed(self, error: Exception, logger: logging.Logger, sender: str) -> None:
        """A handler or filter of ``logger`` raised ``error`` on a record of ``sender`` (the
        replayer's description); the caller has counted it."""
        what = describe_error(error)
        where = f"a record of {sender} (logger {logger.name})"
        first = (
            f"a log handler raised {what} on {where}; the handlers after it missed that "
            "record, later records still reach all of them (counted as handler_errors in the "
            f"log metrics; further errors are summed up at most every "
            f"{self._throttle.interval:g} s)"
        )
        self._report(first, error, f"{what} on {where}")

    def swallowed(self, error: BaseException, handler: logging.Handler, sender: str) -> None:
        """``handler`` failed with ``error`` on a record of ``sender`` and called
        ``handleError`` (it went on without the record); the caller has counted it. Reported
        as :meth:`failed` is, unless ``logging.raiseExceptions`` is off."""
        if not logging.raiseExceptions:
            return
        what = describe_error(error)
        where = f"a record of {sender}"
        first = (
            f"a log handler ({type(handler).__name__}) failed with {what} on {where}, and "
            "went on without it; logging would print '--- Logging error ---' for each such "
            "record: not here (counted as handler_errors in the log metrics; further errors "
            f"are summed up at most every {self._throttle.interval:g} s)"
        )
        self._report(first, error, f"{what} in {type(handler).__name__} on {where}")

    def _report(self, first: str, error: BaseException, detail: str) -> None:
        self._throttle.report(
            _KIND,
            first,
            summary=_summary,
            # A report made now (the text itself) shows the traceback; a summary does not.
            emit=lambda text: self._emit(text, error if text is first else None),
            records=1,
            detail=detail,
        )

    def close(self) -> None:
        """Send the pending summary, if any, and stop its timer (a receiver opened again gets
        a fresh one)."""
        throttle = self._throttle
        self._throttle = ReportThrottle(throttle.interval, timer=True)
        throttle.close()

    def factory_failed(self, factory: RecordFactory, error: Exception, making: str) -> None:
        """The record factory (``logging.setLogRecordFactory``) raised ``error`` (or made no
        LogRecord) making ``making`` (``a record of plugin x``), which was made without it;
        the caller has counted it. Said once for each factory, in the whole process: a
        factory fails on every record it cannot serve, and the fix is the same each time."""
        with _factory_said_lock:
            if _factory_said[0] is factory:
                return
            _factory_said[0] = factory
        name = getattr(factory, "__qualname__", None) or type(factory).__qualname__
        # A logger class's own makeRecord fails here too (see isoplug.logs.record_factory).
        source = (
            "a logging.setLoggerClass class's makeRecord"
            if name.endswith(".makeRecord")
            else "logging.setLogRecordFactory"
        )
        self._emit(
            f"the log record factory {name} ({source}) failed making "
            f"{making} ({describe_error(error)}); it was made without the factory and "
            "so lacks the attributes it adds; so are all records it fails on (counted as "
            "record_factory_errors in the log metrics; said once for this factory). isoplug "
            "makes replayed records in threads of its own: a factory that reads a context "
            "only your own threads have (a request's) needs a default for when there is none",
            error,
        )

    def _emit(self, text: str, error: BaseException | None) -> None:
        # A factory that fails on this report is said (first, once); the report goes on
        # without it.
        record = report_record(
            self.logger,
            logging.ERROR,
            text,
            lambda factory, error: self.factory_failed(factory, error, "isoplug's own report"),
        )
        if error is not None:
            # Where the handler failed: host code, but its message may quote the sender's
            # text, hence the sanitizer (and text, not the exception object).
            record.exc_text = clean_block(traceback_text(error), _TRACEBACK_CHARS)
        record.__dict__["isoplug_report"] = True
        failed: list[BaseException] = []
        try:
            # A handler that fails on this report too calls handleError: noted, not printed.
            with Replaying(lambda _, error: failed.append(error)):
                self.logger.handle(record)
            if failed:
                raise failed[0]
        except Exception as again:
            # The host's handlers fail on our own report too: say it where someone looks.
            print(
                f"isoplug: {text} (reporting it raised {describe_error(again)})",
                file=sys.stderr,
                flush=True,
            )


def _summary(tally: Tally) -> str:
    return (
        f"log handlers raised {tally.events:,} more times on replayed records over "
        f"{tally.seconds:.1f} s (the latest: {tally.detail}); each cost its record those "
        "handlers only"
    )
