"""Log forwarding from a child process: isoplug against the usual ways, in one run.

Compares, on the same machine and in the same run (issue 4, Acceptance):

- **isoplug**: ``forward_logs(address, token)`` in the child, ``with LogReceiver()`` (its own
  thread) in the parent;
- **isoplug, no ring**: the same without the shared-memory ring (issue 18), as before it:
  batched in memory, the first records after a pause written through;
- **mp.Queue**: stdlib ``QueueHandler`` -> ``multiprocessing.Queue`` -> ``QueueListener``;
- **socket** / **socket+nodelay**: stdlib ``SocketHandler`` -> a parent thread that unpickles
  the records (``logging.makeLogRecord``) and handles them; without and with ``TCP_NODELAY``;
- **loguru**: ``logger.add(sink, enqueue=True)`` in the parent, the logger passed to the child;
- **floor**: the same ``logger.info()`` call in the child with a do-nothing handler.

Children are separate interpreters: ``subprocess.Popen([sys.executable, _logs_child.py, ...])``,
or ``multiprocessing`` with the spawn start method where a queue must be shared (mp.Queue,
loguru). Every parent-side path ends in the same counting sink, which notes when it handled each
record. Metrics:

1. child-side cost of one ``logger.info("value %s", i)`` in a burst (x the floor);
2. end-to-end delivered records/s for a burst: from the child's first call to the parent having
   handled the last record (x the fastest peer, x the floor's rate 1/cost);
3. delivery latency p50/p99 (handled time - ``record.created``) at 2,000 records/s;
4. the child's CPU time per record at 2,000 records/s, all its threads, and how much more than
   the floor's (whose own is mostly the pacing's sleeps): what delivering each record at once
   costs a program that logs at a moderate rate;
5. records lost when the child calls ``os._exit(0)`` right after logging (10,000 at full speed;
   100 at 2,000/s). Waits are bounded: a shutdown that does not finish is reported as hung;
6. child-side cost of one ``logger.info()`` in short bursts: 50 records every 20 ms, the time
   inside the bursts only (x the floor's in the same bursts; issue 18, item 4).

Each measurement is repeated (peers interleaved within a round); the table shows medians and
the noise (min..max). Run: ``python benchmarks/logs_vs_peers.py [--quick] [--rounds N]``.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import logging.handlers
import multiprocessing
import multiprocessing.process
import os
import pickle
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, Protocol

import loguru
from _logs_child import BURST_RECORDS, LOGGER_NAME, Task, loguru_child, mp_queue_child

if TYPE_CHECKING:
    from isoplug.logs import LogReceiver

CHILD_SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_logs_child.py")
SPAWN = multiprocessing.get_context("spawn")
#: Records each child logs before the measured part; the sink ignores that many first arrivals.
WARMUP = 20
#: Parent logger names the records arrive under: ``bench`` as is, ``isoplug-bench.bench`` via
#: the receiver's prefix (isoplug's own reports arrive on the ``isoplug-bench`` logger itself).
ISOPLUG_PREFIX = "isoplug-bench"
SINK_LOGGERS = (LOGGER_NAME, ISOPLUG_PREFIX)
PACED_RATE = 2_000.0
#: After the child is gone, stop waiting once no record has arrived for this long.
IDLE_SECONDS = 1.0
#: The longest a delivery, or a child's exit, may take.
BURST_TIMEOUT = 60.0
#: The longest a parent-side receiver's shutdown may take before it is reported as hung.
STOP_TIMEOUT = 2.0

FLOOR = "floor (nop handler)"
ISOPLUG = "isoplug"
NO_RING = "isoplug, no ring"
#: Records a crash at full speed follows.
CRASH_RECORDS = 10_000
#: Records logged in short bursts (BURST_RECORDS at a time).
SHORT_BURSTS_RECORDS = 5_000


# -- the parent-side sink ----------------------------------------------------------------------


class Sink:
    """Counts delivered records, notes when the last one was handled, and their latencies."""

    def __init__(self, expected: int, *, keep_latency: bool) -> None:
        self.expected = expected
        self.keep_latency = keep_latency
        self.count = 0
        self.last = 0.0
        self.latencies: list[float] = []
        self.reports: list[str] = []
        self.done = threading.Event()

    def deliver(self, created: float) -> None:
        now = time.time()
        self.count += 1
        self.last = now
        if self.keep_latency:
            self.latencies.append(now - created)
        if self.count >= self.expected:
            self.done.set()


class SinkHandler(logging.Handler):
    """The sink as a ``logging.Handler``; isoplug's own reports are kept apart."""

    def __init__(self, sink: Sink) -> None:
        super().__init__()
        self.sink = sink

    def emit(self, record: logging.LogRecord) -> None:
        if getattr(record, "isoplug_report", False):
            self.sink.reports.append(record.getMessage())
            return
        self.sink.deliver(record.created)


