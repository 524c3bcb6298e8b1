"""A record both recovered from an old connection's ring and sent again on the sender's new
connection is replayed once (isoplug.logs.chains): with the sender's real shared-memory ledger
and ring, in either order of the two, and never across two senders' chains."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from isoplug.logs import DropReason, LogReplayer
from isoplug.logs.chains import MAX_CLAIMED_RANGES, SenderChain, SenderChains
from isoplug.logs.ledger import SenderLedger
from isoplug.logs.ring import MIN_RING_BYTES
from isoplug.wire import LogBatch, LogRecordData
from isoplug.wire.logframes import log_batch
from tests.record_waiter import RecordWaiter, watching
from tests.wire_strategies import PROPERTY

pytestmark = pytest.mark.skipif(not hasattr(os, "memfd_create"), reason="needs memfd")

PREFIX = "plugin.chained"
CHAIN = 0x1234_5678_9ABC


def data(seq: int) -> LogRecordData:
    return LogRecordData(
        name="work",
        levelno=logging.INFO,
        levelname="INFO",
        created=1_700_000_000.0 + seq,
        message=f"record {seq}",
        seq=seq,
    )


@pytest.fixture
def collector() -> Iterator[RecordWaiter]:
    with watching() as waiter:
        yield waiter


@pytest.fixture
def ledger() -> Iterator[SenderLedger]:
    """The sender's real ledger and ring, of this very process, holding records 1 to 6 of
    which it sent 1 to 3: 4 to 6 are accepted, in the ring, not sent."""
    ledger = SenderLedger.create(MIN_RING_BYTES)
    if ledger is None or ledger.ring is None:
        pytest.skip("no memfd ring on this system")
    ring = ledger.ring
    try:
        ring.start_after(0)
        sizes = []
        for seq in range(1, 7):
            encoded = msgspec.msgpack.encode(data(seq))
            assert ring.put(encoded, seq)
            sizes.append(len(encoded))
        ring.release(sum(sizes[:3]), 3)
        ledger.view[0] = 6
        yield ledger
    finally:
        ledger.close()


def connection(chains: SenderChains, pid: int = 0) -> LogReplayer:
    return LogReplayer(
        PREFIX, description="plugin chained", sender_pid=pid or os.getpid(), chains=chains
    )


def first_batch(seqs: range, **announced: int) -> LogBatch:
    return msgspec.structs.replace(log_batch([data(n) for n in seqs]), **announced)


def replayed(collector: RecordWaiter) -> list[int]:
    return [int(r.getMessage().split()[1]) for r in collector.records if r.name == f"{PREFIX}.work"]


def reports(collector: RecordWaiter) -> list[str]:
    return [r.getMessage() for r in collector.records if r.name == PREFIX]


def test_records_recovered_first_are_not_replayed_again_from_the_new_connection(
    collector: RecordWaiter, ledger: SenderLedger
) -> None:
    """The receiver ended the old connection and recovered 4 to 6 before the sender noticed;
    the sender's new connection resumes after 3 and sends 4 to 7 again."""
    chains = SenderChains()
    old = connection(chains)
    old.replay(first_batch(range(1, 4), ledger_fd=ledger.fd, chain=CHAIN))
    old.finish(clean=False)
    assert old.metrics.recovered == 3
    new = connection(chains)
    new.replay(first_batch(range(4, 8), resumed_after=3, chain=CHAIN))
    new.replay(log_batch([data(8)]))
    new.finish()
    assert replayed(collector) == [1, 2, 3, 4, 5, 6, 7, 8]
    assert not [m for m in reports(collector) if "are lost" in m or "never arrived" in m]
    assert (new.metrics.replayed, new.metrics.received) == (2, 2)
    assert not old.metrics.dropped and not new.metrics.dropped
    assert len(chains) == 0  # forgotten with its last connection


def test_records_the_new_connection_replayed_first_are_not_recovered_again(
    collector: RecordWaiter, ledger: SenderLedger
) -> None:
    """The same race the other way round: the new connection's records are replayed while the
    receiver is still finishing the old one, whose ring then gives back 4 to 6 too."""
    chains = SenderChains()
    old = connection(chains)
    old.replay(first_batch(range(1, 4), ledger_fd=ledger.fd, chain=CHAIN))
    new = connection(chains)
    new.replay(first_batch(range(4, 6), resumed_after=3, chain=CHAIN))
    old.finish(clean=False)
    new.replay(log_batch([data(6), data(7)]))
    new.finish()
    assert replayed(collector) == [1, 2, 3, 4, 5, 6, 7]
    # 4 and 5 came on the new connection; only 6 was the ring's to give.
    assert old.metrics.recovered == 1
    # Delivered, so not lost: the old connection's end says every accepted record arrived.
    ended = [m for m in reports(collector) if "without a goodbye" in m]
    assert ended and "every record it had accepted arrived" in ended[0], ended
    assert not old.metrics.dropped.get(DropReason.SENDER_ENDED)


def test_another_handler_of_the_same_process_is_another_chain(
    collector: RecordWaiter, ledger: SenderLedger
) -> None:
    """A process may hold several forwarding handlers, whose sequence numbers overlap: what one
    handler's recovery replayed never hides the other's records."""
    chains = SenderChains()
    old = connection(chains)
    old.replay(first_batch(range(1, 4), ledger_fd=ledger.fd, chain=CHAIN))
    old.finish(clean=False)
    other = connection(chains)
    other.replay(first_batch(range(4, 6), resumed_after=3, chain=CHAIN + 1))
    other.finish()
    assert replayed(collector) == [1, 2, 3, 4, 5, 6, 4, 5]


