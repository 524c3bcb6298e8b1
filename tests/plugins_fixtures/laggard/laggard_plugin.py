"""A test plugin that is slow in each of the ways a health check must tell apart."""

from __future__ import annotations

import asyncio
import ctypes
import os
import threading
import time

import isoplug

#: Functions called through PyDLL keep the GIL for the whole call, as a C extension's long
#: computation does (a 1 GiB allocation, a huge regex): no other thread runs Python meanwhile.
_LIBC = ctypes.PyDLL(None)


def _hold_gil(seconds: float) -> None:
    _LIBC.usleep(ctypes.c_uint(int(seconds * 1_000_000)))


def _thread_ids() -> list[int]:
    return [int(tid) for tid in os.listdir("/proc/self/task")]


def _spin_for_cpu(cpu_seconds: float) -> None:
    """Python work on this thread until it has had ``cpu_seconds`` of CPU."""
    end = time.thread_time() + cpu_seconds
    while time.thread_time() < end:
        pass


def _burn_holding_gil(cpu_seconds: float) -> None:
    """C work that keeps the GIL (``sum`` over a ``range`` never gives it up) for about
    ``cpu_seconds`` of CPU, measured on a small sum first."""
    probe = 200_000
    start = time.thread_time()
    sum(range(probe))
    rate = probe / max(1e-6, time.thread_time() - start)
    sum(range(int(rate * cpu_seconds)))


class Laggard(isoplug.Plugin):
    @isoplug.method
    async def pid(self) -> int:
        return os.getpid()

    @isoplug.method
    def sleep_in_thread(self, seconds: float) -> str:
        """Sync: its worker thread runs on after the host's call timed out."""
        time.sleep(seconds)
        return "slept"

    @isoplug.method
    async def sleep_on_loop(self, seconds: float) -> str:
        """Blocks the event loop while other threads may run Python."""
        time.sleep(seconds)
        return "slept"

    @isoplug.method
    async def spin_on_loop(self, seconds: float) -> str:
        """A busy loop in Python on the event loop (the GIL is handed over every 5 ms)."""
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            pass
        return "spun"

    @isoplug.method
    async def write_on_loop(self, seconds: float, then_block: bool = False) -> int:
        """Lines written to fd 1 from the event loop for ``seconds``, below Python (a C
        library's output), far faster than any host reads them: the writes wait for the host
        most of that time. Then, with ``then_block``, the loop blocks for good on an event
        nobody sets. Returns the bytes written."""
        line = b"a line a C library wrote, some eighty bytes long as such lines often are..\n"
        block = line * (64 * 1024 // len(line))
        written = 0
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            written += os.write(1, block)
        if then_block:
            threading.Event().wait()
        return written

    @isoplug.method
    async def await_sleep(self, seconds: float) -> str:
        await asyncio.sleep(seconds)
        return "slept"

    @isoplug.method
    async def hold_gil(self, seconds: float) -> str:
        """One C call holding the GIL on the event loop's thread."""
        _hold_gil(seconds)
        return "held"

    @isoplug.method
    def hold_gil_in_thread(self, seconds: float) -> str:
        """One C call holding the GIL in a worker thread: the loop cannot run either."""
        _hold_gil(seconds)
        return "held"

    @isoplug.method
    async def spin_on_loop_on_cpu(self, cpu: int, cpu_seconds: float) -> float:
        """Python work on the event loop's thread, which is moved to ``cpu`` (a busy one) for
        it; returns the seconds it took by the clock."""
        allowed = os.sched_getaffinity(0)
        started = time.monotonic()
        os.sched_setaffinity(0, {cpu})  # this thread only
        try:
            _spin_for_cpu(cpu_seconds)
        finally:
            os.sched_setaffinity(0, allowed)
        return time.monotonic() - started

    @isoplug.method
    async def hold_gil_on_cpu(self, cpu: int, cpu_seconds: float) -> float:
        """C work holding the GIL on the event loop's thread, with every thread of the runner
        (its health thread too) moved to ``cpu`` (a busy one); returns the seconds it took."""
        allowed = os.sched_getaffinity(0)
        started = time.monotonic()
        for tid in _thread_ids():
            os.sched_setaffinity(tid, {cpu})
        try:
            _burn_holding_gil(cpu_seconds)
        finally:
            for tid in _thread_ids():
                os.sched_setaffinity(tid, allowed)
        return time.monotonic() - started