@contextlib.contextmanager
def sink_handler(sink: Sink) -> Iterator[SinkHandler]:
    """Route the parent loggers that children's records arrive under to ``sink`` only."""
    handler = SinkHandler(sink)
    loggers = [logging.getLogger(name) for name in SINK_LOGGERS]
    for logger in loggers:
        logger.addHandler(handler)
        logger.propagate = False
        logger.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        for logger in loggers:
            logger.removeHandler(handler)


# -- children ----------------------------------------------------------------------------------


class Child(Protocol):
    def alive(self) -> bool: ...
    def join(self, timeout: float) -> None: ...
    def kill(self) -> None: ...


class PopenChild:
    def __init__(self, kind: str, task: Task, extra: list[str], env: dict[str, str]) -> None:
        argv = [sys.executable, CHILD_SCRIPT, kind, *task.argv(), *extra]
        self.process = subprocess.Popen(argv, env={**os.environ, **env})

    def alive(self) -> bool:
        return self.process.poll() is None

    def join(self, timeout: float) -> None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout)

    def kill(self) -> None:
        self.process.kill()
        self.process.wait()


class SpawnChild:
    def __init__(self, target: Callable[..., None], first: object, task: Task) -> None:
        self.process: multiprocessing.process.BaseProcess = SPAWN.Process(
            target=target, args=(first, task)
        )
        self.process.start()

    def alive(self) -> bool:
        return self.process.is_alive()

    def join(self, timeout: float) -> None:
        self.process.join(timeout)

    def kill(self) -> None:
        self.process.kill()
        self.process.join(STOP_TIMEOUT)


def finished_within(action: Callable[[], object], timeout: float) -> bool:
    """Run ``action`` on a daemon thread; False if it did not return within ``timeout``."""
    thread = threading.Thread(target=action, daemon=True)
    thread.start()
    thread.join(timeout)
    return not thread.is_alive()


# -- the peers ---------------------------------------------------------------------------------


class Peer(Protocol):
    """Starts its parent-side receiver, then the child; ``stop`` returns False if it hung."""

    name: str

    def start(self, task: Task, sink: Sink) -> Child: ...
    def stop(self) -> bool: ...


class FloorPeer:
    name = FLOOR

    def start(self, task: Task, sink: Sink) -> Child:
        return PopenChild("nop", task, [], {})

    def stop(self) -> bool:
        return True


class IsoplugPeer:
    def __init__(self, *, ring: bool = True) -> None:
        self.name = ISOPLUG if ring else NO_RING
        self._kind = "isoplug" if ring else "isoplug-noring"
        self._receiver: LogReceiver | None = None

    def start(self, task: Task, sink: Sink) -> Child:
        # Imported here, not at the top: spawned children re-import this module.
        from isoplug.logs import LogReceiver

        self._receiver = LogReceiver(prefix=ISOPLUG_PREFIX)
        self._receiver.__enter__()
        return PopenChild(self._kind, task, [], self._receiver.child_env())

    def stop(self) -> bool:
        receiver, self._receiver = self._receiver, None
        return receiver is None or finished_within(receiver.close, STOP_TIMEOUT)


