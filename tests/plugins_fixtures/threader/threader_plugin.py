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
        _log.info("blocking in to_thread")
        await asyncio.to_thread(time.sleep, 1000)

    @isoplug.method
    async def block_in_executor(self) -> None:
        """As block_in_to_thread, through run_in_executor (no context copied)."""
        _log.info("blocking in run_in_executor")
        await asyncio.get_running_loop().run_in_executor(None, time.sleep, 1000)
