"""The tests' record waiter: :class:`isoplug.testing.Records`, plus the numbering the test
children put on their records."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from isoplug.testing.records import Records, attached, eventually

__all__ = ["RecordWaiter", "attached", "eventually", "watching"]


class RecordWaiter(Records):
    def numbers(self) -> list[int]:
        """The ``n`` extra of every record that has one (the children number their records)."""
        return [r.n for r in self.records if hasattr(r, "n")]


@contextlib.contextmanager
def watching(name: str | None = None, *, propagate: bool = True) -> Iterator[RecordWaiter]:
    """A :class:`RecordWaiter` on the logger ``name``, as :func:`attached` puts it."""
    with attached(RecordWaiter(), name, propagate=propagate) as waiter:
        yield waiter