class QueuePeer:
    name = "mp.Queue + QueueListener"

    def __init__(self) -> None:
        self._listener: logging.handlers.QueueListener | None = None

    def start(self, task: Task, sink: Sink) -> Child:
        queue: multiprocessing.queues.Queue[Any] = SPAWN.Queue()
        # The parent only puts QueueListener's sentinel; never let exit wait on a stuck pipe.
        queue.cancel_join_thread()
        self._listener = logging.handlers.QueueListener(queue, SinkHandler(sink))
        self._listener.start()
        return SpawnChild(mp_queue_child, queue, task)

    def stop(self) -> bool:
        listener, self._listener = self._listener, None
        # QueueListener.stop() can wait forever after the child's os._exit (FIELD-NOTES trap 13).
        return listener is None or finished_within(listener.stop, STOP_TIMEOUT)


class SocketPeer:
    """The stdlib ``SocketHandler`` recipe, receiving in a thread of this process."""

    def __init__(self, nodelay: bool) -> None:
        self.name = "SocketHandler" + (" +NODELAY" if nodelay else "")
        self._kind = "socket-nodelay" if nodelay else "socket"
        self._server: socket.socket | None = None
        self._thread: threading.Thread | None = None

    def start(self, task: Task, sink: Sink) -> Child:
        server = socket.create_server(("127.0.0.1", 0))
        server.settimeout(BURST_TIMEOUT)
        self._server = server
        self._thread = threading.Thread(target=self._receive, args=(server,), daemon=True)
        self._thread.start()
        host, port = server.getsockname()[:2]
        return PopenChild(self._kind, task, [f"{host}:{port}"], {})

    @staticmethod
    def _receive(server: socket.socket) -> None:
        try:
            connection, _ = server.accept()
        except OSError:
            return
        with connection, connection.makefile("rb") as stream:
            while True:
                header = stream.read(4)
                if len(header) < 4:
                    return
                (size,) = struct.unpack(">L", header)
                data = stream.read(size)
                if len(data) < size:
                    return
                # The stdlib recipe; unpickling is only acceptable from a trusted child.
                record = logging.makeLogRecord(pickle.loads(data))
                logging.getLogger(record.name).handle(record)

    def stop(self) -> bool:
        if self._server is not None:
            self._server.close()
        thread, self._thread = self._thread, None
        return thread is None or finished_within(thread.join, STOP_TIMEOUT)


class LoguruPeer:
    name = "loguru enqueue=True"

    def __init__(self) -> None:
        self._logger: loguru.Logger = loguru.logger
        self._logger.remove()
        self._handler_id: int | None = None

    def start(self, task: Task, sink: Sink) -> Child:
        def write(message: loguru.Message) -> None:
            sink.deliver(message.record["time"].timestamp())

        self._handler_id = self._logger.add(write, enqueue=True, context=SPAWN, format="{message}")
        return SpawnChild(loguru_child, self._logger, task)

    def stop(self) -> bool:
        handler_id, self._handler_id = self._handler_id, None
        if handler_id is None:
            return True
        return finished_within(lambda: self._logger.remove(handler_id), STOP_TIMEOUT)


# -- one measurement ---------------------------------------------------------------------------


@dataclasses.dataclass
class Outcome:
    """What one child run gave."""

    expected: int
    delivered: int = 0
    per_call_us: float | None = None
    paced_cpu_us: float | None = None
    rate: float | None = None
    latencies: list[float] = dataclasses.field(default_factory=list)
    hung: bool = False
    timed_out: bool = False
    reports: list[str] = dataclasses.field(default_factory=list)

    @property
    def lost(self) -> int:
        return self.expected - self.delivered


