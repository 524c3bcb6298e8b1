"""What a sender claims about its own losses, and how the receiver bounds it: the part of a
:class:`~isoplug.logs.replay_reports.ReplayReports` that counts (or refuses) its drop totals,
its close-deadline drops and its sequence gaps.

An honest sender's claims are bounded (:mod:`isoplug.logs.limits`): a sequence gap by what it
could have had in flight, and all the gaps of the connections that share a
:class:`~isoplug.logs.limits.TransitLosses` (a runner's, a receiver's) by that too, in all; a
ledger or a close by what its queue and the kernel could hold; its queue-full totals by what a
process can drop in the time it has lived. Past a bound the claim is a protocol violation
(``LogMetrics.sequence_violations``), reported as such and never counted as records lost; so
are sequence numbers that go back on one connection.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping

from isoplug.logs.ledger_reports import SenderLedgerReports
from isoplug.logs.limits import (
    MAX_QUEUE_BYTES,
    TransitLosses,
    most_dropped,
    most_in_flight,
    most_unsent,
)
from isoplug.logs.metrics import DropReason
from isoplug.logs.report_throttle import MAX_LEVELS, OTHER_LEVELS, by_level
from isoplug.transport.process_tree import stat_fields

__all__ = ["SenderClaimReports", "process_age"]

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
#: Drop totals at levels outside this range are no level a record has (see the replayer's
#: clamp): they are summed as "other levels". NOTSET (0) counts records lost with a connection.
_MAX_DROP_LEVEL = 100


class SenderClaimReports(SenderLedgerReports):
    """The claims' part of the replayer's reports; the state is set up, and the reporting
    done, by :class:`~isoplug.logs.replay_reports.ReplayReports`."""

    _sender_drops: dict[int, int]
    _transit_losses: TransitLosses
    _sender_born: float
    #: The widest sequence gap this sender can honestly cause (see isoplug.logs.limits).
    most_in_flight: int

    def sender_drops(self, totals: Mapping[int, int]) -> None:
        """Count and report what the sender's running drop totals (by level) add since its last
        batch (or its ledger, at the end), levels folded as :func:`_increase` says."""
        new = _increase(self._sender_drops, totals)
        if not new:
            return
        claimed = sum(self._sender_drops.values())
        lived = time.monotonic() - self._sender_born
        if claimed > most_dropped(lived):
            # Every record it drops costs it a call of handle(): more than its life allows is
            # a forged count, no loss (and its later totals, above it still, are no more).
            self.violation(
                f"{self._description} says it dropped {claimed:,} log records in all, more than "
                f"the {most_dropped(lived):,} a process can drop in the {lived:,.1f} s it has "
                "lived"
            )
            return
        lost = new.pop(logging.NOTSET, 0)
        description = self._description
        if new:
            count = sum(new.values())
            for level, dropped in new.items():
                self._metrics.count_drop(
                    DropReason.SENDER_QUEUE_FULL, dropped, level if level > 0 else None
                )
            self.limited(
                "queue_full",
                f"{description} says it dropped {count:,} log records because its log queue was "
                f"full ({by_level(new)}); it logs faster than they can be delivered",
                lambda t: (
                    f"{description} says it dropped {t.records:,} more log records because its log "
                    f"queue was full ({by_level(t.levels)}), told in {t.events:,} batches over "
                    f"{t.seconds:.1f} s; it logs faster than they can be delivered"
                ),
                records=count,
                levels=new,
            )
        if lost:
            self._metrics.count_drop(DropReason.SENDER_CONNECTION_LOST, lost)
            self.limited(
                "connection_lost",
                f"{description} says it lost {lost:,} log records in a connection failure",
                lambda t: (
                    f"{description} says it lost {t.records:,} more log records in connection "
                    f"failures, told in {t.events:,} batches over {t.seconds:.1f} s"
                ),
                records=lost,
            )

    def close_drops(self, totals: Mapping[int, int]) -> None:
        """Count and report what the sender's totals of records dropped at its close deadline
        (by level) add since they were last told."""
        new = _increase(self._close_drops, totals)
        if not new:
            return
        count = sum(new.values())
        if count > self._most_unsent:
            # Accepted records: no more than its queue and the kernel could hold.
            self.violation(
                f"{self._description} says it closed with {count:,} log records unsent, more "
                f"than the {self._most_unsent:,} it could have had"
            )
            return
        for level, dropped in new.items():
            self._metrics.count_drop(
                DropReason.SENDER_CLOSE_DEADLINE, dropped, level if level > 0 else None
            )
        description = self._description
        self.limited(
            "dropped_at_close",
            f"{description} says it closed with {count:,} log records unsent when its close "
            f"deadline passed ({by_level(new)}); they are dropped: it logged faster than they "
            "could be delivered, and sent WARNING and above first",
            lambda t: (
                f"{description} says it closed {t.events:,} more times with log records unsent "
                f"at its close deadline, {t.records:,} in all ({by_level(t.levels)})"
            ),
            records=count,
            levels=new,
        )

    def announced_queue(self, queue_bytes: int) -> None:
        """The sender's first batch said its queue holds ``queue_bytes``: what it can have
        in flight, and so lose, is bounded by that from now on (a size no sender may have is
        a violation, and the bounds stay any sender's)."""
        if not 0 < queue_bytes <= MAX_QUEUE_BYTES:
            self.violation(
                f"{self._description} announced a log queue of {queue_bytes:,} bytes, which no "
                f"sender may have (at most {MAX_QUEUE_BYTES:,})"
            )
            return
        self.most_in_flight = most_in_flight(queue_bytes)
        self._most_unsent = most_unsent(queue_bytes)

    def violation(self, text: str) -> None:
        """Count (:attr:`LogMetrics.sequence_violations`) and report a claim of the sender's
        that no honest sender can make; ``text`` says which (the host's words, quoting only
        numbers). Never counted as records lost."""
        self._metrics.sequence_violations += 1
        description = self._description
        consequence = (
            "a protocol violation by the sender (broken, or forging its accounts), not counted "
            "as log records lost"
        )
        self.limited(
            "sequence_violation",
            f"{text}: {consequence}",
            lambda t: (
                f"{t.events:,} more protocol violations by {description} over "
                f"{t.seconds:.1f} s, not counted as log records lost (the latest: {t.detail})"
            ),
            detail=text,
        )

    def sequence_jump(self, expected: int, seq: int) -> None:
        """Report sequence numbers that skipped from ``expected`` to ``seq``, further than
        the sender could have had records in flight: no loss, a violation."""
        self.violation(
            f"the log sequence numbers of {self._description} jumped from #{expected - 1:,} to "
            f"#{seq:,}, past the {self.most_in_flight:,} records it could have had in flight"
        )

    def sequence_back(self, last: int, seq: int) -> None:
        """Report a record numbered ``seq`` after ``#last`` arrived on the same connection: an
        honest sender's numbers only grow, so a violation (the record is still replayed)."""
        self.violation(
            f"the log sequence numbers of {self._description} went back from #{last:,} to "
            f"#{seq:,} on one connection"
        )

    def sequence_gap(self, expected: int, seq: int) -> None:
        """Count and report the records ``expected`` to ``seq - 1``, which never arrived, while
        the gaps of the connections sharing its :class:`~isoplug.logs.limits.TransitLosses`
        count no more in all than one connection could have had in flight; past that, a
        violation (see :meth:`sequence_jump`)."""
        missing = seq - expected
        if not self._transit_losses.take(missing, self.most_in_flight):
            self.violation(
                f"the log sequence numbers of {self._description} skipped #{expected:,} to "
                f"#{seq - 1:,}, past the {self.most_in_flight:,} records in all its log "
                "connections could have had in flight and lost"
            )
            return
        self._metrics.count_drop(DropReason.LOST_IN_TRANSIT, missing)
        description = self._description
        self.limited(
            "sequence_gap",
            f"{missing:,} log records from {description} never arrived "
            f"(sequence numbers {expected} to {seq - 1})",
            lambda t: (
                f"{t.records:,} more log records from {description} never arrived, in "
                f"{t.events:,} gaps over {t.seconds:.1f} s (the latest: sequence numbers "
                f"{t.detail})"
            ),
            records=missing,
            detail=f"{expected} to {seq - 1}",
        )


def process_age(pid: int | None) -> float:
    """Seconds since process ``pid`` started, as ``/proc`` tells; 0 when unknown."""
    fields = stat_fields(pid) if pid is not None else None
    if fields is None:
        return 0.0
    try:
        started = int(fields[19]) / _CLOCK_TICKS
    except (IndexError, ValueError):
        return 0.0
    # /proc's start times count from boot, as CLOCK_BOOTTIME does.
    return max(0.0, time.clock_gettime(time.CLOCK_BOOTTIME) - started)


def _increase(known: dict[int, int], totals: Mapping[int, int]) -> dict[int, int]:
    """What the running ``totals`` (by level) add to ``known`` (updated). Levels past
    :data:`~isoplug.logs.report_throttle.MAX_LEVELS`, or that no record has, are summed as
    "other levels": a sender making levels up keeps no more state here, and its report no
    longer, than one that does not."""
    folded: dict[int, int] = {}
    room = MAX_LEVELS - len(known)
    for level, total in totals.items():
        key = level
        if key not in known and key != logging.NOTSET:
            if 0 < key <= _MAX_DROP_LEVEL and room > 0:
                room -= 1
            else:
                key = OTHER_LEVELS
        folded[key] = folded.get(key, 0) + total
    new: dict[int, int] = {}
    for level, total in folded.items():
        previous = known.get(level, 0)
        if total > previous:
            new[level] = total - previous
            known[level] = total
    return new
