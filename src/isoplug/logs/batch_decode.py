"""Decoding a batch's records, salvaging the good ones when some are malformed.

A batch carries its records as one raw msgpack array (``LogBatch.records``), decoded in one
call. A sender's bytes are untrusted: when that call fails, the array is decoded item by
item, so one bad record is rejected alone instead of costing the whole batch.

A record whose ``extra`` (or structlog ``event``) has a key that is not text, which msgpack
carries but the wire's record type refuses, is kept: each such key becomes text as an isoplug
sender makes it (:func:`~isoplug.logs.capture.odd_key_name`, ``extra_1`` for ``1``), and the
receiver then cleans it as every key (:mod:`isoplug.logs.rebuild`). Only a foreign sender
sends one; isoplug's own makes its keys text before sending.

A record with a standard field of another type (``thread`` as text, a filter's
``record.thread = "x"``) is kept too: the field is set to its default and its value kept, as
text, in ``extra_<attribute>``, as an isoplug sender's general path does
(:mod:`isoplug.logs.standard_types`). The sender's straight-line path for plain records does not
check the types, which would cost every ``logger.info()`` far more than this costs the rare
record that needs it.

A rejected record still arrived: its sequence number, when it can be read, is given back, so
that the receiver counts it malformed and not also lost in transit.
"""

from __future__ import annotations

from typing import Any

import msgspec

from isoplug.logs.capture import odd_key_name
from isoplug.logs.standard_types import STANDARD_NAMES, fit_standard
from isoplug.wire import LogRecordData

__all__ = ["decode_records"]

_record_list_decoder = msgspec.msgpack.Decoder(list[LogRecordData])
_raw_list_decoder = msgspec.msgpack.Decoder(list[msgspec.Raw])
_record_decoder = msgspec.msgpack.Decoder(LogRecordData)
_any_decoder = msgspec.msgpack.Decoder()
_encoder = msgspec.msgpack.Encoder()
_DECODE_ERRORS = (msgspec.DecodeError, UnicodeDecodeError, RecursionError)
#: The position of ``seq`` in a record's array.
_SEQ = LogRecordData.__struct_fields__.index("seq")
#: The positions of ``extra`` and ``event`` in a record's array (LogRecordData's layout).
_MAPPINGS = (
    LogRecordData.__struct_fields__.index("extra"),
    LogRecordData.__struct_fields__.index("event"),
)
_EXTRA = _MAPPINGS[0]


def _default(field: msgspec.structs.FieldInfo) -> Any:
    if field.default is not msgspec.NODEFAULT:
        return field.default
    if field.default_factory is not msgspec.NODEFAULT:
        return field.default_factory()
    return None  # a required field: an array without it fails to decode whatever follows


#: What a record's array holds where it stops early: each field's default, up to ``extra``.
_DEFAULTS = [_default(field) for field in msgspec.structs.fields(LogRecordData)[: _EXTRA + 1]]


def decode_records(
    raw: msgspec.Raw,
) -> tuple[list[LogRecordData], int, str | None, list[int]]:
    """The records of ``raw`` that decode, how many did not, the decoder's complaint about
    the whole array (None: it decoded whole), and the sequence numbers of the rejected records
    that have a readable one, in their order. The complaint may quote the sender's bytes."""
    try:
        return _record_list_decoder.decode(raw), 0, None, []
    except _DECODE_ERRORS as batch_error:
        problem = f"{batch_error}"
    good: list[LogRecordData] = []
    bad = 0
    rejected: list[int] = []
    try:
        items = _raw_list_decoder.decode(raw)
    except _DECODE_ERRORS:
        items = []
        bad = 1
    for item in items:
        try:
            good.append(_record_decoder.decode(item))
        except _DECODE_ERRORS:
            record = _salvaged(item)
            if record is None:
                bad += 1
                seq = _seq_of(item)
                if seq is not None:
                    rejected.append(seq)
            else:
                good.append(record)
    return good, bad, problem if bad else None, rejected


def _seq_of(item: msgspec.Raw) -> int | None:
    """The sequence number of a rejected record, if it is an array with a positive integer
    where the number goes."""
    try:
        fields: Any = _any_decoder.decode(item)
    except _DECODE_ERRORS:
        return None
    if type(fields) is not list or len(fields) <= _SEQ:
        return None
    seq = fields[_SEQ]
    return seq if type(seq) is int and seq > 0 else None


def _salvaged(item: msgspec.Raw) -> LogRecordData | None:
    """The record ``item`` holds, its ``extra`` and ``event`` keys made text and its standard
    fields made to fit; None if there was nothing to change, or it is malformed in another way
    too."""
    try:
        fields: Any = _any_decoder.decode(item)
    except _DECODE_ERRORS:
        return None
    if type(fields) is not list:
        return None
    changed = _fit_standard(fields)
    for index in _MAPPINGS:
        if index < len(fields) and type(fields[index]) is dict:
            values: dict[Any, Any] = fields[index]
            if any(type(key) is not str for key in values):
                fields[index] = _text_keys(values)
                changed = True
    if not changed:
        return None
    try:
        return _record_decoder.decode(_encoder.encode(fields))
    except (*_DECODE_ERRORS, TypeError, ValueError, OverflowError):
        return None


def _text_keys(values: dict[Any, Any]) -> dict[str, Any]:
    """``values`` with text keys: the text ones as they are, the others named as an isoplug
    sender names them (after the text ones, so none of those is renamed)."""
    text = {key: value for key, value in values.items() if type(key) is str}
    for key, value in values.items():
        if type(key) is not str:
            text[odd_key_name(key, text)] = value
    return text


def _fit_standard(fields: list[Any]) -> bool:
    """Make the standard fields of the record array ``fields`` fit the wire's types, in place
    (filling it up to ``extra`` with defaults when a value moves there); whether any changed."""
    count = min(len(fields), len(STANDARD_NAMES))
    standard = tuple(fields[:count])
    extra = fields[_EXTRA] if len(fields) > _EXTRA else _DEFAULTS[_EXTRA]
    if type(extra) is not dict:
        return False
    fitted, fitted_extra = fit_standard(standard, extra)
    if fitted is standard:
        return False
    fields[:count] = fitted
    if fitted_extra is not extra:
        if len(fields) <= _EXTRA:
            fields.extend(_DEFAULTS[len(fields) :])
        fields[_EXTRA] = fitted_extra
    return True
