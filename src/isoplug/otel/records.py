"""One ``logging.LogRecord`` (a plugin's, replayed; or the host's own) as an OTLP ``LogRecord``.

What goes where (the OpenTelemetry semantic conventions, as the SDK's ``LoggingHandler``
writes them, and ``isoplug.*`` for the rest):

- time: ``record.created``; observed time: when the host handled it;
- severity: the number mapped from ``levelno`` as the SDK maps it (levels below DEBUG, such as
  loguru's TRACE, are TRACE), the text the record's level name (``WARN`` and ``FATAL`` for
  WARNING and CRITICAL, as the SDK writes them);
- body: the message the plugin rendered (a structlog event dict as a key-value list);
- attributes: ``code.file.path``, ``code.function.name``, ``code.line.number``,
  ``thread.id``, ``thread.name``, ``log.iostream`` (``stdout`` / ``stderr`` for a plugin's
  output), ``isoplug.log.seq`` (the record's sequence number from its runner),
  ``isoplug.task.name``, every ``extra``; an exception as ``exception.type`` (the plugin's
  class, fully qualified), ``exception.message`` and ``exception.stacktrace`` (the traceback
  as the plugin's process printed it);
- one key per attribute, always: an extra named like an attribute isoplug writes
  (:data:`OWN_ATTRIBUTES`) or a resource attribute (the application's ``service.name``...,
  and :data:`~isoplug.otel.resources.RESOURCE_NAMES`), or under a reserved namespace (``isoplug``,
  ``service``, ``code``...), however spelt or nested (the rule:
  :mod:`isoplug.otel.reserved_names`), arrives as ``extra_<name>`` (``extra_extra_<name>`` if
  the record has an ``extra_<name>`` too...), as a sender's extra named like a record's
  identity does on the logging side (:mod:`isoplug.logs.record_names`); a key that is not
  text, as ``extra_<repr>``. A plugin cannot override what isoplug says of its record, nor
  show a backend that merges resource and record attributes (or rewrites or flattens their
  names) another plugin, service or process;
- trace context: the attributes ``otelTraceID`` / ``otelSpanID`` / ``otelTraceSampled`` that
  OpenTelemetry's logging instrumentation puts on records (a plugin's, carried as extras)
  become the record's ``trace_id``, ``span_id`` and flags; a host record without them takes
  the span active where it was logged.

The record's logger name is its instrumentation scope, as with the SDK; the plugin, its
version and its runner's pid are its resource (:mod:`isoplug.otel.logs`).
"""

from __future__ import annotations

import logging
import time
import traceback
from collections.abc import Callable, Iterable
from typing import Any

from isoplug.logs.capture import STANDARD_ATTRIBUTES, odd_key_name
from isoplug.logs.templates import LogTemplate
from isoplug.otel import protobuf
from isoplug.otel.reserved_names import ReservedNames

__all__ = ["OWN_ATTRIBUTES", "OWN_PREFIX", "RecordEncoder", "severity_number"]

#: The attributes this module writes itself: an extra so named is renamed (module docstring).
OWN_ATTRIBUTES = frozenset(
    {
        "code.file.path",
        "code.function.name",
        "code.line.number",
        "thread.id",
        "thread.name",
        "log.iostream",
        "isoplug.log.seq",
        "isoplug.task.name",
        "exception.type",
        "exception.message",
        "exception.stacktrace",
    }
)
#: isoplug's namespace: no extra carries a name in it (today's names and tomorrow's).
OWN_PREFIX = "isoplug."

#: Record attributes that are not extras: the standard ones, the identity the host stamps
#: (sent as the resource), and the ones mapped to fields or named attributes above.
_NOT_EXTRA = STANDARD_ATTRIBUTES | {
    "plugin_id",
    "runner_pid",
    "seq",
    "stream",
    "exc_type",
    "exc_message",
    "otelTraceID",
    "otelSpanID",
    "otelTraceSampled",
    "otelServiceName",
}

#: What the host itself puts on records it makes or rebuilds: ``isoplug_report`` (a report
#: of the host's about a plugin's records; a plugin's claim to it arrives renamed,
#: :mod:`isoplug.logs.record_names`) and ``isoplug_truncated_keys`` (how many extras the host
#: cut). Exported under their names, though read as words they are in ``isoplug``.
_HOST_MARKERS = frozenset({"isoplug_report", "isoplug_truncated_keys"})

#: Call sites and threads remembered, each encoded once (bounded: cleared when full).
_MAX_CACHED = 4096

_SEVERITY_TEXT = {"WARNING": "WARN", "CRITICAL": "FATAL"}


