"""Turning a ``logging.LogRecord`` into wire bytes in the emitting process, fast and safely.

This runs inside ``emit()`` on the plugin's own thread, so it is written for speed: a plain
record's fields are read as attributes, and the record is encoded as a plain list in the layout
of :class:`~isoplug.wire.LogRecordData` (no Struct is built). It never raises for anything a
record can contain: a message whose ``%`` formatting fails, an exception whose ``__str__``
raises, an ``extra`` value msgpack cannot carry, even a deleted standard attribute, all become
readable text or defaults.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Collection
from operator import itemgetter
from typing import Any

import msgspec

from isoplug.logs.exceptions import exception_data, resolve_exc_info
from isoplug.logs.record_names import HOST_MARKER_PREFIX
from isoplug.logs.standard_types import STANDARD_NAMES, fit_standard
from isoplug.logs.templates import EVENT_TYPES
from isoplug.wire.messages import LogRecordData
from isoplug.wire.sanitize import IN_EMITTING_PROCESS, cut_mark

__all__ = [
    "MAX_FIELD_CHARS",
    "STANDARD_ATTRIBUTES",
    "CapturedLineRecord",
    "LineSite",
    "capture_record",
    "encode_line",
    "forget_extras_hints",
    "line_site",
    "odd_key_name",
]

#: Longest message, traceback or stack text sent as is (256 Ki characters). It keeps one record
#: far below the frame limit; the host applies its own, usually stricter, caps.
MAX_FIELD_CHARS = 256 * 1024

#: What ``LogRecord.__init__`` sets, in the order it sets them (and a record's ``__dict__``
#: lists them): ``extra`` and later additions come after these.
_STANDARD_DEFAULTS = logging.LogRecord("", logging.NOTSET, "", 0, "", (), None).__dict__
_STANDARD_ORDER = list(_STANDARD_DEFAULTS)
_STANDARD_COUNT = len(_STANDARD_ORDER)

#: Attributes every LogRecord has, plus those formatters add; everything else is ``extra``.
#: ``_logger`` is structlog's bound logger (a live object, never sent); ``_name`` is its
#: method name, sent as ``event_method``.
STANDARD_ATTRIBUTES = frozenset(_STANDARD_DEFAULTS) | {
    "message",
    "asctime",
    "taskName",
    "_logger",
    "_name",
}

#: The flag isoplug's line capture sets on a printed line it cut. With the host markers
#: (``isoplug_truncated_keys``...), only a :class:`CapturedLineRecord` sends it as is (a
#: claim the receiver bounds: see :mod:`isoplug.logs.stream_claims`).
_CAPTURE_FLAG = "truncated"


class CapturedLineRecord(logging.LogRecord):
    """A record isoplug's output capture made of a printed line (one it classified: cut, or a
    JSON line with fields): the one kind of record whose ``truncated`` and host markers
    (``isoplug_truncated_keys``) are sent under those names. The host keeps them only on
    records of an output stream's logger (``stdout``, ``plugin.x.stderr``), which a plugin can
    log on too: its own record's flags, set through ``extra`` or a filter, are sent renamed
    ``extra_<name>``, as the host renames them elsewhere.

    This sorts the plugin's ordinary logging from its capture; it is no guarantee. Plugin code
    runs in this process: it can import this class, build a record of it and hand it to the
    ``stdout`` logger with any flags. So whatever a sender sends under these names is its
    runner's claim about its own lines, and the receiver believes it only as far as the
    capture could have set it (:mod:`isoplug.logs.stream_claims`)."""


_read_standard = itemgetter(*STANDARD_NAMES)


def _unencodable(value: Any) -> str:
    """msgspec calls this for values it cannot carry: send their ``repr`` instead."""
    try:
        return repr(value)
    except Exception as exc:
        return f"<repr() of {type(value).__qualname__} failed: {type(exc).__name__}>"


_encoder = msgspec.msgpack.Encoder(enc_hook=_unencodable)


def _safe_str(value: Any) -> str:
    try:
        return str(value)
    except Exception as exc:
        return f"<str() of {type(value).__qualname__} failed: {type(exc).__name__}: {exc}>"


def _cap(text: str, limit: int = MAX_FIELD_CHARS) -> str:
    """``text`` cut to ``limit`` characters, marked with how many were cut (a mark the host
    recognizes and keeps: see :mod:`isoplug.wire.sanitize`)."""
    if len(text) <= limit:
        return text
    return text[:limit] + cut_mark(len(text) - limit, where=IN_EMITTING_PROCESS)


def _message_of(msg: Any, args: Any) -> str:
    """``record.getMessage()``, except that a broken format string cannot lose the record."""
    text = msg if type(msg) is str else _safe_str(msg)
    if args:
        try:
            text = text % args
        except Exception as exc:
            text = f"{text!r} % {_safe_str(args)} failed: {type(exc).__name__}: {exc}"
    return text


#: ``extra`` / event values nested deeper than this are sent as ``repr``: a receiver decodes
#: records inside a frame, with less stack to spare than the sender had.
MAX_NESTING = 32
#: One encoded record larger than this (1 MiB) is re-encoded with its extras cut down, so that
#: a single record can never approach the frame limit.
MAX_RECORD_BYTES = 1024 * 1024
_ENCODE_FAILURES = (TypeError, ValueError, OverflowError, RecursionError, UnicodeEncodeError)


def _too_deep(value: Any, depth: int = 0) -> bool:
    if depth >= MAX_NESTING:
        return True
    if type(value) is dict:
        return any(_too_deep(item, depth + 1) for item in value.values())
    if type(value) is list or type(value) is tuple:
        return any(_too_deep(item, depth + 1) for item in value)
    return False


def _plain_text(value: Any) -> str:
    """``value`` as text that is valid UTF-8 (lone surrogates escaped)."""
    text = value if type(value) is str else _safe_str(value)
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _safe_mapping(values: dict[str, Any], value_limit: int) -> dict[str, Any]:
    """A mapping that always encodes: every value that might not is replaced by its repr."""
    safe: dict[str, Any] = {}
    for key, value in values.items():
        if (
            value is None
            or type(value) in (bool, float)
            or (type(value) is int and -(2**63) <= value < 2**64)
        ):
            safe[_plain_text(key)] = value
        elif type(value) is str:
            safe[_plain_text(key)] = _plain_text(_cap(value, value_limit))
        else:
            safe[_plain_text(key)] = _plain_text(_cap(_unencodable(value), value_limit))
    return safe


_LogRecord = logging.LogRecord
#: Records have a ``taskName`` attribute from Python 3.12 on.
_HAS_TASK_NAME = "taskName" in _STANDARD_DEFAULTS

#: Messages (format strings: one per call site) whose records came with extras. Their records
#: skip the straight-line path, whose attribute reads are wasted on a record with extras (its
#: ``__dict__`` already exists, and each read then costs ~450 instructions, ~10,000 in all).
#: Only a hint: either path captures any record correctly. While it is empty, as in programs
#: that never log extras, checking it costs no lookup.
_MESSAGES_WITH_EXTRAS: set[str] = set()
_MESSAGES_WITH_EXTRAS_LIMIT = 1024


#: The ``extra`` of a record that has none, sent when a later field (the template) is; only
#: ever encoded, never changed.
_NO_EXTRA: dict[str, Any] = {}


def _remember_extras(msg: str) -> None:
    if len(_MESSAGES_WITH_EXTRAS) >= _MESSAGES_WITH_EXTRAS_LIMIT:
        _MESSAGES_WITH_EXTRAS.clear()  # per-record messages (f-strings) must not pile up
    _MESSAGES_WITH_EXTRAS.add(msg)


def forget_extras_hints() -> None:
    """Forget which messages came with extras (they are learnt again): for extras that were
    only there for a while, such as a trace's ids (see :mod:`isoplug.runner.tracing`)."""
    _MESSAGES_WITH_EXTRAS.clear()


