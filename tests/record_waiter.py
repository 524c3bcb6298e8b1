"""The tests' record waiter: :class:`isoplug.testing.Records`, plus the numbering the test
children put on their records."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator

from isoplug.testing.records import Records, attached, eventually

__all__ = [
    "RecordWaiter",
    "SlowFloodCounter",
    "attached",
    "eventually",
    "wait_blocking",
    "watching",
]


def wait_blocking(condition: Callable[[], object], timeout: float = 30.0) -> None:
    """:func:`eventually` for a thread that may not await: wait until ``condition()`` is
    true, polling; fail the test if it is not within ``timeout`` seconds (a hang fails the
    test, not the run). Also what a patched blocking step (a receiver made slow) waits on."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"the condition never held within {timeout:g} s"
        time.sleep(0.001)


class RecordWaiter(Records):
    def numbers(self) -> list[int]:
        """The ``n`` extra of every record that has one (the children number their records)."""
        return [r.n for r in self.records if hasattr(r, "n")]


@contextlib.contextmanager
def watching(name: str | None = None, *, propagate: bool = True) -> Iterator[RecordWaiter]:
    """A :class:`RecordWaiter` on the logger ``name``, as :func:`attached` puts it."""
    with attached(RecordWaiter(), name, propagate=propagate) as waiter:
        yield waiter


class SlowFloodCounter(logging.Handler):
    """A slow host handler, as the stdio floods' acceptance asks: counts the ``flood <n>``
    lines and sleeps 50 ms every 1,000 of them."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage().startswith("flood "):
            self.count += 1
            if self.count % 1000 == 0:
                time.sleep(0.05)  # the slowness under test, not a wait
