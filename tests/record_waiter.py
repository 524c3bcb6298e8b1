"""A logging handler that keeps what it handles and lets a test wait for it on the event loop,
and :func:`watching`, which puts one on a logger for a block (:func:`attached`, any handler)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterator
from typing import TypeVar

T = TypeVar("T")


class RecordWaiter(logging.Handler):
    """Collects every log record it is handed, untouched; lets a test wait (on the event loop)
    until a condition holds."""

    def __init__(self) -> None:
        super().__init__(logging.NOTSET)
        self.records: list[logging.LogRecord] = []
        self._changed = asyncio.Event()
        # The loop a test waits on; records may be handled in other threads (a receiver's).
        self._loop: asyncio.AbstractEventLoop | None = None

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)
        loop = self._loop
        if loop is None:
            return  # nobody waits yet; wait_until() looks at the records before it waits
        try:
            on_loop = asyncio.get_running_loop() is loop
        except RuntimeError:
            on_loop = False
        if on_loop:
            self._wake()
            return
        with contextlib.suppress(RuntimeError):  # the test's loop is already closed
            loop.call_soon_threadsafe(self._wake)

    def _wake(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    def matching(self, logger: str, text: str = "") -> list[logging.LogRecord]:
        return [r for r in self.records if r.name == logger and text in r.getMessage()]

    def numbers(self) -> list[int]:
        """The ``n`` extra of every record that has one (the children number their records)."""
        return [r.n for r in self.records if hasattr(r, "n")]

    def messages(self) -> list[str]:
        return [r.getMessage() for r in self.records]

    async def wait_for(
        self, logger: str, text: str = "", timeout: float = 20.0
    ) -> logging.LogRecord:
        return await self.wait_until(lambda: next(iter(self.matching(logger, text)), None), timeout)

    async def wait_until(self, find: Callable[[], T | None], timeout: float = 20.0) -> T:
        """Wait until ``find()`` returns something true (a record, ``True``); return it."""
        self._loop = asyncio.get_running_loop()
        async with asyncio.timeout(timeout):
            while True:
                changed = self._changed
                found = find()
                if found:
                    return found
                await changed.wait()


H = TypeVar("H", bound=logging.Handler)


@contextlib.contextmanager
def attached(handler: H, name: str | None = None, *, propagate: bool = True) -> Iterator[H]:
    """``handler`` on the logger ``name`` (None: the root logger), which is set to DEBUG (and
    not to propagate, if so asked) for the block; its handlers, level and propagation are as
    they were afterwards."""
    logger = logging.getLogger(name)
    level, was_propagating = logger.level, logger.propagate
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    if not propagate:
        logger.propagate = False
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        if not propagate:
            logger.propagate = was_propagating


@contextlib.contextmanager
def watching(name: str | None = None, *, propagate: bool = True) -> Iterator[RecordWaiter]:
    """A :class:`RecordWaiter` on the logger ``name``, as :func:`attached` puts it."""
    with attached(RecordWaiter(), name, propagate=propagate) as waiter:
        yield waiter


async def eventually(condition: Callable[[], bool], timeout: float = 20.0) -> None:
    """Wait until ``condition()`` holds, for state no record announces (a connection's end in
    another thread); checked every few milliseconds."""
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.005)
