"""A dead sender's ring whose header lies (isoplug.logs.ring_recovery): reading it costs what
its bytes can hold, never what its header claims, and never a receiver's event loop. An
outside check's ring of 64 MiB claiming 64 Mi one-byte records cost a receiver 3.7 GB and
over two minutes of CPU, froze an application's event loop for 130 s, and a host 3.7 GB per
connection of a plugin's children."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
import threading
import tracemalloc
from pathlib import Path

import msgspec
import pytest

from isoplug.logs import LogReceiver
from isoplug.logs.replay import REPLAY_SLICE
from isoplug.logs.ring import MAGIC, MAX_RING_BYTES, MIN_RING_BYTES
from isoplug.logs.ring_recovery import (
    MAX_GARBLED,
    MIN_WANTED_RECORD_BYTES,
    WINDOW_ITEMS,
    ReceiverRing,
    Recovery,
    recover_records,
)
from isoplug.wire import LogRecordData
from tests.plugins_fixtures import running
from tests.test_logs_forwarding import PREFIX, combined_metrics, finish, receiving, run_script

pytestmark = pytest.mark.skipif(not hasattr(os, "memfd_create"), reason="needs memfd")

BOMB_CHILD = str(Path(__file__).with_name("ring_bomb_child.py"))
HONEST_CHILD = (
    "import logging\n"
    "from isoplug.logs import forward_logs\n"
    "forward_logs()\n"
    "logging.getLogger('honest').warning('an honest sender after it')\n"
)


def header(size: int, count: int, capacity: int) -> bytes:
    """A ring's header: ``count`` records in ``size`` bytes from the start, none released."""
    words = (MAGIC, capacity, size, count, 0, 0, 0, 0)
    return b"".join(word.to_bytes(8, sys.byteorder) for word in words)


def shortest(seq: int) -> bytes:
    """The shortest record a receiver can want: every field up to ``seq`` one byte."""
    return msgspec.msgpack.encode(
        ["", 0, "", 0, "", "", "", None, None, None, None, None, None, seq]
    )


#: An item that is msgpack, the shortest record's length, and no record (a nil name).
GARBLED = b"\x9e" + b"\xc0" * 14


def recover(items: list[bytes], after: int = 0, upto: int = 10**9) -> Recovery:
    """What a ring holding ``items`` back to back (none released) gives back."""
    data = b"".join(items)
    capacity = max(MIN_RING_BYTES, 1 << (len(data) - 1).bit_length())
    return recover_records(
        header(len(data), len(items), capacity),
        lambda offset, size: data[offset : offset + size],
        capacity,
        after,
        upto,
    )


def test_the_shortest_wanted_record_is_as_long_as_the_bound_says() -> None:
    """MIN_WANTED_RECORD_BYTES is the shortest encoding of a record that carries a sequence
    number: an array reaching ``seq``, every field before it one byte long. A ring made of
    those gives every one back."""
    names = [field.name for field in msgspec.structs.fields(LogRecordData)]
    record = shortest(1)
    fields = msgspec.msgpack.decode(record)
    assert len(fields) == names.index("seq") + 1
    assert all(len(msgspec.msgpack.encode(value)) == 1 for value in fields)
    assert len(record) == 1 + len(fields) == MIN_WANTED_RECORD_BYTES
    assert msgspec.msgpack.decode(record, type=LogRecordData).seq == 1
    recovery = recover([shortest(seq) for seq in range(1, 101)])
    assert recovery.problem is None
    assert [data.seq for data in recovery.records] == list(range(1, 101))


def test_a_header_claiming_more_records_than_its_bytes_hold_is_refused_unread() -> None:
    """The outside check's ring: 64 MiB claiming a record per byte. Refused from its header
    alone: nothing read, nothing decoded (it cost 3.7 GB and 139 s of CPU)."""

    def read_at(offset: int, size: int) -> bytes:
        raise AssertionError("a ring refused by its header is not read")

    # The ring of 64 MiB a receiver read then (it keeps none over MAX_RING_BYTES now).
    outside = 64 * 1024 * 1024
    recovery = recover_records(header(outside, outside, outside), read_at, outside, 0, 10**6)
    assert recovery.problem == (
        "its header claims 67,108,864 records in 67,108,864 bytes, more than the 4,473,924 "
        "records of 15 bytes or more those can hold"
    )
    assert recovery.examined == 0 and len(recovery.records) == 0


