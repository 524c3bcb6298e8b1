"""The end of a sender's replay: :meth:`~ReplayEnd.stop` (the receiver's drain time is up)
and :meth:`~ReplayEnd.finish` (the sender is gone).

Finishing replays, in slices as :meth:`~isoplug.logs.replay.LogReplayer.receive` does, what
the dead sender's ring gives back (less what a newer connection of its chain replayed
already: :mod:`isoplug.logs.chains`), read on the finishing thread or, on an event loop, in a
thread of its own (:class:`OffLoopStep`: a ring's bytes to decode, up to its capacity, would
hold the loop), reports what its sequence ledger says never arrived
(:mod:`isoplug.logs.ledger_reports`) and what :meth:`~ReplayEnd.stop` kept from being
replayed, and lets go of the chain and the handler-error reporter. Separate from
:mod:`isoplug.logs.replay` because it runs once per connection, after the last batch: none of
it is on the path of a batch's records, which that module holds.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import math
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any

from isoplug.logs.chains import ChainMember, SenderChains
from isoplug.logs.handler_errors import HandlerErrors, Replaying
from isoplug.logs.ledger_reports import SenderEnd
from isoplug.logs.loop_share import between_slices
from isoplug.logs.metrics import DropReason, LogMetrics
from isoplug.logs.pending_ends import process_running
from isoplug.logs.replay_reports import ReplayReports
from isoplug.logs.ring_recovery import RecoveredRecords, Recovery
from isoplug.off_loop import off_loop
from isoplug.wire import LogRecordData

__all__ = ["OffLoopStep", "ReplayEnd"]

#: What next() gives once the steps are done.
_DONE = object()


class OffLoopStep:
    """Blocking work in an end's accounting (reading the dead sender's ring, claiming what it
    gave back): :meth:`ReplayEnd.finish` runs it where it is, :meth:`ReplayEnd.finish_async`
    in a thread of its own, off the loop; the steps after it wait for its :meth:`result`."""

    __slots__ = ("_outcome", "_work")

    def __init__(self, work: Callable[[], tuple[Recovery, RecoveredRecords]]) -> None:
        self._work = work
        self._outcome: Future[tuple[Recovery, RecoveredRecords]] = Future()

    def run(self) -> None:
        try:
            self._outcome.set_result(self._work())
        except BaseException as exc:
            self._outcome.set_exception(exc)

    def result(self) -> tuple[Recovery, RecoveredRecords]:
        """What the work gave (or its exception), once it ran; a step after it waits here for
        a thread still running it (an event loop's finish cancelled meanwhile)."""
        return self._outcome.result()


def _run_here(step: OffLoopStep | None) -> None:
    if step is not None:
        step.run()


#: Runs a pending end's accounting, given it whole and in slices (see finish_when_settled).
Settle = Callable[
    [Callable[[], None], Callable[[], Coroutine[Any, Any, None]]], Awaitable[None] | None
]


class ReplayEnd:
    """The end's half of :class:`~isoplug.logs.replay.LogReplayer` (a base class of it; see
    the module docstring). The state is the replayer's, set up by its ``__init__``."""

    metrics: LogMetrics
    _reports: ReplayReports
    _catching: Replaying
    _owns_handler_errors: bool
    _handler_errors: HandlerErrors
    _chain: ChainMember | None
    _chains: SenderChains | None
    _sender_pid: int | None
    #: The sender process tree whose pending ends count together (None: not known).
    _sender_tree: str | None
    _last_seq: int
    _reordered_after: int | None
    _reordered_count: int
    _slice_ends: float
    _stopped: bool
    _unfinished: Iterator[LogRecordData] | None
    _not_replayed: dict[int, int]

    if TYPE_CHECKING:  # LogReplayer's

        def _start_slice(self) -> None: ...

        def _replay_recovered(self, rest: Iterator[LogRecordData]) -> bool: ...

        def _check_sequence(self, seq: int) -> None: ...

        def _report_rate_drops(self) -> None: ...

    @property
    def stopped(self) -> bool:
        """Whether :meth:`stop` was called."""
        return self._stopped

    def use_passed_ledger(self, descriptor: int | None) -> None:
        """Read the sender's ledger (and ring) through ``descriptor``, the one its connection
        passed with its hello (see :mod:`isoplug.transport.passed_descriptors`): readable
        however the sender ended, where ``/proc/<pid>/fd`` is only while it lives. Not taken:
        the connection keeps it open until its announcement is replayed, which takes a
        duplicate."""
        self._reports.passed_ledger = descriptor

    def stop(self) -> None:
        """Replay nothing more, from now on; safe from any thread.

        The receiver's drain time is up: a replay in progress ends after the record it is
        handing to the host's handlers, and the records it received and did not replay are
        counted (:attr:`DropReason.RECEIVER_CLOSED`) and reported by :meth:`finish`, like
        those the sender's ledger says never arrived. Batches that come later are not read.
        """
        self._stopped = True
        # Read after every record: the replay ends at the next one (see _replay_steps).
        self._slice_ends = -math.inf

    def finish_when_settled(
        self,
        *,
        clean: bool,
        then: Callable[[], None],
        run_in: Settle | None = None,
    ) -> bool:
        """Finish later, if the sender lives on after a connection that ended without a
        goodbye; whether it will (else the caller finishes now).

        Its ledger and ring stay open until a new connection of its chain takes over or
        the process exits (see :mod:`isoplug.logs.pending_ends`); then :meth:`finish` runs
        on whichever thread saw it, followed by ``then``; or, with ``run_in``, it is given
        both that and :meth:`finish_async` followed by ``then``, to run one of them (an event
        loop's receiver runs the latter on its loop: :mod:`isoplug.logs.settling`), and may
        return an awaitable for a reconnection to wait for. Only for a sender that
        announced a ledger (nothing to wait for otherwise) and whose pid the kernel vouched
        for. Meanwhile its metrics say so (:attr:`LogMetrics.pending_ends`)."""
        chains, pid = self._chains, self._sender_pid
        if self._stopped or chains is None or pid is None or not self._reports.has_ledger:
            return False
        chain = self._chain.chain if self._chain is not None else None

        def settle(upto: int | None) -> None:
            try:
                # On an event loop, only once it is closed (isoplug.logs.settling): an
                # earlier end's task there will not run, so it is not waited for.
                self._finish(clean, upto, wait=run_in is None)
            finally:
                # Only now: a reader seeing 0 sees the end's recovered and lost counts too.
                self.metrics.pending_ends = 0
                then()

        async def settle_async(upto: int | None) -> None:
            try:
                await self.finish_async(clean=clean, upto=upto)
            finally:
                self.metrics.pending_ends = 0
                then()

        def settled(resumed_after: int | None) -> Awaitable[None] | None:
            if run_in is None:
                settle(resumed_after)
                return None
            return run_in(lambda: settle(resumed_after), lambda: settle_async(resumed_after))

        # Before it is deferred: it may be settled on another thread at once.
        self.metrics.pending_ends = 1
        order = 0
        if self._chain is not None:
            self._chain.end_begins()
            order = self._chain.order
        if chains.pending.defer(pid, chain, settled, order=order, tree=self._sender_tree):
            return True
        self.metrics.pending_ends = 0
        return False

    def finish(self, *, clean: bool = True, upto: int | None = None) -> None:
        """Report what is still unreported; call when the sender is gone.

        Records the sender accepted but never sent (it crashed, was killed, or its last flush
        timed out) are given back by its ring and replayed, or counted from its sequence
        ledger and reported, however it ended. ``clean=False`` (the connection ended without a
        goodbye) says so too, even when nothing was lost; without a ledger, it warns that
        unsent records, if any, are lost. ``upto``: a new connection of the sender took over
        after this record (see :mod:`isoplug.logs.pending_ends`).
        """
        self._finish(clean, upto, wait=True)

    def _finish(self, clean: bool, upto: int | None, *, wait: bool) -> None:
        earlier = self._earlier_ends()
        if wait:
            for each in earlier:
                # Its accounting runs on another thread (or ran on this one, just now).
                each.result()
        for step in self._finish_steps(clean, upto):
            _run_here(step)

    async def finish_async(self, *, clean: bool = True, upto: int | None = None) -> None:
        """:meth:`finish` on the running event loop: the dead sender's ring is read in a thread
        of its own (up to its capacity of bytes to decode), and what it gives back replayed in
        slices that yield to the loop, as :meth:`receive` does (a ring may hold hundreds of
        thousands of records)."""
        steps = self._finish_steps(clean, upto)
        try:
            for earlier in self._earlier_ends():
                # Its accounting runs as another task of this loop, or on another thread;
                # shielded: this task's cancellation must not cancel what says it is done.
                await asyncio.shield(asyncio.wrap_future(earlier))
            self._start_slice()
            while (step := next(steps, _DONE)) is not _DONE:
                if isinstance(step, OffLoopStep):
                    await off_loop(step.run)
                else:
                    await between_slices()
                self._start_slice()
        except asyncio.CancelledError:
            # The reports and the accounting must still be made: the rest at once (a step
            # under way in its thread is waited for by the one after it).
            self._slice_ends = math.inf
            for rest in steps:
                _run_here(rest)
            raise

    def _earlier_ends(self) -> list[Future[None]]:
        """The accounting of earlier connections' ends of the chain this end's must wait for:
        after the sender exited, it counts lost what its ledger says never arrived and its
        ring cannot give back, and another connection's ring may (a kill in the hand-over
        leaves the unsent records counted by both ledgers, and a new ring may have had no
        room for them: see :meth:`_with_replayed_elsewhere`). An earlier end still pending
        is accounted for now, first. While the sender lives (a clean end, a connection
        taken over), an earlier end pending waits for the sender, and this one does not
        wait for it."""
        chain, chains, pid = self._chain, self._chains, self._sender_pid
        if chain is None or chains is None or pid is None:
            return []
        # Whoever takes it from here on (a later end of the chain) waits for it.
        chain.end_begins()
        earlier = chain.earlier_ends()
        if not earlier or not self._reports.has_ledger or process_running(pid):
            return []
        # Its finish (on an event loop: started as a task) is waited for with the others.
        chains.pending.settle(pid, chain.chain, before=chain.order)
        return earlier

    def _finish_steps(self, clean: bool, upto: int | None = None) -> Iterator[OffLoopStep | None]:
        """:meth:`finish`'s work, suspended (yields) where a slice of the recovered records'
        replay ends (None) and where blocking work is to run (an :class:`OffLoopStep`, which
        the caller runs before it goes on); never inside ``_catching``, which must not outlive
        a step."""
        try:
            yield from self._account(clean, upto)
        finally:
            self._reports.close_ring()
            # Also when accounting failed: a later end of the chain waits for this.
            chain, self._chain = self._chain, None
            if chain is not None:
                chain.ended()
        if self._owns_handler_errors:
            self._handler_errors.close()

    def _account(self, clean: bool, upto: int | None) -> Iterator[OffLoopStep | None]:
        reordered = (
            None
            if self._reordered_after is None
            else (self._reordered_after, self._reordered_count)
        )
        with self._catching:
            unfinished, self._unfinished = self._unfinished, None
            if unfinished is not None:
                # A replay suspended between slices that will not resume (the session ended).
                self._drop_rest(unfinished)
            self._report_rate_drops()
            self._report_not_replayed()
            self._reports.flush(final=True)
            end = self._reports.read_end(
                self._last_seq, reordered=reordered, receiver_closed=self._stopped, upto=upto
            )
        if end.missing is not None:
            reading = OffLoopStep(functools.partial(self._recover, end))
            yield reading
            recovery, recovered = reading.result()
            with self._catching:
                end = self._reports.with_recovery(end, recovery)
                self.metrics.received += len(recovered)
                self.metrics.recovered += len(recovered)
        else:
            recovered = end.recovered
        with self._catching:
            end = self._with_replayed_elsewhere(end)
        if recovered:
            rest = iter(recovered)
            while True:
                with self._catching:
                    done = self._replay_recovered(rest)
                if done:
                    break
                yield None
        with self._catching:
            self._reports.report_end(end, clean=clean)
            self._report_not_replayed()
            self._reports.flush(final=True)

    def _recover(self, end: SenderEnd) -> tuple[Recovery, RecoveredRecords]:
        """The records the dead sender's ring gives back (see
        :mod:`isoplug.logs.ledger_reports`), and of those the ones to replay: not those a
        newer connection of the sender's chain replayed already (see
        :mod:`isoplug.logs.chains`). Reports nothing: it may run in a thread of its own."""
        recovery = self._reports.recover(end)
        records = recovery.records
        if self._chain is not None and records:
            records = self._chain.recovered(records)
        return recovery, records

    def _with_replayed_elsewhere(self, end: SenderEnd) -> SenderEnd:
        """``end``, with the records no batch or ring of this connection gave back that
        another connection of the chain replayed (after this one's own recovery claimed):
        not lost. Two connections of a reconnecting sender can both count the same unsent
        records (killed in the hand-over), and only one ring may give them back."""
        chain, state = self._chain, end.state
        if chain is None or state is None or end.reordered is not None:
            return end
        claimed = chain.replayed_between(end.last, state.accepted)
        elsewhere = claimed - len(end.recovered)
        return dataclasses.replace(end, replayed_elsewhere=elsewhere) if elsewhere > 0 else end

    def _drop_rest(self, rest: Iterator[LogRecordData]) -> None:
        """Count the received records ``rest`` that stop() kept from being replayed, as if
        replayed for the sequence numbers: the ledger must not count them again."""
        dropped = self._not_replayed
        count = self.metrics.count_drop
        in_order = self._reordered_after is None
        for data in rest:
            if not in_order:
                pass  # counted in _reordered_count on arrival, with the whole batch
            elif data.seq == self._last_seq + 1:
                self._last_seq = data.seq
            else:
                self._check_sequence(data.seq)
            count(DropReason.RECEIVER_CLOSED, 1, data.levelno)
            dropped[data.levelno] = dropped.get(data.levelno, 0) + 1

    def _report_not_replayed(self) -> None:
        if self._not_replayed:
            dropped, self._not_replayed = self._not_replayed, {}
            self._reports.not_replayed(dropped)
