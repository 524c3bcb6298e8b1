"""Rebuilding a sender's record as a complete ``LogRecord`` in this process (step 6 of
:mod:`isoplug.logs.replay`).

Every field comes from the sender, cleaned of control characters and capped
(:mod:`isoplug.wire.sanitize`); nothing is filled in with this process's own process, thread or
task. An exception becomes a genuine ``exc_info`` with the sender's traceback
(:mod:`isoplug.logs.tracebacks`). The identity the host vouches for (``plugin_id``,
``runner_pid``...) is stamped last, so it overrides anything the sender put in ``extra``; a
sender's ``extra`` named like an attribute of the record, like one the host sets, or like a
name formatters read a record's identity, level or message under (``logger``, ``level``,
``event``: see :mod:`isoplug.logs.record_names`, the one list for every path), like a field
the host's formatters write themselves (``timestamp``, ``exception``, ``stack``...) or like a
host marker (any ``isoplug_`` name) is renamed ``extra_<name>`` (``extra_extra_<name>`` if
the sender has that name too: nothing is lost).
A record with no exception (no ``exc_type``, nothing structured) has no ``exc_text`` nor
``exc_message``: a sender's texts there are kept as ``extra_exc_text`` and
``extra_exc_message``, so that no formatter prints them as a traceback and no exporter takes
them for an exception's. (With a type but nothing structured, as when the sender could not
convert its exception, the text stays: it is the only traceback there is.)
A level number that is not a standard one never carries a standard level's name
(:func:`~isoplug.logs.record_names.level_name`). Where the connection has a pid the kernel
vouches for, ``process`` is that pid (the sender's own claim, when it differs, is kept as
``extra_process``).

A structlog event dict (``record.msg`` of a record structlog's ``ProcessorFormatter`` renders
as its own, skipping its ``foreign_pre_chain``) gets the same truth: ``logger`` is the record's
name (under the sender's prefix), the identity is stamped in it, and a sender's values under
those keys (the same list) are kept as ``extra_<key>`` when they say something else; so are
its values under any other name :func:`~isoplug.logs.record_names.reserved_field` reserves,
unless they say what the record says there (a plugin-side ``TimeStamper``'s ``timestamp``,
``CallsiteParameterAdder``'s ``func_name``...: see :mod:`isoplug.logs.record_names`). A level
under a severity name (``level``, which structlog's ``add_log_level`` writes; ``severity``...)
that does not name the record's level becomes the record's ``levelname`` in lower case, the
claim kept as ``extra_<key>``; the event's message (``event``, or ``message`` after
structlog's ``EventRenamer``) is the record's own, and stays.

Every text inside a nested value (a dict or list extra, a structlog event value), and every
key of a nested dict, is cleaned as the extras' own are, down to 32 levels (deeper is shown as
text); keys that clean to the same text (an escape character and the text ``\\x1b``, long keys
cut to one prefix) all stay, the later ones told apart as ``<key>#2``, ``<key>#3``...

The fields that repeat from record to record (source locations, thread names, templates) are
cleaned once and remembered, within bounds a sender inventing names cannot grow.
"""

from __future__ import annotations

import datetime
import logging
import time
from collections.abc import Mapping
from typing import Any, cast

import msgspec

from isoplug.logs.capture import STANDARD_ATTRIBUTES
from isoplug.logs.exceptions import ExcInfo
from isoplug.logs.limits import ReplayLimits
from isoplug.logs.metrics import LogMetrics
from isoplug.logs.record_names import (
    IDENTITY_NAMES,
    MESSAGE_NAMES,
    RESERVED_NAMES,
    SEVERITY_NAMES,
    TRUNCATED_KEYS,
    level_name,
    renamed,
    reserved_field,
)
from isoplug.logs.replay_reports import ReplayReports
from isoplug.logs.templates import LogTemplate
from isoplug.logs.textlines import level_from_name
from isoplug.logs.tracebacks import ExceptionRebuilder
from isoplug.wire import LogRecordData
from isoplug.wire.sanitize import cap_text, clean_block, clean_text

__all__ = ["RecordRebuilder"]

_value_encoder = msgspec.msgpack.Encoder()

