"""What a :class:`~isoplug.logs.replay.LogReplayer` says about its sender, and the accounting
at the sender's end.

Reports are WARNING records on the ``<prefix>`` logger itself, stamped with the identity and
``isoplug_report``, so they reach the same handlers as the sender's records. A logger of the
replayer found disabled (``logging.config`` disables every existing logger its configuration
does not name) is enabled again, and that is reported: otherwise its records, and the reports
themselves, would vanish unseen.

At the end, the sender's sequence ledger (:mod:`isoplug.logs.ledger`, announced in its first
batch) says how many records it had accepted and how many it dropped, by level
(:mod:`isoplug.logs.ledger_reports`): what arrived and what is reported add up to what the
sender was given.

Whatever a sender can make happen again and again (sequence gaps, drop totals, malformed or
unprintable records, ledger announcements, its connections' ends, rate-limit drops) is reported
through :meth:`ReplayReports.limited`: at once the first time, then summed up at most once per
interval by kind (:mod:`isoplug.logs.report_throttle`), per sender or, in a host, per runner.
Every report is capped at :data:`MAX_REPORT_CHARS`, and what is kept per sender is bounded (the
drop totals at :data:`~isoplug.logs.report_throttle.MAX_LEVELS` levels, the rest summed).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from isoplug.logs.claim_reports import SenderClaimReports, process_age
from isoplug.logs.ledger import ReceiverLedger
from isoplug.logs.limits import (
    TransitLosses,
    most_in_flight,
    most_unsent,
)
from isoplug.logs.metrics import LogMetrics
from isoplug.logs.record_factory import FactoryFailed, propagate_failure, report_record
from isoplug.logs.report_throttle import (
    ReportThrottle,
    Summary,
    by_level,
)
from isoplug.wire.sanitize import cap_text, clean_text

__all__ = ["MAX_REPORT_CHARS", "ReplayReports", "handled_level"]

#: The longest report; its own text is the host's, but it quotes numbers, names and errors.
MAX_REPORT_CHARS = 2000
#: The longest detail (an error text, a range) a summary quotes from the latest occurrence.
_DETAIL_CHARS = 300


def handled_level(prefix: str) -> int:
    """The lowest level a record under ``prefix`` may be handled at in this process: the prefix
    logger's effective level, or a lower one set on a logger under it."""
    level = (logging.getLogger(prefix) if prefix else logging.getLogger()).getEffectiveLevel()
    under = f"{prefix}." if prefix else ""
    # list(): another thread may add a logger meanwhile.
    for name, logger in list(logging.Logger.manager.loggerDict.items()):
        if isinstance(logger, logging.Logger) and logger.level and name.startswith(under):
            level = min(level, logger.level)
    return level


