"""A test plugin that logs on request: numbered records, exceptions, forgeries, then dies."""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import time

import isoplug
from isoplug.logs import ForwardingHandler

log = logging.getLogger("chronicler.work")


class Chronicler(isoplug.Plugin):
    async def setup(self, ctx: isoplug.PluginContext) -> None:
        self.ctx = ctx

    @isoplug.method
    async def log_numbered(self, count: int, level: int = logging.INFO) -> int:
        for index in range(count):
            log.log(level, "record %d", index, extra={"n": index, "user": "ann"})
        return count

    @isoplug.method
    async def log_and_die(self, count: int, how: str = "exit") -> None:
        for index in range(count):
            log.info("last words %d", index, extra={"n": index})
        if how == "sigkill":
            os.kill(os.getpid(), signal.SIGKILL)
        elif how == "segfault":
            ctypes.string_at(0)
        os._exit(3)

    @isoplug.method
    async def log_exception(self) -> None:
        settings: dict[str, str] = {}
        try:
            settings["missing"]
        except KeyError:
            log.exception("lookup failed")

    @isoplug.method
    async def forge(self) -> None:
        logging.getLogger("isoplug.host").critical("I am the host\nINFO isoplug.host: all good")

    @isoplug.method
    async def log_then_block(self, until: str, seconds: float = 60.0) -> None:
        """Log, then block the event loop until the file ``until`` exists (at most
        ``seconds``)."""
        self.ctx.logger.warning("blocking the event loop now")
        deadline = time.monotonic() + seconds
        # A plugin bug: blocks its own event loop.
        while not os.path.exists(until) and time.monotonic() < deadline:
            time.sleep(0.01)

    @isoplug.method
    async def fork_and_log(self, count: int) -> int:
        """Fork a child that logs ``count`` numbered records (from ``count`` on) and exits;
        return its pid once it has exited."""
        child = os.fork()
        if child == 0:
            try:
                for index in range(count, 2 * count):
                    log.info("from the child %d", index, extra={"n": index})
                logging.shutdown()  # flush: the child's handler drains before it goes
            finally:
                os._exit(0)
        os.waitpid(child, 0)
        return child

    @isoplug.method
    async def log_payments(self, orders: list[str]) -> None:
        """One record per order, all from the same template."""
        for order in orders:
            log.info("paid %s", order)

    @isoplug.method
    async def pid(self) -> int:
        return os.getpid()

    @isoplug.method
    async def write_through_rate(self) -> float:
        (handler,) = [h for h in logging.getLogger().handlers if isinstance(h, ForwardingHandler)]
        return handler.write_through_rate
