"""The shared-memory ring (isoplug.logs.ring): what the sender writes, the receiver gets back;
whatever a hostile sender writes there is a reported loss, never a crash or a hang."""

from __future__ import annotations

import asyncio
import logging
import os
import sys

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from isoplug.logs import DropReason, ForwardingHandler, LogMetrics, LogReceiver
from isoplug.logs.capture import capture_record
from isoplug.logs.ledger import (
    ACKNOWLEDGED,
    LEDGER_NAME,
    LEDGER_SIZE,
    LedgerError,
    ReceiverLedger,
    SenderLedger,
)
from isoplug.logs.ring import (
    HEADER_BYTES,
    MIN_RING_BYTES,
    SenderRing,
    ring_capacity,
)
from isoplug.logs.ring_recovery import WINDOW_ITEMS, recover_records
from isoplug.testing import eventually
from tests.test_logs_forwarding import finish, receiving, run_child
from tests.wire_strategies import PROPERTY

pytestmark = pytest.mark.skipif(not hasattr(os, "memfd_create"), reason="needs memfd")


def encoded(seq: int, text: str = "") -> bytes:
    record = logging.LogRecord("ring", logging.INFO, __file__, 1, text or f"record {seq}", (), None)
    return capture_record(record, seq)


def new_ring(capacity: int) -> tuple[SenderLedger, SenderRing]:
    ledger = SenderLedger(capacity)
    assert ledger.ring is not None
    return ledger, ledger.ring


def read_back(ledger: SenderLedger, after: int, upto: int) -> list[int]:
    """What the receiver's side reads back, through the file (as the receiver does)."""
    reader = ReceiverLedger.open(os.getpid(), ledger.fd)
    try:
        ring = reader.ring()
        assert ring is not None
        try:
            recovery = ring.recover(after, upto)
        finally:
            ring.close()
    finally:
        reader.close()
    assert recovery.problem is None
    return [record.seq for record in recovery.records]


def test_capacities_are_powers_of_two_within_bounds() -> None:
    assert ring_capacity(1) == MIN_RING_BYTES
    assert ring_capacity(5000) == 8192
    assert ring_capacity(8 * 1024 * 1024) == 4 * 1024 * 1024
    with pytest.raises(ValueError, match="power of two"):
        SenderRing(memoryview(bytearray(HEADER_BYTES + 5000)))


def test_what_is_not_released_comes_back_in_order_across_the_wrap() -> None:
    """Records written and not released come back, in order, even those that wrap around the
    ring's end; a full ring refuses a record, a release makes room."""
    ledger, ring = new_ring(MIN_RING_BYTES)
    try:
        ring.start_after(0)
        sizes = []
        seq = 0
        while True:
            data = encoded(seq + 1)
            if not ring.put(data, seq + 1):
                break
            seq += 1
            sizes.append(len(data))
        assert ring.used == sum(sizes) and ring.used + len(encoded(seq + 1)) > ring.capacity
        assert read_back(ledger, 0, seq) == list(range(1, seq + 1))
        # Release the first half; the ring takes more, wrapping around its end.
        half = len(sizes) // 2
        ring.release(sum(sizes[:half]), half)
        more = seq
        while ring.put(encoded(more + 1), more + 1):
            more += 1
        assert more > seq
        assert read_back(ledger, 0, more) == list(range(half + 1, more + 1))
        # Only what never arrived, and only up to what the ledger says was accepted.
        assert read_back(ledger, seq, more - 1) == list(range(seq + 1, more))
    finally:
        ledger.close()


def test_a_ledger_file_of_no_rings_size_is_refused() -> None:
    """A ledger's file is the ledger's size, or that and a ring's (a power of two): nothing
    else is opened; a ledger without a ring has no ring to read."""
    wrong_size = os.memfd_create(LEDGER_NAME, os.MFD_CLOEXEC)
    plain = SenderLedger()
    try:
        os.ftruncate(wrong_size, LEDGER_SIZE + HEADER_BYTES + 5000)
        with pytest.raises(LedgerError, match="or that and a ring's"):
            ReceiverLedger.open(os.getpid(), wrong_size)
        reader = ReceiverLedger.open(os.getpid(), plain.fd)
        assert reader.ring() is None
        reader.close()
    finally:
        os.close(wrong_size)
        plain.close()


