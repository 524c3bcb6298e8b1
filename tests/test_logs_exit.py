"""Nothing lost at exit: what a sender was given either arrives or is reported, exactly, however
it ends; a slow receiver gets the most severe records first; a pool worker's normal end is no
crash."""

from __future__ import annotations

import asyncio
import collections
import io
import logging
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from isoplug.logs import DropReason, LogMetrics, LogReceiver
from isoplug.logs.replay import REPLAY_SLICE
from tests.log_helpers import reports
from tests.record_waiter import RecordWaiter
from tests.test_logs_forwarding import BOTH_MODES, PREFIX, finish, receiving, run_child

#: Every way a sender's records can be reported lost or dropped (not delivered).
NOT_DELIVERED = (
    DropReason.SENDER_QUEUE_FULL,
    DropReason.SENDER_CLOSE_DEADLINE,
    DropReason.SENDER_ENDED,
    DropReason.SENDER_CONNECTION_LOST,
    DropReason.LOST_IN_TRANSIT,
)
ENDED = "log connection ended without a goodbye"


class SlowHandler(logging.Handler):
    """A receiver's handler that takes ``delay`` seconds per record (a slow disk, a remote
    log service)."""

    def __init__(self, delay: float) -> None:
        super().__init__()
        self.delay = delay

    def emit(self, record: logging.LogRecord) -> None:
        time.sleep(self.delay)


@contextmanager
def slow_receiver(delay: float) -> Iterator[None]:
    handler = SlowHandler(delay)
    logger = logging.getLogger(PREFIX)
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)


def all_connections(receiver: LogReceiver) -> LogMetrics:
    return LogMetrics.combined(receiver.metrics().values())


def reported(metrics: LogMetrics) -> int:
    return sum(metrics.dropped.get(reason, 0) for reason in NOT_DELIVERED)


def delivered(collector: RecordWaiter) -> list[int]:
    return sorted(collector.numbers())


@pytest.mark.slow
async def test_a_slow_receiver_at_exit_gets_the_warnings_first() -> None:
    """A child logs a flood of DEBUG records, then WARNINGs, and closes with a deadline,
    while the receiver's handler takes 1 ms a record. The close spends its deadline on the
    WARNINGs first; every WARNING arrives, the close keeps its deadline, and what the DEBUG
    flood lost is reported to the record: delivered + reported == emitted."""
    debug, warnings, close_timeout = 5000, 20, 2.0
    env = {
        "WARNINGS": str(warnings),
        "QUEUE_BYTES": str(1024 * 1024),
        "KERNEL_BUFFER": str(16 * 1024),
        "CLOSE_TIMEOUT": str(close_timeout),
    }
    with slow_receiver(0.001):
        async with receiving("threads", drain_timeout=30) as (receiver, collector):
            child = await run_child(receiver, "slow-exit", str(debug), env=env)
            assert child.stdout is not None
            closed = (await child.stdout.readline()).decode()
            code, stderr = await finish(child)
    assert code == 0, stderr
    seconds = float(closed.split()[2])
    assert seconds < close_timeout + 0.5, closed
    numbers = delivered(collector)
    assert set(range(debug, debug + warnings)) <= set(numbers), "a WARNING was lost"
    metrics = all_connections(receiver)
    assert len(numbers) + reported(metrics) == debug + warnings
    # The deadline did cut the DEBUG backlog short, and that is said, by level.
    assert metrics.dropped.get(DropReason.SENDER_CLOSE_DEADLINE, 0) > 0
    texts = [r.getMessage() for r in reports(collector.records)]
    assert any("unsent when its close deadline passed (DEBUG: " in t for t in texts), texts


@BOTH_MODES
@pytest.mark.parametrize("end", ["exit", "os-exit", "sigkill-self"])
async def test_queue_full_drops_are_reported_however_the_sender_ends(mode: str, end: str) -> None:
    """A flood through a tiny queue drops most records; the drop totals live in the shared
    ledger too, so the receiver hears of every one even when no batch follows them:
    delivered + reported == emitted, exactly, after a normal exit, os._exit or a SIGKILL."""
    count = 3000
    async with receiving(mode) as (receiver, collector):
        child = await run_child(receiver, "flood-then", str(count), env={"END": end})
        code, stderr = await finish(child)
    assert code == (-signal.SIGKILL if end == "sigkill-self" else 0), stderr
    numbers = delivered(collector)
    assert len(set(numbers)) == len(numbers)
    metrics = all_connections(receiver)
    assert len(numbers) + reported(metrics) == 3 * count
    assert metrics.dropped.get(DropReason.SENDER_QUEUE_FULL, 0) > 0


