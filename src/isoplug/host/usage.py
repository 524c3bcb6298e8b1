"""A process's RSS and CPU time, read from ``/proc/<pid>/stat`` (one read of some 1.5 KB): what
the host's limit watch checks (:mod:`isoplug.host.limits`), and, read from the zombie just
before it is reaped, a runner's CPU time at its exit (:mod:`isoplug.host.children`)."""

from __future__ import annotations

import dataclasses
import os

from isoplug.transport.process_tree import stat_fields

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
    fields = stat_fields(pid)
    if fields is None:
        return None
    # Field 3 (the state) is index 0: utime is field 14, stime 15, starttime 22, rss 24.
    try:
        return Usage(
            int(fields[21]) * _PAGE,
            (int(fields[11]) + int(fields[12])) / _TICKS,
            int(fields[19]) / _TICKS,
        )
    except (IndexError, ValueError):
        return None
