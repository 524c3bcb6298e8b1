"""What a :class:`~isoplug.logs.replay.LogReplayer` says about its sender's ledger: the
announcement, and the accounting at the sender's end (a base class of
:class:`~isoplug.logs.replay_reports.ReplayReports`).

At the end, one ``pread`` of the ledger (:mod:`isoplug.logs.ledger`) gives the highest sequence
number the sender accepted, its drop totals and its close flags. Drops no batch told are
reported; accepted records that neither arrived nor were dropped at the sender's close deadline
are counted lost (``DropReason.SENDER_ENDED``) and reported, however the sender ended.

Unless its ring gives them back: a sender's shared-memory ring (:mod:`isoplug.logs.ring`)
follows its ledger in the same file, so the receiver has it once it has the ledger. At the end,
the accepted records that never arrived are read from the ring (:meth:`~SenderLedgerReports.
recover`: blocking work, which an event loop's receiver runs in a thread) and replayed, in order,
before the accounting: they count as received and :attr:`~isoplug.logs.LogMetrics.recovered`,
and the end's report says how many were recovered. Not after a close that sent by level or
dropped records at its deadline (the ledger's counts then stand, as without a ring).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping

from isoplug.logs.ledger import (
    CLOSE_DEADLINE_PASSED,
    CLOSING,
    LedgerError,
    LedgerState,
    ReceiverLedger,
)
from isoplug.logs.metrics import DropReason, LogMetrics
from isoplug.logs.report_throttle import Summary
from isoplug.logs.ring import MAX_RING_BYTES
from isoplug.logs.ring_budget import RingBudget, RingPlace, RingRefused
from isoplug.logs.ring_recovery import ReceiverRing, RecoveredRecords, Recovery

__all__ = ["SenderEnd", "SenderLedgerReports"]


@dataclasses.dataclass(frozen=True)
class SenderEnd:
    """What the ledger and the ring said at a sender's end (see
    :meth:`SenderLedgerReports.read_end`)."""

    #: The highest sequence number that arrived in order.
    last: int
    state: LedgerState | None
    reordered: tuple[int, int] | None
    #: Records the sender dropped at its close deadline.
    at_close: int
    #: Accepted records that never arrived, given back by the ring, in order: to replay.
    recovered: RecoveredRecords
    receiver_closed: bool
    #: The records to ask the ring for, (after, upto), once read_end() has read the ledger;
    #: None: none.
    missing: tuple[int, int] | None = None
    #: Of the accepted records that never arrived here, those another connection of the
    #: sender's chain replayed and this one's ring did not give back (see
    #: :mod:`isoplug.logs.chains`): not lost.
    replayed_elsewhere: int = 0


class SenderLedgerReports:
    """The ledger's part of the replayer's reports; the state and the reporting methods are
    :class:`~isoplug.logs.replay_reports.ReplayReports`'."""

    _description: str
    _metrics: LogMetrics
    _sender_pid: int | None
    _ledger: ReceiverLedger | None
    _ledger_announced: bool
    _close_drops: dict[int, int]
    _most_unsent: int
    #: The sender's ring, opened with its ledger (a class default: ReplayReports sets none).
    _ring: ReceiverRing | None = None
    #: The rings the receiver holds, shared by its connections (None: no bound).
    ring_budget: RingBudget | None = None
    #: The sender process tree the sender is of, whose rings count together in the budget
    #: (a runner's processes, a LogReceiver's sender tree; None: not known).
    sender_tree: str | None = None
    #: The place in the budget this reader's ring holds, until it lets go of the ring.
    _ring_place: RingPlace | None = None
    #: The descriptor the sender passed with its hello (its connection's, open while the
    #: announcement is replayed): its ledger, readable whatever became of the sender.
    passed_ledger: int | None = None

    def limited(
        self,
        kind: str,
        text: str,
        summary: Summary,
        *,
        records: int = 0,
        levels: Mapping[int, int] | None = None,
        detail: str = "",
        level: int = logging.WARNING,
    ) -> None:
        raise NotImplementedError  # ReplayReports'

    def sender_drops(self, totals: Mapping[int, int]) -> None:
        raise NotImplementedError  # ReplayReports'

    def close_drops(self, totals: Mapping[int, int]) -> None:
        raise NotImplementedError  # ReplayReports'

    def _problem(self, kind: str, text: str) -> None:
        raise NotImplementedError  # ReplayReports'

    def violation(self, text: str) -> None:
        raise NotImplementedError  # ReplayReports'

    def wanted_level(self) -> int | None:
        """The level from which this side handles the sender's records, told the sender with
        the ledger's acknowledgement (None: not said)."""
        return None

    @property
    def has_ledger(self) -> bool:
        """Whether the sender's ledger is open (its end can be counted)."""
        return self._ledger is not None

    def open_ledger(self, fd: int) -> None:
        """Open the ledger a sender announced (its first batch): the descriptor it passed with
        its hello (:attr:`passed_ledger`), else its ``fd`` through ``/proc``; see
        :mod:`isoplug.logs.ledger`."""
        if self._ledger_announced:
            description = self._description
            self.limited(
                "ledger_again",
                f"{description} announced a second log ledger; kept the first",
                lambda t: (
                    f"{description} announced a log ledger again, {t.events:,} more times over "
                    f"{t.seconds:.1f} s; kept the first"
                ),
            )
            return
        self._ledger_announced = True
        passed = self.passed_ledger
        if passed is None and self._sender_pid is None:
            self._problem(
                "ledger",
                f"{self._description} announced a log ledger, but its connection does not say "
                "which process it is; a crash will be reported without a count of lost records",
            )
            return
        try:
            if passed is not None:
                self._ledger = ReceiverLedger.adopt(passed, self._sender_pid, self.wanted_level())
            else:
                assert self._sender_pid is not None
                self._ledger = ReceiverLedger.open(self._sender_pid, fd, self.wanted_level())
        except FileNotFoundError:
            # Already gone (no ledger passed, /proc/<pid>/fd gone with it): report_end()
            # reports the unclean end, without a count.
            return
        except (LedgerError, OSError) as exc:
            self._problem(
                "ledger",
                f"cannot use the log ledger of {self._description}: {exc}; a crash will be "
                "reported without a count of lost records",
            )
            return
        self._open_ring()

    def _open_ring(self) -> None:
        assert self._ledger is not None
        capacity = self._ledger.ring_capacity
        if not capacity:
            return
        if capacity > MAX_RING_BYTES:
            self._refuse_ring(
                "ring_too_large",
                f"its {capacity:,} bytes are more than the {MAX_RING_BYTES:,} a receiver reads "
                "(a sender's own are at most that)",
            )
            return
        place = None if self.ring_budget is None else self.ring_budget.take(self.sender_tree)
        if isinstance(place, RingRefused):
            self._refuse_ring(place.kind, place.why)
            return
        try:
            self._ring = self._ledger.ring()
        except OSError as exc:  # out of descriptors
            if place is not None:
                place.give_back()
            self._problem(
                "ring",
                f"cannot use the log ring of {self._description}: {exc}; records a crash "
                "leaves unsent will be counted, not recovered",
            )
            return
        self._ring_place = place

    def _refuse_ring(self, kind: str, why: str) -> None:
        """The sender's ring is not kept (``why``; reports of one ``kind`` are summed up
        together): its records still come on its socket, and its ledger counts what a crash
        leaves unsent."""
        self._metrics.rings_refused += 1
        description = self._description
        self.limited(
            kind,
            f"not keeping the log ring of {description}: {why}; its records still arrive on "
            "its connection, but those a crash of it leaves unsent will be counted lost, not "
            "recovered",
            lambda t: (
                f"not keeping the log rings of {t.events:,} more connections of {description} "
                f"over {t.seconds:.1f} s (the latest: {t.detail}); records a crash leaves "
                "unsent will be counted lost, not recovered"
            ),
            detail=why,
        )

    def _take_ring(self) -> tuple[ReceiverRing | None, RingPlace | None]:
        """The ring, no longer this reader's, and the budget's place it holds: the caller
        closes the one, then frees the other (a place freed before the reading is done would
        let the receiver hold more than its budget says)."""
        ring, self._ring = self._ring, None
        place, self._ring_place = self._ring_place, None
        return ring, place

    def read_end(
        self,
        last: int,
        *,
        reordered: tuple[int, int] | None = None,
        receiver_closed: bool = False,
        upto: int | None = None,
    ) -> SenderEnd:
        """Read the ledger at the sender's end; the caller then asks the ring for the records
        that never arrived (:meth:`recover`, :meth:`with_recovery`), replays them (those it
        does not are counted lost), then calls :meth:`report_end`.

        Counts and reports (in :meth:`report_end`) what the sender accepted after record
        ``last`` (the highest sequence number that arrived in order) but neither sent nor
        dropped at its close deadline, and the drops its ledger holds that no batch told.
        ``reordered``: the sender closed sending by level, its records continuing after the
        first number, the second how many arrived so. ``receiver_closed``: the receiver
        stopped replaying at the end of its drain time; what did not arrive is counted as
        :attr:`DropReason.RECEIVER_CLOSED`, and nothing is recovered (replayed) any more.
        ``upto``: a new connection of the sender took over after this record (its
        ``resumed_after``); what the ledger counts beyond is that connection's to account
        for (see :mod:`isoplug.logs.pending_ends`)."""
        state = self._read_ledger()
        if state is not None and upto is not None and state.accepted > upto:
            state = dataclasses.replace(state, accepted=max(upto, last))
        if state is not None:
            arrived_upto = last if reordered is None else reordered[0] + reordered[1]
            if state.accepted - arrived_upto > self._most_unsent:
                # More unsent than its queue and the kernel could hold: the sender's ledger
                # is false, and what it claims is no loss.
                self.violation(
                    f"the log ledger of {self._description} says it accepted records up to "
                    f"#{state.accepted:,}, after #{arrived_upto:,} arrived: more than the "
                    f"{self._most_unsent:,} records it could have had unsent"
                )
                state = dataclasses.replace(state, accepted=arrived_upto)
            # What no batch told: drops after the last batch, or the last batch itself lost.
            self.sender_drops(state.queue_full)
            self.close_drops(state.dropped_at_close)
        at_close = sum(self._close_drops.values())
        accepted = state.accepted if state is not None else None
        missing = None
        if (
            accepted is not None
            and accepted > last
            and reordered is None
            and not at_close
            and not receiver_closed
            and self._ring is not None
        ):
            missing = (last, accepted)
        return SenderEnd(
            last, state, reordered, at_close, RecoveredRecords(), receiver_closed, missing=missing
        )

    def recover(self, end: SenderEnd) -> Recovery:
        """What the sender's ring gives back of the records ``end`` (:meth:`read_end`'s) says
        never arrived, and the ring closed. Blocking work that reports nothing, for any
        thread: up to a ring's capacity of bytes to read and decode (see
        :mod:`isoplug.logs.ring_recovery`)."""
        ring, place = self._take_ring()
        if ring is None:
            return Recovery()
        try:
            return ring.recover(*end.missing) if end.missing is not None else Recovery()
        finally:
            ring.close()
            if place is not None:
                place.give_back()

    def with_recovery(self, end: SenderEnd, recovery: Recovery) -> SenderEnd:
        """``end`` with what :meth:`recover` gave back, its problem reported, if any."""
        if recovery.problem is not None:
            self._problem(
                "ring",
                f"the log ring of {self._description} could not give back every record: "
                f"{recovery.problem}; what it did not is counted lost",
            )
        return dataclasses.replace(end, recovered=recovery.records, missing=None)

    def report_end(self, end: SenderEnd, *, clean: bool) -> None:
        """Count and report what :meth:`read_end` found (its recovered records replayed);
        ``clean=False`` reports the unclean end too."""
        last, state, at_close = end.last, end.state, end.at_close
        after_seq, arrived = end.reordered if end.reordered is not None else (last, 0)
        accepted = state.accepted if state is not None else None
        recovered = len(end.recovered)
        elsewhere = end.replayed_elsewhere
        lost = (
            max(0, accepted - after_seq - arrived - at_close - recovered - elsewhere)
            if accepted is not None
            else 0
        )
        if lost:
            self._metrics.count_drop(
                DropReason.RECEIVER_CLOSED if end.receiver_closed else DropReason.SENDER_ENDED,
                lost,
            )
        which = (
            f"#{last + 1} to #{accepted}"
            if end.reordered is None and not at_close and not recovered
            else f"after #{after_seq}, {recovered:,} more being recovered from its ring"
            if recovered
            else f"after #{after_seq}, {at_close:,} more being dropped at its close deadline"
        )
        if end.receiver_closed:
            self._receiver_closed(lost, which)
            return
        after = f"record #{last}" if last else "no record at all"
        if end.reordered is not None:
            after += f" in order and {arrived:,} by level"
        if not clean:
            if accepted is None:
                outcome = "records it had not sent yet, if any, are lost"
            elif lost:
                outcome = f"{lost:,} records it had accepted ({which}) are lost"
            else:
                outcome = "every record it had accepted arrived" + (
                    " or was dropped at its close deadline" if at_close else ""
                )
                if recovered:
                    outcome += f", {recovered:,} of them recovered from its shared-memory ring"
                if elsewhere:
                    outcome += (
                        f", {elsewhere:,} of them replayed from another connection of the sender"
                    )
            self._ended(
                f"{self._description}: log connection ended without a goodbye "
                f"{_how_it_ended(state)} after {after}; {outcome}",
                lost,
                counted=accepted is not None,
            )
        elif lost:
            self._ended(
                f"{self._description} ended before sending {lost:,} log records it had accepted "
                f"({which}); they are lost",
                lost,
            )

    def _receiver_closed(self, lost: int, which: str) -> None:
        """The receiver closed with the sender's connection still open (its drain time was up):
        ``lost`` records the sender had accepted (``which``) had not arrived. Without a ledger
        nobody knows how many: the receiver's warning about senders still connected says so."""
        if not lost:
            return
        description = self._description
        text = (
            f"{lost:,} log records {description} had accepted ({which}) had not been read "
            "yet; they are lost"
        )
        self.limited(
            "receiver_closed",
            f"the log receiver closed at the end of its drain time: {text}",
            lambda t: (
                f"the log receiver closed {t.events:,} more connections of {description} at the "
                f"end of its drain time; {t.records:,} records they had accepted are lost (the "
                f"latest: {t.detail})"
            ),
            records=lost,
            detail=text,
        )

    def close_ring(self) -> None:
        """Let go of the sender's ring unread, if :meth:`recover` did not (idempotent)."""
        ring, place = self._take_ring()
        if ring is not None:
            ring.close()
        if place is not None:
            place.give_back()

    def _ended(self, text: str, lost: int, *, counted: bool = True) -> None:
        description = self._description
        if not counted:
            # No ledger (TCP, TLS, one that could not be opened) says what the end took: the
            # last millisecond of a burst, maybe. A loss nobody can rule out is warned about,
            # as every drop is (it was said at INFO, unseen at Python's default WARNING).
            self.limited(
                "sender_ended_uncounted",
                text,
                lambda t: (
                    f"{t.events:,} more log connections of {description} ended over "
                    f"{t.seconds:.1f} s without a goodbye; records they had not sent yet, if "
                    f"any, are lost, and no ledger counts them (the latest: {t.detail})"
                ),
                detail=text,
            )
            return
        if not lost:
            # Nothing lost (a multiprocessing pool's terminate(), a crash the supervisor
            # reports on its own): said, not warned about.
            self.limited(
                "sender_ended_whole",
                text,
                lambda t: (
                    f"{t.events:,} more log connections of {description} ended over "
                    f"{t.seconds:.1f} s without a goodbye; every record they had accepted "
                    f"arrived (the latest: {t.detail})"
                ),
                detail=text,
                level=logging.INFO,
            )
            return
        self.limited(
            "sender_ended",
            text,
            lambda t: (
                f"{t.events:,} more log connections of {description} ended over "
                f"{t.seconds:.1f} s without a goodbye or with records unsent; "
                f"{t.records:,} records they had accepted are lost, as far as their ledgers "
                f"tell (the latest: {t.detail})"
            ),
            records=lost,
            detail=text,
        )

    def _read_ledger(self) -> LedgerState | None:
        """What the sender's ledger says; None if unknown."""
        ledger, self._ledger = self._ledger, None
        if ledger is None:
            return None
        try:
            return ledger.read()
        except OSError as exc:
            self._problem("ledger", f"cannot read the log ledger of {self._description}: {exc}")
            return None
        finally:
            ledger.close()


def _how_it_ended(state: LedgerState | None) -> str:
    """Why a connection ended without a goodbye, as far as the sender's ledger tells."""
    flags = state.flags if state is not None else 0
    if flags & CLOSE_DEADLINE_PASSED:
        return "(its close deadline passed with the receiver behind)"
    if flags & CLOSING:
        return "while it was closing (killed, or its exit cut the close short)"
    return "(crash or kill)"