@BOTH_MODES
async def test_a_forked_pool_worker_that_ends_normally_is_no_crash(mode: str) -> None:
    """ProcessPoolExecutor with the fork start method: each worker inherits the handler and
    opens its own connection; when the pool shuts down, each says goodbye (multiprocessing
    ends its processes with os._exit, which runs no atexit hook): no false alarm."""
    async with receiving(mode) as (receiver, collector):
        child = await run_child(receiver, "pool-fork", "40")
        code, stderr = await finish(child)
    assert code == 0, stderr
    assert delivered(collector) == list(range(40))
    assert len(receiver.metrics()) >= 2  # the parent's connection and the workers'
    texts = [r.getMessage() for r in reports(collector.records)]
    assert not [t for t in texts if ENDED in t], texts


@BOTH_MODES
async def test_a_forked_process_that_is_killed_is_still_reported(mode: str) -> None:
    """The goodbye at a normal end does not hide a real crash: a process multiprocessing
    forked, killed after logging, is reported."""
    async with receiving(mode) as (receiver, collector):
        child = await run_child(receiver, "fork-crash")
        code, stderr = await finish(child)
    assert code == 0, stderr
    assert "parent saw the worker end with -9" in collector.messages()
    texts = [r.getMessage() for r in reports(collector.records)]
    crashes = [t for t in texts if ENDED in t]
    assert len(crashes) == 1 and "(crash or kill)" in crashes[0], texts


@BOTH_MODES
async def test_a_host_handler_writing_to_a_closed_file_is_reported_once_with_a_count(
    mode: str, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    """A host handler whose stream was closed fails on every record and calls handleError,
    which printed '--- Logging error ---' with two tracebacks for each one (12,668 of them
    once, 85.9 MB, slow enough that records came late). Replayed records are reported once,
    with a count, instead; the handlers after it still get every record."""
    stream = io.StringIO()
    broken = logging.StreamHandler(stream)
    stream.close()
    logger = logging.getLogger(PREFIX)
    logger.addHandler(broken)
    try:
        async with receiving(mode) as (receiver, collector):
            child = await run_child(receiver, "clean-exit", "200")
            code, stderr = await finish(child)
            await collector.wait_until(lambda: len(collector.numbers()) == 200)
    finally:
        logger.removeHandler(broken)
    assert code == 0, stderr
    assert "--- Logging error ---" not in capsys.readouterr().err
    texts = [r.getMessage() for r in caplog.records if r.name == "isoplug.logs"]
    first = [t for t in texts if "failed with ValueError: I/O operation on closed file" in t]
    assert len(first) == 1 and "(StreamHandler)" in first[0], texts
    assert all_connections(receiver).handler_errors >= 200


class LoopTurns(logging.Handler):
    """Notes, for every record it sees, how many times the event loop had turned: records
    replayed in one turn all carry the same number."""

    def __init__(self, loop: asyncio.AbstractEventLoop, delay: float) -> None:
        super().__init__()
        self.turns = 0
        self.per_turn: collections.Counter[int] = collections.Counter()
        self.delay = delay
        self._loop = loop
        loop.call_soon(self._turn)

    def _turn(self) -> None:
        self.turns += 1
        self._loop.call_soon(self._turn)

    def emit(self, record: logging.LogRecord) -> None:
        if hasattr(record, "n"):
            self.per_turn[self.turns] += 1
        time.sleep(self.delay)


@pytest.mark.slow
async def test_an_async_receiver_replays_a_dead_senders_ring_in_slices() -> None:
    """`async with LogReceiver()`: the thousands of records a killed sender leaves in its ring
    (its receiver was slow) are replayed in slices that let the event loop run, as batches
    are, not in one go at the end."""
    # Most of them wait in the ring (over 5,000 recovered, 4 slices' worth needed).
    count = 6_000
    turns = LoopTurns(asyncio.get_running_loop(), delay=0.0001)
    logger = logging.getLogger(PREFIX)
    logger.addHandler(turns)
    try:
        async with receiving("loop", drain_timeout=60) as (receiver, collector):
            # A small socket buffer: what the slow receiver has not read waits in the ring.
            env = {"KERNEL_BUFFER": str(16 * 1024)}
            child = await run_child(receiver, "sigkill-self", str(count), env=env)
            await finish(child)
            await collector.wait_until(
                lambda: any(ENDED in m for m in collector.messages()), timeout=60
            )
            metrics = all_connections(receiver)
    finally:
        logger.removeHandler(turns)
    # What the sender's full queue had to drop is reported; the rest arrived.
    numbers = delivered(collector)
    assert len(numbers) + reported(metrics) == count
    assert numbers == sorted(set(numbers))
    # The slow handler let the kernel's buffer fill: most records waited in the ring.
    assert metrics.recovered > 4 * REPLAY_SLICE, metrics
    assert max(turns.per_turn.values()) <= REPLAY_SLICE
