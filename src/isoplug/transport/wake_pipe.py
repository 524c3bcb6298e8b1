"""A pipe that wakes a thread polling other descriptors: :class:`WakePipe`.

A watcher thread sleeps in ``poll()`` on descriptors it watches (a receiver's pidfds of
senders whose ends wait, a server's sockets of connections waiting for a place); whoever
changes what it must watch writes a byte here, and the watcher, woken, reads it away and polls
the new set.
"""

from __future__ import annotations

import contextlib
import os

__all__ = ["WakePipe"]


class WakePipe:
    """Opened on demand, non-blocking and close-on-exec. Not thread-safe: its user guards it
    with its own lock, for a number written to after :meth:`close` could name another file
    of the process's by then."""

    def __init__(self) -> None:
        #: The end the watcher polls (``POLLIN``), -1 while closed.
        self.read_end = -1
        self._write_end = -1

    def open(self) -> None:
        """Make the pipe, unless it is open."""
        if self.read_end < 0:
            self.read_end, self._write_end = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)

    def wake(self) -> None:
        """Wake the watcher, if the pipe is open."""
        if self._write_end >= 0:
            # A full pipe has woken the watcher already.
            with contextlib.suppress(BlockingIOError):
                os.write(self._write_end, b"x")

    def drain(self) -> None:
        """Read away what woke the watcher (by the watcher, after its poll)."""
        if self.read_end >= 0:
            with contextlib.suppress(BlockingIOError):
                os.read(self.read_end, 4096)

    def close(self) -> None:
        """Close both ends (no watcher polls them any more)."""
        for fd in (self.read_end, self._write_end):
            if fd >= 0:
                os.close(fd)
        self.read_end = self._write_end = -1
