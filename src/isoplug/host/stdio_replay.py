"""The replay thread of a runner's stdio: records from the backlog into the host's logging.

The replay thread takes records from the backlog (:mod:`isoplug.host.stdio_backlog`) and
replays them with the runner's :class:`~isoplug.logs.LogReplayer` (see
:class:`StdioDestination`): the same logger mapping, sanitizing, caps, rate limit, metrics and
identity as the runner's log records, on ``plugin.<runner id>.stdout`` / ``.stderr``, with
``record.process`` the runner's pid. It alone updates the metrics: records the reader or the
backlog dropped are counted here as :attr:`~isoplug.logs.DropReason.HOST_BACKLOG`, those still
unreplayed when the runner's close stopped waiting for them (:meth:`StdioReplay.abandon`) as
:attr:`~isoplug.logs.DropReason.RECEIVER_CLOSED`, each reported in one WARNING per report
interval on the plugin's logger.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable

from isoplug.host.stderr_tail import StderrTail
from isoplug.host.stdio_backlog import Backlog, Drops, Entry
from isoplug.log_guard import guarded_logger
from isoplug.logs import DropReason, LogReplayer
from isoplug.logs.exceptions import ExcInfo
from isoplug.logs.gil import GilShare
from isoplug.logs.printed_tracebacks import PrintedTraceback, read_back, read_back_budget
from isoplug.logs.stream_claims import CUT_FLAG, UNCUT_FD_LINE
from isoplug.logs.tracebacks import ExceptionRebuilder
from isoplug.wire import LogRecordData
from isoplug.wire.sanitize import clean_text

__all__ = ["StdioDestination", "StdioReplay"]

_log = guarded_logger("isoplug.host")

#: Records the replay thread takes from the backlog at once.
_REPLAY_BATCH = 256
_PROCESS_NAME = "isoplug-runner"
#: What _record_data() would otherwise compute for every line.
_SITES = {"stdout": "<stdout>", "stderr": "<stderr>"}
_LEVEL_NAMES = {level: logging.getLevelName(level) for level in (10, 20, 30, 40, 50)}


@dataclasses.dataclass(frozen=True)
class StdioDestination:
    """Where one runner process's output goes: ``replayer`` (in a Host, one with the runner's
    identity, shared rate limit and metrics of its own, see
    :meth:`~isoplug.host.logbridge.LogBridge.stdio_destination`) and ``finished``, called once
    by the replay thread after the last record and report (the metrics are final then);
    ``stderr_tail``, when given, keeps the last lines of stderr (see
    :mod:`isoplug.host.stderr_tail`)."""

    replayer: LogReplayer
    finished: Callable[[], None] = lambda: None
    stderr_tail: StderrTail | None = None

    @classmethod
    def plain(cls, runner_id: str, pid: int) -> StdioDestination:
        """Onto ``plugin.<runner_id>`` with the runner's identity, and nothing shared (a
        supervisor without a host's log bridge)."""
        replayer = LogReplayer(
            f"plugin.{runner_id}",
            identity={"plugin_id": runner_id, "runner_pid": pid},
            description=f"plugin {runner_id}",
        )
        return cls(replayer)


