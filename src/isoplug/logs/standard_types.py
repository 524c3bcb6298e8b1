"""A record's standard fields made to fit the wire's types, keeping any value that did not.

Plugin code can set a standard ``LogRecord`` attribute to anything (a filter doing
``record.thread = "x"``, ``record.lineno = "12"``). The receiver decodes records against
:class:`~isoplug.wire.LogRecordData` and would refuse such a record whole, counting it
malformed: the message would be lost for one odd attribute. So the sender sends such a field
at the wire's default (``lineno`` 0, ``thread`` None...) and the value it had, as text, in an extra
named ``extra_<attribute>`` (``extra_thread``): the record arrives with the claim preserved,
and the host treats that extra as any other. The only conversions are lossless ones: an ``int``
or ``str`` subclass (an ``IntEnum``, a ``str`` subclass) as the plain value, an ``int`` as a
time. A level number that is not an int is taken from the level name when that is a known
one, so the record keeps its level.

The sender's general path (:mod:`isoplug.logs.capture`) does this; its straight-line path for
plain records does not look at types (13 checks would cost ~230 ns a record, a third of the
capture), so the receiver does the same to a record it would otherwise reject
(:mod:`isoplug.logs.batch_decode`).
"""

from __future__ import annotations

import logging
import time
from typing import Any

import msgspec

from isoplug.wire.messages import LogRecordData
from isoplug.wire.sanitize import IN_EMITTING_PROCESS, cut_mark

__all__ = ["STANDARD_NAMES", "fit_standard", "level_of", "time_of"]

#: The standard attributes in the wire's field order (see ``_read_standard`` in
#: :mod:`isoplug.logs.capture`).
STANDARD_NAMES = (
    "name",
    "levelno",
    "levelname",
    "created",
    "pathname",
    "filename",
    "module",
    "lineno",
    "funcName",
    "thread",
    "threadName",
    "process",
    "processName",
)

# The wire type of each field: text, an int, or the time (a float); whether None is allowed.
_TEXT, _INT, _TIME = 0, 1, 2
_KINDS = (_TEXT, _INT, _TEXT, _TIME, _TEXT, _TEXT, _TEXT, _INT, _TEXT, _INT, _TEXT, _INT, _TEXT)
_NULLABLE = (False, False, False, False, False, False, False, True, True, True, True, True, True)

#: The wire's default of each field (NODEFAULT: it has none).
_WIRE_DEFAULTS = tuple(
    field.default for field in msgspec.structs.fields(LogRecordData)[: len(STANDARD_NAMES)]
)

#: Longest text kept of a value that did not fit (the host caps extras further).
_MAX_CLAIM_CHARS = 1024


def _fits(kind: int, value: Any) -> bool:
    if kind == _TEXT:
        return type(value) is str
    if kind == _INT:
        return type(value) is int
    return type(value) is float or type(value) is int


def fit_standard(
    standard: tuple[Any, ...], extra: dict[str, Any]
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """``standard`` (the values of :data:`STANDARD_NAMES`) with every value of the wrong type
    converted or replaced, and ``extra`` with the replaced values' text added (a new dict when
    any was). Returns its arguments themselves when every value fits."""
    if all(
        _fits(kind, value) or (value is None and nullable)
        for kind, nullable, value in zip(_KINDS, _NULLABLE, standard, strict=False)
    ):
        return standard, extra
    fitted = list(standard)
    claims: dict[str, Any] = {}
    for index, (kind, nullable, value) in enumerate(zip(_KINDS, _NULLABLE, standard, strict=False)):
        if _fits(kind, value) or (value is None and nullable):
            continue
        if kind == _TEXT and isinstance(value, str):
            fitted[index] = str.__str__(value)
            continue
        if kind != _TEXT and isinstance(value, int) and not isinstance(value, bool):
            fitted[index] = int.__index__(value)
            continue
        if kind == _TIME and isinstance(value, float):
            fitted[index] = float(value)
            continue
        claims[f"extra_{STANDARD_NAMES[index]}"] = _text_of(value)
        fitted[index] = _replacement(index, kind, fitted)
    if not claims:
        return tuple(fitted), extra
    merged = dict(extra)
    for claim, text in claims.items():
        key = claim
        while key in merged:
            key = f"extra_{key}"
        merged[key] = text
    return tuple(fitted), merged


def _replacement(index: int, kind: int, fitted: list[Any]) -> Any:
    default = _WIRE_DEFAULTS[index]
    if default is not msgspec.NODEFAULT:
        return default
    if kind == _TEXT:
        return ""
    if kind == _TIME:
        # The record is being sent now: a time no later than its creation's would be.
        return time.time()
    return _level_named(fitted[STANDARD_NAMES.index("levelname")])


def _level_named(levelname: Any) -> int:
    """The level number of a known level's name; NOTSET for anything else."""
    level = logging.getLevelNamesMapping().get(levelname) if type(levelname) is str else None
    return logging.NOTSET if level is None else level


def level_of(record: logging.LogRecord) -> int:
    """``record.levelno`` as an int (for the sender's own bookkeeping: drop counts by level),
    whatever plugin code set it to."""
    levelno: Any = record.levelno
    if type(levelno) is int:
        return levelno
    if isinstance(levelno, int) and not isinstance(levelno, bool):
        return int.__index__(levelno)
    return _level_named(getattr(record, "levelname", None))


def time_of(created: Any) -> float:
    """A record's ``created`` that is not a float, as one: an int as it is, anything else as
    now (for the sender's own timing; the value is sent as the record's claim)."""
    if isinstance(created, float) or (isinstance(created, int) and not isinstance(created, bool)):
        return float(created)
    return time.time()


def _text_of(value: Any) -> str:
    if type(value) is str:
        text = value
    else:
        try:
            text = repr(value)
        except Exception as exc:
            text = f"<repr() of {type(value).__qualname__} failed: {type(exc).__name__}>"
    if len(text) > _MAX_CLAIM_CHARS:
        text = text[:_MAX_CLAIM_CHARS] + cut_mark(
            len(text) - _MAX_CLAIM_CHARS, where=IN_EMITTING_PROCESS
        )
    return text
