"""The kernel's count of time a thread waited for a CPU, as the health checks read it."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from isoplug.cpu_wait import ThreadCpuWait, longest_wait, process_cpu_waits
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
        finally:
            stop.set()
            spinner.join()
    assert first is not None and second is not None
    assert (second - first) / 1e9 > elapsed / 5, (first, second, elapsed)
    opened[0].close()
    assert opened[0].read() is None