def severity_number(levelno: int) -> int:
    """OpenTelemetry's ``SeverityNumber`` for a Python level, as the SDK maps it (DEBUG 10 ->
    5, INFO 20 -> 9, WARNING 30 -> 13, ERROR 40 -> 17, CRITICAL 50 -> 21; the levels between
    to the next numbers, up to the fourth); below DEBUG (loguru's TRACE is 5): TRACE."""
    if levelno < 10:
        return 1 if levelno <= 5 else min(4, levelno - 4)
    if levelno > 53:
        return 24
    base, step = divmod(levelno, 10)
    return base * 4 + 1 + min(step, 3)


class RecordEncoder:
    """Encodes records (see the module docstring); one per exporter, used from any thread."""

    def __init__(
        self,
        *,
        current_trace: Callable[[], tuple[bytes, bytes, int]] | None,
        resource_names: Iterable[str] = (),
    ) -> None:
        #: Names no extra may carry: isoplug's own attributes, and the resource's.
        self._names = OWN_ATTRIBUTES | frozenset(resource_names)
        self._reserved = ReservedNames(self._names)
        #: Gives (trace id, span id, flags) of the span active in the calling thread, or
        #: empty ids; used for the host's own records only.
        self._current_trace = current_trace
        self._sites: dict[tuple[str, str, int], bytes] = {}
        self._threads: dict[tuple[int | None, str | None], bytes] = {}
        self._severities: dict[tuple[int, str], tuple[int, bytes]] = {}
        self._streams = {
            name: protobuf.attribute("log.iostream", name) for name in ("stdout", "stderr")
        }

    def encode(self, record: logging.LogRecord, plugin_record: bool) -> bytes:
        """The record as a ``ScopeLogs.log_records`` entry. ``plugin_record``: a replayed
        record of a plugin (its trace context can only come from its own attributes)."""
        values = record.__dict__
        severity = self._severities.get((record.levelno, record.levelname))
        if severity is None:
            severity = self._severity(record.levelno, record.levelname)
        attributes = [
            self._sites.get((record.pathname, record.funcName, record.lineno))
            or self._site(record),
            self._threads.get((record.thread, record.threadName)) or self._thread(record),
        ]
        seq = values.get("seq")
        if type(seq) is int:
            attributes.append(protobuf.attribute("isoplug.log.seq", seq))
        stream = values.get("stream")
        if stream is not None:
            attributes.append(
                self._streams.get(stream) or protobuf.attribute("log.iostream", str(stream))
            )
        task = values.get("taskName")
        if task:
            attributes.append(protobuf.attribute("isoplug.task.name", str(task)))
        reserved = self._reserved.reserved
        renamed: list[Any] | None = None
        for key in values:
            if key in _NOT_EXTRA:
                continue
            if type(key) is not str:
                # The host's own record with ``extra={1: ...}`` (a plugin's arrives renamed).
                if renamed is None:
                    renamed = []
                renamed.append(key)
            elif key[:1] == "_":
                continue
            elif reserved(key, values[key]) and key not in _HOST_MARKERS:
                if renamed is None:
                    renamed = []
                renamed.append(key)
            else:
                attributes.append(protobuf.attribute(key, values[key]))
        if renamed is not None:
            attributes.extend(self._renamed(values, renamed))
        if record.exc_info or record.exc_text:
            attributes.extend(self._exception(record))
        trace_id = span_id = b""
        flags = 0
        if "otelTraceID" in values:
            trace_id, span_id, flags = _trace_of(values)
        elif not plugin_record and self._current_trace is not None:
            trace_id, span_id, flags = self._current_trace()
        return protobuf.encode_log_record(
            time_unix_nano=int(record.created * 1e9),
            observed_time_unix_nano=time.time_ns(),
            severity_number=severity[0],
            severity_text=severity[1],
            body=_body(record),
            attributes=attributes,
            trace_id=trace_id,
            span_id=span_id,
            flags=flags,
        )

    def _renamed(self, values: dict[Any, Any], keys: list[Any]) -> list[bytes]:
        """The extras ``keys`` (each a reserved name, or not text) under names of their own:
        ``extra_<key>`` (``extra_<repr>`` for a key that is not text), prefixed again while
        that is a name the record or the encoder uses."""
        taken = set(values) | self._names
        out = []
        for key in keys:
            name = f"extra_{key}" if type(key) is str else odd_key_name(key, taken)
            while name in taken:
                name = f"extra_{name}"
            taken.add(name)
            out.append(protobuf.attribute(name, values[key]))
        return out

    def _severity(self, levelno: int, levelname: str) -> tuple[int, bytes]:
        text = str(levelname)
        severity = (
            severity_number(levelno),
            protobuf.severity_text_field(_SEVERITY_TEXT.get(text, text)),
        )
        if len(self._severities) < 128:
            self._severities[(levelno, levelname)] = severity
        return severity

    def _site(self, record: logging.LogRecord) -> bytes:
        # A line read from a runner's stdout or stderr has no function and no line: not
        # written, rather than an empty name and line 0 a backend would show as a place.
        encoded = b"".join(
            (
                protobuf.attribute("code.file.path", record.pathname),
                protobuf.attribute("code.function.name", record.funcName)
                if record.funcName
                else b"",
                protobuf.attribute("code.line.number", record.lineno) if record.lineno else b"",
            )
        )
        if len(self._sites) >= _MAX_CACHED:
            self._sites.clear()
        self._sites[(record.pathname, record.funcName, record.lineno)] = encoded
        return encoded

    def _thread(self, record: logging.LogRecord) -> bytes:
        encoded = b""
        if record.thread is not None:
            encoded += protobuf.attribute("thread.id", record.thread)
        if record.threadName is not None:
            encoded += protobuf.attribute("thread.name", record.threadName)
        if len(self._threads) >= _MAX_CACHED:
            self._threads.clear()
        self._threads[(record.thread, record.threadName)] = encoded
        return encoded

    @staticmethod
    def _exception(record: logging.LogRecord) -> list[bytes]:
        values = record.__dict__
        exc_info = record.exc_info
        error = exc_info[1] if exc_info else None
        # A plugin's exception is named as the plugin named it (exc_type: module.qualname, from
        # its process); the host's, by its class. A builtin's without its module either way,
        # as the SDK's own handler and Python's tracebacks name it (KeyError).
        kind = values.get("exc_type")
        if isinstance(kind, str) and kind.startswith("builtins."):
            kind = kind.removeprefix("builtins.")
        if not kind and error is not None:
            cls = type(error)
            kind = cls.__qualname__ if cls.__module__ == "builtins" else cls.__module__
            kind = kind if kind == cls.__qualname__ else f"{kind}.{cls.__qualname__}"
        message = values.get("exc_message")
        if message is None and error is not None:
            message = protobuf._text_of(error)
        # The text a formatter already made, else the traceback as printed where it was raised
        # (for a plugin's record, rebuilt from the frames its process sent).
        stacktrace = record.exc_text
        if not stacktrace and exc_info:
            try:
                stacktrace = "".join(traceback.format_exception(*exc_info)).rstrip("\n")
            except Exception as exc:
                stacktrace = f"(the traceback could not be formatted: {type(exc).__name__})"
        out = []
        if kind:
            out.append(protobuf.attribute("exception.type", str(kind)))
        if message is not None:
            out.append(protobuf.attribute("exception.message", str(message)))
        if stacktrace and not stacktrace.isspace():
            out.append(protobuf.attribute("exception.stacktrace", stacktrace))
        return out