def wait_for_delivery(sink: Sink, child: Child, timeout: float) -> bool:
    """Wait until all expected records arrived, or the child is gone and arrivals stopped.

    Returns False if ``timeout`` ran out first.
    """
    deadline = time.monotonic() + timeout
    seen, changed = -1, time.monotonic()
    while not sink.done.wait(0.05):
        now = time.monotonic()
        if sink.count != seen:
            seen, changed = sink.count, now
        elif not child.alive() and now - changed >= IDLE_SECONDS:
            return True
        if now >= deadline:
            return False
    return True


def measure(peer: Peer, task: Task, *, measured: bool) -> Outcome:
    """One child run of ``task`` against ``peer`` (``measured``: records reach the parent)."""
    expected = task.warmup + task.count
    sink = Sink(expected, keep_latency=task.mode == "paced")
    outcome = Outcome(expected)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(task.result_path)
    with sink_handler(sink):
        child = peer.start(task, sink)
        try:
            if measured:
                outcome.timed_out = not wait_for_delivery(sink, child, BURST_TIMEOUT)
            child.join(BURST_TIMEOUT)
            if child.alive():
                outcome.timed_out = True
        finally:
            if child.alive():
                child.kill()
            outcome.hung = not peer.stop()
    outcome.delivered = sink.count
    outcome.reports = list(sink.reports)
    outcome.latencies = sorted(sink.latencies[task.warmup :])
    if task.mode in ("burst", "bursts", "paced") and os.path.exists(task.result_path):
        with open(task.result_path) as file:
            result = json.load(file)
        if task.mode == "paced":
            outcome.paced_cpu_us = result["cpu_seconds"] / task.count * 1e6
            return outcome
        outcome.per_call_us = result["seconds"] / task.count * 1e6
        if measured and sink.count > task.warmup:
            outcome.rate = (sink.count - task.warmup) / (sink.last - result["start"])
    return outcome


# -- reporting ---------------------------------------------------------------------------------


def percentile(sorted_values: list[float], fraction: float) -> float:
    index = min(len(sorted_values) - 1, round(fraction * (len(sorted_values) - 1)))
    return sorted_values[index]


def spread(values: list[float], fmt: str) -> str:
    """``median (min..max)`` of ``values`` with ``fmt`` applied to each."""
    if not values:
        return "-"
    median = statistics.median(values)
    return f"{median:{fmt}} ({min(values):{fmt}}..{max(values):{fmt}})"


@dataclasses.dataclass
class Results:
    per_call: dict[str, list[float]] = dataclasses.field(default_factory=dict)
    rate: dict[str, list[float]] = dataclasses.field(default_factory=dict)
    burst_lost: dict[str, list[int]] = dataclasses.field(default_factory=dict)
    p50: dict[str, list[float]] = dataclasses.field(default_factory=dict)
    p99: dict[str, list[float]] = dataclasses.field(default_factory=dict)
    paced_lost: dict[str, list[int]] = dataclasses.field(default_factory=dict)
    paced_cpu: dict[str, list[float]] = dataclasses.field(default_factory=dict)
    crash_fast: dict[str, list[int]] = dataclasses.field(default_factory=dict)
    crash_paced: dict[str, list[int]] = dataclasses.field(default_factory=dict)
    short_bursts: dict[str, list[float]] = dataclasses.field(default_factory=dict)
    problems: dict[str, list[str]] = dataclasses.field(default_factory=dict)
    #: (peer, measurement) -> how many times its shutdown hung.
    hung: dict[tuple[str, str], int] = dataclasses.field(default_factory=dict)

    def note(self, peer: str, what: str, outcome: Outcome) -> None:
        notes = self.problems.setdefault(peer, [])
        if outcome.hung:
            self.hung[peer, what] = self.hung.get((peer, what), 0) + 1
            notes.append(f"{what}: shutdown hung (> {STOP_TIMEOUT:.0f} s)")
        if outcome.timed_out:
            notes.append(f"{what}: delivery or child did not finish in {BURST_TIMEOUT:.0f} s")
        notes.extend(f"{what}: receiver reported: {report}" for report in outcome.reports)

    def lost(self, peer: str, what: str, values: list[int]) -> str:
        """``median (max N)`` records lost, plus how often the shutdown hung."""
        if not values:
            return "-"
        hung = self.hung.get((peer, what), 0)
        text = f"{statistics.median(values):g} (max {max(values)})"
        return text + (f" hung {hung}x" if hung else "")


