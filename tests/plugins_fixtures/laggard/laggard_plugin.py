"""A test plugin that is slow in each of the ways a health check must tell apart."""

from __future__ import annotations

import asyncio
import ctypes
import os
import time

import isoplug

#: Functions called through PyDLL keep the GIL for the whole call, as a C extension's long
#: computation does (a 1 GiB allocation, a huge regex): no other thread runs Python meanwhile.
_LIBC = ctypes.PyDLL(None)


def _hold_gil(seconds: float) -> None:
    _LIBC.usleep(ctypes.c_uint(int(seconds * 1_000_000)))


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
