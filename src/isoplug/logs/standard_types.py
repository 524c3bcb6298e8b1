"""A record's standard fields made to fit the wire's types, keeping any value that did not.

Plugin code can set a standard ``LogRecord`` attribute to anything (a filter doing
``record.thread = "x"``, ``record.lineno = "12"``). The receiver decodes records against
:class:`~isoplug.wire.LogRecordData` and would refuse such a record whole, counting it
malformed: the message would be lost for one odd attribute. So the sender sends such a field
at its default (``None`` where the wire allows it) and the value it had, as text, in an extra
named ``extra_<attribute>`` (``extra_thread``): the record arrives with the claim preserved,
and the host treats that extra as any other. The only conversions are lossless ones: an ``int``
or ``str`` subclass (an ``IntEnum``, a ``str`` subclass) as the plain value, an ``int`` as a
time. A level number that is not an int is taken from the level name when that is a known
one, so the record keeps its level.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from isoplug.wire.sanitize import IN_EMITTING_PROCESS, cut_mark

__all__ = ["STANDARD_NAMES", "fit_standard"]

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
        claims[f"extra_{STANDARD_NAMES[index]}"] = _text_of(value)
        fitted[index] = _replacement(index, kind, nullable, fitted)
    if not claims:
        return tuple(fitted), extra
    merged = dict(extra)
    for key, text in claims.items():
        while key in merged:
            key = f"extra_{key}"
        merged[key] = text
    return tuple(fitted), merged


def _replacement(index: int, kind: int, nullable: bool, fitted: list[Any]) -> Any:
    if nullable:
        return None
    if kind == _TEXT:
        return ""
    if kind == _TIME:
        # The record is being sent now: a time no later than its creation's would be.
        return time.time()
    # The level number: from the level name when that is a known level's.
    levelname = fitted[STANDARD_NAMES.index("levelname")]
    level = logging.getLevelNamesMapping().get(levelname) if type(levelname) is str else None
    return logging.NOTSET if level is None else level


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
