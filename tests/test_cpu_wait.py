"""The kernel's count of time a thread waited for a CPU, as the health checks read it."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from isoplug.cpu_wait import ThreadCpuWait, longest_wait, process_cpu_waits
from isoplug.runner.health import loop_starvation
from isoplug.testing import busy_cpu

pytestmark = pytest.mark.skipif(
    not Path("/proc/thread-self/schedstat").exists(), reason="no schedstat"
)


def test_longest_wait_is_the_most_any_thread_in_both_readings_waited() -> None:
    before = {1: 100, 2: 5_000_000_000, 3: 7}
    after = {1: 2_500_000_100, 2: 5_000_000_000, 4: 9_000_000_000}
    assert longest_wait(before, after) == 2.5
    assert longest_wait(None, after) == 0.0
    assert longest_wait(before, None) == 0.0
    assert longest_wait({1: 10}, {1: 5}) == 0.0  # a thread id reused: never negative


def test_every_thread_of_a_process_is_read_and_a_gone_process_is_unknown() -> None:
    release = threading.Event()
    other = threading.Thread(target=release.wait)
    other.start()
    try:
        waits = process_cpu_waits(os.getpid())
        assert waits is not None
        assert {threading.get_native_id(), other.native_id} <= set(waits)
    finally:
        release.set()
        other.join()
    assert process_cpu_waits(2**22 + 1) is None  # above the kernel's pid_max


def test_a_thread_s_wait_is_read_from_another_thread_and_grows_while_it_wants_a_cpu() -> None:
    """A thread spinning on a CPU another process keeps busy waits for it about half the
    time; the reading, opened by that thread and taken by this one, tells about it."""
    opened: list[ThreadCpuWait] = []
    ready = threading.Event()
    stop = threading.Event()

    def spin(cpu: int) -> None:
        os.sched_setaffinity(0, {cpu})
        opened.append(ThreadCpuWait())
        ready.set()
        while not stop.is_set():
            pass

    with busy_cpu() as cpu:
        spinner = threading.Thread(target=spin, args=(cpu,))
        spinner.start()
        try:
            ready.wait()
            first = opened[0].read()
            started = time.monotonic()
            time.sleep(0.5)
            second = opened[0].read()
            elapsed = time.monotonic() - started
            times = opened[0].times()
        finally:
            stop.set()
            spinner.join()
    assert first is not None and second is not None
    assert (second - first) / 1e9 > elapsed / 5, (first, second, elapsed)
    # The time on a CPU too, and the same wait (read a little later).
    assert times is not None and times[0] > 0 and times[1] >= second, (times, second)
    opened[0].close()
    assert opened[0].read() is None


def test_a_loop_s_time_neither_on_a_cpu_nor_counted_waiting_is_starvation_within_bounds() -> None:
    """As measured on 2 busy cores: of 3.30 s the loop's thread ran 0.016 s and the kernel
    counted 2.74 s of waiting; the rest, 0.59 s, it slept handing the GIL to the health
    thread (which waited 1.7 s for a CPU meanwhile) or was waiting still. Counted as waiting
    for a CPU, the 0.5 s that got it killed as hung is gone."""

    def starved(queued: float, health_waited: float) -> float:
        return loop_starvation(
            3.298, 3.348, ran=0.016, waited=2.739, queued=queued, health_waited=health_waited
        )

    assert starved(0.0, 1.7) == 3.298  # all of it (at most what the loop was blocked)
    # A health thread that got its CPU at once: the kernel's count, and the wait under way.
    assert starved(0.0, 0.0) == 2.739
    assert starved(0.2, 0.0) == 2.739 + 0.2
    assert starved(0.2, 0.1) == 2.739 + 0.2 + 0.1
    assert starved(9.0, 0.0) == 3.298  # no more than the time not otherwise accounted for
    # A loop asleep in the plugin's time.sleep is the plugin's doing, but for what the
    # health thread waited meanwhile (the runner was starved that long).
    asleep = {"ran": 0.0, "waited": 0.0, "queued": 0.0}
    assert loop_starvation(2.95, 3.0, **asleep, health_waited=0.0) == 0.0
    assert loop_starvation(2.95, 3.0, **asleep, health_waited=0.4) == 0.4
    # A loop spinning with a CPU of its own: none.
    spinning = {"ran": 2.99, "waited": 0.0, "queued": 0.0}
    assert loop_starvation(2.95, 3.0, **spinning, health_waited=0.05) < 0.02


def test_a_thread_ready_to_run_is_told_from_one_asleep() -> None:
    """What tells a wait under way (which the kernel counts only once it ends) from a sleep:
    a thread that waits for a CPU, as one that runs, is ready to run; one asleep is not."""
    opened: list[ThreadCpuWait] = []
    started = threading.Event()
    release = threading.Event()

    def sleep_until_released() -> None:
        opened.append(ThreadCpuWait())
        started.set()
        release.wait()

    sleeper = threading.Thread(target=sleep_until_released)
    sleeper.start()
    try:
        started.wait()
        # Ready to run until it is asleep in release.wait(), a moment after started.set().
        deadline = time.monotonic() + 10
        while opened[0].runnable() and time.monotonic() < deadline:
            time.sleep(0.001)
        assert opened[0].runnable() is False
    finally:
        release.set()
        sleeper.join()
    own = ThreadCpuWait()  # this thread's, read while it runs
    assert own.runnable() is True
    own.close()
    assert own.runnable() is None