def capture_record(record: logging.LogRecord, seq: int) -> bytes:
    """Encode ``record`` with sequence number ``seq``; never raises for record contents."""
    if type(record) is _LogRecord:
        # The common record (a text message, no exception, no extras) in one straight line:
        # this runs on the caller's thread for every record. Its fields are read as attributes
        # before anything touches ``record.__dict__``: until then CPython keeps them in the
        # object's inline values, where a read costs a few instructions; building the dict and
        # looking the fields up in it cost as much again as all the rest of this path.
        try:
            msg = record.msg
            if (
                type(msg) is str
                and not (_MESSAGES_WITH_EXTRAS and msg in _MESSAGES_WITH_EXTRAS)
                and record.exc_info is None
                and record.exc_text is None
                and record.stack_info is None
            ):
                args = record.args
                # The array stops after the last field that is set; the receiver fills in the
                # defaults of the fields left out (and derives msecs, relativeCreated).
                if args:
                    message = msg % args
                    # With arguments, the template (``msg``) is sent too: the last field, after
                    # the fields between at their defaults (a byte each). One list display, as
                    # below: extending a list would cost a reallocation on every call.
                    fields = [
                        record.name,
                        record.levelno,
                        record.levelname,
                        record.created,
                        record.pathname,
                        record.filename,
                        record.module,
                        record.lineno,
                        record.funcName,
                        record.thread,
                        record.threadName,
                        record.process,
                        record.processName,
                        seq,
                        message,
                        record.taskName if _HAS_TASK_NAME else None,  # type: ignore[attr-defined]
                        None,  # exc_text, exc_type, exc_message, stack_info
                        None,
                        None,
                        None,
                        _NO_EXTRA,
                        None,  # event, event_method
                        None,
                        msg if len(msg) <= MAX_FIELD_CHARS else _cap(msg),
                    ]
                else:
                    message = msg
                    # Two displays, not a shared prefix: extending it would cost a copy per record.
                    fields = [
                        record.name,
                        record.levelno,
                        record.levelname,
                        record.created,
                        record.pathname,
                        record.filename,
                        record.module,
                        record.lineno,
                        record.funcName,
                        record.thread,
                        record.threadName,
                        record.process,
                        record.processName,
                        seq,
                        message,
                    ]
                    if _HAS_TASK_NAME:
                        task_name = record.taskName  # type: ignore[attr-defined] # 3.12+ only
                        if task_name is not None:
                            fields.append(task_name)
                # Every standard attribute was read above (the two unsent ones here), so a
                # dict of the standard size holds exactly those: the record has no extras.
                _unsent = record.msecs, record.relativeCreated
                if len(record.__dict__) != _STANDARD_COUNT:
                    _remember_extras(msg)
                elif len(message) <= MAX_FIELD_CHARS:
                    encoded = _encoder.encode(fields)
                    if len(encoded) <= MAX_RECORD_BYTES:
                        return encoded
        except Exception:
            # The general path below turns the failure into readable text (never loses it).
            encoded = b""
    try:
        encoded = _capture(record, seq, safe=False)
    except _ENCODE_FAILURES:
        # Rare: surrogates, huge ints, deep or cyclic values. Pay for the careful path.
        return _capture(record, seq, safe=True)
    if len(encoded) > MAX_RECORD_BYTES:
        return _capture(record, seq, safe=True)
    return encoded


