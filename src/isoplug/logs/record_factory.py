"""Replayed records made through this process's ``logging.setLogRecordFactory()``.

An application's record factory adds attributes its handlers rely on (a host name, a request
id, read as ``%(hostname)s`` by its formatters); the stdlib's receiving side,
``logging.makeLogRecord``, goes through it. So does every record a replayer makes
(:func:`replayed_record`), and every report of isoplug's own about a sender
(:func:`report_record`): the factory is called with the standard arguments (name, level,
pathname, lineno, msg, args, exc_info, func, sinfo), then a replayed record is given every
field the replayer built, which win over what the factory computed:

- the standard attributes (``created``, ``msecs``, ``process``, ``thread``, ``threadName``,
  ``processName``, ``taskName``...) are the sender's, or say that the sender had none: the
  factory computed them for this process, whose replay thread made no record;
- the sender's extras, under the names the replayer gave them (as ``makeLogRecord`` lets its
  dict win);
- the host's identity and markers (``plugin_id``, ``runner_pid``, ``seq``...).

An attribute only the factory set stays the factory's. A logger class of the application's
(``logging.setLoggerClass()``) whose ``makeRecord`` is its own makes the records of its
loggers, as for the application's own records: it is called as ``Logger._log`` calls it
(``extra`` None, since the fields win anyway), and it calls the factory if it calls the stdlib's.
With the stdlib's own factory and ``makeRecord``,
``LogRecord`` itself, nothing is called: the record takes the fields as its ``__dict__`` (the
fast path: a replay costs what it did).

A factory (or ``makeRecord``) that raises, or returns no ``LogRecord``, costs no record: the
record is made the fast way (so without the factory's attributes) and the failure is told to
the caller, which counts it and says it once
(:meth:`~isoplug.logs.handler_errors.HandlerErrors.factory_failed`). A factory fails so in
isoplug's threads when it reads a context only the application's own threads have (a web
framework's request).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

__all__ = [
    "FactoryFailed",
    "RecordFactory",
    "propagate_failure",
    "replayed_record",
    "report_record",
]

RecordFactory = Callable[..., logging.LogRecord]
#: Told of a factory that raised (or made no LogRecord) and why.
FactoryFailed = Callable[[RecordFactory, Exception], None]

_LogRecord = logging.LogRecord
_new = object.__new__
_Logger = logging.Logger
_STDLIB_MAKE_RECORD = logging.Logger.makeRecord


class _AskingLogging(dict[str, RecordFactory]):
    """Stands for the logging module's names where it keeps no ``_logRecordFactory``: each
    read asks ``logging.getLogRecordFactory()``."""

    def __missing__(self, key: str) -> RecordFactory:
        return logging.getLogRecordFactory()


#: What ``logging.getLogRecordFactory()`` returns, read as ``_logging_names[_FACTORY]``: one
#: dict lookup where the module keeps it where it always has (the function's Python call
#: costs some 160 instructions more per replayed record, 0.6 % of a plain one's rebuild:
#: see docs/benchmarks.md), else the function.
_FACTORY = "_logRecordFactory"
_logging_names: dict[str, Any] = (
    vars(logging)
    if vars(logging).get(_FACTORY) is logging.getLogRecordFactory()
    else _AskingLogging()
)


def propagate_failure(factory: RecordFactory, error: Exception) -> None:
    """The :data:`FactoryFailed` of a caller with no one to tell: the factory's exception
    propagates, as it does from ``logger.makeRecord``."""
    raise error


def replayed_record(
    fields: dict[str, Any], failed: FactoryFailed, logger: logging.Logger | None = None
) -> logging.LogRecord:
    """The record whose attributes are ``fields`` (every standard attribute among them), made
    by ``logger``'s ``makeRecord`` if its class has its own, else through the record factory
    unless that is the stdlib's own (see the module docstring)."""
    # The stdlib's own Logger, almost always, costs one comparison.
    if logger is not None and type(logger) is not _Logger:
        make_record = type(logger).makeRecord
        if make_record is not _STDLIB_MAKE_RECORD:
            # As Logger._log calls it: extra None (the fields win anyway), then sinfo.
            arguments = (logger, *_standard_arguments(fields), None, fields["stack_info"])
            return _with_fields(_made_by(make_record, failed, *arguments), fields)
    factory = _logging_names[_FACTORY]
    if factory is not _LogRecord:
        arguments = (*_standard_arguments(fields), fields["stack_info"])
        return _with_fields(_made_by(factory, failed, *arguments), fields)
    # The fast path, inline: no call more per record.
    record = _new(_LogRecord)
    record.__dict__ = fields
    return record


def _standard_arguments(fields: dict[str, Any]) -> tuple[Any, ...]:
    """The arguments a record factory and ``makeRecord`` take first (name, level, pathname,
    lineno, msg, args, exc_info, func), from a replayed record's ``fields``."""
    return (
        fields["name"],
        fields["levelno"],
        fields["pathname"],
        fields["lineno"],
        fields["msg"],
        fields["args"],
        fields["exc_info"],
        fields["funcName"],
    )


def _with_fields(record: logging.LogRecord | None, fields: dict[str, Any]) -> logging.LogRecord:
    """``record`` given ``fields``, which win over its own; without one (the stdlib's factory,
    or the application's failed), a stdlib ``LogRecord`` whose attributes are ``fields``."""
    if record is not None:
        record.__dict__.update(fields)
        return record
    record = _new(_LogRecord)
    record.__dict__ = fields
    return record


def report_record(
    logger: logging.Logger, level: int, text: str, failed: FactoryFailed
) -> logging.LogRecord:
    """The record of isoplug's own report ``text`` on ``logger`` at ``level``, made as
    ``logger.makeRecord`` makes one, through the record factory; made without it when that
    fails (told to ``failed``)."""
    factory = logging.getLogRecordFactory()
    if factory is not _LogRecord:
        record = _made_by(
            factory, failed, logger.name, level, "(isoplug)", 0, text, (), None, None, None
        )
        if record is not None:
            return record
    return _LogRecord(logger.name, level, "(isoplug)", 0, text, (), None)


def _made_by(
    factory: RecordFactory, failed: FactoryFailed, *arguments: Any
) -> logging.LogRecord | None:
    """What ``factory(*arguments)`` makes, or None if it raises or makes no LogRecord (told to
    ``failed``)."""
    try:
        record = factory(*arguments)
    except Exception as error:
        failed(factory, error)
        return None
    if not isinstance(record, _LogRecord):
        failed(
            factory,
            TypeError(
                f"it returned {type(record).__qualname__}, not a logging.LogRecord (a factory "
                "returns the record LogRecord(*args, **kwargs) makes, its attributes added)"
            ),
        )
        return None
    return record
