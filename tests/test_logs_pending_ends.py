"""Standalone forwarding when a child closes its log socket's descriptor and lives on
(isoplug.logs.pending_ends): the receiver keeps the broken connection's ledger and ring until
the child reconnects or exits, in both of its modes (threads, event loop). A kill before the
reconnection loses nothing, a reconnection replays nothing twice, and a closed receiver
leaves none of its descriptors open."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from isoplug.logs import LogMetrics, LogReceiver
from isoplug.logs.ledger_reports import SenderLedgerReports
from isoplug.logs.replay import REPLAY_SLICE
from isoplug.testing import eventually
from tests.pids_cgroup import pids_cgroup_or_skip
from tests.processes import run_python
from tests.record_waiter import attached, wait_blocking
from tests.test_logs_forwarding import BOTH_MODES, PREFIX, combined_metrics, receiving

CHILD = str(Path(__file__).with_name("closed_fd_child.py"))


async def start_closed_fd_child(
    receiver: LogReceiver,
    scenario: str,
    count: int,
    steps: Path,
    env: dict[str, str] | None = None,
) -> subprocess.Popen[bytes]:
    """The child of tests/closed_fd_child.py, once it has closed its log socket and logged
    ``count`` records, and the receiver keeps that connection's end pending. (A plain Popen:
    no pipe of the test's stays open for it.)"""
    with open(steps / "stderr", "wb") as stderr:
        child = subprocess.Popen(
            [sys.executable, CHILD, scenario, str(count)],
            env={**os.environ, **receiver.child_env(), "STEP_DIR": str(steps), **(env or {})},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
    try:
        await eventually(lambda: (steps / "logged").exists() or child.poll() is not None)
        assert child.poll() is None, (steps / "stderr").read_text()
        # The connection ended (the child closed its socket) while the child runs: its end
        # waits, and the metrics say so.
        await eventually(lambda: combined_metrics(receiver).pending_ends == 1)
    except BaseException:
        kill(child)
        raise
    return child


def kill(child: subprocess.Popen[bytes]) -> None:
    child.kill()
    child.wait()


@asynccontextmanager
async def closed_fd_child(
    receiver: LogReceiver,
    scenario: str,
    count: int,
    steps: Path,
    env: dict[str, str] | None = None,
) -> AsyncIterator[subprocess.Popen[bytes]]:
    """:func:`start_closed_fd_child`, killed on the way out if still running."""
    child = await start_closed_fd_child(receiver, scenario, count, steps, env)
    try:
        yield child
    finally:
        kill(child)


@BOTH_MODES
async def test_records_a_kill_takes_before_the_reconnection_come_back_from_the_old_ring(
    mode: str, tmp_path: Path
) -> None:
    count = 200
    async with (
        receiving(mode) as (receiver, collector),
        closed_fd_child(receiver, "wait", count, tmp_path) as child,
    ):
        # Nowhere but in the broken connection's ring so far.
        assert not collector.numbers()
        child.kill()
        await eventually(lambda: child.poll() is not None)
        await eventually(lambda: combined_metrics(receiver).pending_ends == 0)
        metrics = combined_metrics(receiver)
    assert collector.numbers() == list(range(count))
    assert metrics.recovered == count
    assert not metrics.dropped


@BOTH_MODES
@pytest.mark.parametrize("hold", [False, True], ids=["as-it-comes", "old-ledger-held"])
async def test_a_reconnection_replays_once_what_the_old_ring_holds_past_where_it_resumes(
    mode: str, hold: bool, tmp_path: Path
) -> None:
    # The records logged after the break are in the old ring, above where the new
    # connection resumes, and the new connection carries them too: the old end, accounted
    # for when the new connection brings its first records, stops where that one resumes.
    # "old-ledger-held": the sender has announced the new connection and not handed over
    # yet (the old ledger not set back): the old end waits for the hand-over.
    count = 200
    env = {"HOLD_OLD_LEDGER": "1"} if hold else {}
    async with receiving(mode) as (receiver, collector):
        async with closed_fd_child(receiver, "resume", count, tmp_path, env) as child:
            (tmp_path / "reconnect").touch()
            if hold:
                await eventually((tmp_path / "announced").exists)
                assert combined_metrics(receiver).pending_ends == 1
                assert not collector.numbers()
                (tmp_path / "resumed").touch()
            await collector.wait_until(lambda: len(collector.numbers()) >= 2 * count)
            # Accounted for by the reconnection, not by an exit: the child still runs.
            metrics = combined_metrics(receiver)
            assert child.poll() is None
            assert metrics.pending_ends == 0
            (tmp_path / "exit").touch()
            await eventually(lambda: child.poll() is not None)
        assert any("reconnected" in message for message in collector.messages())
    assert child.returncode == 0, (tmp_path / "stderr").read_text()
    # Each once, by number (not by totals), and in order.
    assert collector.numbers() == list(range(2 * count))
    # All of them came over the new connection; the old ring gave back none of them.
    assert metrics.recovered == 0
    assert not combined_metrics(receiver).dropped


@BOTH_MODES
async def test_a_kill_between_a_reconnections_announcement_and_its_hand_over_loses_nothing(
    mode: str, tmp_path: Path
) -> None:
    # The sender announced its new connection (resumed_after) and is killed before it hands
    # over: the records logged since the break are counted by the old ledger alone, and held
    # by the old ring alone (the new ledger says none accepted). The receiver used to settle
    # the old end at the announcement, up to resumed_after: those records were lost, and the
    # new connection's end said every record it had accepted arrived.
    count = 200
    env = {"HOLD_OLD_LEDGER": "1"}
    async with (
        receiving(mode) as (receiver, collector),
        closed_fd_child(receiver, "resume", count, tmp_path, env) as child,
    ):
        (tmp_path / "reconnect").touch()
        await eventually((tmp_path / "announced").exists)
        kill(child)
        metrics = await both_ends_accounted_for(receiver)
    # The child logged the second COUNT, or some of them, into the old ring too, before the
    # sender thread, holding the queue's lock, stopped it: a prefix of them.
    numbers = collector.numbers()
    assert numbers == list(range(len(numbers))) and len(numbers) >= count
    assert metrics.recovered == len(numbers)
    assert not metrics.dropped


def opening_late(monkeypatch: pytest.MonkeyPatch, until: Callable[[], bool]) -> None:
    """Make the receiver open the next ledgers announced to it only once ``until()``: it
    blocks the receiving thread (the event loop, in that mode) meanwhile, as a busy
    receiver's would be."""
    open_ledger = SenderLedgerReports.open_ledger

    def open_late(reports: SenderLedgerReports, fd: int) -> None:
        wait_blocking(until)
        open_ledger(reports, fd)

    monkeypatch.setattr(SenderLedgerReports, "open_ledger", open_late)


async def both_ends_accounted_for(receiver: LogReceiver) -> LogMetrics:
    """The metrics once the child's two connections ended and were accounted for."""
    await eventually(lambda: combined_metrics(receiver).pending_ends == 0)
    await eventually(lambda: len(receiver.metrics()) == 2 and not receiver._replayers)
    return combined_metrics(receiver)


@pytest.mark.parametrize("mode", ["loop", "threads", "loop-late", "threads-late"])
async def test_a_kill_right_after_a_reconnections_hand_over_loses_nothing(
    mode: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The sender handed over to its new connection (the old ledger set back, the unsent
    # records moved into the new ring) and is killed before sending anything on it. A
    # receiver behind used to find /proc/<pid>/fd gone, and those records were lost with no
    # count ("records it had not sent yet, if any, are lost"); it reads the ledger passed
    # with the hello now. "-late": the receiver opens the new ledger only once the sender is
    # dead (as a receiver behind does).
    count = 200
    env = {"KILL_AFTER_HAND_OVER": "1"}
    async with (
        receiving(mode.removesuffix("-late")) as (receiver, collector),
        closed_fd_child(receiver, "resume", count, tmp_path, env) as child,
    ):
        if mode.endswith("-late"):
            opening_late(monkeypatch, lambda: child.poll() is not None)
        (tmp_path / "reconnect").touch()
        await eventually(lambda: child.poll() is not None)
        metrics = await both_ends_accounted_for(receiver)
    assert child.returncode == -signal.SIGKILL
    assert collector.numbers() == list(range(count))
    assert metrics.recovered == count
    assert not metrics.dropped
    assert not [m for m in collector.messages() if "if any, are lost" in m]


@BOTH_MODES
@pytest.mark.parametrize("room", [None, 50], ids=["new-ring-whole", "new-ring-short"])
async def test_a_kill_in_the_middle_of_a_reconnections_hand_over_counts_nothing_twice(
    mode: str, room: int | None, tmp_path: Path
) -> None:
    # Killed in the hand-over: the new ledger counts the unsent records and the new ring
    # holds them, and the old ledger, not set back yet, counts them too, its ring holding
    # them. One end replays them, and neither may count them lost. "new-ring-short": the
    # new ring took only 50 of them; the old ring gives every one back, and the new
    # connection's end used to count the other 150 lost.
    count = 200
    env = {"KILL_IN_HAND_OVER": "1"}
    if room is not None:
        env["NEW_RING_ROOM"] = str(room)
    async with (
        receiving(mode) as (receiver, collector),
        closed_fd_child(receiver, "resume", count, tmp_path, env) as child,
    ):
        (tmp_path / "reconnect").touch()
        await eventually(lambda: child.poll() is not None)
        metrics = await both_ends_accounted_for(receiver)
    assert child.returncode == -signal.SIGKILL, (tmp_path / "stderr").read_text()
    assert collector.numbers() == list(range(count))
    assert metrics.recovered == count
    assert not metrics.dropped, metrics.dropped
    assert not [m for m in collector.messages() if "are lost" in m], [
        m for m in collector.messages() if not m.startswith("record ")
    ]


def open_descriptors() -> dict[int, str]:
    """This process's open descriptors, and what each names."""
    found: dict[int, str] = {}
    for name in os.listdir("/proc/self/fd"):
        try:
            found[int(name)] = os.readlink(f"/proc/self/fd/{name}")
        except FileNotFoundError:
            continue  # the listing's own descriptor, closed by now
    return found


@BOTH_MODES
@pytest.mark.parametrize("sender", ["alive", "killed"])
async def test_a_closed_receiver_leaves_none_of_its_descriptors_open(
    mode: str, sender: str, tmp_path: Path
) -> None:
    # "alive": the receiver closes while an end is pending (its watcher thread polls the
    # sender's pidfd and its wake pipe); "killed": the end was accounted for at the exit, the
    # watcher ended, its wake pipe kept for the next one.
    count = 50
    before = open_descriptors()
    async with receiving(mode) as (receiver, collector):
        child = await start_closed_fd_child(receiver, "wait", count, tmp_path)
        try:
            if sender == "killed":
                kill(child)
                await eventually(lambda: combined_metrics(receiver).pending_ends == 0)
        except BaseException:
            kill(child)
            raise
    try:
        after = open_descriptors()
        # Closing accounted for an end still pending, from the ring of a sender still running.
        metrics = combined_metrics(receiver)
        assert child.poll() is None or sender == "killed"
    finally:
        kill(child)
    left = {fd: after[fd] for fd in after.keys() - before.keys()}
    assert not left, f"descriptors the receiver left open: {left}"
    assert metrics.pending_ends == 0
    assert collector.numbers() == list(range(count))
    assert metrics.recovered == count


class LoopTicks(logging.Handler):
    """Notes, for each numbered record, how often the event loop had run another task's step
    by then (``ticks``, counted by :meth:`probe`) and on which thread it was handled."""

    def __init__(self) -> None:
        super().__init__()
        self.ticks = 0
        self.seen: list[tuple[int, int]] = []
        self.threads: set[int] = set()

    def emit(self, record: logging.LogRecord) -> None:
        if getattr(record, "n", None) is not None:
            self.seen.append((record.n, self.ticks))  # type: ignore[attr-defined]
            self.threads.add(threading.get_ident())

    async def probe(self) -> None:
        while True:
            await asyncio.sleep(0)
            self.ticks += 1


@pytest.mark.parametrize("settled_by", ["exit", "receiver-closing"])
async def test_an_event_loop_receiver_replays_a_pending_end_in_slices(
    settled_by: str, tmp_path: Path
) -> None:
    # Thousands of records in the old ring, replayed when the end is accounted for: on the
    # receiver's loop (its handlers' thread), in slices between which the loop runs other
    # tasks (here the probe), never in one piece.
    count = 8 * REPLAY_SLICE
    ticks = LoopTicks()
    with attached(ticks, PREFIX):
        probe = asyncio.create_task(ticks.probe())
        try:
            async with receiving("loop") as (receiver, collector):
                child = await start_closed_fd_child(receiver, "wait", count, tmp_path)
                try:
                    if settled_by == "exit":
                        kill(child)
                        await eventually(lambda: combined_metrics(receiver).pending_ends == 0)
                finally:
                    if settled_by == "exit":
                        kill(child)
            metrics = combined_metrics(receiver)
        finally:
            kill(child)
            probe.cancel()
            await asyncio.wait([probe])
    assert collector.numbers() == list(range(count))
    assert metrics.recovered == count and metrics.pending_ends == 0
    assert ticks.threads == {threading.get_ident()}
    # At most REPLAY_SLICE records a slice, and the probe ran between every two.
    slices = {tick for _, tick in ticks.seen}
    assert len(slices) >= count // REPLAY_SLICE, sorted(slices)


_NO_WATCHER = """
import json, logging, os, subprocess, sys, threading
from pathlib import Path
from isoplug.logs.pending_ends import PendingEnds
from tests.pids_cgroup import PidsCgroup
said = []
class Keep(logging.Handler):
    def emit(self, record):
        said.append(record.getMessage())
logging.getLogger("isoplug.logs").addHandler(Keep())
sender = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
try:
    cgroup = PidsCgroup(Path(sys.argv[1]))
    cgroup.move_in(os.getpid())
    cgroup.limit(cgroup.in_use)
    finished = []
    ends = PendingEnds()
    kept = ends.defer(sender.pid, 7, lambda resumed_after: finished.append(resumed_after))
    cgroup.limit(1000)
    ends.close()
    closed = ends.wait_closed(5)
finally:
    sender.kill()
print(json.dumps({"kept": kept, "finished": finished, "closed": closed, "said": said}))
"""


def test_an_end_no_watcher_thread_can_be_started_for_is_accounted_for_at_once() -> None:
    """A receiver out of threads (a cgroup's pids.max) cannot watch a hung-up sender for its
    exit: its end is not kept (accounted for by the caller now), said once, and the close
    that follows does not fail joining a thread that never started (it raised, and no later
    end of that receiver was ever settled)."""
    with pids_cgroup_or_skip() as cgroup:
        done = run_python(_NO_WATCHER, str(cgroup.folder))
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.splitlines()[-1])
    assert result["kept"] is False and result["finished"] == [], result
    assert result["closed"] is True, result
    assert (
        len(result["said"]) == 1
        and "cannot watch for the exit of log senders" in (result["said"][0])
    ), result