#: Attributes the host sets on every record besides the identity: a sender's extras so named
#: are renamed too, rather than overwritten. ``truncated`` is isoplug's flag on a printed line
#: it cut: the host keeps it on records of output streams (``stream`` set), whose lines only
#: isoplug's capture makes.
_HOST_FIELDS = frozenset({"exc_type", "exc_message"})
_STREAM_FLAGS = frozenset({"truncated"})
#: Host markers isoplug's line classifier sets on records of output streams (how many fields
#: of a JSON line it left out); from any other record, a sender's extra so named is renamed.
_STREAM_MARKERS = frozenset({TRUNCATED_KEYS})
#: A sender's own count of the extras it left out is believed up to this (a JSON line's
#: fields: a line is at most a few MiB).
_MAX_CARRIED_KEYS = 1 << 24
#: Logger-name keys whose value is dropped, not renamed, when it is the sender's own name for
#: its logger (structlog's add_logger_name): the host's ``logger`` says the same, confined.
_LOGGER_KEYS = ("logger", "logger_name")
#: Keys a structlog event dict has as its own: its message, its level (stated by
#: _state_the_level) and its exception (replaced by the rebuilt one).
_EVENT_OWN_KEYS = frozenset(MESSAGE_NAMES) | frozenset(SEVERITY_NAMES) | {"exc_info"}
#: structlog's names for record attributes (CallsiteParameterAdder, add_log_level_number).
_EVENT_ATTRIBUTES = {
    "func_name": "funcName",
    "thread_name": "threadName",
    "process_name": "processName",
    "level_number": "levelno",
}
#: Record attributes an event's value can never match as the host's: the record's message
#: and arguments are the event itself, its exception the rebuilt one.
_NEVER_TRUE = frozenset({"msg", "args", "exc_info", "message", "_logger", "_name"})
#: Nested values deeper than this are shown as text (the sender sends deeper ones so).
_MAX_NESTING = 32
#: Source and thread names up to this long that need no cleaning are remembered, at most
#: _MAX_SITES of them (bounded: a sender inventing names must not grow the cache).
_SITE_CHARS = 256
_MAX_SITES = 10_000
#: Templates up to this long are remembered (sanitized, as the LogTemplate every record of
#: theirs shares), at most _MAX_TEMPLATES of them: at most 4 MiB or so per sender.
_TEMPLATE_CHARS = 1024
_MAX_TEMPLATES = 4096
#: The name of each level number this process knows (getLevelName: CRITICAL, not its alias
#: FATAL): one dict lookup for almost every record; other numbers go to level_name().
_LEVEL_NAMES = {
    level: logging.getLevelName(level) for level in set(logging.getLevelNamesMapping().values())
}
#: ``created`` outside [0, this] is no time a Formatter can print (asctime raises
#: OverflowError past year 9999, NaN and infinities raise in every time function).
_MAX_CREATED = 253402300799.0
#: Line numbers beyond a C int are no line of any source file.
_MAX_LINENO = 2**31 - 1


