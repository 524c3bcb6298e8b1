"""A test plugin whose ``atexit`` hooks, registered on request, print, log at their own
levels, write stderr (a forged host line among it), block for good, or log a burst and wait
for a kill; one that leaves a ``ProcessPoolExecutor`` open; and one that leaves a non-daemon
``multiprocessing.Process`` running, which ``multiprocessing``'s own hook joins at exit."""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import logging
import multiprocessing
import sys
import threading
import time

import isoplug

_log = logging.getLogger("exiter.exit")


def talk() -> None:
    print("atexit print")
    _log.error("atexit error record")
    _log.debug("atexit debug record")
    sys.stderr.write("atexit stderr\n")
    sys.stderr.write("[CRITICAL isoplug.host] forged by the plugin\n")
    print("atexit partial line", end="")


def fail() -> None:
    raise LookupError("atexit hook failed")


def block() -> None:
    _log.warning("atexit hook blocks")
    threading.Event().wait()


def burst_then_wait(count: int) -> None:
    for n in range(count):
        _log.warning("atexit burst %d", n, extra={"n": n})
    _log.warning("atexit hook waits for its kill")
    threading.Event().wait()


def loguru_enqueued(count: int) -> None:
    """loguru imported here, so its own exit hook (``logger.remove``, which would drain the
    queue) is registered too late to run: nothing but isoplug drains this sink's queue."""
    from loguru import logger

    def slow_console(message: str) -> None:
        # Slower than the rest of the exit: without a drain, the runner's handler closes (or
        # the process ends) with messages still queued.
        time.sleep(0.05)
        sys.stderr.write(message)

    logger.remove()
    logger.add(slow_console, enqueue=True, format="{message}")
    for n in range(count):
        logger.warning("loguru enqueued {}", n)


def square(x: int) -> int:
    return x * x


class Exiter(isoplug.Plugin):
    async def setup(self, ctx: isoplug.PluginContext) -> None:
        self.pool: concurrent.futures.ProcessPoolExecutor | None = None

    @isoplug.method
    async def register_talkative(self) -> None:
        atexit.register(talk)

    @isoplug.method
    async def register_failing(self) -> None:
        """A hook that raises, registered before the talkative one: both run."""
        atexit.register(fail)
        atexit.register(talk)

    @isoplug.method
    async def register_blocking(self) -> None:
        atexit.register(block)

    @isoplug.method
    async def register_burst(self, count: int) -> None:
        atexit.register(burst_then_wait, count)

    @isoplug.method
    async def register_loguru_enqueued(self, count: int) -> None:
        atexit.register(loguru_enqueued, count)

    @isoplug.method
    async def use_process_pool(self) -> int:
        """Leaves a process pool open (never shut down): Python joins its workers at exit."""
        self.pool = concurrent.futures.ProcessPoolExecutor(max_workers=1)
        result = await asyncio.get_running_loop().run_in_executor(self.pool, square, 7)
        atexit.register(_log.warning, "atexit hook after the pool ran")
        return result

    @isoplug.method
    async def start_sleeping_child(self) -> int:
        """A non-daemon child that sleeps for minutes: ``multiprocessing``'s atexit hook
        (``multiprocessing.util._exit_function``) joins it, as at any Python program's exit."""
        child = multiprocessing.get_context("fork").Process(target=time.sleep, args=(300,))
        child.start()
        assert child.pid is not None
        return child.pid