#: The fixed parts of the records of the lines printed from one place, already encoded: the
#: array header and the fields before ``created`` (one for a record of 15 fields, one for 16,
#: with a task name), the fields between ``created`` and ``seq``, and the level number. See
#: :func:`encode_line`.
LineSite = tuple[bytes, bytes, bytes, int]


def line_site(attributes: dict[str, Any], thread_name: str | None) -> LineSite:
    """What every record of a plain line printed from one place shares, encoded once;
    ``attributes`` are such a record's (see :func:`~isoplug.logs.output_records.stamp`)."""
    head = _encoder.encode([attributes["name"], attributes["levelno"], attributes["levelname"]])[1:]
    middle = _encoder.encode(
        [
            attributes["pathname"],
            attributes["filename"],
            attributes["module"],
            attributes["lineno"],
            attributes["funcName"],
            attributes["thread"],
            thread_name,
            attributes["process"],
            attributes["processName"],
        ]
    )[1:]
    # msgpack array headers: a fixarray of 15, an array16 of 16 (taskName is the 16th field).
    return b"\x9f" + head, b"\xdc\x00\x10" + head, middle, attributes["levelno"]


def encode_line(
    site: LineSite, created: float, seq: int, message: str, task_name: str | None
) -> bytes:
    """The record of a plain printed line: exactly the bytes :func:`capture_record` gives for
    a ``LogRecord`` with these fields and no extras, without building one. One small tuple is
    encoded and spliced around the site's fixed parts (a float is always 9 bytes in msgpack),
    because a ``print()`` must cost little more than writing the line to a file."""
    if task_name is None:
        variable = _encoder.encode((created, seq, message))
        return site[0] + variable[1:10] + site[2] + variable[10:]
    variable = _encoder.encode((created, seq, message, task_name))
    return site[1] + variable[1:10] + site[2] + variable[10:]


