"""What the log bridge keeps per runner: :class:`RunnerLogState`, one per runner id of the host,
in :class:`RunnerLogStates`.

A runner's state holds across its restarts (a crash loop does not reset its metrics, its rate
limit or its share of loggers), and across a replacement under the same id. It is dropped
when its runner is gone for good: removed by hot reload, or the host closed (its metrics are
kept, for :meth:`isoplug.Host.log_metrics` after the close). A plugin whose folder now names
another id hands its share of loggers to the runner of that id
(:meth:`RunnerLogStates.gone` then :meth:`RunnerLogStates.inherit`): rewriting its
``plugin.toml`` under hot reload gets a plugin no fresh allowance. None of that is needed for
the bound itself, which is the process's (:mod:`isoplug.logs.routing`): it keeps one plugin
from taking the process's allowance for all, and the host's memory from growing with every
id a plugin takes.

A connection, or a report, for a runner that is gone for good gets a state of its own that is
kept nowhere, with no share of loggers: what it replays goes on its plugin's base logger.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping

from isoplug.logs import LogMetrics, ReplayLimits
from isoplug.logs.limits import TransitLosses
from isoplug.logs.ratelimit import TokenBucket
from isoplug.logs.report_throttle import ReportThrottle
from isoplug.logs.routing import DEFAULT_LOGGER_BUDGET, LoggerBudget

__all__ = ["RunnerLogState", "RunnerLogStates"]


class RunnerLogState:
    """What one runner's log connections share: the rate limit, the reports, the share of
    loggers, and the metrics, kept as its open connections' (each updated by its own thread)
    and the totals of those that ended (folded in, so a crash loop does not pile them up)."""

    def __init__(self, limits: ReplayLimits, logger_budget: LoggerBudget) -> None:
        #: The runner's rate limit, shared by its connections: a plugin cannot multiply its
        #: budget by forking. Two threads taking at once may let a token or two too many
        #: through; a lock per record would cost more than that is worth.
        self.rate_bucket = TokenBucket(limits.rate, limits.burst) if limits.rate else None
        #: Its reports, and the loggers its names may add, likewise shared: a plugin opening
        #: connections of its own cannot multiply them either. The timer sends a summary when
        #: its interval ends, whichever connection is left.
        self.reports = ReportThrottle(limits.report_interval, timer=True)
        self.logger_budget = logger_budget
        #: And the records its connections' sequence gaps count lost: one connection's
        #: in-flight worth for all of them (every life, every process it forks), so a plugin
        #: reconnecting or forking gets no fresh allowance (see isoplug.logs.limits).
        self.transit_losses = TransitLosses()
        self._lock = threading.Lock()
        self._ended = LogMetrics()
        self._open: list[LogMetrics] = []

    def for_connection(self) -> LogMetrics:
        metrics = LogMetrics()
        with self._lock:
            self._open.append(metrics)
        return metrics

    def connection_ended(self, metrics: LogMetrics) -> None:
        with self._lock:
            self._open.remove(metrics)
            self._ended = LogMetrics.combined([self._ended, metrics])

    def snapshot(self) -> LogMetrics:
        with self._lock:
            return LogMetrics.combined([self._ended, *self._open])


class RunnerLogStates:
    """The state of each runner of one host, by runner id; ``runners`` are the host's runners
    by id (read as they change). Thread-safe: connection threads ask for states while the
    event loop's thread removes runners."""

    def __init__(self, runners: Mapping[str, object], limits: ReplayLimits) -> None:
        self._runners = runners
        self._limits = limits
        self._states: dict[str, RunnerLogState] = {}
        #: Each runner's state once the host closed, kept for its metrics only: kept live, not
        #: as a snapshot, because a slow replay goes on counting past the close (records
        #: replayed late, or dropped when their wait ran out).
        self._final: dict[str, RunnerLogState] = {}
        self._closed = False
        self._lock = threading.Lock()
        #: Each runner's share of the loggers: entries it may add to logging's registry.
        self.share_entries = DEFAULT_LOGGER_BUDGET

    def __contains__(self, runner_id: object) -> bool:
        return runner_id in self._states

    def __len__(self) -> int:
        return len(self._states)

    def get(self, runner_id: str) -> RunnerLogState:
        """The state of ``runner_id``, made at its first connection; one kept nowhere (and
        without a share of loggers) for a runner that is not the host's (gone for good)."""
        state = self._states.get(runner_id)
        if state is not None:
            return state
        # Under the lock with gone(): a runner removed after the look-up below has its state
        # dropped by gone(), not left behind.
        with self._lock:
            state = self._states.get(runner_id)
            if state is not None:
                return state
            if self._closed or runner_id not in self._runners:
                return RunnerLogState(self._limits, LoggerBudget(0))
            share = LoggerBudget(self.share_entries)
            state = self._states[runner_id] = RunnerLogState(self._limits, share)
            return state

    def metrics(self, runner_id: str) -> LogMetrics:
        """A snapshot of ``runner_id``'s metrics (none yet: zeros)."""
        state = self._states.get(runner_id)
        if state is not None:
            return state.snapshot()
        final = self._final.get(runner_id)
        return final.snapshot() if final is not None else LogMetrics()

    def gone(self, runner_id: str) -> LoggerBudget | None:
        """Drop the state of ``runner_id``, removed for good (call it once the host no longer
        counts it among its runners); returns its share of loggers, for a runner that takes
        its place (:meth:`inherit`). Its pending report summaries are sent now."""
        with self._lock:
            state = self._states.pop(runner_id, None)
        if state is None:
            return None
        state.reports.close()
        return state.logger_budget

    def inherit(self, runner_id: str, share: LoggerBudget) -> None:
        """Have ``runner_id`` (a new runner of the host, not started yet) spend ``share``, what
        is left of the one of a runner whose place it takes."""
        with self._lock:
            state = self._states.get(runner_id)
            if state is None:
                self._states[runner_id] = RunnerLogState(self._limits, share)
            else:
                state.logger_budget = share

    def close(self) -> None:
        """The host closed (its connections too): send every pending report summary, and keep
        only each runner's metrics."""
        with self._lock:
            self._closed = True
            states = dict(self._states)
        for state in states.values():
            state.reports.close()
        self._final = states
        with self._lock:
            self._states.clear()
