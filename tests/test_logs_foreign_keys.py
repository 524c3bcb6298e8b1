"""A foreign sender (not isoplug's) whose record's ``extra`` or structlog ``event`` has keys
that are not text: over a real socket to a real LogReceiver, with hand-built records."""

from __future__ import annotations

import asyncio
import logging

import msgspec

from isoplug.rpc import BlockingChannel
from isoplug.wire import DEFAULT_MAX_FRAME_SIZE
from isoplug.wire.logframes import log_batch_frame
from tests.test_logs_forwarding import PREFIX, receiving


def hand_built(seq: int, message: str, extra: dict[object, object]) -> bytes:
    """A record in LogRecordData's array layout, as a foreign sender would encode it."""
    fields: list[object] = ["foreign", logging.WARNING, "WARNING", 1_700_000_000.0]
    fields += ["f.py", "f.py", "f", 1, "f", None, None, None, None, seq, message]
    fields += [None, None, None, None, None, extra, {"event": message, 7: "seven"}]
    return msgspec.msgpack.encode(fields)


async def test_a_foreign_records_non_text_keys_are_made_text_and_the_record_kept() -> None:
    """Keys 1, (1, 2), b"k" and None in extra, 7 in the event: the record arrives, each such
    key named as an isoplug sender names it (``extra_<repr>``, its text sanitized; a name
    taken is prefixed again), text keys as they were; nothing is counted as malformed, and
    the next record of the batch arrives too."""
    extra: dict[object, object] = {1: "one", "extra_1": "taken", (1, 2): "pair", b"k": "bytes"}
    extra[None] = "none"
    extra["\x1b[31mred"] = "escape"
    frame = log_batch_frame(
        [hand_built(1, "odd keys", extra), hand_built(2, "next", {"plain": 1})],
        {},
        DEFAULT_MAX_FRAME_SIZE,
    )
    async with receiving("threads") as (receiver, collector):
        sender = await asyncio.to_thread(
            BlockingChannel.connect, receiver.address, receiver.token, name="alien", role="logs"
        )
        try:
            await asyncio.to_thread(sender.socket.sendall, frame)
            record = await collector.wait_for(f"{PREFIX}.foreign", "odd keys")
            after = await collector.wait_for(f"{PREFIX}.foreign", "next")
        finally:
            sender.close()
        metrics = list(receiver.metrics().values())
    values = vars(record)
    assert values["extra_1"] == "taken" and values["extra_extra_1"] == "one"
    assert values["extra_(1, 2)"] == "pair"
    assert values["extra_b'k'"] == "bytes"
    assert values["extra_None"] == "none"
    # Text from outside is sanitized, keys too.
    assert not any("\x1b" in key for key in values)
    assert "escape" in values.values()
    event = record.msg
    assert isinstance(event, dict)
    assert event["extra_7"] == "seven" and event["event"] == "odd keys"
    assert after.plain == 1  # type: ignore[attr-defined]
    assert metrics and all(not m.dropped for m in metrics)