class StdioReplay:
    """Replays what the backlog of the runner ``pid`` holds onto ``destination``, in the
    thread that calls :meth:`run` (see the module docstring)."""

    def __init__(
        self,
        pid: int,
        backlog: Backlog,
        destination: StdioDestination,
        gil: GilShare | None = None,
    ) -> None:
        self.pid = pid
        #: Shared with the reader thread and the other runners' (see StdioReader).
        self._gil = gil or GilShare()
        self._backlog = backlog
        self._destination = destination
        self._abandoned = False
        self._rebuilder: ExceptionRebuilder | None = None
        self._rebuild_failed = False
        self._read_back: list[ExcInfo] = []
        self._read_back_budget = read_back_budget()

    def abandon(self) -> None:
        """Stop replaying (from any thread): the records still in the backlog, and any read
        from now on, are counted dropped and reported instead."""
        self._abandoned = True
        self._backlog.wake()

    def run(self) -> None:
        """Replay until the backlog has ended and everything in it was taken; then finish the
        replayer and tell the destination. A host handler that raises costs its record only
        (the replayer counts and reports it); anything else that fails is logged, not raised."""
        replayer = self._destination.replayer
        interval = replayer.limits.report_interval
        # By reason: the backlog's drops (the handlers did not keep up) and the records left
        # when the runner's close stopped waiting for them are told apart, in the metrics and
        # in the WARNING alike.
        unreported: dict[str, Drops] = {}
        last_report = 0.0
        try:
            while True:
                wait = (
                    None if not unreported else max(0.0, last_report + interval - time.monotonic())
                )
                items, dropped, ended = self._backlog.take(_REPLAY_BATCH, wait)
                abandoned: Drops = {}
                if self._abandoned:
                    for entry in items:
                        if entry[0]:  # a record (a report's stream is "")
                            key = (entry[0], entry[1])
                            abandoned[key] = abandoned.get(key, 0) + 1
                    items = [entry for entry in items if not entry[0]]
                for reason, drops in (
                    (DropReason.HOST_BACKLOG, dropped),
                    (DropReason.RECEIVER_CLOSED, abandoned),
                ):
                    if drops:
                        self._count_drops(drops, reason)
                        pending = unreported.setdefault(reason, {})
                        for key, count in drops.items():
                            pending[key] = pending.get(key, 0) + count
                try:
                    if items:
                        self._gil.wait_turn()
                        self._replay_items(items)
                        self._gil.pause()
                    now = time.monotonic()
                    if unreported and (ended or now - last_report >= interval):
                        last_report = now
                        by_reason, unreported = unreported, {}
                        for reason, drops in by_reason.items():
                            self._report_drops(drops, reason)
                except Exception:
                    # A failure of isoplug's own (the replayer contains the handlers'): the next
                    # records still get their chance, and the pipes are still drained.
                    _log.exception("replaying the stdout/stderr of runner %d failed", self.pid)
                if ended:
                    break
        finally:
            replayer.finish()
            self._destination.finished()

    def _replay_items(self, items: list[Entry]) -> None:
        replayer = self._destination.replayer
        tail = self._destination.stderr_tail
        records: list[LogRecordData] = []
        for entry in items:
            if entry[0]:  # a record (a report's stream is "")
                if tail is not None and entry[0] == "stderr":
                    tail.add(entry[2], entry[5])
                records.append(self._record_data(entry))
                continue
            if records:
                self._replay_records(records)
                records = []
            replayer.report(entry[2])
        if records:
            self._replay_records(records)

    def _replay_records(self, records: list[LogRecordData]) -> None:
        try:
            self._destination.replayer.replay_records(records)
        except Exception:
            # A failure of isoplug's own: the next batch still gets its chance.
            _log.exception("replaying the stdout/stderr of runner %d failed", self.pid)
        finally:
            self._read_back.clear()

    def _record_data(self, entry: Entry) -> LogRecordData:
        stream, level, message, extra, truncated, created, _, traceback = entry
        site = _SITES.get(stream) or f"<{stream}>"
        printed = self._printed_traceback(message) if traceback and not truncated else None
        return LogRecordData(
            name=stream,
            levelno=level,
            levelname=_LEVEL_NAMES.get(level) or logging.getLevelName(level),
            created=created,
            pathname=site,
            filename=site,
            module=stream,
            lineno=0,
            func_name="",
            process=self.pid,
            process_name=_PROCESS_NAME,
            message=message if printed is None else printed.message,
            extra=(
                UNCUT_FD_LINE
                if extra is None and not truncated
                else {**(extra or {}), CUT_FLAG: truncated}
            ),
            exception=None if printed is None else printed.exception,
            # What a record made in the runner says of its exception (isoplug.logs.capture).
            exc_type=None
            if printed is None
            else f"{printed.exception.module}.{printed.exception.type_name}",
            exc_message=None if printed is None else printed.exception.message,
        )

    def _printed_traceback(self, message: str) -> PrintedTraceback | None:
        """``message``, a printed traceback, read back into its exception when the rebuilt
        exception shows it as printed, source lines included (see
        :mod:`isoplug.logs.printed_tracebacks`); else None: it stays text. At most
        :data:`~isoplug.logs.printed_tracebacks.READ_BACK_RATE` a second per runner process: a
        read-back costs the replay thread about 50 lines' worth."""
        if not self._read_back_budget.take():
            return None
        if self._rebuilder is None:
            # One per runner process, as a log connection's: its budget of source files read.
            self._rebuilder = ExceptionRebuilder()
        try:
            read = read_back(message, self._rebuilder)
        except Exception as exc:
            # This Python's code objects cannot be built: every printed traceback stays text.
            if not self._rebuild_failed:
                self._rebuild_failed = True
                _log.warning(
                    "printed tracebacks of runner %d stay text: %s",
                    self.pid,
                    clean_text(repr(exc), 500),
                )
            return None
        if read is None:
            return None
        # Alive until the batch is replayed: its frames keep the source files' lines in
        # linecache, which the replayer's rebuild of the same exception reads again.
        self._read_back.append(read[1])
        return read[0]

    def _count_drops(self, dropped: Drops, reason: str) -> None:
        """Dropped records were received, from their stream, and dropped for ``reason``: say
        so in the metrics (this thread is the only one that updates them)."""
        metrics = self._destination.replayer.metrics
        total = sum(dropped.values())
        metrics.received += total
        for (stream, level), count in dropped.items():
            metrics.streams[stream] = metrics.streams.get(stream, 0) + count
            metrics.count_drop(reason, count, level)

    def _report_drops(self, dropped: Drops, reason: str) -> None:
        replayer = self._destination.replayer
        parts = ", ".join(
            f"{stream} {logging.getLevelName(level)}: {count:,}"
            for (stream, level), count in sorted(dropped.items())
        )
        why = (
            "the runner was closed before the host's log handlers could replay them"
            if reason == DropReason.RECEIVER_CLOSED
            else "the host's log handlers did not keep up, and a plugin is never made to wait "
            "for them"
        )
        replayer.report(
            f"dropped {sum(dropped.values()):,} records of the stdout/stderr output of "
            f"{replayer.description} (runner pid {self.pid}; {parts}): {why}"
        )
