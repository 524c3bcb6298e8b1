"""A logging handler that keeps what it handles and lets a test wait for it on the event loop."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class RecordWaiter(logging.Handler):
    """Collects log records; lets a test wait (on the event loop) until a condition holds."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []
        self._changed = asyncio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)
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
        async with asyncio.timeout(timeout):
            while True:
                changed = self._changed
                found = find()
                if found:
                    return found
                await changed.wait()