def print_table(results: Results, peers: list[str]) -> None:
    floor_us = statistics.median(results.per_call[FLOOR])
    floor_rate = 1e6 / floor_us
    peer_rates = {
        name: statistics.median(values)
        for name, values in results.rate.items()
        if values and name not in (FLOOR, ISOPLUG, NO_RING)
    }
    fastest = max(peer_rates.values()) if peer_rates else float("nan")
    print()
    print("1. child-side cost per logger.info() call (burst), us")
    print(f"   {'':<26}{'median (min..max)':>24}{'x floor':>9}")
    for name in peers:
        values = results.per_call.get(name, [])
        ratio = statistics.median(values) / floor_us if values else float("nan")
        print(f"   {name:<26}{spread(values, '.2f'):>24}{ratio:>9.2f}")
    print()
    print("2. end-to-end delivered records/s, burst (floor rate = 1 / floor cost)")
    header = f"{'median (min..max)':>30}{'x fastest peer':>15}{'x floor rate':>13}{'lost':>16}"
    print(f"   {'':<26}{header}")
    print(f"   {FLOOR:<26}{floor_rate:>30,.0f}{'':>15}{1.0:>13.2f}")
    for name in peers:
        if name == FLOOR:
            continue
        values = results.rate.get(name, [])
        median = statistics.median(values) if values else float("nan")
        cell = spread([v / 1000 for v in values], ",.1f") + "k"
        lost = results.lost(name, "burst", results.burst_lost.get(name, []))
        print(
            f"   {name:<26}{cell:>30}{median / fastest:>15.2f}{median / floor_rate:>13.2f}"
            f"{lost:>16}"
        )
    print()
    print(f"3. delivery latency at {PACED_RATE:,.0f} records/s, ms (medians over rounds)")
    print(f"   {'':<26}{'p50 (min..max)':>24}{'p99 (min..max)':>26}{'lost':>16}")
    for name in peers:
        if name == FLOOR:
            continue
        p50 = spread([v * 1e3 for v in results.p50.get(name, [])], ".3f")
        p99 = spread([v * 1e3 for v in results.p99.get(name, [])], ".3f")
        lost = results.lost(name, "paced", results.paced_lost.get(name, []))
        print(f"   {name:<26}{p50:>24}{p99:>26}{lost:>16}")
    print()
    print(f"4. child CPU time per record at {PACED_RATE:,.0f} records/s (all its threads), us")
    print(f"   {'':<26}{'median (min..max)':>24}{'more than the floor':>21}")
    paced_floor = statistics.median(results.paced_cpu.get(FLOOR, [float("nan")]))
    for name in peers:
        values = results.paced_cpu.get(name, [])
        extra = statistics.median(values) - paced_floor if values else float("nan")
        print(f"   {name:<26}{spread(values, '.1f'):>24}{extra:>+21.1f}")
    print()
    print("5. records lost when the child calls os._exit(0) right after logging")
    print(f"   {'':<26}{f'{CRASH_RECORDS:,} at full speed':>26}{'100 at 2,000/s':>26}")
    for name in peers:
        if name == FLOOR:
            continue
        fast = results.lost(name, "crash-fast", results.crash_fast.get(name, []))
        paced = results.lost(name, "crash-paced", results.crash_paced.get(name, []))
        print(f"   {name:<26}{fast:>26}{paced:>26}")
    print()
    print(f"6. child-side cost per logger.info() in bursts of {BURST_RECORDS} every 20 ms, us")
    print(f"   {'':<26}{'median (min..max)':>24}{'x floor':>9}{'per round x floor':>40}")
    floor_bursts = results.short_bursts.get(FLOOR, [])
    for name in peers:
        values = results.short_bursts.get(name, [])
        if not values or not floor_bursts:
            continue
        ratio = statistics.median(values) / statistics.median(floor_bursts)
        rounds = ", ".join(
            f"{mine / other:.2f}" for mine, other in zip(values, floor_bursts, strict=False)
        )
        print(f"   {name:<26}{spread(values, '.2f'):>24}{ratio:>9.2f}{rounds:>40}")