header_words = st.lists(
    st.one_of(st.integers(0, 2**64 - 1), st.integers(0, 5000)), min_size=8, max_size=8
)


@settings(PROPERTY, max_examples=300)
@given(
    words=header_words,
    magic=st.booleans(),
    data=st.binary(max_size=MIN_RING_BYTES),
    after=st.integers(-5, 2**64),
    upto=st.integers(-5, 2**64),
)
def test_the_reader_survives_any_ring(
    words: list[int], magic: bool, data: bytes, after: int, upto: int
) -> None:
    """Whatever the header and the bytes say, reading gives records in order within (after,
    upto], no more than the header's count, or a problem; it never raises, and reads only
    within the capacity."""
    if magic:
        words[0] = int.from_bytes(b"isoring\x01", "little")
        words[1] = MIN_RING_BYTES
    header = b"".join(word.to_bytes(8, sys.byteorder) for word in words)
    reads: list[tuple[int, int]] = []

    def read_at(offset: int, size: int) -> bytes:
        reads.append((offset, size))
        return data[offset : offset + size]

    recovery = recover_records(header, read_at, MIN_RING_BYTES, after, upto)
    seqs = [record.seq for record in recovery.records]
    assert seqs == sorted(set(seqs))
    assert all(after < seq <= upto for seq in seqs)
    assert all(offset >= 0 and offset + size <= MIN_RING_BYTES for offset, size in reads)


@settings(PROPERTY, max_examples=100)
@given(
    texts=st.lists(st.text(max_size=300), min_size=1, max_size=40),
    released=st.integers(0, 40),
    delivered=st.integers(0, 40),
    window=st.sampled_from([1, 2, 3, 5, WINDOW_ITEMS]),
)
def test_the_reader_gets_back_what_the_writer_left(
    texts: list[str], released: int, delivered: int, window: int
) -> None:
    """Round trip: whatever records were written and released, the reader gets back exactly the
    unreleased ones after the last delivered; however small the windows it finds them in (runs
    of items cut in halves down to one item: isoplug.logs.ring_recovery)."""
    ledger, ring = new_ring(MIN_RING_BYTES * 4)
    try:
        ring.start_after(0)
        sizes: list[int] = []
        for seq, text in enumerate(texts, 1):
            data = encoded(seq, text)
            if not ring.put(data, seq):
                break
            sizes.append(len(data))
        written = len(sizes)
        released = min(released, written)
        ring.release(sum(sizes[:released]), released)
        expected = list(range(max(released, delivered) + 1, written + 1))
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr("isoplug.logs.ring_recovery.WINDOW_ITEMS", window)
            assert read_back(ledger, delivered, written) == expected
    finally:
        ledger.close()


@pytest.mark.parametrize("garbage", ["positions", "count", "lengths", "bytes", "shrink"])
async def test_a_garbled_ring_is_a_reported_loss_not_a_crash(garbage: str) -> None:
    """A sender that garbles its ring before it dies: its unsent records are reported lost
    (the ledger's count stands), the problem is reported, and the receiver goes on serving."""
    count = 100
    async with receiving("threads") as (receiver, collector):
        child = await run_child(receiver, "ring-garbage", str(count), env={"GARBAGE": garbage})
        code, stderr = await finish(child)
        assert code == 0, stderr
        await collector.wait_until(
            lambda: any("are lost" in message for message in collector.messages())
        )
        # The receiver still serves.
        other = await run_child(receiver, "clean-exit", "3")
        await finish(other)
        await collector.wait_until(lambda: len(collector.numbers()) == 3)
        metrics = LogMetrics.combined(receiver.metrics().values())
    messages = collector.messages()
    assert any("could not give back every record" in m for m in messages), messages
    (ended,) = [m for m in messages if "are lost" in m]
    assert ended.endswith(
        f"after no record at all; {count} records it had accepted (#1 to #{count}) are lost"
    )
    assert metrics.dropped.get(DropReason.SENDER_ENDED) == count
    assert metrics.recovered == 0


