"""Plugin records (and the host's own) to an OTLP collector, never making anyone wait.

A handler on the ``plugin`` and ``isoplug.host`` loggers sees every record the host replays
for a plugin (its logging, prints, stdout/stderr lines, the host's reports about it) and the
host's own. It encodes the record into OTLP bytes at once (:mod:`isoplug.otel.records`) in the
thread that logged or replayed it, and puts them in a bounded outbox: no lock is held while
anything waits, no I/O happens there. An export thread takes the outbox every
``interval`` (sooner once a batch's worth is waiting), groups the records by resource (one per
plugin and runner process; the host's own) and scope (the logger), and sends each batch
through the OpenTelemetry SDK's OTLP exporter (:mod:`isoplug.otel.senders`), which retries
within its timeout.

A collector that is down, slow or refusing holds up only the export thread. Meanwhile the
outbox fills; past its bounds (records and bytes; DEBUG may fill half, INFO 80 %, WARNING and
above all of it) new records are dropped, counted per plugin and reason (``queue_full``;
``export_failed`` for a batch the collector did not take; ``shutdown`` for what was left when
the exporter closed), shown in :meth:`LogExport.stats` and isoplug's metrics, and reported on
the ``isoplug.otel`` logger: the first of a kind at once, then one summary per interval
(:class:`~isoplug.logs.report_throttle.ReportThrottle`). ``isoplug.otel`` records are not
exported, so a report cannot feed the queue it reports on.

:meth:`LogExport.close` ends within its timeout, whatever the collector does: an export still
under way then is abandoned. What it held is counted as dropped (``shutdown``) at that moment,
and whatever that request later comes to changes no count: the one warning of what the
shutdown dropped states the final count.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence

from isoplug.log_guard import guarded_logger
from isoplug.logs.replay_checks import add_replay_check, remove_replay_check
from isoplug.logs.report_throttle import ReportThrottle
from isoplug.otel import protobuf
from isoplug.otel.records import RecordEncoder
from isoplug.otel.resources import RESOURCE_NAMES, ResourceKey, resource_key
from isoplug.wire.sanitize import clean_text

__all__ = ["EXPORTED_LOGGERS", "LogExport", "LogExportStats", "OutboxLimits"]

_log = guarded_logger("isoplug.otel")

#: The loggers whose records are exported: every plugin's, and the host's own.
EXPORTED_LOGGERS = ("plugin", "isoplug.host")
#: The plugin the host's own records are counted under in the statistics.
HOST = ""

#: Sends one encoded ``ExportLogsServiceRequest`` of ``count`` records; returns None when
#: the collector took it, else why not (short, already sanitized).
Send = Callable[[bytes, int], str | None]


@dataclasses.dataclass(frozen=True)
class OutboxLimits:
    """Bounds of the outbox between the threads that log and the export thread."""

    #: Records waiting at most, and their bytes (encoded).
    max_records: int = 50_000
    max_bytes: int = 32 * 1024 * 1024
    #: One request carries at most this many records and bytes (a collector's gRPC receiver
    #: refuses messages past 4 MiB by default).
    batch_records: int = 4096
    batch_bytes: int = 2 * 1024 * 1024
    #: Seconds between exports while less than a batch is waiting.
    interval: float = 0.5
    #: Seconds between two reports of one kind of loss.
    report_interval: float = 10.0


@dataclasses.dataclass
class LogExportStats:
    """What the log exporter did, per plugin id (``""``: the host's own records)."""

    #: Records the collector took.
    exported: dict[str, int] = dataclasses.field(default_factory=dict)
    #: Records lost, by plugin, then by reason (``queue_full``, ``export_failed``,
    #: ``unencodable``, ``shutdown``).
    dropped: dict[str, dict[str, int]] = dataclasses.field(default_factory=dict)
    #: Requests sent, and those the collector did not take.
    requests: int = 0
    failed_requests: int = 0
    #: Why the last failed request failed.
    last_error: str = ""

    def total_dropped(self) -> int:
        return sum(sum(reasons.values()) for reasons in self.dropped.values())


#: An entry of the outbox: resource, scope (logger name), the encoded record, its plugin.
_Entry = tuple[ResourceKey, str, bytes, str]


class _Outbox:
    """The bounded queue between the logging threads and the export thread."""

    def __init__(self, limits: OutboxLimits) -> None:
        self.limits = limits
        self._lock = threading.Lock()
        self._items: list[_Entry] = []
        self._bytes = 0
        self.wake = threading.Event()
        self._woken = False
        #: (plugin, reason) -> records dropped, not reported yet.
        self.drops: dict[tuple[str, str], int] = {}

    def put(self, entry: _Entry, levelno: int) -> bool:
        """Queue ``entry``; True when it was dropped, the first drop since they were last
        taken (the caller has it said at once: the export thread may be held for seconds by a
        collector that hangs)."""
        limits = self.limits
        size = len(entry[2])
        share = 1.0 if levelno >= logging.WARNING else 0.8 if levelno >= logging.INFO else 0.5
        with self._lock:
            items = self._items
            if (
                len(items) >= limits.max_records * share
                or self._bytes + size > limits.max_bytes * share
            ):
                first = not self.drops
                key = (entry[3], "queue_full")
                self.drops[key] = self.drops.get(key, 0) + 1
                return first
            items.append(entry)
            self._bytes += size
            if not self._woken and (
                len(items) >= limits.batch_records or self._bytes >= limits.batch_bytes
            ):
                self._woken = True
                self.wake.set()
        return False

    def drop(self, plugin: str, reason: str, count: int = 1) -> None:
        with self._lock:
            self.drops[(plugin, reason)] = self.drops.get((plugin, reason), 0) + count

    def take(self) -> list[_Entry]:
        with self._lock:
            items, self._items = self._items, []
            self._bytes = 0
            self._woken = False
            self.wake.clear()
        return items

    def take_drops(self) -> dict[tuple[str, str], int]:
        with self._lock:
            drops, self.drops = self.drops, {}
        return drops

    def __len__(self) -> int:
        return len(self._items)


class _ExportHandler(logging.Handler):
    """Encodes each record into the outbox; never blocks, never raises, takes no lock of
    logging's (``handle`` is overridden: a handler's lock would serialize the replay threads
    for nothing)."""

    def __init__(self, export: LogExport) -> None:
        super().__init__()
        self._export = export
        self._encode = export.encoder.encode
        self._put = export.outbox.put

    def handle(self, record: logging.LogRecord) -> bool:
        values = record.__dict__
        plugin_id = values.get("plugin_id")
        if plugin_id is None:
            key: ResourceKey = None
            plugin = HOST
        else:
            plugin = str(plugin_id)
            key = resource_key(plugin, values)
        try:
            payload = self._encode(record, plugin_id is not None)
        except Exception as exc:
            self._export.unencodable(plugin, exc)
            return True
        if self._put((key, record.name, payload, plugin), record.levelno):
            # The first record the full queue dropped: said now (the summaries follow from
            # the export thread), on this log thread.
            self._export.account_drops()
        return True

    def emit(self, record: logging.LogRecord) -> None:
        self.handle(record)


class LogExport:
    """The log export pipeline: :meth:`attach` its handler, :meth:`close` at the end.

    ``deliver(batch)`` takes the outbox's entries of one batch, grouped
    ``{resource key: {scope: [encoded records]}}``, and returns None or why it failed.
    ``resource``: the names of the application's resource attributes (``service.name``...),
    which no record attribute may carry.
    """

    def __init__(
        self,
        deliver: Callable[[Mapping[ResourceKey, Mapping[str, Sequence[bytes]]], int], str | None],
        *,
        limits: OutboxLimits | None = None,
        current_trace: Callable[[], tuple[bytes, bytes, int]] | None = None,
        resource: Iterable[str] = (),
    ) -> None:
        self.limits = limits or OutboxLimits()
        # No record attribute may be named like one of its resource's.
        self.encoder = RecordEncoder(
            current_trace=current_trace, resource_names=RESOURCE_NAMES | frozenset(resource)
        )
        self.outbox = _Outbox(self.limits)
        self._deliver = deliver
        self._stats = LogExportStats()
        self._stats_lock = threading.Lock()
        self._reports = ReportThrottle(self.limits.report_interval, timer=True)
        self.handler = _ExportHandler(self)
        self._loggers: list[logging.Logger] = []
        #: Loggers whose handler was found removed (and attached again), said once each.
        self._reattached: set[str] = set()
        #: Taken by keep_attached, which replay threads run too: one attaches, once.
        self._attaching = threading.Lock()
        self._closing = False
        self._close_deadline = float("inf")
        #: Records the export thread took from the outbox and has not accounted for yet, per
        #: plugin (under ``_stats_lock``): what an abandoned export held.
        self._held: dict[str, int] = {}
        #: Set by a close that gave up on the export thread: it changes no count after this.
        self._abandoned = False
        #: Held while drops are moved into the statistics and reported: a close that gives up
        #: reports only once the export thread's last report went out.
        self._accounting = threading.Lock()
        #: Records dropped at shutdown (reported once, with the final count, by close).
        self._shutdown_dropped = 0
        self._shutdown_reported = False
        self._thread = threading.Thread(target=self._run, name="isoplug-otel-logs", daemon=True)
        self._thread.start()

    def attach(self, names: Iterable[str] = EXPORTED_LOGGERS) -> None:
        for name in names:
            logger = logging.getLogger(name)
            logger.addHandler(self.handler)
            self._loggers.append(logger)
        add_replay_check(self.keep_attached)

    def keep_attached(self) -> None:
        """Attach the handler again where a logging configuration made after :meth:`attach`
        removed it (``dictConfig`` clears the handlers of every logger it configures), and say
        so once per logger: an export that stops with no word is what this prevents. Run by
        the export thread, and before each replayed batch (:mod:`isoplug.logs.replay_checks`),
        so that no replayed record finds the handler gone."""
        for logger in list(self._loggers):
            if self._closing or self.handler in logger.handlers:
                continue
            with self._attaching:
                if self._closing or self.handler in logger.handlers:
                    continue
                logger.addHandler(self.handler)
            if logger.name not in self._reattached:
                self._reattached.add(logger.name)
                _log.warning(
                    "the logging configuration removed isoplug's OpenTelemetry export handler "
                    "from logger %r (a dictConfig that configures it?); attached it again. "
                    "Configure logging before isoplug.otel.export(), or leave that logger's "
                    "handlers alone, to keep your configuration as it is",
                    logger.name,  # sanitized: one of EXPORTED_LOGGERS, named by us
                )

    def stats(self) -> LogExportStats:
        """A snapshot of the counts (drops not yet taken by the export thread included)."""
        with self._stats_lock:
            stats = dataclasses.replace(
                self._stats,
                exported=dict(self._stats.exported),
                dropped={p: dict(r) for p, r in self._stats.dropped.items()},
            )
        for (plugin, reason), count in list(self.outbox.drops.items()):
            reasons = stats.dropped.setdefault(plugin, {})
            reasons[reason] = reasons.get(reason, 0) + count
        return stats

    def flush(self, timeout: float = 10.0) -> bool:
        """Export what is waiting now; True once it was handed to the collector (or dropped)
        within ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        self.outbox.wake.set()
        while time.monotonic() < deadline:
            if not len(self.outbox) and not self._busy:
                return True
            time.sleep(0.01)
        return False

    def close(self, timeout: float = 5.0) -> None:
        """Detach the handler, export what is waiting within ``timeout`` seconds (what is
        left then is counted as dropped, ``shutdown``), report the losses. Returns within
        ``timeout`` (0: at once, dropping what waits), also when called again meanwhile from
        another thread."""
        remove_replay_check(self.keep_attached)
        for logger in list(self._loggers):
            logger.removeHandler(self.handler)
        self._loggers.clear()
        self._close_deadline = min(self._close_deadline, time.monotonic() + timeout)
        self._closing = True
        self.outbox.wake.set()
        self._thread.join(max(0.0, self._close_deadline - time.monotonic()))
        with self._accounting:
            if self._thread.is_alive():
                self._abandon()
            self._account_drops_locked()
            if self._shutdown_dropped and not self._shutdown_reported:
                self._shutdown_reported = True
                _log.warning(
                    "OpenTelemetry export dropped %s log records: the exporter closed before "
                    "it could send them",
                    f"{self._shutdown_dropped:,}",
                )
        self._reports.close()

    def _abandon(self) -> None:
        """Give up on the export thread (held by an export that does not end: a collector
        that never answers): what it and the outbox hold is counted lost now, and nothing
        the thread does later changes a count. It ends when the exporter's timeout does."""
        with self._stats_lock:
            self._abandoned = True
            held, self._held = self._held, {}
            for entry in self.outbox.take():
                self.outbox.drop(entry[3], "shutdown")
        for plugin, count in held.items():
            self.outbox.drop(plugin, "shutdown", count)

    def unencodable(self, plugin: str, error: Exception) -> None:
        self.outbox.drop(plugin, "unencodable")
        self._last_unencodable = f"{type(error).__name__}: {clean_text(str(error), 200)}"

    # -- the export thread ----------------------------------------------------------------------

    _busy = False
    _last_unencodable = ""

    def _run(self) -> None:
        outbox = self.outbox
        while True:
            outbox.wake.wait(self.limits.interval)
            self.keep_attached()
            self._busy = True
            try:
                with self._stats_lock:
                    if self._abandoned:
                        return
                    items = outbox.take()
                    held = self._held
                    for entry in items:
                        held[entry[3]] = held.get(entry[3], 0) + 1
                if items:
                    self._export(items)
            except Exception:
                _log.exception("exporting log records to OpenTelemetry failed")
            finally:
                self._busy = False
            self.account_drops()
            if self._abandoned or (self._closing and not len(outbox)):
                return

    def _export(self, items: list[_Entry]) -> None:
        limits = self.limits
        start = 0
        while start < len(items):
            if self._closing and time.monotonic() > self._close_deadline:
                counts: dict[str, int] = {}
                for entry in items[start:]:
                    counts[entry[3]] = counts.get(entry[3], 0) + 1
                self._settle(counts, None, "shutdown")
                return
            end, size = start, 0
            while end < len(items) and end - start < limits.batch_records:
                size += len(items[end][2])
                end += 1
                if size >= limits.batch_bytes:
                    break
            self._export_batch(items[start:end])
            start = end

    def _export_batch(self, batch: list[_Entry]) -> None:
        grouped: dict[ResourceKey, dict[str, list[bytes]]] = {}
        per_plugin: dict[str, int] = {}
        for key, scope, payload, plugin in batch:
            scopes = grouped.get(key)
            if scopes is None:
                scopes = grouped[key] = {}
            records = scopes.get(scope)
            if records is None:
                records = scopes[scope] = []
            records.append(payload)
            per_plugin[plugin] = per_plugin.get(plugin, 0) + 1
        try:
            error = self._deliver(grouped, len(batch))
        except Exception as exc:
            error = f"{type(exc).__name__}: {clean_text(str(exc), 300)}"
        self._settle(per_plugin, error, "export_failed")

    def _settle(self, per_plugin: dict[str, int], error: str | None, reason: str) -> None:
        """Account for records the export thread held: exported when ``error`` is None (and
        a request was made: ``reason`` ``export_failed``), else dropped for ``reason``.
        Nothing, once a close abandoned the thread (it counted them already)."""
        with self._stats_lock:
            if self._abandoned:
                return
            held = self._held
            for plugin, count in per_plugin.items():
                left = held.get(plugin, 0) - count
                if left > 0:
                    held[plugin] = left
                else:
                    held.pop(plugin, None)
            stats = self._stats
            if reason == "export_failed":
                stats.requests += 1
                if error is None:
                    for plugin, count in per_plugin.items():
                        stats.exported[plugin] = stats.exported.get(plugin, 0) + count
                    return
                stats.failed_requests += 1
                stats.last_error = error
            for plugin, count in per_plugin.items():
                self.outbox.drop(plugin, reason, count)

    def account_drops(self) -> None:
        """Count and report the records dropped since the last time (see :class:`Outbox`)."""
        with self._accounting:
            if not self._abandoned:
                self._account_drops_locked()

    def _account_drops_locked(self) -> None:
        drops = self.outbox.take_drops()
        if not drops:
            if self._reports.waiting:
                self._reports.flush()
            return
        by_reason: dict[str, int] = {}
        with self._stats_lock:
            for (plugin, reason), count in drops.items():
                reasons = self._stats.dropped.setdefault(plugin, {})
                reasons[reason] = reasons.get(reason, 0) + count
                by_reason[reason] = by_reason.get(reason, 0) + count
            last_error = self._stats.last_error
        for reason, count in by_reason.items():
            if reason == "shutdown":
                # Said once, with the final count, when the close ends.
                self._shutdown_dropped += count
            else:
                self._report(reason, count, last_error)

    def _report(self, reason: str, count: int, last_error: str) -> None:
        why = {
            "queue_full": "the export queue was full (the collector is slow, down or refusing)",
            "export_failed": f"the collector did not take them ({last_error})",
            "unencodable": f"they could not be encoded ({self._last_unencodable})",
        }.get(reason, reason)
        self._reports.report(
            reason,
            f"OpenTelemetry export dropped {count:,} log records: {why}",
            summary=lambda tally: (
                f"OpenTelemetry export dropped {tally.records:,} more log records in the last "
                f"{tally.seconds:.0f} s: {why}"
            ),
            emit=_log.warning,
            records=count,
        )


def encode_request(
    grouped: Mapping[ResourceKey, Mapping[str, Sequence[bytes]]],
    resource_of: Callable[[ResourceKey], bytes],
) -> bytes:
    """One ``ExportLogsServiceRequest`` for a batch grouped by :class:`LogExport`."""
    return protobuf.logs_request(
        protobuf.resource_logs(
            resource_of(key),
            (protobuf.scope_logs(scope, records) for scope, records in scopes.items()),
        )
        for key, scopes in grouped.items()
    )
