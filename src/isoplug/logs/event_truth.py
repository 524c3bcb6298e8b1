"""A sender's structlog event dict made to state the host's truth.

A record structlog's ``ProcessorFormatter`` renders as its own (``record.msg`` is the event
dict, and its ``foreign_pre_chain`` is skipped) shows the event's keys as the record's fields,
and python-json-logger merges a dict message over its own fields. So the event states what the
record says (:func:`state_the_truth`): ``logger`` is the record's name (under the sender's
prefix), the identity is stamped in it, and a sender's values under those keys are kept as
``extra_<key>`` when they say something else; so are its values under any other name
:func:`~isoplug.logs.record_names.reserved_field` reserves, unless they say what the record
says there (a plugin-side ``TimeStamper``'s ``timestamp``, ``CallsiteParameterAdder``'s
``func_name``...: see :mod:`isoplug.logs.record_names`). A level under a severity name that
does not name the record's level becomes the record's (:func:`state_the_level`).
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from typing import Any

from isoplug.logs.line_fields import level_from_name
from isoplug.logs.record_names import (
    IDENTITY_NAMES,
    MESSAGE_NAMES,
    SEVERITY_NAMES,
    renamed,
    reserved_field,
)
from isoplug.wire import LogRecordData
from isoplug.wire.sanitize import clean_text

__all__ = ["PRINTED_TRUTHS", "keep_printed_truths", "state_the_level", "state_the_truth"]

#: Logger-name keys whose value is dropped, not renamed, when it is the sender's own name for
#: its logger (structlog's add_logger_name): the host's ``logger`` says the same, confined.
_LOGGER_KEYS = ("logger", "logger_name")
#: Keys a structlog event dict has as its own: its message, its level (stated by
#: state_the_level) and its exception (replaced by the rebuilt one).
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


def state_the_truth(
    event: dict[str, Any],
    data: LogRecordData,
    *,
    logger_name: str,
    identity: Mapping[str, Any],
    process: int | None,
    record: dict[str, Any],
    limit: int,
) -> dict[str, Any]:
    """``event``, the sender's event dict already cleaned, stating the host's truth (see the
    module docstring) about the record whose attributes are ``record``; ``limit`` is the
    cap its texts were cleaned to."""
    truth: dict[str, Any] = {"logger": logger_name, **identity}
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
        if not _says_true(key, event[key], data, record, limit):
            event[renamed(key, event, event)] = event.pop(key)
    return event


def _says_true(
    key: str, value: Any, data: LogRecordData, record: dict[str, Any], limit: int
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
        return value == clean_text(text, limit)
    attribute = _EVENT_ATTRIBUTES.get(key, key)
    if attribute not in record or attribute in _NEVER_TRUE:
        return False
    truth = record[attribute]
    return type(value) is type(truth) and value == truth


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


#: The fields of a printed JSON line that a plugin's structlog (``TimeStamper``,
#: ``CallsiteParameterAdder``) writes truthfully: kept when they say what the record says.
PRINTED_TRUTHS = ("timestamp", "lineno", "func_name")


def keep_printed_truths(
    attributes: dict[str, Any], sent: Mapping[str, Any], data: LogRecordData, limit: int
) -> None:
    """On the record of a printed JSON line (its ``attributes``; ``sent`` the extras as they
    came), each field of :data:`PRINTED_TRUTHS` that the runner's capture renamed
    ``extra_<key>`` and that says what the record says (a ``timestamp`` within a second of
    its time, its ``lineno``, its ``funcName``) is the plugin's again under its own name: a
    structlog printing JSON lines keeps its own fields, as its event dicts do. An
    ``exception`` text stays renamed: the record carries no exception to check it against."""
    for key in PRINTED_TRUTHS:
        name = f"extra_{key}"
        # Renamed by the capture only if the line had no extra_<key> of its own too.
        if name not in attributes or f"extra_{name}" in sent:
            continue
        value = attributes[name]
        if not _says_true(key, value, data, attributes, limit):
            continue
        del attributes[name]
        # ``lineno`` is the record's own attribute already, with this value.
        attributes.setdefault(key, value)


def state_the_level(event: dict[str, Any], levelno: int, levelname: str) -> None:
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