def test_the_records_a_ring_holds_decode_as_the_wire_says() -> None:
    """The ring holds each record exactly as a batch carries it."""
    ledger, ring = new_ring(MIN_RING_BYTES)
    try:
        ring.start_after(41)
        assert ring.put(encoded(42, "hello"), 42)
        start = LEDGER_SIZE
        recovery = recover_records(
            os.pread(ledger.fd, HEADER_BYTES, start),
            lambda offset, size: os.pread(ledger.fd, size, start + HEADER_BYTES + offset),
            ring.capacity,
            0,
            42,
        )
        (record,) = recovery.records
        assert record.message == "hello" and record.seq == 42
        assert msgspec.msgpack.encode(record)  # a real LogRecordData
    finally:
        ledger.close()


async def test_a_receiver_of_a_sender_without_ring_still_counts(tmp_path: object) -> None:
    """A sender with no ring (no memfd) is served as before: counted, not recovered."""
    async with receiving("loop") as (receiver, collector):
        child = await run_child(receiver, "clean-exit", "3", env={"NO_RING": "1"})
        await finish(child)
        await collector.wait_until(lambda: len(collector.numbers()) == 3)
    assert isinstance(receiver, LogReceiver)


async def test_a_full_ring_drops_and_counts_exactly() -> None:
    """While the kernel takes nothing (the send lock held), records fill the queue and the
    ring, whose frame in flight the queue no longer counts: past the ring's room, records are
    dropped, never waited for, and counted; what arrived plus what was reported dropped is
    what was logged, and the WARNINGs kept their share."""
    count = 300
    logger = logging.getLogger("ringfull")
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    async with receiving("threads") as (receiver, collector):
        handler = ForwardingHandler(receiver.address, receiver.token, queue_bytes=MIN_RING_BYTES)
        logger.addHandler(handler)
        try:
            assert await asyncio.to_thread(handler.start, 10)
            # The receiver has the ring open: records are queued, not written through.
            await eventually(lambda: bool(handler._ledger[ACKNOWLEDGED]))
            ring = handler._ring
            assert ring is not None and ring.capacity == MIN_RING_BYTES
            with handler._send_lock:
                for index in range(count):
                    level = logging.WARNING if index % 3 == 0 else logging.DEBUG
                    logger.log(level, "record %d", index, extra={"n": index})
                    # The sender thread takes what is queued, and waits for the lock.
                    await asyncio.sleep(0)
                full = ring.used
            await asyncio.to_thread(handler.flush, 10)
            dropped = handler.dropped
        finally:
            logger.removeHandler(handler)
            await asyncio.to_thread(handler.close)
        arrived = collector.numbers
        await collector.wait_until(lambda: len(arrived()) + sum(dropped.values()) == count)

        def drops_counted() -> int | None:
            metrics = LogMetrics.combined(receiver.metrics().values())
            return metrics.dropped.get(DropReason.SENDER_QUEUE_FULL)

        # The receiver learns the drops from the sender's reports, which may come after the
        # last record: a loaded machine read them later than the records once.
        await eventually(lambda: drops_counted() == sum(dropped.values()))
        metrics = LogMetrics.combined(receiver.metrics().values())
    assert full > MIN_RING_BYTES * 3 // 4  # the ring, not only the queue, was full
    assert sum(dropped.values()) > 0
    assert metrics.dropped.get(DropReason.SENDER_QUEUE_FULL) == sum(dropped.values())
    assert len(arrived()) + sum(dropped.values()) == count
    assert dropped.get(logging.DEBUG, 0) > dropped.get(logging.WARNING, 0)
