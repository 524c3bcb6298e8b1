"""Aggregated, rate-limited reports about a sender: :class:`ReportThrottle`.

A sender controls how often the host has something to say about it: every batch may carry a
sequence gap, new drop totals, a malformed record, a second ledger. One report per occurrence
would let it flood the host's log (thousands of WARNINGs a second) through reports alone, past
the rate limit that holds for its records. So each *kind* of report goes out at once the first
time, and afterwards at most once per interval: what happened meanwhile is folded into one
summary (how many occurrences, how many records, by level, the latest detail), sent when the
interval is over. Nothing is lost from the accounting: the summaries' totals add up, and the
log metrics count every record either way.

One throttle serves one sender, or every connection of one runner (a plugin opening
connections of its own, or forking, does not multiply the reports). Kinds are names from the
code, never from the sender, so the state is bounded: per kind, one tally of fixed size.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Mapping

__all__ = [
    "OTHER_LEVELS",
    "ReportThrottle",
    "Tally",
    "by_level",
    "fold_levels",
    "report_refusal",
]

#: The key under which :func:`fold_levels` counts levels past its cap.
OTHER_LEVELS = -1
#: Distinct levels a tally (or a sender's drop totals) keeps apart; the rest are "other levels".
MAX_LEVELS = 16


@dataclasses.dataclass
class Tally:
    """What one kind of report folded in since it last went out."""

    #: Occurrences folded in.
    events: int = 0
    #: Log records they concern (lost, dropped, rejected...), in all.
    records: int = 0
    #: ``records`` by level, at most :data:`MAX_LEVELS` of them plus :data:`OTHER_LEVELS`.
    levels: dict[int, int] = dataclasses.field(default_factory=dict)
    #: The latest occurrence's detail (the caller keeps it short).
    detail: str = ""
    #: Seconds since the kind last went out, when the summary is made.
    seconds: float = 0.0


#: Makes the text of a summary from its tally.
Summary = Callable[[Tally], str]
#: Puts a report's text into the log.
Emit = Callable[[str], None]


class _Kind:
    __slots__ = ("emit", "last", "pending", "summary")

    def __init__(self) -> None:
        self.last = -float("inf")
        self.pending: Tally | None = None
        self.summary: Summary | None = None
        self.emit: Emit | None = None


class ReportThrottle:
    """Aggregates and rate-limits reports by kind; see the module docstring. Thread-safe.

    ``timer=True`` sends a pending summary when its interval ends, from a timer thread, even if
    nothing more happens; without it, pending summaries wait for the next :meth:`report` or
    :meth:`flush` (the owner flushes them at the end, with ``force=True``). Reports are emitted
    outside the throttle's lock, in the thread that made them due."""

    def __init__(
        self,
        interval: float,
        *,
        timer: bool = False,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.interval = interval
        self._use_timer = timer
        self._clock = clock
        self._lock = threading.Lock()
        self._kinds: dict[str, _Kind] = {}
        self._timer: threading.Timer | None = None
        self._closed = False
        #: True while some summary is pending: read without the lock, so that a caller with
        #: nothing pending (the usual case, once per batch) pays no more than this.
        self.waiting = False

    def report(
        self,
        kind: str,
        text: str,
        *,
        summary: Summary,
        emit: Emit,
        records: int = 0,
        levels: Mapping[int, int] | None = None,
        detail: str = "",
    ) -> None:
        """Report ``text`` now if ``kind`` went out no sooner than an interval ago; otherwise
        fold this occurrence (``records``, ``levels``, ``detail``) into the kind's next summary,
        made by ``summary`` and put out by ``emit`` (the latest ones given)."""
        with self._lock:
            state = self._kinds.get(kind)
            if state is None:
                state = self._kinds[kind] = _Kind()
            now = self._clock()
            due = now - state.last >= self.interval
            if due and state.pending is None:
                state.last = now
                out = [(emit, text)]
            else:
                tally = state.pending = state.pending or Tally()
                tally.events += 1
                tally.records += records
                if levels:
                    fold_levels(levels, tally.levels)
                tally.detail = detail
                state.summary, state.emit = summary, emit
                self.waiting = True
                out = self._take_due(now, force=False) if due else []
                self._arm(now)
        for emit_text, said in out:
            emit_text(said)

    def flush(self, *, force: bool = False) -> None:
        """Send the summaries whose interval is over (``force``: every pending one)."""
        with self._lock:
            now = self._clock()
            out = self._take_due(now, force=force)
            self._arm(now)
        for emit, text in out:
            emit(text)

    def close(self) -> None:
        """Send every pending summary; no timer runs after this."""
        with self._lock:
            self._closed = True
            timer, self._timer = self._timer, None
        if timer is not None:
            timer.cancel()
        self.flush(force=True)

    def pending(self) -> dict[str, Tally]:
        """A copy of the tallies not reported yet, by kind (for tests and diagnostics)."""
        with self._lock:
            return {
                kind: dataclasses.replace(state.pending, levels=dict(state.pending.levels))
                for kind, state in self._kinds.items()
                if state.pending is not None
            }

    def _take_due(self, now: float, *, force: bool) -> list[tuple[Emit, str]]:
        out: list[tuple[Emit, str]] = []
        for state in self._kinds.values():
            tally = state.pending
            if tally is None or not (force or now - state.last >= self.interval):
                continue
            assert state.summary is not None and state.emit is not None
            tally.seconds = now - state.last
            out.append((state.emit, state.summary(tally)))
            state.pending = None
            state.last = now
        self.waiting = any(state.pending is not None for state in self._kinds.values())
        return out

    def _arm(self, now: float) -> None:
        """Start the timer for the earliest pending summary, if it has none (lock held)."""
        if not self._use_timer or self._closed or self._timer is not None:
            return
        due = [s.last + self.interval for s in self._kinds.values() if s.pending is not None]
        if not due:
            return
        timer = threading.Timer(max(0.0, min(due) - now), self._on_timer)
        timer.daemon = True
        timer.name = "isoplug-report-timer"
        self._timer = timer
        timer.start()

    def _on_timer(self) -> None:
        with self._lock:
            self._timer = None
            if self._closed:
                return
        self.flush()


def fold_levels(counts: Mapping[int, int], into: dict[int, int]) -> None:
    """Add ``counts`` to ``into``, keeping at most :data:`MAX_LEVELS` levels apart (the first
    ones seen): the others are added up under :data:`OTHER_LEVELS`."""
    for level, count in counts.items():
        if level in into or (level != OTHER_LEVELS and len(into) < MAX_LEVELS):
            into[level] = into.get(level, 0) + count
        else:
            into[OTHER_LEVELS] = into.get(OTHER_LEVELS, 0) + count


def by_level(counts: Mapping[int, int]) -> str:
    """``"DEBUG: 5, INFO: 2"``; levels past the cap as ``"other levels: n"``, last."""
    parts = [
        f"{logging.getLevelName(level)}: {count:,}"
        for level, count in sorted(counts.items())
        if level != OTHER_LEVELS
    ]
    if OTHER_LEVELS in counts:
        parts.append(f"other levels: {counts[OTHER_LEVELS]:,}")
    return ", ".join(parts)


def report_refusal(throttle: ReportThrottle, text: str, emit: Emit) -> None:
    """A connection a listener refused after reading its hello (wrong role, unknown runner):
    said at once the first time, then summed up once per interval. Whoever can connect can
    repeat it as fast as connections open, so it must not cost the host a line each time."""
    throttle.report(
        "refused_connection",
        text,
        summary=lambda tally: (
            f"refused {tally.events} more connection(s) in the last {tally.seconds:.0f} s "
            f"(the latest: {tally.detail})"
        ),
        emit=emit,
        detail=text,
    )
