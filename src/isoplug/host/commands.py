"""Stop and restart requests, from a supervisor's callers to the task that drives its runner.

:meth:`~isoplug.host.supervisor.RunnerSupervisor.stop` and ``restart`` send a command; the
supervising task notices it wherever it waits (for the ready report, between health checks,
during a health check, during the backoff before a restart) and takes it once the runner has
exited.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable
from typing import Any

__all__ = ["RESTART", "STOP", "Commands", "describe_command"]

STOP = "stop"
RESTART = "restart"


class Commands:
    """The command pending (the latest sent), and the event that wakes whoever waits for one.
    A command sent before the pending one was taken replaces it: the latest request wins."""

    def __init__(self) -> None:
        self.pending: str | None = None
        self._wake = asyncio.Event()
        #: Commands sent so far.
        self.sent = 0
        self._later: list[asyncio.Future[None]] = []

    def send(self, command: str) -> int:
        """Send ``command``; its number (see :meth:`sent_after`)."""
        self.pending = command
        self._wake.set()
        self.sent += 1
        waiters, self._later = self._later, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)
        return self.sent

    def sent_after(self, number: int) -> asyncio.Future[None]:
        """A future done once a command later than the ``number``-th has been sent."""
        future = asyncio.get_running_loop().create_future()
        if self.sent > number:
            future.set_result(None)
        else:
            self._later.append(future)
        return future

    def take(self) -> str | None:
        """The pending command, which is pending no more."""
        command, self.pending = self.pending, None
        self._wake.clear()
        return command

    async def wait(self, timeout: float | None) -> str | None:
        """Wait up to ``timeout`` seconds for a command; the pending one (left pending)."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._wake.wait()
        return self.pending

    async def wait_with(
        self, futures: Iterable[asyncio.Future[Any]], timeout: float | None
    ) -> set[asyncio.Future[Any]]:
        """Wait up to ``timeout`` seconds until one of ``futures`` is done or a command is
        sent; return what is done (empty when the time ran out)."""
        waiter = asyncio.ensure_future(self._wake.wait())
        try:
            watched: set[asyncio.Future[Any]] = {*futures, waiter}
            done, _ = await asyncio.wait(
                watched, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            waiter.cancel()
        return done


def describe_command(command: str) -> str:
    """Why a runner ended, when ``command`` ended it."""
    return "stopped on request" if command == STOP else "restarted on request"
