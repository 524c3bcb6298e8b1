"""Decoding a batch's records, salvaging the good ones when some are malformed.

A batch carries its records as one raw msgpack array (``LogBatch.records``), decoded in one
call. A sender's bytes are untrusted: when that call fails, the array is decoded item by
item, so one bad record is rejected alone instead of costing the whole batch.
"""

from __future__ import annotations

import msgspec

from isoplug.wire import LogRecordData

__all__ = ["decode_records"]

_record_list_decoder = msgspec.msgpack.Decoder(list[LogRecordData])
_raw_list_decoder = msgspec.msgpack.Decoder(list[msgspec.Raw])
_record_decoder = msgspec.msgpack.Decoder(LogRecordData)
_DECODE_ERRORS = (msgspec.DecodeError, UnicodeDecodeError, RecursionError)


def decode_records(raw: msgspec.Raw) -> tuple[list[LogRecordData], int, str | None]:
    """The records of ``raw`` that decode, how many did not, and the decoder's complaint about
    the whole array (None: it decoded whole). The complaint may quote the sender's bytes."""
    try:
        return _record_list_decoder.decode(raw), 0, None
    except _DECODE_ERRORS as batch_error:
        problem = f"{batch_error}"
    good: list[LogRecordData] = []
    bad = 0
    try:
        items = _raw_list_decoder.decode(raw)
    except _DECODE_ERRORS:
        items = []
        bad = 1
    for item in items:
        try:
            good.append(_record_decoder.decode(item))
        except _DECODE_ERRORS:
            bad += 1
    return good, bad, problem