def _body(record: logging.LogRecord) -> bytes:
    """The message as an encoded ``AnyValue``: what the plugin rendered, without formatting it
    again (a replayed record's ``args`` is that text already)."""
    msg = record.msg
    args = record.args
    if type(msg) is LogTemplate and type(args) is tuple and len(args) == 1:
        return protobuf.any_value(args[0])
    if not args:
        if type(msg) is str:
            return protobuf.any_value(msg)
        if isinstance(msg, dict):
            return protobuf.any_value(msg)
    try:
        return protobuf.any_value(record.getMessage())
    except Exception as exc:
        # Arguments that do not fit the format: the template, and why.
        return protobuf.any_value(f"{msg} (formatting failed: {type(exc).__name__}: {exc})")


def _trace_of(values: dict[str, Any]) -> tuple[bytes, bytes, int]:
    """Trace id, span id and flags from the hex attributes of OpenTelemetry's logging
    instrumentation; empty ids for anything that is not such an id."""
    trace_id = _hex_id(values.get("otelTraceID"), 16)
    span_id = _hex_id(values.get("otelSpanID"), 8)
    sampled = values.get("otelTraceSampled")
    return trace_id, span_id, 1 if sampled is True or sampled == "True" else 0


def _hex_id(value: object, size: int) -> bytes:
    if not isinstance(value, str) or len(value) != size * 2:
        return b""
    try:
        raw = bytes.fromhex(value)
    except ValueError:
        return b""
    return raw if any(raw) else b""
