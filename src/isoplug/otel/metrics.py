"""isoplug's metrics as OpenTelemetry instruments, per plugin.

Nearly everything is an *observable* instrument: its callback reads state the host keeps
anyway (:meth:`Host.plugins`, :meth:`Host.log_metrics`, ``/proc``), at collection time, in the
metric reader's thread (every export interval, or at each Prometheus scrape). Nothing is added
to the path of a record. Two things are events, told by the host's observer hooks
(:mod:`isoplug.host.observers`) on its event loop: a call's duration (one histogram
``record()``, a few microseconds against a call's hundreds) and a runner's exit (one counter
in a dict).

Names follow the semantic conventions where they exist (``rpc.client.call.duration``,
``process.memory.usage``, ``process.cpu.time``, ``log.iostream``, ``error.type``); the rest are
``isoplug.*``. Every series carries ``isoplug.plugin.id``: for metrics of a runner (its logs,
its process, its exits) of a group, the group's id.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
import weakref
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

from isoplug.host import observers
from isoplug.host.commands import REPLACED_BY_RELOAD, RESTARTED_FOR_CONFIG, STOPPED_BY_RELOAD
from isoplug.host.status import (
    ENDED_BY_HOST,
    KILLED_BY_HOST,
    ExitAccount,
    PluginInfo,
    PluginState,
    StateChange,
)
from isoplug.logs.metrics import LogMetrics

if TYPE_CHECKING:
    from opentelemetry.metrics import CallbackOptions, Meter, Observation

    from isoplug.host.host import Host
    from isoplug.otel.logs import LogExportStats

__all__ = ["HostMetrics", "exit_kind"]

PLUGIN = "isoplug.plugin.id"
#: Call durations' bucket boundaries, in seconds: 0.1 ms to 30 s (a call's default timeout).
CALL_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
)  # fmt: skip

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


#: How the reason of a runner the host ended for no fault of the runner's starts.
_STOPS = (
    "stopped on request",
    "restarted on request",
    REPLACED_BY_RELOAD,
    RESTARTED_FOR_CONFIG,
    STOPPED_BY_RELOAD,
    ENDED_BY_HOST,
)


def exit_kind(account: ExitAccount) -> str:
    """How a runner process ended, in one word: ``stopped`` (on request, replaced or stopped
    by hot reload, or ended by the host for a reason of its own: its start cancelled),
    ``recycled`` (its
    RSS stayed above ``recycle_rss``, or too many worker threads ran calls that had timed
    out: ``max_stuck_threads``), ``limit`` (it passed its ``memory`` or ``cpu_seconds``
    limit), ``hung`` (killed by the host: no answer, not ready in time), ``zygote`` (the
    zygote that forked it died, and the kernel ended it with it), ``oom`` (SIGKILL with
    evidence of the kernel's out-of-memory killer), ``signal`` (any other signal), ``crash``
    (a non-zero exit code), ``exited`` (code 0 on its own)."""
    reason = account.reason
    if reason.startswith(_STOPS):
        return "stopped"
    if account.limit == "recycle_rss" or reason.startswith("recycled by the host"):
        return "recycled"
    if account.limit is not None:
        return "limit"
    # By how the reason starts, which is the host's: what follows may quote the runner's own
    # words ("its stderr ended with: ..."), which must not change the kind.
    if reason.startswith(KILLED_BY_HOST):
        return "hung"
    if getattr(account, "zygote_died", False):
        return "zygote"
    if account.returncode > 0:
        return "crash"
    if account.returncode == 0:
        return "exited"
    if getattr(account, "oom_evidence", None):
        return "oom"
    return "signal"


#: One observation: its value and attributes.
_Point = tuple[float, dict[str, Any]]


@dataclasses.dataclass
class _Runner:
    runner_id: str
    pid: int | None
    log: LogMetrics


@dataclasses.dataclass
class _Snapshot:
    plugins: list[PluginInfo]
    runners: list[_Runner]


class HostMetrics:
    """The instruments on ``meter``, reading every live host; a host observer (add it with
    :func:`isoplug.host.observers.add_observer`). ``log_stats`` gives the log exporter's own
    counts (None: logs are not exported)."""

    def __init__(self, meter: Meter, log_stats: Callable[[], LogExportStats] | None) -> None:
        self._log_stats = log_stats
        self._lock = threading.Lock()
        self._hosts: weakref.WeakSet[Host] = weakref.WeakSet()
        #: (runner id, kind) -> exits counted by the observer hook.
        self._exits: dict[tuple[str, str], int] = {}
        self._calls = meter.create_histogram(
            "rpc.client.call.duration",
            unit="s",
            description="Duration of host.call() to a plugin method",
            explicit_bucket_boundaries_advisory=CALL_BUCKETS,
        )
        counters: list[tuple[str, str, str, Callable[[], Iterable[_Point]]]] = [
            ("isoplug.log.records.received", "{record}", "Log records received from the "
             "plugin's runner", self._received),
            ("isoplug.log.records.replayed", "{record}", "Log records handed to the host's "
             "logging, by level", self._replayed),
            ("isoplug.log.records.filtered", "{record}", "Log records below the host logger's "
             "level", self._filtered),
            ("isoplug.log.records.dropped", "{record}", "Log records lost, by reason (and "
             "level where known)", self._dropped),
            ("isoplug.log.bytes", "By", "Bytes of log batches received", self._bytes),
            ("isoplug.log.stream.lines", "{line}", "Lines the plugin wrote on stdout or "
             "stderr", self._streams),
            ("isoplug.log.handler_errors", "{error}", "Host log handlers that raised on the "
             "plugin's records", self._handler_errors),
            ("isoplug.log.sequence_violations", "{violation}", "Claims about its log losses "
             "that no honest runner can make, counted as no loss", self._sequence_violations),
            ("isoplug.events.dropped", "{event}", "Events published to the plugin that its "
             "handlers never got (its queue full, or its runner ending)", self._events_dropped),
            ("isoplug.runner.restarts", "{restart}", "Times the plugin's runner was "
             "restarted", self._restarts),
            ("isoplug.runner.exits", "{exit}", "Runner processes that ended, by kind",
             self._exit_counts),
            ("process.cpu.time", "s", "CPU time of the plugin's runner process", self._cpu),
            ("isoplug.otel.log.records.exported", "{record}", "Log records the OTLP "
             "collector took", self._exported),
            ("isoplug.otel.log.records.dropped", "{record}", "Log records the OTLP export "
             "lost, by reason", self._export_dropped),
        ]  # fmt: skip
        for name, unit, description, read in counters:
            meter.create_observable_counter(
                name, callbacks=[_callback(read)], unit=unit, description=description
            )
        meter.create_observable_up_down_counter(
            "process.memory.usage",
            callbacks=[_callback(self._memory)],
            unit="By",
            description="Resident memory of the plugin's runner process",
        )
        meter.create_observable_gauge(
            "isoplug.plugin.ready",
            callbacks=[_callback(self._ready)],
            unit="1",
            description="1 while the plugin is ready (loaded, set up, answering), else 0",
        )

    # -- host observer --------------------------------------------------------------------------

    def state_changed(self, host: Host, change: StateChange, exit: ExitAccount | None) -> None:
        self._hosts.add(host)
        if exit is None:
            return
        key = (change.runner_id, exit_kind(exit))
        with self._lock:
            self._exits[key] = self._exits.get(key, 0) + 1

    def call_finished(
        self, plugin_id: str, method: str, seconds: float, error: BaseException | None
    ) -> None:
        attributes = {"rpc.system.name": "isoplug", "rpc.method": method, PLUGIN: plugin_id}
        if error is not None:
            attributes["error.type"] = type(error).__qualname__
            if type(error).__name__ == "MethodNotFound":
                # An unknown name is no series of its own (the conventions' "_OTHER").
                attributes["rpc.method"] = "_OTHER"
        self._calls.record(seconds, attributes)

    # -- what the callbacks read ----------------------------------------------------------------

    def _take(self) -> _Snapshot:
        # Taken for each instrument: a snapshot shared by the instruments of one collection
        # could not tell the next collection apart (the last one, at shutdown, comes right
        # after another), and taking one costs microseconds per plugin.
        plugins: list[PluginInfo] = []
        runners: list[_Runner] = []
        # Hosts that closed stay while the application keeps them: the last collection (at
        # shutdown, after the host closed) must still give their final counts. Only hosts
        # that ran while these metrics existed: not those of an earlier export.
        for host in observers.live_hosts():
            self._hosts.add(host)
        for host in list(self._hosts):
            try:
                infos = host.plugins()
            except RuntimeError:
                # Its event loop ended without closing it (or this is a forked child's copy):
                # it has no states to tell any more, and never will again.
                self._hosts.discard(host)
                continue
            plugins.extend(infos)
            seen: set[str] = set()
            for info in infos:
                if info.runner_id in seen:
                    continue
                seen.add(info.runner_id)
                runners.append(_Runner(info.runner_id, info.pid, host.log_metrics(info.id)))
        return _Snapshot(plugins, runners)

    def _per_runner(
        self, read: Callable[[LogMetrics], int]
    ) -> Iterator[tuple[int, dict[str, Any]]]:
        for runner in self._take().runners:
            yield read(runner.log), {PLUGIN: runner.runner_id}

    def _received(self) -> Iterator[tuple[float, dict[str, Any]]]:
        yield from self._per_runner(lambda log: log.received)

    def _filtered(self) -> Iterator[tuple[float, dict[str, Any]]]:
        yield from self._per_runner(lambda log: log.filtered)

    def _bytes(self) -> Iterator[tuple[float, dict[str, Any]]]:
        yield from self._per_runner(lambda log: log.bytes)

    def _handler_errors(self) -> Iterator[tuple[float, dict[str, Any]]]:
        yield from self._per_runner(lambda log: log.handler_errors)

    def _sequence_violations(self) -> Iterator[tuple[float, dict[str, Any]]]:
        yield from self._per_runner(lambda log: log.sequence_violations)

    def _replayed(self) -> Iterator[tuple[float, dict[str, Any]]]:
        for runner in self._take().runners:
            for level, count in sorted(runner.log.replayed_levels.items()):
                yield count, {PLUGIN: runner.runner_id, "isoplug.log.level": _level(level)}

    def _dropped(self) -> Iterator[tuple[float, dict[str, Any]]]:
        for runner in self._take().runners:
            log = runner.log
            for reason, total in sorted(log.dropped.items()):
                attributes = {PLUGIN: runner.runner_id, "isoplug.log.drop.reason": reason}
                levels = log.dropped_levels.get(reason, {})
                for level, count in sorted(levels.items()):
                    yield count, {**attributes, "isoplug.log.level": _level(level)}
                unleveled = total - sum(levels.values())
                if unleveled or not levels:
                    yield unleveled, attributes

    def _streams(self) -> Iterator[tuple[float, dict[str, Any]]]:
        for runner in self._take().runners:
            for stream, count in sorted(runner.log.streams.items()):
                yield count, {PLUGIN: runner.runner_id, "log.iostream": stream}

    def _restarts(self) -> Iterator[tuple[float, dict[str, Any]]]:
        for info in self._take().plugins:
            yield info.restarts, {PLUGIN: info.id}

    def _events_dropped(self) -> Iterator[tuple[float, dict[str, Any]]]:
        for info in self._take().plugins:
            yield info.events_dropped, {PLUGIN: info.id}

    def _ready(self) -> Iterator[tuple[float, dict[str, Any]]]:
        for info in self._take().plugins:
            yield int(info.state is PluginState.READY), {PLUGIN: info.id}

    def _exit_counts(self) -> Iterator[tuple[float, dict[str, Any]]]:
        with self._lock:
            exits = sorted(self._exits.items())
        for (runner_id, kind), count in exits:
            yield count, {PLUGIN: runner_id, "isoplug.exit.kind": kind}

    def _cpu(self) -> Iterator[tuple[float, dict[str, Any]]]:
        for runner in self._take().runners:
            stat = _proc_stat(runner.pid)
            if stat is None:
                continue
            attributes = {PLUGIN: runner.runner_id, "process.pid": runner.pid}
            yield stat[0], {**attributes, "cpu.mode": "user"}
            yield stat[1], {**attributes, "cpu.mode": "system"}

    def _memory(self) -> Iterator[tuple[float, dict[str, Any]]]:
        for runner in self._take().runners:
            stat = _proc_stat(runner.pid)
            if stat is not None:
                yield stat[2], {PLUGIN: runner.runner_id, "process.pid": runner.pid}

    def _exported(self) -> Iterator[tuple[float, dict[str, Any]]]:
        if self._log_stats is None:
            return
        for plugin, count in sorted(self._log_stats().exported.items()):
            yield count, {PLUGIN: plugin}

    def _export_dropped(self) -> Iterator[tuple[float, dict[str, Any]]]:
        if self._log_stats is None:
            return
        for plugin, reasons in sorted(self._log_stats().dropped.items()):
            for reason, count in sorted(reasons.items()):
                yield count, {PLUGIN: plugin, "isoplug.log.drop.reason": reason}


def _level(level: int) -> str:
    return logging.getLevelName(level) if level > 0 else "unknown"


def _proc_stat(pid: int | None) -> tuple[float, float, int] | None:
    """(user CPU seconds, system CPU seconds, resident bytes) of a process, from ``/proc``."""
    if pid is None:
        return None
    try:
        with open(f"/proc/{pid}/stat", "rb") as file:
            text = file.read()
    except OSError:
        return None  # gone, or no /proc
    # The command name (field 2) may hold spaces and parentheses: split after its last ")".
    fields = text[text.rfind(b")") + 2 :].split()
    if fields[:1] in ([b"Z"], [b"X"]):
        # Exited, not yet reaped: its memory is gone (/proc says 0), its last CPU times are
        # told by the exit. A point of 0 bytes would read as a runner that holds nothing.
        return None
    try:
        return (
            int(fields[11]) / _CLOCK_TICKS,
            int(fields[12]) / _CLOCK_TICKS,
            int(fields[21]) * _PAGE_SIZE,
        )
    except (IndexError, ValueError):
        return None


def _callback(
    read: Callable[[], Iterable[tuple[float, dict[str, Any]]]],
) -> Callable[[CallbackOptions], Iterable[Observation]]:
    from opentelemetry.metrics import Observation

    def callback(options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(value, attributes) for value, attributes in read()]

    return callback
