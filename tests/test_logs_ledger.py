"""The shared ledger's layout, and the receiver's accounting at a sender's end from it: drop
totals no batch told, records a close sent by level, records dropped at its deadline."""

from __future__ import annotations

import logging
import os

import msgspec
import pytest

from isoplug.logs import DropReason
from isoplug.logs.capture import capture_record
from isoplug.logs.closing import encoded_levelno
from isoplug.logs.ledger import (
    CLOSE_DEADLINE_PASSED,
    CLOSING,
    DROPPED_AT_CLOSE,
    LEDGER_SIZE,
    OVERFLOW_LEVEL,
    QUEUE_FULL,
    SLOTS,
    LedgerError,
    ReceiverLedger,
    SenderLedger,
    parse_ledger,
)
from isoplug.wire import LogBatch
from isoplug.wire.logframes import log_batch
from tests.record_waiter import RecordWaiter
from tests.test_logs_replay import announced, collector, data, reported, sender_ledger

__all__ = ["collector", "sender_ledger"]  # fixtures, used by name


def read(ledger: SenderLedger) -> bytes:
    return os.pread(ledger.fd, LEDGER_SIZE, 0)


def test_the_ledger_holds_the_sequence_number_drop_totals_and_flags(
    sender_ledger: SenderLedger,
) -> None:
    """What the sender stores, the receiver's pread gives back: the highest sequence number,
    drop totals by kind and level, the close flags."""
    sender_ledger.view[0] = 1234
    sender_ledger.add_drops(QUEUE_FULL, logging.DEBUG, 5)
    sender_ledger.add_drops(QUEUE_FULL, logging.DEBUG)
    sender_ledger.add_drops(QUEUE_FULL, logging.INFO, 2)
    sender_ledger.add_drops(DROPPED_AT_CLOSE, logging.DEBUG, 7)
    sender_ledger.set_flag(CLOSING)
    state = parse_ledger(read(sender_ledger))
    assert state is not None
    assert state.accepted == 1234
    assert state.queue_full == {logging.DEBUG: 6, logging.INFO: 2}
    assert state.dropped_at_close == {logging.DEBUG: 7}
    assert state.flags == CLOSING
    # A connection handing its totals on makes them what it says.
    sender_ledger.set_drops(QUEUE_FULL, {logging.INFO: 1})
    state = parse_ledger(read(sender_ledger))
    assert state is not None and state.queue_full == {logging.INFO: 1}
    assert state.dropped_at_close == {logging.DEBUG: 7}


def test_levels_past_the_slots_are_summed_not_lost(sender_ledger: SenderLedger) -> None:
    """A sender with more levels than the ledger has slots loses no count: the rest of each
    kind is summed under "other levels"."""
    for level in range(1, SLOTS + 11):
        sender_ledger.add_drops(QUEUE_FULL, level)
    sender_ledger.add_drops(DROPPED_AT_CLOSE, 999, 3)
    sender_ledger.add_drops(QUEUE_FULL, -5, 2)  # no level code: summed as well
    state = parse_ledger(read(sender_ledger))
    assert state is not None
    assert sum(state.queue_full.values()) == SLOTS + 10 + 2
    assert state.queue_full[OVERFLOW_LEVEL] > 2
    assert sum(state.dropped_at_close.values()) == 3


def test_a_ledger_of_another_layout_is_refused(sender_ledger: SenderLedger) -> None:
    """A memfd of another size (another isoplug version) is refused at open; bytes without
    the magic word are no state."""
    os.ftruncate(sender_ledger.fd, 8)
    with pytest.raises(LedgerError, match="has 8 bytes, not"):
        ReceiverLedger.open(os.getpid(), sender_ledger.fd)
    assert parse_ledger(bytes(LEDGER_SIZE)) is None
    assert parse_ledger(bytes(8)) is None


def test_the_queue_keeps_no_level_but_a_close_reads_it_back() -> None:
    """A closing handler sorts its queue by level, read from each encoded record."""
    for level in (logging.DEBUG, logging.INFO, 35, logging.CRITICAL):
        record = logging.LogRecord("a" * 300, level, __file__, 1, "m", (), None)
        assert encoded_levelno(capture_record(record, 1)) == level
    assert encoded_levelno(b"\xc1") == logging.NOTSET


