"""A test plugin that leaves threads running at stop, on request: a non-daemon
``threading.Thread`` looping forever, one that ends when ``teardown`` asks it to, and a method
blocked in ``asyncio.to_thread`` (a thread of the loop's default executor)."""

from __future__ import annotations

import asyncio
import logging
import threading
import time

import isoplug

_log = logging.getLogger(__name__)


def loop_forever() -> None:
    while True:
        time.sleep(1)


def sleep_for_good() -> None:
    # Logged from the thread: once it arrives, the executor's thread runs the call (a call
    # cancelled before a thread took it would never run).
    _log.info("blocking in a thread")
    time.sleep(1000)


class Threader(isoplug.Plugin):
    async def setup(self, ctx: isoplug.PluginContext) -> None:
        self.stop = threading.Event()

    async def teardown(self) -> None:
        self.stop.set()

    @isoplug.method
    async def start_forever(self) -> None:
        """A non-daemon thread that never ends."""
        threading.Thread(target=loop_forever, name="threader-forever").start()

    @isoplug.method
    async def start_polite(self) -> None:
        """A non-daemon thread that ends once teardown sets the stop event."""

        def until_stopped() -> None:
            self.stop.wait()
            time.sleep(0.05)  # a little cleanup, well within the teardown timeout
            _log.info("polite thread ends")

        threading.Thread(target=until_stopped, name="threader-polite").start()

    @isoplug.method
    async def block_in_to_thread(self) -> None:
        """Waits for a thread of the default executor that sleeps for good."""
        await asyncio.to_thread(sleep_for_good)

    @isoplug.method
    async def block_in_executor(self) -> None:
        """As block_in_to_thread, through run_in_executor (no context copied)."""
        await asyncio.get_running_loop().run_in_executor(None, sleep_for_good)

    @isoplug.method
    async def use_executor(self) -> None:
        """Leaves the default executor's thread idle."""
        await asyncio.to_thread(time.sleep, 0)
