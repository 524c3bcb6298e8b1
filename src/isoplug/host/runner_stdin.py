"""A runner's stdin: one end of a unix socket pair, whose other end only the host holds.

The host writes there what the runner must know before anything else (a forked runner's
environment, then every runner's bootstrap line with its tokens), then keeps its end open for
the runner's whole life: the runner's *lifeline* (:mod:`isoplug.runner.lifeline`) reads
end-of-file the moment the host dies or lets go of it. The one thing it writes there later is
that it began stopping the runner (:meth:`HostEnd.tell_stopping`).

A socket, not a pipe: any process of the same user may ``open("/proc/<runner>/fd/0")`` (the
kernel checks only that it could ptrace-read the runner, which Yama does not restrict), and
on a pipe that open gives a new end of the same pipe, to read the runner's environment and
tokens before the runner does, to write junk ahead of them, or to hold the lifeline open
past the host's death. The kernel refuses that open on a socket (``ENXIO``): only the
descriptors the host handed out reach it. The runner's end is shut for writing, so nothing
a plugin writes on its stdin queues up in the host.
"""

from __future__ import annotations

import os
import socket
import threading

from isoplug.control import STOP_NOTICE

__all__ = ["HostEnd", "runner_stdin"]


def runner_stdin() -> tuple[int, HostEnd]:
    """A new runner stdin: the runner's end (a descriptor, for the caller to hand over and
    then close) and the host's."""
    runner_end, host_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    with runner_end, host_end:
        runner_end.shutdown(socket.SHUT_WR)
        return runner_end.detach(), HostEnd(host_end.detach())


class HostEnd:
    """The host's end of a runner's stdin: blocking writes, closed once (idempotent)."""

    def __init__(self, fd: int) -> None:
        self._fd: int | None = fd
        # Closed from more than one thread (a zygote's reader, and the loop letting it go):
        # a descriptor closed twice could close another's that took its number.
        self._closing = threading.Lock()

    def write(self, data: bytes) -> None:
        """Write all of ``data`` (blocking until the runner has read what does not fit the
        socket's buffer); BrokenPipeError once the runner's end or this one is closed."""
        fd = self._fd
        if fd is None:
            raise BrokenPipeError("the runner's stdin is closed")
        written = 0
        with memoryview(data) as view:
            while written < len(view):
                written += os.write(fd, view[written:])

    def tell_stopping(self, notice: bytes = STOP_NOTICE) -> bool:
        """Tell the runner that the host began stopping it (:data:`~isoplug.control.STOP_NOTICE`),
        without waiting: False when it could not be written (the runner gone, or its stdin
        still full of what it has not read)."""
        with self._closing:
            if self._fd is None:
                return False
            try:
                # A copy, so that its socket object closes only itself.
                copy = os.dup(self._fd)
            except OSError:
                return False  # out of descriptors: the stop goes on without the notice
        with socket.socket(fileno=copy) as sock:
            try:
                # No SIGPIPE for a runner gone: an application may have restored its default.
                sent = sock.send(notice, socket.MSG_DONTWAIT | socket.MSG_NOSIGNAL)
            except OSError:
                return False
            return sent == len(notice)

    def close(self) -> None:
        """Let go of the lifeline (no shutdown: in a forked child of the host, that would
        reach the parent's; see :meth:`drop_inherited`)."""
        with self._closing:
            fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)

    def drop_inherited(self) -> None:
        """:meth:`close` in a forked child of the host: without the lock, which a thread of
        the parent may have held at the fork (that thread is not in the child)."""
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)
