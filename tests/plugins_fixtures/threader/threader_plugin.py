"""A test plugin that leaves threads running at stop, on request: a non-daemon
``threading.Thread`` looping forever, one that ends when ``teardown`` asks it to (each started
on the loop's thread or in a ``def`` method's worker thread), a method blocked in
``asyncio.to_thread`` (a thread of the loop's default executor), and a ``def`` method blocked
for good."""

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
    def start_forever_in_def(self) -> bool:
        """As start_forever, from a worker thread of the runner: whether it is a daemon."""
        thread = threading.Thread(target=loop_forever, name="threader-forever")
        thread.start()
        return thread.daemon

    @isoplug.method
    async def start_polite(self) -> None:
        """A non-daemon thread that ends once teardown sets the stop event."""
        self._start_polite()

    @isoplug.method
    def start_polite_in_def(self) -> None:
        """As start_polite, from a worker thread of the runner."""
        self._start_polite()

    def _start_polite(self) -> None:
        def until_stopped() -> None:
            self.stop.wait()
            time.sleep(0.05)  # a little cleanup, well within the teardown timeout
            _log.info("polite thread ends")

        threading.Thread(target=until_stopped, name="threader-polite").start()

    @isoplug.method
    def block_in_def(self) -> None:
        """Blocks its worker thread for good."""
        sleep_for_good()

    @isoplug.method
    def return_at_once(self) -> None:
        """Leaves the worker thread that ran it idle."""

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
