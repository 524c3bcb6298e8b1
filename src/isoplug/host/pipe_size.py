"""Larger pipes for a runner's stdout and stderr, where the kernel allows them (Linux).

A pipe holds 64 KiB by default. The host's reader of a runner's output
(:mod:`isoplug.host.stdio_reader`) gets the GIL back after each read only when the thread
holding it lets go (up to the 5 ms switch interval, under a flood that the replay thread
handles), so with 64 KiB reads it drained some 13-20 MB/s, and a plugin writing faster waited
in its writes. A pipe of :data:`GROWN_PIPE_BYTES` is read a megabyte at a time: measured, a
plugin writing 40 MB of lines from its event loop waited 0.37 s instead of 2.1 s.

The kernel caps a pipe at ``/proc/sys/fs/pipe-max-size`` (1 MiB by default) and counts pipe
memory per user: past ``fs.pipe-user-pages-soft`` (64 MiB by default, root exempt) it refuses
to grow a pipe. So only the pipes that need it grow: a runner's print pipes when its
``print()`` writes to them (``stdio = "pipe"``), and a pipe its reader finds full.
"""

from __future__ import annotations

import fcntl
from collections.abc import Sequence

from isoplug.log_guard import guarded_logger

__all__ = ["GROWN_PIPE_BYTES", "enlarge_pipes"]

_log = guarded_logger("isoplug.host")

#: The size asked for a runner's pipe that grows (the kernel's default cap).
GROWN_PIPE_BYTES = 1 << 20


def enlarge_pipes(fds: Sequence[int], size: int = GROWN_PIPE_BYTES) -> int | None:
    """Ask the kernel for pipes of ``size`` bytes, or the most it allows; return the size the
    last one has (None: unknown, or not Linux). A smaller pipe only makes a writer wait sooner,
    so a refusal is said at DEBUG and is not fatal."""
    set_size = getattr(fcntl, "F_SETPIPE_SZ", None)
    if set_size is None:  # not Linux
        return None
    try:
        with open("/proc/sys/fs/pipe-max-size", "rb") as limit:
            size = min(size, int(limit.read()))
    except (OSError, ValueError) as exc:
        _log.debug("cannot read the pipe size limit (%s); asking for %d bytes", exc, size)
    got: int | None = None
    for fd in fds:
        try:
            got = fcntl.fcntl(fd, set_size, size)
        except OSError as exc:
            # EPERM past the user's share of pipe memory (fs.pipe-user-pages-soft).
            _log.debug("the kernel keeps a runner's pipe at its size (%s)", exc)
            got = None
    return got
