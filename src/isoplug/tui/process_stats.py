"""Resident memory and CPU use of runner processes, read from ``/proc`` (Linux).

Where ``/proc`` has no entry for a pid (another platform, or the process just ended) the
figures are None: the dashboard shows a dash rather than a guess.
"""

from __future__ import annotations

import dataclasses
import os
import time

__all__ = ["ProcessSample", "ProcessSampler"]

_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


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

    def __init__(self, proc: str = "/proc") -> None:
        self._proc = proc
        #: pid -> (CPU seconds, monotonic time) at its last sample.
        self._last: dict[int, tuple[float, float]] = {}

    def sample(self, pid: int) -> ProcessSample:
        now = time.monotonic()
        cpu, started = self._cpu_and_start(pid)
        cpu_percent = None
        if cpu is not None:
            previous = self._last.get(pid)
            if previous is not None and now > previous[1]:
                cpu_percent = max(0.0, 100.0 * (cpu - previous[0]) / (now - previous[1]))
            self._last[pid] = (cpu, now)
        uptime = None
        if started is not None:
            since_boot = self._since_boot()
            uptime = max(0.0, since_boot - started) if since_boot is not None else None
        return ProcessSample(self._rss(pid), cpu_percent, uptime)

    def forget_except(self, pids: set[int]) -> None:
        """Drop what is kept about processes not in ``pids`` (ended runners)."""
        for pid in list(self._last):
            if pid not in pids:
                del self._last[pid]

    def _rss(self, pid: int) -> int | None:
        try:
            with open(f"{self._proc}/{pid}/statm", "rb") as statm:
                fields = statm.read().split()
            return int(fields[1]) * _PAGE_SIZE
        except (OSError, IndexError, ValueError):
            return None

    def _cpu_and_start(self, pid: int) -> tuple[float | None, float | None]:
        """CPU seconds used, and the start time in seconds after boot."""
        try:
            with open(f"{self._proc}/{pid}/stat", "rb") as stat:
                text = stat.read()
            # The command name (field 2) may hold spaces and parentheses: count from the last
            # ")". utime and stime are fields 14 and 15, starttime field 22.
            fields = text[text.rindex(b")") + 2 :].split()
            return (int(fields[11]) + int(fields[12])) / _TICKS, int(fields[19]) / _TICKS
        except (OSError, IndexError, ValueError):
            return None, None

    def _since_boot(self) -> float | None:
        try:
            with open(f"{self._proc}/uptime", "rb") as uptime:
                return float(uptime.read().split()[0])
        except (OSError, IndexError, ValueError):
            return None
