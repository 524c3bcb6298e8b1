"""Resident memory, CPU use and uptime of runner processes, read from ``/proc`` (Linux), as the
host's limit watch reads them (:func:`isoplug.host.limits.read_usage`).

Where ``/proc`` has no entry for a pid (another platform, or the process just ended) the
figures are None: the dashboard shows a dash rather than a guess.
"""

from __future__ import annotations

import dataclasses
import time

from isoplug.host.limits import read_usage

__all__ = ["ProcessSample", "ProcessSampler"]


@dataclasses.dataclass(frozen=True)
class ProcessSample:
    #: Resident set size in bytes, or None when unknown.
    rss: int | None
    #: CPU use since the previous sample of the same pid, in percent of one core (None on the
    #: first sample of a pid, or when unknown).
    cpu_percent: float | None
    #: Seconds since the process started, or None when unknown.
    uptime: float | None = None


class ProcessSampler:
    """Samples processes by pid; CPU use is the CPU time spent between two samples."""

    def __init__(self) -> None:
        #: pid -> (CPU seconds, monotonic time) at its last sample.
        self._last: dict[int, tuple[float, float]] = {}

    def sample(self, pid: int) -> ProcessSample:
        now = time.monotonic()
        usage = read_usage(pid)
        if usage is None:
            self._last.pop(pid, None)
            return ProcessSample(None, None)
        cpu_percent = None
        previous = self._last.get(pid)
        if previous is not None and now > previous[1]:
            cpu_percent = max(0.0, 100.0 * (usage.cpu - previous[0]) / (now - previous[1]))
        self._last[pid] = (usage.cpu, now)
        since_boot = self._since_boot()
        uptime = max(0.0, since_boot - usage.started) if since_boot is not None else None
        return ProcessSample(usage.rss, cpu_percent, uptime)

    def forget_except(self, pids: set[int]) -> None:
        """Drop what is kept about processes not in ``pids`` (ended runners)."""
        for pid in list(self._last):
            if pid not in pids:
                del self._last[pid]

    def _since_boot(self) -> float | None:
        try:
            with open("/proc/uptime", "rb") as uptime:
                return float(uptime.read().split()[0])
        except (OSError, IndexError, ValueError):
            return None