def verdict(ours: list[float], theirs: list[float], factor: float, *, higher: bool) -> str:
    """PASS/MISS on the medians (ours vs factor x theirs), flagged when the noise decides it.

    The verdict is "within noise" when the best and the worst rounds disagree: our best round
    against their worst passes while our worst against their best misses, or the other way.
    """
    if not ours or not theirs:
        return "MISS (no data)"

    def passes(mine: float, other: float) -> bool:
        return mine >= factor * other if higher else mine <= factor * other

    ok = passes(statistics.median(ours), statistics.median(theirs))
    best, worst = (max(ours), min(ours)) if higher else (min(ours), max(ours))
    their_worst, their_best = (min(theirs), max(theirs)) if higher else (max(theirs), min(theirs))
    noisy = passes(best, their_worst) != passes(worst, their_best)
    return ("PASS" if ok else "MISS") + (" (within noise)" if noisy else "")


def check_targets(results: Results) -> None:
    """Issue 4's targets for isoplug, each on the medians of the same run."""
    floor = results.per_call.get(FLOOR, [])
    floor_rates = [1e6 / value for value in floor]
    ours_per_call = results.per_call.get(ISOPLUG, [])
    ours_rate = results.rate.get(ISOPLUG, [])
    ours_p99 = results.p99.get(ISOPLUG, [])
    peers = [
        name
        for name in results.rate
        if name not in (FLOOR, ISOPLUG, NO_RING) and results.rate[name]
    ]
    fastest = max(peers, key=lambda name: statistics.median(results.rate[name]))
    p99_peers = [
        name for name in results.p99 if name not in (ISOPLUG, NO_RING) and results.p99[name]
    ]
    best_p99 = min(p99_peers, key=lambda name: statistics.median(results.p99[name]))
    crash = results.crash_paced.get(ISOPLUG, [])
    crash_fast = results.crash_fast.get(ISOPLUG, [])
    ours_bursts = results.short_bursts.get(ISOPLUG, [])
    floor_bursts = results.short_bursts.get(FLOOR, [])
    no_ring_per_call = results.per_call.get(NO_RING, [])
    no_ring_rate = results.rate.get(NO_RING, [])
    burst_lost = max(results.burst_lost.get(ISOPLUG, []), default=0)

    def median(values: list[float]) -> float:
        return statistics.median(values) if values else float("nan")

    per_call, floor_us = median(ours_per_call), median(floor)
    rate, fastest_rate, floor_rate = (
        median(ours_rate),
        median(results.rate[fastest]),
        1e6 / floor_us,
    )
    p99, peer_p99 = median(ours_p99), median(results.p99[best_p99])

    def per_round(ours: list[float], theirs: list[float], fmt: str) -> str:
        """Each round's own ratio ours/theirs: neighbours in time share the machine's mood of
        the moment, so these pairs are less noisy than the ratio of the medians."""
        ratios = [mine / other for mine, other in zip(ours, theirs, strict=False)]
        if len(ratios) < 2:
            return ""
        shown = ", ".join(f"{ratio:{fmt}}" for ratio in ratios)
        return f"; per round: {shown} (median {statistics.median(ratios):{fmt}})"

    checks = [
        (
            verdict(ours_per_call, floor, 1.3, higher=False),
            "per-call cost <= 1.3x floor",
            f"{per_call:.2f} us = {per_call / floor_us:.2f}x floor ({floor_us:.2f} us)"
            + per_round(ours_per_call, floor, ".2f"),
        ),
        (
            verdict(ours_rate, results.rate[fastest], 1.5, higher=True),
            "throughput >= 1.5x fastest peer",
            f"{rate:,.0f}/s = {rate / fastest_rate:.2f}x {fastest} ({fastest_rate:,.0f}/s)"
            + per_round(ours_rate, results.rate[fastest], ".2f")
            + (f"; {burst_lost:,} of the burst not delivered" if burst_lost else ""),
        ),
        (
            verdict(ours_rate, floor_rates, 0.8, higher=True),
            "throughput >= 80% of floor rate",
            f"{rate:,.0f}/s = {rate / floor_rate:.0%} of {floor_rate:,.0f}/s"
            + per_round(ours_rate, floor_rates, ".0%"),
        ),
        (
            verdict(ours_p99, results.p99[best_p99], 1.0, higher=False),
            "p99 at 2,000/s <= best peer",
            f"{p99 * 1e3:.3f} ms vs {best_p99} {peer_p99 * 1e3:.3f} ms",
        ),
        (
            "PASS" if crash and max(crash) == 0 else "MISS",
            "zero lost on crash at 2,000/s",
            f"lost per round: {crash}",
        ),
        (
            "PASS" if crash_fast and max(crash_fast) == 0 else "MISS",
            f"zero lost on crash at full speed ({CRASH_RECORDS:,})",
            f"lost per round: {crash_fast}",
        ),
        (
            verdict(ours_bursts, floor_bursts, 1.5, higher=False),
            f"short bursts ({BURST_RECORDS} / 20 ms) <= 1.5x floor",
            f"{median(ours_bursts):.2f} us = {median(ours_bursts) / median(floor_bursts):.2f}x "
            f"floor ({median(floor_bursts):.2f} us)" + per_round(ours_bursts, floor_bursts, ".2f"),
        ),
        (
            verdict(ours_per_call, no_ring_per_call, 1.0, higher=False),
            "per-call cost <= no ring's",
            f"{per_call:.2f} vs {median(no_ring_per_call):.2f} us"
            + per_round(ours_per_call, no_ring_per_call, ".2f"),
        ),
        (
            verdict(ours_rate, no_ring_rate, 1.0, higher=True),
            "throughput >= no ring's",
            f"{rate:,.0f} vs {median(no_ring_rate):,.0f}/s"
            + per_round(ours_rate, no_ring_rate, ".2f"),
        ),
    ]
    print()
    print("targets (issues 4 and 18), isoplug medians:")
    for outcome, label, detail in checks:
        print(f"   {outcome:<22}{label:<34}{detail}")