class RecordRebuilder:
    """Rebuilds one sender's records (see the module docstring)."""

    def __init__(
        self,
        limits: ReplayLimits,
        identity: Mapping[str, Any],
        reports: ReplayReports,
        metrics: LogMetrics,
        sender_pid: int | None = None,
    ) -> None:
        """``sender_pid`` is the sender's pid as the kernel vouches for it (None where the
        connection cannot say: TCP, TLS, no peer credentials)."""
        self._limits = limits
        self._identity = identity
        self._sender_pid = sender_pid
        host_keys = STANDARD_ATTRIBUTES | RESERVED_NAMES | _HOST_FIELDS | identity.keys()
        # A sender's extra is renamed under these names: on records of output streams,
        # isoplug's own capture sets the flags.
        self._reserved = frozenset(host_keys | _STREAM_FLAGS)
        self._reserved_on_streams = frozenset(host_keys)
        self._reports = reports
        self._metrics = metrics
        self._sites: dict[str, str] = {}
        self._templates: dict[str, LogTemplate] = {}
        self._start_time: float = getattr(logging, "_startTime", time.time())
        # Rebuilds records' exceptions as genuine exc_info (see isoplug.logs.tracebacks).
        self._exceptions = ExceptionRebuilder(
            max_message_chars=limits.max_message_chars,
            max_text_chars=limits.max_traceback_chars,
        )

    def rebuild(
        self, data: LogRecordData, logger: logging.Logger, levelno: int, identity: dict[str, Any]
    ) -> logging.LogRecord:
        """The record ``data`` describes, for ``logger`` at ``levelno``, stamped with
        ``identity`` (which overrides anything the sender sent)."""
        limits = self._limits
        created = data.created
        lineno = data.lineno
        if (
            not 0.0 <= created <= _MAX_CREATED
            or type(lineno) is not int
            or not 0 <= lineno <= _MAX_LINENO
        ):
            created, lineno = self._repair(data)
        message = data.message
        if not message.isprintable() or len(message) > limits.max_message_chars:
            message = clean_text(message, limits.max_message_chars)
        msg: Any = message
        args: tuple[str, ...] = ()
        extra = (
            (
                self._clean_mapping(data.extra, self._reserved_on_streams, _STREAM_MARKERS)
                if "stream" in identity
                else self._clean_mapping(data.extra, self._reserved)
            )
            if data.extra
            else {}
        )
        process = data.process
        if self._sender_pid is not None and process != self._sender_pid:
            # The kernel's word for the process, not the payload's (a filter in the plugin
            # can set record.process): the claim stays, renamed, for a record a process
            # relayed for another (a multiprocessing QueueHandler).
            extra[renamed("process", extra, extra)] = process
            process = self._sender_pid
        exc_info = self._exc_info(data) if data.exception is not None else None
        # A record the sender says has no exception (no type, nothing structured) shows no
        # exception block: its exception fields are claims, kept as extras.
        excepted = data.exception is not None or bool(data.exc_type)
        if not excepted and (data.exc_text is not None or data.exc_message is not None):
            self._unexcepted(data, extra)
        levelname = _LEVEL_NAMES.get(levelno) or level_name(levelno, data.levelname)
        if data.event is not None:
            # structlog's ProcessorFormatter recognises its records by these two attributes.
            # The event itself is stated against the finished record (below).
            extra["_logger"] = logger
            extra["_name"] = clean_text(data.event_method or "info", 32)
        elif data.template is not None:
            msg = self._templates.get(data.template) or self._template(data.template)
            # getMessage() formats only when args is non-empty. The sender's arguments do not
            # cross the wire (turning each into something msgpack carries would cost the
            # plugin's every call, and "%d" or "%.2f" of their text would not give back what the
            # plugin printed), so args is the one value the host has: the rendered message. It
            # is a real tuple, as tools that read args expect (Sentry sends it as "params",
            # beside "formatted", which is getMessage()).
            args = (message,)
        # The fields that name where a record comes from repeat from record to record: they
        # are cleaned once and then looked up (see _clean_site).
        sites = self._sites
        record = logging.LogRecord.__new__(logging.LogRecord)
        # One dict, built at once: the sender's extras first, so that neither they nor
        # anything else can override the record's own fields or the identity the host stamps.
        record.__dict__ = {
            **extra,
            "name": logger.name,
            "msg": msg,
            "args": args,
            "levelname": levelname,
            "levelno": levelno,
            "pathname": sites.get(data.pathname) or self._clean_site(data.pathname, 1024),
            "filename": sites.get(data.filename) or self._clean_site(data.filename, 256),
            "module": sites.get(data.module) or self._clean_site(data.module, 256),
            "exc_info": exc_info,
            # With exc_info, formatters render it (as the sender printed it): no text to repeat.
            # A blank text stays: loguru sets "\n" so that its message, which holds its own
            # rendering of the traceback, is not followed by a second one.
            "exc_text": (
                clean_block(data.exc_text, limits.max_traceback_chars)
                if excepted and data.exc_text and (exc_info is None or data.exc_text.isspace())
                else None
            ),
            "stack_info": (
                clean_block(data.stack_info, limits.max_traceback_chars)
                if data.stack_info
                else None
            ),
            "lineno": lineno,
            "funcName": (
                sites.get(data.func_name) or self._clean_site(data.func_name, 256)
                if data.func_name
                else data.func_name
            ),
            "created": created,
            "msecs": int((created - int(created)) * 1000) + 0.0,
            "relativeCreated": (created - self._start_time) * 1000,
            "thread": data.thread,
            "threadName": (
                sites.get(data.thread_name) or self._clean_site(data.thread_name, 256)
                if data.thread_name
                else data.thread_name
            ),
            "processName": (
                sites.get(data.process_name) or self._clean_site(data.process_name, 256)
                if data.process_name
                else data.process_name
            ),
            "process": process,
            "taskName": (
                sites.get(data.task_name) or self._clean_site(data.task_name, 256)
                if data.task_name
                else None
            ),
            "exc_type": clean_text(data.exc_type, 256) if data.exc_type else None,
            "exc_message": (
                clean_text(data.exc_message, limits.max_message_chars)
                if excepted and data.exc_message
                else None
            ),
            "seq": data.seq,
            **identity,
        }
        if data.event is not None:
            event = self._event(data, logger, identity, process, record.__dict__)
            _state_the_level(event, levelno, levelname)
            if "exc_info" in event:
                # The sender's exception, rebuilt; never True, which structlog would resolve
                # against this process's own sys.exc_info().
                event["exc_info"] = exc_info
            record.msg = event
        return record

    def _exc_info(self, data: LogRecordData) -> ExcInfo | None:
        """The record's exception as a genuine exc_info; None (the record keeps the text) if
        even a bounded rebuild fails, which is reported."""
        assert data.exception is not None
        try:
            return self._exceptions.rebuild(data.exception)
        except Exception as exc:
            self._reports.rebuild_failed(f"{type(exc).__name__}: {clean_text(str(exc), 200)}")
            return None

    def _unexcepted(self, data: LogRecordData, extra: dict[str, Any]) -> None:
        """Keep the ``exc_text`` and ``exc_message`` of a record without an exception in
        ``extra``, as ``extra_exc_text`` and ``extra_exc_message``: a formatter prints a
        record's ``exc_text`` as its traceback (a plugin's filter can set one, naming any
        file), and an exporter takes it for an exception's."""
        limits = self._limits
        sent = data.extra or {}
        if data.exc_text is not None:
            key = renamed("exc_text", sent, extra)
            extra[key] = clean_block(data.exc_text, limits.max_traceback_chars)
        if data.exc_message is not None:
            key = renamed("exc_message", sent, extra)
            extra[key] = clean_text(data.exc_message, limits.max_message_chars)

    def _template(self, text: str) -> LogTemplate:
        """The sanitized template, as one object for every record that has it (remembered)."""
        limit = self._limits.max_message_chars
        template = LogTemplate(
            text if text.isprintable() and len(text) <= limit else clean_text(text, limit)
        )
        if len(text) <= _TEMPLATE_CHARS and len(self._templates) < _MAX_TEMPLATES:
            self._templates[text] = template
        return template

    def _repair(self, data: LogRecordData) -> tuple[float, int]:
        """``created`` and ``lineno`` that every formatter can print, for a record whose sender
        sent a time that is no time (NaN, infinite, before 1970, past year 9999) or no line
        number (None, negative, huge): the arrival time, and 0. Counted in
        ``metrics.repaired`` and reported (limited, as every report a sender can repeat)."""
        created, lineno = data.created, data.lineno
        fixed: list[str] = []
        if not 0.0 <= created <= _MAX_CREATED:
            fixed.append(f"created={created!r}")
            created = time.time()
        if type(lineno) is not int or not 0 <= lineno <= _MAX_LINENO:
            fixed.append(f"lineno={cap_text(repr(lineno), 40)}")
            lineno = 0
        self._metrics.repaired += 1
        self._reports.repaired(", ".join(fixed))
        return created, lineno

    def _clean_site(self, text: str, limit: int) -> str:
        """``clean_text`` for a source or thread name; remembers names that need no change."""
        cleaned = clean_text(text, limit)
        if cleaned is text and len(text) <= _SITE_CHARS and len(self._sites) < _MAX_SITES:
            # Only texts that pass unchanged under any limit are remembered, so one cache
            # serves every field whatever its limit.
            self._sites[text] = text
        return cleaned

    def _event(
        self,
        data: LogRecordData,
        logger: logging.Logger,
        identity: dict[str, Any],
        process: int | None,
        record: dict[str, Any],
    ) -> dict[str, Any]:
        """A structlog event dict, cleaned, stating the host's truth (see the module
        docstring and :mod:`isoplug.logs.record_names`)."""
        assert data.event is not None
        event = self._clean_mapping(data.event, None)
        truth: dict[str, Any] = {"logger": logger.name, **identity}
        if "process" in event:
            truth["process"] = process
        for key in IDENTITY_NAMES | identity.keys():
            if key not in event:
                continue
            claimed = event.pop(key)
            if key in _LOGGER_KEYS and claimed == data.name:
                continue
            if key not in truth or claimed != truth[key]:
                event[renamed(key, event, event)] = claimed
        event.update(truth)
        for key in list(event):
            if key in truth or key in _EVENT_OWN_KEYS or not reserved_field(key, event[key]):
                continue
            if not self._event_says_true(key, event[key], data, record):
                event[renamed(key, event, event)] = event.pop(key)
        return event

    def _event_says_true(
        self, key: str, value: Any, data: LogRecordData, record: dict[str, Any]
    ) -> bool:
        """Whether the event's ``value`` under the reserved ``key`` says what the record
        says there: a plugin's own structlog processors (``TimeStamper``,
        ``CallsiteParameterAdder``, ``add_log_level_number``, ``format_exc_info``) write
        such keys truthfully, and they stay (see :mod:`isoplug.logs.record_names`)."""
        if key == "timestamp":
            return _same_time(value, record["created"])
        if key in ("exception", "stack"):
            text = data.exc_text if key == "exception" else data.stack_info
            if type(value) is not str or not text:
                return False
            return value == clean_text(text, self._limits.max_extra_value_chars)
        attribute = _EVENT_ATTRIBUTES.get(key, key)
        if attribute not in record or attribute in _NEVER_TRUE:
            return False
        truth = record[attribute]
        return type(value) is type(truth) and value == truth

    def _clean_mapping(
        self,
        values: dict[str, Any],
        reserved: frozenset[str] | None,
        markers: frozenset[str] = frozenset(),
    ) -> dict[str, Any]:
        """``values`` cleaned; unless ``reserved`` is None (a structlog event dict, judged
        key by key in :meth:`_event`), a key in ``reserved`` or that
        :func:`~isoplug.logs.record_names.reserved_field` names (other than those in
        ``markers``, which isoplug's own capture set) renamed ``extra_<key>``. Keys that
        clean to the same text all stay, told apart by a suffix (``#2``)."""
        limits = self._limits
        cleaned: dict[str, Any] = {}
        for index, (sender_key, value) in enumerate(values.items()):
            if index == limits.max_extra_keys:
                cleaned[TRUNCATED_KEYS] = self._left_out(values, index, cleaned, markers)
                break
            key = clean_text(sender_key, 100) if type(sender_key) is str else str(sender_key)
            if (
                reserved is not None
                and (key in reserved or reserved_field(key, value))
                and key not in markers
            ):
                # Never let a sender's extra shadow a record field, the host's identity, what
                # the host's formatters write themselves, or a marker of the host's.
                key = renamed(key, values, cleaned)
            cleaned[_unique(key, cleaned)] = self._clean_value(value)
        return cleaned

    @staticmethod
    def _left_out(
        values: dict[str, Any], index: int, cleaned: dict[str, Any], markers: frozenset[str]
    ) -> int:
        """How many of ``values``' extras a record lacks once those from ``index`` on are cut:
        those, plus what the sender's capture had left out already (its own
        ``isoplug_truncated_keys``, allowed in ``markers``), which the cut would replace."""
        left = len(values) - index
        carried = values.get(TRUNCATED_KEYS) if TRUNCATED_KEYS in markers else None
        if type(carried) is int and 0 < carried <= _MAX_CARRIED_KEYS:
            # Among the cut keys the marker is no field of the record's: not one left out.
            left += carried if TRUNCATED_KEYS in cleaned else carried - 1
        return left

    def _clean_value(self, value: Any) -> Any:
        limit = self._limits.max_extra_value_chars
        if isinstance(value, str):
            return clean_text(value, limit)
        if isinstance(value, bool | int | float) or value is None:
            return value
        if isinstance(value, bytes):
            return value if len(value) <= limit else value[:limit] + b"...[truncated]"
        try:
            encoded = _value_encoder.encode(value)
        except (TypeError, ValueError, RecursionError, OverflowError):
            return _text_of(value, limit)
        if len(encoded) > limit:
            return _text_of(value, limit)
        if type(value) is dict or type(value) is list:
            # Bounded by the encoded size: at most ``limit`` bytes of items to walk.
            return self._clean_nested(value, 0)
        return value

    def _clean_nested(self, value: list[Any] | dict[Any, Any], depth: int) -> Any:
        """A dict or list value with its texts, and its dicts' keys, cleaned as the
        extras' own are (a formatter writing ``ensure_ascii=False`` shows them raw). Texts
        that need no change are kept without a call: most do."""
        limit = self._limits.max_extra_value_chars
        if depth >= _MAX_NESTING:
            return _text_of(value, limit)
        if type(value) is list:
            items: list[Any] = []
            for entry in value:
                item, kind = entry, type(entry)
                if kind is str:
                    if len(item) > limit or not item.isprintable():
                        item = clean_text(item, limit)
                elif kind is dict or kind is list:
                    item = self._clean_nested(item, depth + 1)
                items.append(item)
            return items
        mapping: dict[Any, Any] = cast("dict[Any, Any]", value)
        cleaned: dict[Any, Any] = {}
        for key, entry in mapping.items():
            item, kind = entry, type(entry)
            if kind is str:
                if len(item) > limit or not item.isprintable():
                    item = clean_text(item, limit)
            elif kind is dict or kind is list:
                item = self._clean_nested(item, depth + 1)
            if type(key) is str and (len(key) > 100 or not key.isprintable()):
                cleaned[_unique(clean_text(key, 100), cleaned)] = item
            elif key in cleaned:
                # An earlier key cleaned to this one's text.
                cleaned[_unique(key, cleaned)] = item
            else:
                cleaned[key] = item
        return cleaned


