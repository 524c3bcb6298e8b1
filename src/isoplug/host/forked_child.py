"""A runner the host's zygote forked, as :class:`~isoplug.host.process.RunnerProcess` drives it
(see :class:`~isoplug.host.children.Child`).

The zygote is its parent: it reaps it and reports its exit status, which :meth:`ForkedChild.wait`
takes. When the zygote died first, the kernel ended the runner with it (its parent-death
signal) and init (or a subreaper) reaped it: only the kernel can still tell its status, through
its pidfd (``PIDFD_INFO_EXIT``, Linux 6.15); elsewhere it is reported unknown, never guessed.
The host writes its stdin (its lifeline: its environment first, then its bootstrap line) and
signals it through its pidfd.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import select
import signal
import sys
import threading
import time
from typing import TYPE_CHECKING

from isoplug.control import STOP_NOTICE
from isoplug.host.children import ExitStatus, pidfd_signal
from isoplug.host.runner_stdin import HostEnd

if TYPE_CHECKING:
    from isoplug.host.zygote_process import ZygoteProcess

__all__ = ["ForkedChild", "exit_status_from_pidfd"]

#: After the zygote died and one of its runners exited, how long init (or a subreaper) may take
#: to reap it, so that the kernel can tell its exit status through a pidfd. Short: past this
#: the status is reported unknown, and the host must not take the runner for alive meanwhile
#: (an init that never reaps, as in some containers, leaves it a zombie for good).
_REAPED_TIMEOUT = 0.5

# ioctl(pidfd, PIDFD_GET_INFO, struct pidfd_info) (Linux 6.15): _IOWR(0xFF, 11, 64 bytes).
_PIDFD_GET_INFO = 0xC040FF0B
_PIDFD_INFO_EXIT = 1 << 3
_PIDFD_INFO_SIZE = 64
_EXIT_CODE_OFFSET = 60


def exit_status_from_pidfd(pidfd: int) -> int | None:
    """The exit status of a reaped process, from its pidfd (``PIDFD_INFO_EXIT``, Linux 6.15);
    None while it is not reaped, or where the kernel cannot say."""
    info = bytearray(_PIDFD_INFO_SIZE)
    info[0:8] = _PIDFD_INFO_EXIT.to_bytes(8, sys.byteorder)
    try:
        fcntl.ioctl(pidfd, _PIDFD_GET_INFO, info)
    except OSError:
        return None
    if not int.from_bytes(info[0:8], sys.byteorder) & _PIDFD_INFO_EXIT:
        return None
    status = int.from_bytes(info[_EXIT_CODE_OFFSET:64], sys.byteorder, signed=True)
    try:
        return os.waitstatus_to_exitcode(status)
    except ValueError:
        return None


class ForkedChild:
    """A runner the zygote forked (see :class:`~isoplug.host.children.Child`)."""

    method = "fork"

    def __init__(
        self, pid: int, pidfd: int, stdin: HostEnd, zygote: ZygoteProcess, environment: bytes
    ) -> None:
        self.pid = pid
        #: Its environment, which it reads on its stdin before its bootstrap line (see
        #: isoplug.host.fork_order).
        self.stdin_preamble = environment
        self._pidfd: int | None = pidfd
        self._stdin = stdin
        self._zygote = zygote
        self._lock = threading.Lock()

    def write_stdin(self, data: bytes) -> None:
        self._stdin.write(data)

    def close_stdin(self) -> None:
        self._stdin.close()

    def tell_stopping(self, notice: bytes = STOP_NOTICE) -> bool:
        return self._stdin.tell_stopping(notice)

    def drop_inherited(self) -> None:
        self._stdin.drop_inherited()
        pidfd, self._pidfd = self._pidfd, None  # no lock: see binding.Inherited
        if pidfd is not None:
            os.close(pidfd)

    def open_pidfd(self) -> int | None:
        with self._lock:
            return None if self._pidfd is None else os.dup(self._pidfd)

    def wait(self) -> ExitStatus:
        reported = self._zygote.wait_status(self.pid)
        if reported is not None:
            return self._done(ExitStatus(reported[0], cpu=reported[1]))
        # The zygote died: the kernel kills the runner with it (its parent-death signal), and
        # init (or a subreaper) reaps it; only the kernel can still tell its status.
        died = self._zygote.ended or "its zygote died"
        pidfd = self._pidfd
        assert pidfd is not None
        poller = select.poll()
        poller.register(pidfd, select.POLLIN)
        poller.poll()
        deadline = time.monotonic() + _REAPED_TIMEOUT
        while (returncode := exit_status_from_pidfd(pidfd)) is None:
            if time.monotonic() > deadline:
                return self._done(
                    ExitStatus(
                        -signal.SIGKILL,
                        known=False,
                        note=f"exit status unknown: {died} before reporting it, and the "
                        "kernel cannot tell it here",
                        zygote_died=True,
                    )
                )
            time.sleep(0.01)
        return self._done(
            ExitStatus(
                returncode,
                note=f"{died} before it (the kernel ends a zygote's runners with it)",
                # Any other status: it ended by itself in the moment before the zygote died.
                zygote_died=returncode == -signal.SIGKILL,
            )
        )

    def _done(self, status: ExitStatus) -> ExitStatus:
        with self._lock:
            pidfd, self._pidfd = self._pidfd, None
        if pidfd is not None:
            os.close(pidfd)
        return status

    def finished(self) -> bool:
        with self._lock:
            if self._pidfd is None:
                return True
            return bool(select.select([self._pidfd], [], [], 0)[0])

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.send_signal(signal.SIGKILL)

    def send_signal(self, signum: signal.Signals) -> bool:
        with self._lock:
            if self._pidfd is None:
                return False  # reaped
            return pidfd_signal(self._pidfd, signum)