def test_drops_no_batch_told_are_reported_from_the_ledger(
    collector: RecordWaiter, sender_ledger: SenderLedger
) -> None:
    """A sender that died after dropping records it never got to tell of (no batch after
    them): the ledger's totals are reported, beyond what the batches told."""
    target = announced(sender_ledger.fd, sender_pid=os.getpid())
    target.replay(log_batch([data(seq=1), data(seq=2)], dropped={logging.DEBUG: 3}))
    sender_ledger.view[0] = 2
    sender_ledger.add_drops(QUEUE_FULL, logging.DEBUG, 10)
    sender_ledger.add_drops(QUEUE_FULL, logging.INFO, 4)
    target.finish(clean=False)
    assert target.metrics.dropped == {DropReason.SENDER_QUEUE_FULL: 14}
    texts = reported(collector)
    assert texts[0].startswith("plugin demo says it dropped 3 log records because its log queue")
    assert any(
        t.startswith(
            "plugin demo says it dropped 11 more log records because its log queue was full "
            "(DEBUG: 7, INFO: 4), told in 1 batches"
        )
        for t in texts
    ), texts
    assert any(
        t.endswith("(crash or kill) after record #2; every record it had accepted arrived")
        for t in texts
    ), texts


def test_a_close_by_level_is_counted_not_taken_for_gaps(
    collector: RecordWaiter, sender_ledger: SenderLedger
) -> None:
    """A sender closing with a slow receiver sent #1-#2 in order, then its WARNINGs (#9, #10)
    by level, then #3; #4-#8 were dropped at its deadline (its ledger says so, no batch did),
    and one record (#5 or so) died in a frame the deadline cut. No gap is reported; the
    deadline's drops and the one lost record are, exactly."""
    target = announced(sender_ledger.fd, sender_pid=os.getpid())
    target.replay(log_batch([data(seq=1), data(seq=2)]))
    warnings = [data(seq=n, levelno=logging.WARNING, levelname="WARNING") for n in (9, 10)]
    target.replay(
        LogBatch(
            records=msgspec.Raw(msgspec.msgpack.encode(warnings)),
            reordered_after=2,
        )
    )
    target.replay(log_batch([data(seq=3)]))
    sender_ledger.view[0] = 10
    sender_ledger.add_drops(DROPPED_AT_CLOSE, logging.INFO, 4)
    sender_ledger.set_flag(CLOSING | CLOSE_DEADLINE_PASSED)
    target.finish(clean=False)
    assert target.metrics.received == 5
    assert target.metrics.dropped == {
        DropReason.SENDER_CLOSE_DEADLINE: 4,
        DropReason.SENDER_ENDED: 1,
    }
    texts = reported(collector)
    assert not [t for t in texts if "never arrived" in t], texts
    assert texts[0].startswith(
        "plugin demo says it closed with 4 log records unsent when its close deadline passed "
        "(INFO: 4)"
    )
    assert texts[1] == (
        "plugin demo: log connection ended without a goodbye (its close deadline passed with "
        "the receiver behind) after record #2 in order and 3 by level; 1 records it had "
        "accepted (after #2, 4 more being dropped at its close deadline) are lost"
    )


def test_a_close_that_told_everything_leaves_nothing_to_report(
    collector: RecordWaiter, sender_ledger: SenderLedger
) -> None:
    """The close's last batch told the deadline's drops; the goodbye came: the ledger agrees,
    and nothing is counted twice."""
    target = announced(sender_ledger.fd, sender_pid=os.getpid())
    target.replay(log_batch([data(seq=1)]))
    target.replay(
        LogBatch(
            records=msgspec.Raw(b"\x90"),
            dropped_at_close={logging.DEBUG: 2},
        )
    )
    sender_ledger.view[0] = 3
    sender_ledger.add_drops(DROPPED_AT_CLOSE, logging.DEBUG, 2)
    target.finish(clean=True)
    assert target.metrics.dropped == {DropReason.SENDER_CLOSE_DEADLINE: 2}
    assert len(reported(collector)) == 1


def test_the_acknowledgement_carries_the_receivers_level() -> None:
    from isoplug.logs.ledger import acknowledged_level, acknowledgement

    for level in (0, logging.DEBUG, logging.INFO, 5, 2**31 - 1):
        word = acknowledgement(level)
        assert word and acknowledged_level(word) == level
    for unsaid in (None, -1, 2**31):
        assert acknowledgement(unsaid) == 1 and acknowledged_level(1) is None
    assert acknowledged_level(0) is None  # not acknowledged
