"""A record a sender's reconnect delivers twice (the old connection's ring, the new
connection) is replayed once: :class:`isoplug.logs.sequences.SenderSequences`."""

from __future__ import annotations

import logging

import msgspec

from isoplug.logs import LogReplayer
from isoplug.logs.sequences import SenderSequences
from isoplug.wire import LogRecordData
from tests.log_helpers import batch, captured, record_decoder
from tests.record_waiter import watching

PID = 4242


def numbered(count: int) -> list[LogRecordData]:
    """``count`` records ``n 1``, ``n 2``... with sequence numbers 1 to ``count``."""

    def log_them(log: logging.Logger) -> None:
        for n in range(1, count + 1):
            log.warning("n %d", n)

    return [record_decoder.decode(encoded) for encoded in captured(log_them, "seqs")]


def connection(sequences: SenderSequences) -> LogReplayer:
    return LogReplayer("app", sender_pid=PID, sequences=sequences)


def test_a_record_the_new_connection_replayed_is_not_replayed_again_from_the_old_ring() -> None:
    records = numbered(6)
    sequences = SenderSequences()
    old, new = connection(sequences), connection(sequences)
    with watching("app") as waiter:
        old.replay(batch(records[:3]))
        resumed = msgspec.structs.replace(batch(records[3:]), resumed_after=3)
        new.replay(resumed)
        old._replay_recovered([records[3]])  # what the old connection's ring gave back
    messages = [r.getMessage() for r in waiter.records if r.name == "app.seqs"]
    assert messages == [f"n {n}" for n in range(1, 7)]
    assert (old.metrics.received, old.metrics.recovered, new.metrics.received) == (3, 0, 3)


def test_a_record_the_old_ring_gave_back_is_not_replayed_again_by_the_new_connection() -> None:
    records = numbered(5)
    sequences = SenderSequences()
    old, new = connection(sequences), connection(sequences)
    with watching("app") as waiter:
        old.replay(batch(records[:3]))
        old._replay_recovered([records[3]])
        new.replay(msgspec.structs.replace(batch(records[3:]), resumed_after=3))
    messages = [r.getMessage() for r in waiter.records if r.name == "app.seqs"]
    assert messages == [f"n {n}" for n in range(1, 6)]
    assert (old.metrics.received, old.metrics.recovered) == (4, 1)
    assert new.metrics.received == 1


def test_one_connection_replays_all_it_gets_and_other_processes_are_apart() -> None:
    """Within one connection nothing is skipped (its order is the replayer's to judge); the
    sequence numbers of another process are its own."""
    sequences = SenderSequences()
    assert sequences.claim(PID, 5, "a") and sequences.claim(PID, 3, "a")
    assert not sequences.claim(PID, 5, "b") and sequences.claim(PID, 6, "b")
    assert sequences.claim(PID + 1, 1, "c")
    replayer = LogReplayer("app")  # no pid the kernel vouches for: no table
    with watching("app") as waiter:
        replayer.replay(batch(numbered(2) * 2))
    assert len([r for r in waiter.records if r.levelno == logging.WARNING]) >= 4