def test_garbled_items_end_the_reading_in_a_row_or_not() -> None:
    """Items that are no records end the reading after MAX_GARBLED of them, the rest unread
    (each costs an exception; there were 64 Mi): whether they come in a row, or between
    records a receiver wants."""
    count = 1024 * 1024 // MIN_WANTED_RECORD_BYTES
    in_a_row = recover([GARBLED] * count)
    assert in_a_row.examined == MAX_GARBLED and len(in_a_row.records) == 0
    assert in_a_row.problem == (
        f"{MAX_GARBLED} of the first {MAX_GARBLED} of its {count:,} records are garbled; the "
        "rest were not read"
    )
    between = recover([item for seq in range(1, 1000) for item in (GARBLED, shortest(seq))])
    assert between.examined == 2 * MAX_GARBLED - 1
    assert [data.seq for data in between.records] == list(range(1, MAX_GARBLED))
    assert between.problem is not None and between.problem.endswith("the rest were not read")


def test_a_record_past_the_last_one_wanted_ends_the_reading() -> None:
    """A ring's records come in order: those after one past ``upto`` are not read."""
    recovery = recover([shortest(seq) for seq in range(1, 1001)], after=10, upto=20)
    assert [data.seq for data in recovery.records] == list(range(11, 21))
    assert recovery.examined == 21 and recovery.problem is None


def test_a_ring_of_the_shortest_records_takes_under_twice_its_size() -> None:
    """The worst a sender can make of a ring of 4 MiB: as many records as fit, every one
    wanted. They are all given back, in order, kept encoded: the recovery's memory is the
    ring's bytes, 12 bytes per record and a window of item references (decoded at once,
    the records would take twenty times the ring); iterating decodes them one at a time."""
    capacity = 4 * 1024 * 1024
    records: list[bytes] = []
    size = 0
    while size + len(record := shortest(len(records) + 1)) <= capacity:
        records.append(record)
        size += len(record)
    data = b"".join(records)
    tracemalloc.start()
    try:
        recovery = recover_records(
            header(size, len(records), capacity),
            lambda offset, length: data[offset : offset + length],
            capacity,
            0,
            10**9,
        )
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert recovery.problem is None and len(recovery.records) == len(records)
    assert len(records) > 10 * WINDOW_ITEMS  # read in windows, cut in halves many times
    assert peak <= size + 12 * len(records) + 100 * WINDOW_ITEMS + 64 * 1024
    assert peak < 2 * capacity
    seqs = list(range(1, len(records) + 1))
    assert list(recovery.records.seqs()) == seqs
    assert [data.seq for data in recovery.records] == seqs


# -- the outside check's repros, against receivers in this process and real senders --


@pytest.fixture
def recoveries(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, Recovery]]:
    """Every ring read in this process: the thread it was read on, and what it gave back."""
    seen: list[tuple[int, Recovery]] = []
    read = ReceiverRing.recover

    def recover(ring: ReceiverRing, after: int, upto: int) -> Recovery:
        recovery = read(ring, after, upto)
        seen.append((threading.get_ident(), recovery))
        return recovery

    monkeypatch.setattr(ReceiverRing, "recover", recover)
    return seen


async def run_bomb(receiver: LogReceiver, *args: str) -> int:
    """tests/ring_bomb_child.py ``args`` against ``receiver``: how many records its ring
    claims."""
    child = await run_script(receiver, "", BOMB_CHILD, *args)
    stdout, stderr = await asyncio.wait_for(child.communicate(), 60)
    assert child.returncode == 0, stderr.decode(errors="replace")
    return int(stdout)