class ReplayReports(SenderClaimReports):
    """The reports of one replayer, and its sender's ledger; see the module docstring.

    ``known`` is the replayer's sender name -> (logger, identity) map, whose loggers are
    enabled again along with the one found disabled; ``sender_pid`` is the sender's pid as its
    connection vouches for it (peer credentials), or None. ``throttle`` is shared by the
    connections of one runner; without one, this sender gets its own (``interval``), and
    :meth:`flush` at its end sends every pending summary. ``handler_failed`` is told when a
    host handler raises on a report (it counts and reports that, see
    :mod:`isoplug.logs.handler_errors`); ``factory_failed`` when the record factory fails on
    a report, which is then made without it (:mod:`isoplug.logs.record_factory`). Without
    them, the exception propagates."""

    def __init__(
        self,
        prefix: str,
        *,
        identity: dict[str, Any],
        description: str,
        metrics: LogMetrics,
        known: Mapping[str, tuple[logging.Logger, dict[str, Any]]],
        sender_pid: int | None,
        interval: float = 1.0,
        throttle: ReportThrottle | None = None,
        handler_failed: Callable[[Exception, logging.Logger], None] | None = None,
        factory_failed: FactoryFailed | None = None,
        transit_losses: TransitLosses | None = None,
        tell_level: bool = True,
    ) -> None:
        self._prefix = prefix
        self._tell_level = tell_level
        self._handler_failed = handler_failed
        self._factory_failed = factory_failed or propagate_failure
        self._identity = identity
        self._description = description
        self._metrics = metrics
        self._known = known
        self._logger = logging.getLogger(prefix) if prefix else logging.getLogger()
        self._sender_pid = sender_pid
        self._ledger: ReceiverLedger | None = None
        self._ledger_announced = False
        self._owns_throttle = throttle is None
        self._throttle = throttle if throttle is not None else ReportThrottle(interval)
        # The sender's drop totals so far, by level: at most MAX_LEVELS of them, NOTSET (lost
        # with a connection) and OTHER_LEVELS.
        self._sender_drops: dict[int, int] = {}
        # The same for records it dropped at its close deadline (LogBatch.dropped_at_close).
        self._close_drops: dict[int, int] = {}
        #: The widest sequence gap, and the most records unsent at its end, that this sender
        #: can honestly cause (see isoplug.logs.limits): any sender's until it announces its
        #: queue (announced_queue).
        self.most_in_flight = most_in_flight(None)
        self._most_unsent = most_unsent(None)
        # What the sequence gaps of this connection (and those sharing it) count lost, in all.
        self._transit_losses = transit_losses if transit_losses is not None else TransitLosses()
        # Since when (time.monotonic()) the sender has lived, for what it can have dropped: its
        # process's start as the kernel tells it, or (no pid, no /proc) this connection's.
        self._sender_born = time.monotonic() - process_age(sender_pid)

    def wanted_level(self) -> int | None:
        """The lowest level a record under the prefix may be handled at here: the prefix
        logger's effective level, or a lower one set on a logger under it (None when this
        replayer does not tell it: a runner's levels are the host's to set)."""
        return handled_level(self._prefix) if self._tell_level else None

    def report(self, text: str, level: int = logging.WARNING) -> None:
        """Say ``text`` (capped at :data:`MAX_REPORT_CHARS`) in a record on the ``<prefix>``
        logger, now: a WARNING, unless ``level`` says otherwise (INFO for what costs no
        record)."""
        if self._logger.disabled:
            # Its reports would vanish (see enable_again, which reports through here).
            self.enable_again(self._logger)
        record = report_record(
            self._logger, level, cap_text(text, MAX_REPORT_CHARS), self._factory_failed
        )
        record.__dict__.update(self._identity)
        record.__dict__["isoplug_report"] = True
        if self._handler_failed is None:
            self._logger.handle(record)
            return
        try:
            self._logger.handle(record)
        except Exception as error:
            # A host handler that raises costs this report, never the connection.
            self._handler_failed(error, self._logger)

    def enable_again(self, logger: logging.Logger) -> bool:
        """Enable ``logger`` and every other logger of this replayer that has been disabled,
        and say so in one warning; returns True.

        ``logging.config``'s ``dictConfig()`` and ``fileConfig()`` disable every existing logger
        that their configuration does not name (nor a child of one it names), unless given
        ``disable_existing_loggers=False``: a host that configures logging after a plugin has
        logged would lose every later record of that plugin, counted as filtered and shown
        nowhere. These loggers are isoplug's, made for the plugin's records, and such a blanket
        disable is hardly ever aimed at them; the warning says how to silence a plugin for real.
        """
        loggers = {logger.name: logger, self._logger.name: self._logger}
        for known, _ in self._known.values():
            loggers.setdefault(known.name, known)
        disabled = sorted(name for name, known in loggers.items() if known.disabled)
        for name in disabled:
            loggers[name].disabled = False
        shown = ", ".join(disabled[:5]) + (f" and {len(disabled) - 5} more" if disabled[5:] else "")
        example = self._prefix or logger.name
        self.report(
            f"the logger(s) {shown} of {self._description} had been disabled, so its records "
            "reached no handler; isoplug enabled them again. logging.config's dictConfig() and "
            "fileConfig() disable every existing logger their configuration does not name, "
            "unless given disable_existing_loggers=False. To silence a plugin, set the level of "
            f"its logger: logging.getLogger({example!r}).setLevel(logging.CRITICAL + 1)"
        )
        return True

    # -- reports a sender can repeat ----------------------------------------------------------

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
        """Report ``text`` now if no report of ``kind`` went out within the interval; else fold
        this occurrence into the kind's next summary (``summary`` makes its text from the
        :class:`~isoplug.logs.report_throttle.Tally`: occurrences, ``records`` and ``levels``
        summed, the latest ``detail``, capped here), both at ``level``. ``kind`` is a name from
        the code, never from the sender: it keys the throttle's state. For any report a sender
        can trigger again and again."""
        self._throttle.report(
            kind,
            text,
            summary=summary,
            emit=self.report if level == logging.WARNING else _at_level(self.report, level),
            records=records,
            levels=levels,
            detail=cap_text(detail, _DETAIL_CHARS),
        )

    def flush(self, *, final: bool = False) -> None:
        """Send the summaries that are due; ``final`` (the sender is gone): every pending one,
        unless the throttle is shared (its owner, or its timer, sends those)."""
        throttle = self._throttle
        if throttle.waiting:
            throttle.flush(force=final and self._owns_throttle)

    def resumed(self, after: int, lost: int) -> None:
        """The sender reconnected after its connection broke, having lost ``lost`` records
        meanwhile; its records continue after ``after``."""
        description = self._description
        lost_text = f"{lost:,} log records" if lost else "no log record"
        self.limited(
            "resumed",
            f"{description} reconnected after its log connection broke; it lost {lost_text} "
            f"meanwhile, and its records continue after #{after}",
            lambda t: (
                f"{description} reconnected {t.events:,} more times over {t.seconds:.1f} s "
                f"after its log connection broke; it lost {t.records:,} log records meanwhile"
            ),
            records=lost,
        )

    def resume_ignored(self) -> None:
        """A batch after the first said the connection resumes another."""
        description = self._description
        self.limited(
            "resume_ignored",
            f"{description} said its log connection resumes an earlier one, after its "
            "first batch; ignored",
            lambda t: f"{description} said so {t.events:,} more times over {t.seconds:.1f} s",
        )

    def not_replayed(self, dropped: Mapping[int, int]) -> None:
        """The receiver's drain time ended before it replayed these records (by level) that
        it had received (already counted)."""
        count = sum(dropped.values())
        description = self._description
        self.limited(
            "receiver_closed_received",
            f"the log receiver closed at the end of its drain time before replaying {count:,} "
            f"log records it had received from {description} ({by_level(dropped)}); they are "
            "lost",
            lambda t: (
                f"the log receiver closed before replaying {t.records:,} more log records it "
                f"had received from {description} ({by_level(t.levels)})"
            ),
            records=count,
            levels=dropped,
        )

    def malformed(self, bad: int, problem: str) -> None:
        """Report ``bad`` records rejected (already counted); ``problem`` is the decoder's
        text, which may quote the sender's bytes."""
        problem = clean_text(problem, _DETAIL_CHARS)
        description = self._description
        self.limited(
            "malformed",
            f"rejected {bad} malformed log record(s) from {description}: {problem}",
            lambda t: (
                f"rejected {t.records:,} more malformed log record(s) from {description} in "
                f"{t.events:,} batches over {t.seconds:.1f} s (the latest: {t.detail})"
            ),
            records=bad,
            detail=problem,
        )

    def repaired(self, fixed: str) -> None:
        """Report a record whose ``fixed`` fields (already counted) no formatter can print."""
        description = self._description
        self.limited(
            "repaired",
            f"{description} sent a record with fields no formatter can print ({fixed}); "
            "replaced by the arrival time and line 0 (the log metrics count every repair)",
            lambda t: (
                f"{description} sent {t.events:,} more records with fields no formatter can "
                f"print over {t.seconds:.1f} s (the latest: {t.detail}); replaced by the "
                "arrival time and line 0"
            ),
            records=1,
            detail=fixed,
        )

    def rebuild_failed(self, error: str) -> None:
        """Report an exception that could not be rebuilt (``error``: why, sanitized)."""
        description = self._description
        self.limited(
            "rebuild_failed",
            f"cannot rebuild an exception logged by {description} ({error}); its records "
            "show the traceback as text",
            lambda t: (
                f"cannot rebuild {t.events:,} more exceptions logged by {description} over "
                f"{t.seconds:.1f} s (the latest: {t.detail}); their records show the "
                "traceback as text"
            ),
            records=1,
            detail=error,
        )

    def rate_drops(self, drops: Mapping[int, int], rate: float | None) -> None:
        """Report records the rate limit dropped (already counted), by level."""
        count = sum(drops.values())
        description = self._description
        limit = f"the limit is {rate or 0:,.0f} records/s"
        self.limited(
            "rate_limited",
            f"rate limit: dropped {count:,} log records from {description} "
            f"({by_level(drops)}); {limit}",
            lambda t: (
                f"rate limit: dropped {t.records:,} more log records from {description} "
                f"({by_level(t.levels)}) over {t.seconds:.1f} s; {limit}"
            ),
            records=count,
            levels=drops,
        )

    def logger_budget_spent(self, fallback: str, *, process_wide: bool = False) -> None:
        """Count and report a record put on ``fallback``: its logger name would have been a
        new host logger past the sender's :class:`~isoplug.logs.routing.LoggerBudget`, or
        (``process_wide``) past the bound of all senders in this process together."""
        self._metrics.over_logger_budget += 1
        description = self._description
        why = (
            "so that a sender inventing names cannot grow the host's registry of loggers "
            "without bound"
        )
        if process_wide:
            # A kind of its own: said at once even when the sender's share was said already.
            kind = "process_logger_budget"
            text = (
                f"{description} logs on a new logger name, but the loggers isoplug makes for "
                "senders' records in this process (all hosts, runners and receivers together) "
                "are at their bound; records on new names are logged on "
                f"{fallback} instead, {why} (the bound: isoplug.logs.set_process_logger_budget)"
            )
        else:
            kind = "logger_budget"
            text = (
                f"{description} logs on more new logger names than the host makes loggers for; "
                f"records on a new name are logged on {fallback} instead, {why}"
            )
        self.limited(
            kind,
            text,
            lambda t: (
                f"{t.records:,} more records of {description} on new logger names were logged "
                f"on {fallback} over {t.seconds:.1f} s, {why}"
            ),
            records=1,
        )

    def _problem(self, kind: str, text: str) -> None:
        """A report about the sender's connection or ledger, which each connection can make
        once or so: limited, so that a runner opening connections without end cannot flood."""
        description = self._description
        self.limited(
            kind,
            text,
            lambda t: (
                f"{t.events:,} more such reports about {description} over {t.seconds:.1f} s; "
                f"the latest: {t.detail}"
            ),
            detail=text,
        )


def _at_level(report: Callable[[str, int], None], level: int) -> Callable[[str], None]:
    def report_at_level(text: str) -> None:
        report(text, level)

    return report_at_level
