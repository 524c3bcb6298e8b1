"""What a receiver on an event loop leaves the loop between two slices of its replay.

A replay on the loop runs in slices (:data:`~isoplug.logs.replay.REPLAY_SLICE_SECONDS`, 3 ms,
or :data:`~isoplug.logs.replay.REPLAY_SLICE` records) and yields between them. Yielding once
(``await asyncio.sleep(0)``) gives the loop one turn, and a coroutine waiting for a timer
needs more than one to run: the turn in which its timer is due runs the timer's callback,
which only schedules the coroutine's step, for the next turn; and that turn began with the
replay's next slice. A coroutine awaiting ``asyncio.sleep(0.001)`` under a flood so waited
about three slices (9.4 ms with a 0.5 ms handler and 3.4 ms slices, found by an outside check),
where the documentation promised one.

So the replay lets the loop turn :data:`TURNS_BETWEEN_SLICES` times between slices, doing
nothing in the turns after the first: a coroutine woken by a timer, or by a future another
callback completed, runs before the next slice. A batch that arrives in the turn right after a
slice (the socket read again once a backlog of batches was replayed) waits for those turns
too, instead of starting a slice there. A chain of tasks each awaiting the next (a task
awaiting a task that awaits a timer) takes a turn per link, and may wait one slice more for
every two links. When the loop has nothing else to do, a turn costs a ``select()`` that
returns at once: a few microseconds per slice.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Iterator
from typing import TYPE_CHECKING

from isoplug.logs.handler_errors import Replaying

__all__ = ["DONE", "TURNS_BETWEEN_SLICES", "SliceTurns", "Step", "between_slices"]

#: What next() gives once a batch's steps are done.
DONE = object()
#: What a batch's steps yield where its replay may pause: None where a slice ends, or what to
#: wait for first (the accounting of the connection it resumes, on an event loop).
Step = Awaitable[None] | None

#: The slice's own yield, the turn in which a due timer's callback runs, and the turn in which
#: the coroutine it woke runs.
TURNS_BETWEEN_SLICES = 3


async def between_slices() -> None:
    """Let the event loop turn :data:`TURNS_BETWEEN_SLICES` times (see the module
    docstring)."""
    for _ in range(TURNS_BETWEEN_SLICES):
        await asyncio.sleep(0)


class SliceTurns:
    """The turns of the event loop around a replay's slices (a base class of
    :class:`~isoplug.logs.replay.LogReplayer`; the state is its)."""

    _in_slice: bool
    _rested: bool
    _catching: Replaying

    if TYPE_CHECKING:  # LogReplayer's

        def _start_slice(self) -> None: ...

    def _slice_over(self) -> None:
        """The loop ran its next callbacks (the turn after the slice's): the slice is over;
        one turn more, and a coroutine it woke has run (see the module docstring)."""
        self._in_slice = False
        asyncio.get_running_loop().call_soon(self._rest)

    def _rest(self) -> None:
        self._rested = True

    async def _replay_rest(self, steps: Iterator[Step], step: Step) -> None:
        """Replay the rest of a batch's ``steps``, a slice at a time, ``step`` first: None
        (the turns between slices), or what to wait for first."""
        while True:
            if step is None:
                await between_slices()
            else:
                # The end of the connection this one resumes, accounted for on the loop in
                # slices: its records come first. Shielded: it is not this batch's to cancel.
                await asyncio.shield(step)
            self._start_slice()
            # Only while a slice runs: between them the loop runs the host's own code.
            with self._catching:
                following = next(steps, DONE)
            if following is DONE:
                return
            step = following  # type: ignore[assignment]