@pytest.mark.parametrize("mode", ["loop", "threads"])
async def test_a_ring_of_nils_claiming_a_record_each_is_refused_unread(
    mode: str, recoveries: list[tuple[int, Recovery]]
) -> None:
    """ring_bomb_receiver.py and ring_bomb_async_receiver.py: a sender's ring of msgpack nils
    as large as a receiver reads (64 MiB in the outside check; 4 MiB now), its header
    claiming a record per byte, its ledger a million more accepted; then os._exit. The
    receiver reports it from the header, decodes nothing, counts the million lost, and an
    honest sender started right after gets through."""
    async with receiving(mode) as (receiver, collector):
        claimed = await run_bomb(receiver, "nil-bomb", str(MAX_RING_BYTES))
        await collector.wait_until(
            lambda: any("could not give back every record" in m for m in collector.messages())
        )
        honest = await run_script(receiver, HONEST_CHILD)
        await finish(honest)
        await collector.wait_for(f"{PREFIX}.honest", "an honest sender after it")
        metrics = combined_metrics(receiver)
    ((_, recovery),) = recoveries
    assert claimed == MAX_RING_BYTES
    assert recovery.examined == 0 and len(recovery.records) == 0
    assert recovery.problem is not None
    assert recovery.problem.startswith(f"its header claims {claimed:,} records in {claimed:,}")
    (lost,) = [m for m in collector.messages() if "are lost" in m]
    assert lost.endswith("1,000,000 records it had accepted (#2 to #1000001) are lost")
    assert metrics.recovered == 0


async def test_an_event_loops_receiver_reads_a_ring_off_the_loop_and_replays_it_in_slices(
    recoveries: list[tuple[int, Recovery]],
) -> None:
    """ring_bomb_async_receiver.py with a ring a receiver must replay: 256 KiB of the
    shortest records, all wanted. The ring is read in a thread of its own, and its records
    replayed in slices: a task of the application's loop keeps turning meanwhile (it froze
    130 s); an honest sender started right after gets through."""
    loop_thread = threading.get_ident()
    ticks = 0
    ticks_at_replay: list[int] = []

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    class TickStamp(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.getMessage() == "r":
                ticks_at_replay.append(ticks)

    stamp = TickStamp()
    bomb_logger = logging.getLogger(f"{PREFIX}.bomb")
    bomb_logger.addHandler(stamp)
    ticking = asyncio.create_task(ticker())
    try:
        async with receiving("loop") as (receiver, collector):
            claimed = await run_bomb(receiver, "shortest", str(256 * 1024))
            await collector.wait_until(lambda: len(ticks_at_replay) == claimed)
            honest = await run_script(receiver, HONEST_CHILD)
            await finish(honest)
            await collector.wait_for(f"{PREFIX}.honest", "an honest sender after it")
            metrics = combined_metrics(receiver)
    finally:
        ticking.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await ticking
        bomb_logger.removeHandler(stamp)
    ((thread, recovery),) = recoveries
    assert thread != loop_thread
    assert recovery.problem is None and len(recovery.records) == claimed > 5000
    assert metrics.recovered == claimed
    # The ticker ran between the slices of the replay: at every one of them.
    slices = -(-claimed // REPLAY_SLICE)
    assert ticks_at_replay[-1] - ticks_at_replay[0] >= slices - 1


async def test_a_plugins_child_with_a_lying_ring_costs_the_host_nothing_to_read(
    tmp_path: Path, recoveries: list[tuple[int, Recovery]]
) -> None:
    """host_ringbomb/host.py: a plugin's child (given ctx.log_child_env()) passes the host a
    ring of nils, as large as the host reads, claiming a record per byte (64 MiB in the
    outside check). The host reads none of it (at 64 MiB: 3.7 GB each, and a runner's tree
    may hold 64 such connections), says so, and the plugin's next child gets through."""
    async with running(tmp_path, "spawner", logger=None) as (host, waiter):
        code, claimed, stderr = await host.call_with(
            "spawner", "python_script", args=[BOMB_CHILD, ["nil-bomb", str(MAX_RING_BYTES)]]
        )
        assert code == 0, stderr
        problem = await waiter.wait_until(
            lambda: next(
                (m for m in waiter.messages() if "could not give back every record" in m), None
            )
        )
        await host.call("spawner", "python_child")
        await waiter.wait_for("plugin.spawner.spawner.child", "from a python child")
    ((_, recovery),) = recoveries
    assert int(claimed) == MAX_RING_BYTES
    assert recovery.examined == 0 and len(recovery.records) == 0
    assert f"its header claims {MAX_RING_BYTES:,} records" in problem