def test_a_chain_is_only_the_process_the_kernel_names(
    collector: RecordWaiter, ledger: SenderLedger
) -> None:
    """Another process naming the same chain (it cannot know it, but say it guessed) has its
    records replayed: chains are kept per sender pid, which the kernel vouches for."""
    chains = SenderChains()
    old = connection(chains)
    old.replay(first_batch(range(1, 4), ledger_fd=ledger.fd, chain=CHAIN))
    old.finish(clean=False)
    stranger = connection(chains, pid=os.getpid() + 1)
    stranger.replay(first_batch(range(4, 6), resumed_after=3, chain=CHAIN))
    stranger.finish()
    assert replayed(collector) == [1, 2, 3, 4, 5, 6, 4, 5]


def test_ended_chains_waiting_for_a_reconnection_are_bounded(
    collector: RecordWaiter, ledger: SenderLedger
) -> None:
    """A chain whose recovery claimed records is kept for the sender's reconnection; senders
    that never come back cost at most ``max_ended`` entries, the oldest forgotten first."""
    chains = SenderChains(max_ended=2)
    for chain in range(1, 5):
        ledger.view[0] = 6
        old = connection(chains)
        old.replay(first_batch(range(1, 4), ledger_fd=ledger.fd, chain=chain))
        old.finish(clean=False)
    assert len(chains) == 2
    # The newest is still known: its reconnection skips what the recovery replayed.
    new = connection(chains)
    new.replay(first_batch(range(4, 8), resumed_after=3, chain=4))
    assert new.metrics.replayed == 1


def test_a_recovery_below_where_the_new_connection_resumed_is_replayed(
    collector: RecordWaiter,
) -> None:
    """The sender noticed the break first: it set its old ledger back to #4 (what it had handed
    that connection whole) and resumes after #4 on the new one, which is replayed first, up
    to #7. The old connection's end then recovers #3 and #4 from its ring: nobody else has
    them, so they must be replayed, not taken for the new connection's (a loss, before)."""
    ledger = SenderLedger.create(MIN_RING_BYTES)
    if ledger is None or ledger.ring is None:
        pytest.skip("no memfd ring on this system")
    try:
        ring = ledger.ring
        ring.start_after(0)
        sizes = []
        for seq in range(1, 5):
            encoded = msgspec.msgpack.encode(data(seq))
            assert ring.put(encoded, seq)
            sizes.append(len(encoded))
        ring.release(sum(sizes[:2]), 2)
        ledger.view[0] = 4
        chains = SenderChains()
        old = connection(chains)
        old.replay(first_batch(range(1, 3), ledger_fd=ledger.fd, chain=CHAIN))
        new = connection(chains)
        new.replay(first_batch(range(5, 8), resumed_after=4, chain=CHAIN))
        old.finish(clean=False)
        new.replay(log_batch([data(8)]))
        new.finish()
    finally:
        ledger.close()
    assert sorted(replayed(collector)) == list(range(1, 9))
    assert len(replayed(collector)) == 8
    assert old.metrics.recovered == 2


def test_claimed_ranges_merge_and_forget_the_oldest_past_their_bound() -> None:
    chain = SenderChain()
    for seq in (5, 7, 6, 1, 2, 10):
        chain.claim([data(seq)])
    assert chain.claimed == [(1, 2), (5, 7), (10, 10)]
    unclaimed, highest_skipped = chain.claim([data(n) for n in range(1, 12)])
    assert [d.seq for d in unclaimed] == [3, 4, 8, 9, 11]
    assert highest_skipped == 10
    assert chain.claimed == [(1, 11)]
    for seq in range(100, 100 + 2 * (MAX_CLAIMED_RANGES + 5), 2):
        chain.claim([data(seq)])
    assert len(chain.claimed) == MAX_CLAIMED_RANGES
    assert chain.claimed[0][0] > 11  # the oldest went: a duplicate at worst, never a loss


def merged(numbers: set[int]) -> list[tuple[int, int]]:
    """``numbers`` as ascending ranges, none touching another."""
    ranges: list[tuple[int, int]] = []
    for seq in sorted(numbers):
        if ranges and ranges[-1][1] == seq - 1:
            ranges[-1] = (ranges[-1][0], seq)
        else:
            ranges.append((seq, seq))
    return ranges


@settings(PROPERTY, max_examples=200)
@given(batches=st.lists(st.lists(st.integers(1, 40), max_size=12), max_size=12))
def test_claims_are_the_numbers_claimed_before_as_ranges(batches: list[list[int]]) -> None:
    """Claims found by bisection (a ring may give back millions of numbers): each number is
    claimed once, by the first claim naming it, and the ranges are those numbers merged."""
    chain = SenderChain()
    claimed: set[int] = set()
    for batch in batches:
        positions, highest_skipped = chain.claim_numbers(batch)
        fresh: list[int] = []
        skipped: list[int] = []
        for seq in batch:
            (skipped if seq in claimed or seq in fresh else fresh).append(seq)
        assert [batch[position] for position in positions] == fresh
        assert highest_skipped == max(skipped, default=0)
        claimed.update(batch)
        assert chain.claimed == merged(claimed)