def _text_of(value: Any, limit: int) -> str:
    """A value the wire or the walk cannot take whole, as cleaned text (a value too deep for
    ``repr`` itself as a note saying so)."""
    try:
        text = repr(value)
    except RecursionError:
        return f"<{type(value).__name__} nested too deeply to show>"
    return clean_text(text, limit)


def _unique(key: str, taken: Mapping[Any, Any]) -> str:
    """``key``, or ``key#2``, ``key#3``... if ``taken`` has it: two sender keys that clean to
    the same text (``"\\x1b"`` and an escape character, long keys cut to one prefix) keep
    both values."""
    if key not in taken:
        return key
    number = 2
    while f"{key}#{number}" in taken:
        number += 1
    return f"{key}#{number}"


def _same_time(value: Any, created: float) -> bool:
    """Whether a plugin's ``TimeStamper`` value (a number, or ISO text, local or UTC) is the
    record's time, within a second (the processor runs just after the record is made)."""
    if type(value) is float or type(value) is int:
        return abs(value - created) <= 1.0
    if type(value) is not str or len(value) > 64:
        return False
    try:
        moment = datetime.datetime.fromisoformat(value)
    except ValueError:
        return False
    return abs(moment.timestamp() - created) <= 1.0


def _state_the_level(event: dict[str, Any], levelno: int, levelname: str) -> None:
    """Each severity name in ``event`` names the record's level: a value that names another
    (``"critical"`` on an INFO record) is replaced by ``levelname`` in lower case (as
    structlog's ``add_log_level`` writes it), the claim kept as ``extra_<key>``. A value that
    names the record's level in any form (``"warn"``, ``"WARNING"``, ``30``) stays."""
    for key in SEVERITY_NAMES:
        if key not in event:
            continue
        claimed = event[key]
        if level_from_name(claimed) == levelno or (
            isinstance(claimed, str) and claimed.lower() == levelname.lower()
        ):
            continue
        event[renamed(key, event, event)] = claimed
        event[key] = levelname.lower()
