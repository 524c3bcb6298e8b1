"""Building a :class:`~isoplug.wire.messages.LogBatch` frame from records encoded one by one.

A log sender encodes each record as it is emitted (a msgpack array in the layout of
:class:`~isoplug.wire.messages.LogRecordData`) and later ships many of them at once. Building
the batch by concatenation, instead of decoding and re-encoding records into a ``LogBatch``
Struct, keeps the sender's cost per record to one encode. The result is byte-for-byte what
``encode_frame(LogBatch(...))`` would produce for the same records; a test holds the two
together.
"""

from __future__ import annotations

import msgspec

from isoplug.errors import LocalProtocolError
from isoplug.wire.framing import HEADER_SIZE
from isoplug.wire.messages import LogBatch, LogRecordData

__all__ = ["log_batch", "log_batch_frame"]

_encoder = msgspec.msgpack.Encoder()
#: A LogBatch is the array ``["logs", records, dropped, ledger_fd, resumed_after,
#: reordered_after, dropped_at_close, chain, queue_bytes]``: fixarray of 9, the tag.
_BATCH_HEAD = b"\x99" + _encoder.encode("logs")
#: ``ledger_fd``, ``resumed_after``, ``chain`` and ``queue_bytes`` are only ever set in the
#: first batch of a connection, never in one built here; ``reordered_after`` and
#: ``dropped_at_close`` only by a closing sender.
_NO_CHAIN = _encoder.encode(None) * 2
_NO_ANNOUNCEMENT = _encoder.encode(None) * 3 + _encoder.encode({}) + _NO_CHAIN


def _array_header(count: int) -> bytes:
    if count < 16:
        return bytes((0x90 | count,))
    if count < 2**16:
        return b"\xdc" + count.to_bytes(2, "big")
    return b"\xdd" + count.to_bytes(4, "big")


def log_batch_frame(
    encoded_records: list[bytes],
    dropped: dict[int, int],
    max_frame_size: int,
    *,
    reordered_after: int | None = None,
    dropped_at_close: dict[int, int] | None = None,
) -> bytes:
    """Return one complete frame carrying ``encoded_records`` and the drop totals (and, for a
    closing sender, ``reordered_after`` and ``dropped_at_close``, see
    :class:`~isoplug.wire.messages.LogBatch`).

    Each item of ``encoded_records`` must be one msgpack-encoded record array. Raises
    :class:`~isoplug.errors.LocalProtocolError` when the frame would exceed
    ``max_frame_size``; the caller splits batches well below it.
    """
    tail = (
        _NO_ANNOUNCEMENT
        if reordered_after is None and not dropped_at_close
        else _encoder.encode(None) * 2
        + _encoder.encode(reordered_after)
        + _encoder.encode(dropped_at_close or {})
        + _NO_CHAIN
    )
    body = b"".join(
        (
            _BATCH_HEAD,
            _array_header(len(encoded_records)),
            *encoded_records,
            _encoder.encode(dropped),
            tail,
        )
    )
    if len(body) > max_frame_size:
        raise LocalProtocolError(
            f"log batch of {len(body)} bytes exceeds the frame limit of {max_frame_size} bytes"
        )
    return len(body).to_bytes(HEADER_SIZE, "big") + body


def log_batch(records: list[LogRecordData], dropped: dict[int, int] | None = None) -> LogBatch:
    """A :class:`~isoplug.wire.messages.LogBatch` carrying ``records`` (for senders that hold
    ``LogRecordData`` objects rather than pre-encoded records)."""
    return LogBatch(records=msgspec.Raw(_encoder.encode(records)), dropped=dropped or {})
