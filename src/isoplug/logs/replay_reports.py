"""What a :class:`~isoplug.logs.replay.LogReplayer` says about its sender, and the accounting
at the sender's end.

Reports are WARNING records on the ``<prefix>`` logger itself, stamped with the identity and
``isoplug_report``, so they reach the same handlers as the sender's records. A logger of the
replayer found disabled (``logging.config`` disables every existing logger its configuration
does not name) is enabled again, and that is reported: otherwise its records, and the reports
themselves, would vanish unseen.

At the end, the sender's sequence ledger (:mod:`isoplug.logs.ledger`, announced in its first
batch) says how many records it had accepted; those past the last one that arrived are counted
lost (``DropReason.SENDER_ENDED``) and reported, however the sender ended.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from isoplug.logs.ledger import LedgerError, ReceiverLedger
from isoplug.logs.metrics import DropReason, LogMetrics

__all__ = ["ReplayReports"]


class ReplayReports:
    """The reports of one replayer, and its sender's ledger; see the module docstring.

    ``known`` is the replayer's sender name -> (logger, identity) map, whose loggers are
    enabled again along with the one found disabled; ``sender_pid`` is the sender's pid as its
    connection vouches for it (peer credentials), or None."""

    def __init__(
        self,
        prefix: str,
        *,
        identity: dict[str, Any],
        description: str,
        metrics: LogMetrics,
        known: Mapping[str, tuple[logging.Logger, dict[str, Any]]],
        sender_pid: int | None,
    ) -> None:
        self._prefix = prefix
        self._identity = identity
        self._description = description
        self._metrics = metrics
        self._known = known
        self._logger = logging.getLogger(prefix) if prefix else logging.getLogger()
        self._sender_pid = sender_pid
        self._ledger: ReceiverLedger | None = None
        self._ledger_announced = False

    def report(self, text: str) -> None:
        """Say ``text`` in a WARNING record on the ``<prefix>`` logger."""
        if self._logger.disabled:
            # Its reports would vanish (see enable_again, which reports through here).
            self.enable_again(self._logger)
        record = self._logger.makeRecord(
            self._logger.name, logging.WARNING, "(isoplug)", 0, text, (), None
        )
        record.__dict__.update(self._identity)
        record.__dict__["isoplug_report"] = True
        self._logger.handle(record)

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

    # -- the sender's ledger ------------------------------------------------------------------

    def open_ledger(self, fd: int) -> None:
        """Open the ledger a sender announced (its first batch); see :mod:`isoplug.logs.ledger`."""
        if self._ledger_announced:
            self.report(f"{self._description} announced a second log ledger; kept the first")
            return
        self._ledger_announced = True
        if self._sender_pid is None:
            self.report(
                f"{self._description} announced a log ledger, but its connection does not say "
                "which process it is; a crash will be reported without a count of lost records"
            )
            return
        try:
            self._ledger = ReceiverLedger.open(self._sender_pid, fd)
        except FileNotFoundError:
            # Already gone: sender_ended() reports the unclean end, without a count.
            return
        except (LedgerError, OSError) as exc:
            self.report(
                f"cannot use the log ledger of {self._description}: {exc}; a crash will be "
                "reported without a count of lost records"
            )

    def sender_ended(self, last: int, *, clean: bool) -> None:
        """Count and report what the sender accepted after record ``last`` (the highest sequence
        number that arrived) but never sent; ``clean=False`` reports the unclean end too."""
        accepted = self._read_ledger()
        lost = accepted - last if accepted is not None and accepted > last else 0
        if lost:
            self._metrics.count_drop(DropReason.SENDER_ENDED, lost)
        after = f"record #{last}" if last else "no record at all"
        if not clean:
            if accepted is None:
                outcome = "records it had not sent yet, if any, are lost"
            elif lost:
                outcome = f"{lost:,} records it had accepted (#{last + 1} to #{accepted}) are lost"
            else:
                outcome = "every record it had accepted arrived"
            self.report(
                f"{self._description}: log connection ended without a goodbye (crash or kill) "
                f"after {after}; {outcome}"
            )
        elif lost:
            self.report(
                f"{self._description} ended before sending {lost:,} log records it had accepted "
                f"(#{last + 1} to #{accepted}); they are lost"
            )

    def _read_ledger(self) -> int | None:
        """The highest sequence number the sender accepted, from its ledger; None if unknown."""
        ledger, self._ledger = self._ledger, None
        if ledger is None:
            return None
        try:
            return ledger.read()
        except OSError as exc:
            self.report(f"cannot read the log ledger of {self._description}: {exc}")
            return None
        finally:
            ledger.close()
