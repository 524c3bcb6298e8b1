"""A process's RSS and CPU time, read from ``/proc/<pid>/stat`` (one read of some 1.5 KB): what
the host's limit watch checks (:mod:`isoplug.host.limits`), and, read from the zombie just
before it is reaped, a runner's CPU time at its exit (:mod:`isoplug.host.children`)."""

from __future__ import annotations

import dataclasses
import os

__all__ = ["Usage", "read_usage"]

_PAGE = os.sysconf("SC_PAGE_SIZE")
_TICKS = os.sysconf("SC_CLK_TCK")


@dataclasses.dataclass(frozen=True)
class Usage:
    #: Resident set size, bytes.
    rss: int
    #: User + system CPU time, seconds.
    cpu: float
    #: When the process started, in seconds after the machine booted.
    started: float = 0.0


def read_usage(pid: int) -> Usage | None:
    """RSS and CPU time of ``pid`` from ``/proc/<pid>/stat``; None when it cannot be read (the
    process is gone, or there is no /proc)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            text = stat.read()
    except OSError:
        return None
    # Fields after the command name (which may hold spaces and parentheses): state is
    # field 3, utime 14, stime 15, starttime 22, rss 24 (man 5 proc).
    fields = text.rpartition(b")")[2].split()
    try:
        return Usage(
            int(fields[21]) * _PAGE,
            (int(fields[11]) + int(fields[12])) / _TICKS,
            int(fields[19]) / _TICKS,
        )
    except (IndexError, ValueError):
        return None