# -- main --------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Plan:
    burst: int
    paced_seconds: float
    max_rounds: int
    budget: float


def run_round(peers: list[Peer], plan: Plan, results: Results, result_path: str) -> str:
    """Every measurement once, peers interleaved, so a noisy moment hits all of them alike.

    Returns how long each part took, for the progress line.
    """
    began = time.monotonic()

    def task(mode: str, count: int, rate: float) -> Task:
        return Task(mode, count, rate, WARMUP, result_path)

    for peer in peers:
        outcome = measure(peer, task("burst", plan.burst, 0.0), measured=peer.name != FLOOR)
        results.note(peer.name, "burst", outcome)
        if outcome.per_call_us is not None:
            results.per_call.setdefault(peer.name, []).append(outcome.per_call_us)
        if peer.name != FLOOR:
            if outcome.rate is not None:
                results.rate.setdefault(peer.name, []).append(outcome.rate)
            results.burst_lost.setdefault(peer.name, []).append(outcome.lost)
    for peer in peers:
        outcome = measure(peer, task("bursts", SHORT_BURSTS_RECORDS, 0.0), measured=False)
        results.note(peer.name, "bursts", outcome)
        if outcome.per_call_us is not None:
            results.short_bursts.setdefault(peer.name, []).append(outcome.per_call_us)
    burst_done = time.monotonic()
    for peer in peers:
        paced_count = int(PACED_RATE * plan.paced_seconds)
        outcome = measure(peer, task("paced", paced_count, PACED_RATE), measured=peer.name != FLOOR)
        if outcome.paced_cpu_us is not None:
            results.paced_cpu.setdefault(peer.name, []).append(outcome.paced_cpu_us)
        if peer.name == FLOOR:
            continue
        results.note(peer.name, "paced", outcome)
        results.paced_lost.setdefault(peer.name, []).append(outcome.lost)
        if outcome.latencies:
            results.p50.setdefault(peer.name, []).append(percentile(outcome.latencies, 0.50))
            results.p99.setdefault(peer.name, []).append(percentile(outcome.latencies, 0.99))
    paced_done = time.monotonic()
    for peer in (peer for peer in peers if peer.name != FLOOR):
        fast = measure(peer, task("crash", CRASH_RECORDS, 0.0), measured=True)
        results.note(peer.name, "crash-fast", fast)
        results.crash_fast.setdefault(peer.name, []).append(fast.lost)
        paced = measure(peer, task("crash", 100, PACED_RATE), measured=True)
        results.note(peer.name, "crash-paced", paced)
        results.crash_paced.setdefault(peer.name, []).append(paced.lost)
    return (
        f"bursts {burst_done - began:.0f} s, paced {paced_done - burst_done:.0f} s, "
        f"crashes {time.monotonic() - paced_done:.0f} s"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="fewer records (a smoke run)")
    parser.add_argument("--rounds", type=int, help="most rounds to run (default 5; quick 3)")
    parser.add_argument(
        "--budget", type=float, help="no new round once it would end past this many seconds"
    )
    arguments = parser.parse_args()
    quick: bool = arguments.quick
    plan = Plan(
        burst=20_000 if quick else 200_000,
        paced_seconds=1.0 if quick else 3.0,
        max_rounds=arguments.rounds or (3 if quick else 5),
        budget=arguments.budget or (50.0 if quick else 420.0),
    )
    logging.basicConfig(level=logging.WARNING, format="[parent %(name)s] %(message)s")
    peers: list[Peer] = [
        FloorPeer(),
        IsoplugPeer(),
        IsoplugPeer(ring=False),
        QueuePeer(),
        SocketPeer(nodelay=False),
        SocketPeer(nodelay=True),
        LoguruPeer(),
    ]
    results = Results()
    began = time.monotonic()
    rounds = 0
    with tempfile.TemporaryDirectory(prefix="isoplug-logs-bench-") as directory:
        result_path = os.path.join(directory, "result.json")
        longest = 0.0
        while rounds < plan.max_rounds:
            round_began = time.monotonic()
            if rounds and round_began - began + longest > plan.budget:
                break
            parts = run_round(peers, plan, results, result_path)
            rounds += 1
            longest = max(longest, time.monotonic() - round_began)
            print(
                f"round {rounds} done at {time.monotonic() - began:.0f} s ({parts})",
                file=sys.stderr,
            )

    load = os.getloadavg()
    print(
        f"machine: {os.cpu_count()} CPUs, load average {load[0]:.2f} (1 min) {load[1]:.2f} "
        f"(5 min), Python {sys.version.split()[0]}; burst {plan.burst:,} records, paced "
        f"{plan.paced_seconds:g} s at {PACED_RATE:,.0f}/s; {rounds} rounds in "
        f"{time.monotonic() - began:.0f} s; median (min..max) over rounds"
    )
    print_table(results, [peer.name for peer in peers])
    check_targets(results)
    problems = [(name, note) for name, notes in results.problems.items() for note in notes]
    if problems:
        print()
        print("notes: hangs, timeouts, and what the isoplug receiver reported")
        for name, note in problems:
            print(f"   {name}: {note}")


if __name__ == "__main__":
    main()