def _standard_and_extra(attributes: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``attributes`` with every standard one present, and the non-standard ones in order."""
    keys = list(attributes)
    if keys[:_STANDARD_COUNT] == _STANDARD_ORDER:
        # As __init__ set them: only the few keys after them need looking at (a loop over
        # every key costs ~10,000 instructions).
        candidates = keys[_STANDARD_COUNT:]
    else:
        # Re-set (moved to the end) or deleted. A deleted one is sent at its default rather
        # than losing the record.
        candidates = keys
        if not attributes.keys() >= _STANDARD_DEFAULTS.keys():
            attributes = {**_STANDARD_DEFAULTS, **attributes}
    extra: dict[str, Any] = {}
    odd: list[Any] | None = None
    for key in candidates:
        if type(key) is not str:
            # ``extra={1: ...}`` puts a non-text key into the record: the host accepts text
            # keys only, and would refuse the whole record.
            if odd is None:
                odd = []
            odd.append(key)
        elif key not in STANDARD_ATTRIBUTES:
            extra[key] = attributes[key]
    if odd is not None:
        for key in odd:
            extra[odd_key_name(key, extra)] = attributes[key]
    return attributes, extra


def _without_capture_flags(extra: dict[str, Any]) -> dict[str, Any]:
    """``extra`` with the capture's flags (see :class:`CapturedLineRecord`) renamed
    ``extra_<name>`` (prefixed again while taken): a record isoplug's capture did not make."""
    if _CAPTURE_FLAG not in extra and not any(key.startswith(HOST_MARKER_PREFIX) for key in extra):
        return extra
    renamed: dict[str, Any] = {}
    for key, value in extra.items():
        if key == _CAPTURE_FLAG or key.startswith(HOST_MARKER_PREFIX):
            new = f"extra_{key}"
            while new in extra or new in renamed:
                new = f"extra_{new}"
            renamed[new] = value
        else:
            renamed[key] = value
    return renamed


def odd_key_name(key: Any, taken: Collection[str]) -> str:
    """The name an extra whose key is not text (``extra={1: ...}``) is sent under:
    ``extra_<repr>`` (``extra_1``, ``extra_('t',)``), prefixed again while ``taken`` has it."""
    name = f"extra_{_plain_text(_safe_repr(key))}"
    while name in taken:
        name = f"extra_{name}"
    return name


def _safe_repr(value: Any) -> str:
    try:
        return repr(value)
    except Exception as exc:
        return f"<repr() of {type(value).__qualname__} failed: {type(exc).__name__}>"


def _capture(record: logging.LogRecord, seq: int, *, safe: bool) -> bytes:
    attributes, extra = _standard_and_extra(record.__dict__)
    msg = attributes["msg"]
    args = attributes["args"]
    message = _message_of(msg, args)
    if len(message) > MAX_FIELD_CHARS:
        message = _cap(message)
    # The format string of a message with arguments, so the receiver can keep it as ``msg``.
    template = _cap(str.__str__(msg)) if args and isinstance(msg, str) else None
    exc_text = exc_type = exc_message = exception = None
    exc_info = attributes["exc_info"]
    is_event = type(msg) in EVENT_TYPES
    if not exc_info and is_event and "exc_info" in msg:
        # A structlog event's exception (``.exception()`` puts ``exc_info=True`` there): only
        # here, on the thread still handling it, does True name the right exception. The
        # receiver puts the rebuilt exception back into the event.
        exc_info = resolve_exc_info(msg["exc_info"])
        msg = {**msg, "exc_info": exc_info is not None}
    if exc_info:
        exc_text = attributes["exc_text"]
        if isinstance(exc_info, tuple) and exc_info[1] is not None:
            error = exc_info[1]
            exc_type = f"{type(error).__module__}.{type(error).__qualname__}"
            exc_message = _cap(_safe_str(error))
            if not exc_text:
                exc_text = "".join(traceback.format_exception(*exc_info)).rstrip("\n")
            exception = exception_data(error, exc_info[2], plain=safe)
        if exc_text:
            exc_text = _cap(exc_text)
    elif attributes["exc_text"]:
        exc_text = _cap(attributes["exc_text"])
    stack_info = attributes["stack_info"]
    if stack_info:
        stack_info = _cap(stack_info)
    if extra and type(record) is not CapturedLineRecord:
        extra = _without_capture_flags(extra)
    for value in extra.values():
        if type(value) in (dict, list, tuple) and _too_deep(value):
            safe = True
            break
    event = msg if is_event else None
    # A standard attribute plugin code set to another type would have the receiver refuse the
    # whole record: it is sent at its default, its value kept in ``extra_<name>``.
    standard, extra = fit_standard(_read_standard(attributes), extra)
    if safe:
        limit = MAX_RECORD_BYTES // 64
        extra = _safe_mapping(extra, limit)
        event = _safe_mapping(event, limit) if event is not None else None
        message = _plain_text(message)
        template = None if template is None else _plain_text(template)
        exc_text, exc_message, stack_info = (
            None if text is None else _plain_text(text)
            for text in (exc_text, exc_message, stack_info)
        )
        standard = tuple(_plain_text(v) if type(v) is str else v for v in standard)
    fields = (
        *standard,
        seq,
        message,
        attributes.get("taskName"),
        exc_text,
        exc_type,
        exc_message,
        stack_info,
        extra,
        event,
        attributes.get("_name") if event is not None else None,
        template,
        exception,
    )
    # Trailing fields at their defaults are left out, as on the straight-line path: which path
    # a record takes (the extras hint is learnt from earlier records) must not change its bytes.
    end = len(fields)
    while end > _ALWAYS_SENT and _at_default(end - 1, fields[end - 1]):
        end -= 1
    return _encoder.encode(fields[:end])


#: Fields every record sends: the standard ones, ``seq`` and ``message``.
_ALWAYS_SENT = LogRecordData.__struct_fields__.index("message") + 1
#: The index of ``extra``, the one trailing field whose default is not None.
_EXTRA_INDEX = LogRecordData.__struct_fields__.index("extra")


def _at_default(index: int, value: Any) -> bool:
    if index == _EXTRA_INDEX:
        return type(value) is dict and not value
    return value is None
