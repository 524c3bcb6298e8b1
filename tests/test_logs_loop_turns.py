"""An event loop's receiver under a flood: a coroutine waiting for a timer runs after at most
one slice of the replay (see :mod:`isoplug.logs.loop_share`)."""

from __future__ import annotations

import asyncio
import logging

from isoplug.testing import attached
from tests.test_logs_forwarding import PREFIX, finish, receiving, run_child


class TurnCounter(logging.Handler):
    """Notes, for each replayed record, the event loop's turn it was replayed in (``turn``,
    counted by :meth:`count_turns`, a task stepping once a turn): records of one turn are one
    slice."""

    def __init__(self) -> None:
        super().__init__()
        self.turn = 0
        self.turns: list[int] = []

    def emit(self, record: logging.LogRecord) -> None:
        if getattr(record, "n", None) is not None:
            self.turns.append(self.turn)

    async def count_turns(self) -> None:
        while True:
            await asyncio.sleep(0)
            self.turn += 1


async def test_a_coroutine_woken_by_a_timer_waits_at_most_one_slice() -> None:
    """A coroutine sleeping on a timer due at once, while a flood is replayed in slices: the
    slices replayed meanwhile, counted by the loop's turn each record was replayed in, are at
    most one. Its wake-up takes two turns (the timer's callback, then its step), and the replay
    took a slice in every turn: it waited two or three slices (a 1 ms sleep saw 9.4 ms of lag
    with 3.4 ms slices, found by an outside check)."""
    count = 20_000
    counter = TurnCounter()
    slices_per_sleep: list[int] = []
    with attached(counter, PREFIX):
        ticking = asyncio.create_task(counter.count_turns())
        try:
            async with receiving("loop") as (receiver, collector):
                child = await run_child(receiver, "clean-exit", str(count))
                while len(counter.turns) < count:
                    before = len(counter.turns)
                    await asyncio.sleep(1e-6)  # a timer, due at the loop's next turn
                    slices_per_sleep.append(len(set(counter.turns[before:])))
                code, stderr = await finish(child)
        finally:
            ticking.cancel()
            await asyncio.wait([ticking])
    assert code == 0, stderr
    assert collector.numbers() == list(range(count))
    # The flood took slices, and sleeps saw them.
    assert len(set(counter.turns)) > 10
    assert any(slices_per_sleep)
    assert max(slices_per_sleep) <= 1, sorted(slices_per_sleep)[-20:]
