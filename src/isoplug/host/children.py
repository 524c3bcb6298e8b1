"""A runner process as :class:`~isoplug.host.process.RunnerProcess` drives it, however it was
started: spawned (:class:`SpawnedChild`, a ``subprocess.Popen``) or forked by the host's zygote
(:class:`~isoplug.host.zygote.ForkedChild`).

Either way the host holds its end of the runner's stdin (its lifeline, a socket: see
:mod:`isoplug.host.runner_stdin`), reads its
stdout/stderr pipes, signals its process group (the runner leads a group of its own), and
learns its exit status: from ``waitpid`` for a spawned runner (the host is its parent), from the
zygote's report for a forked one (the zygote is its parent and reaps it).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import subprocess
import threading
from typing import IO, Protocol

from isoplug.control import STOP_NOTICE
from isoplug.host.runner_stdin import HostEnd
from isoplug.host.usage import read_usage

__all__ = [
    "Child",
    "ExitStatus",
    "SpawnedChild",
    "close_file_in_forked_child",
    "open_pidfd",
    "pidfd_signal",
]


@dataclasses.dataclass(frozen=True)
class ExitStatus:
    """How a runner process ended, as far as the host can know."""

    #: As ``Popen.returncode``: the exit code, or minus the signal number. Meaningless when
    #: ``known`` is False.
    returncode: int
    known: bool = True
    #: What the host knows beyond the status: ``"its zygote (pid 12) had died"`` (the kernel
    #: ends a zygote's runners with it), or why the status could not be read.
    note: str = ""
    #: Its CPU time (user + system, seconds) when it exited; None where it could not be read.
    cpu: float | None = None
    #: It was ended by its zygote's death (the kernel kills a zygote's runners with it), not
    #: by anything of its own: the supervisor restarts it without counting a crash.
    zygote_died: bool = False


class Child(Protocol):
    """The operations RunnerProcess needs of a started runner process."""

    pid: int
    #: ``"spawn"`` or ``"fork"`` (from the host's zygote).
    method: str
    #: What the runner reads on its stdin before its bootstrap line: a forked runner's
    #: environment, which its ``exec`` gives a spawned one (see isoplug.host.fork_order).
    stdin_preamble: bytes

    def write_stdin(self, data: bytes) -> None:
        """Write all of ``data`` on the runner's stdin (blocking); BrokenPipeError if it is
        gone."""

    def close_stdin(self) -> None:
        """Let go of the lifeline (idempotent)."""

    def tell_stopping(self, notice: bytes = STOP_NOTICE) -> bool:
        """Tell the runner, on its stdin, that the host began stopping it (``notice``:
        :data:`~isoplug.control.STOP_NOTICE`), or is about to send it SIGTERM
        (:data:`~isoplug.control.TERMINATE_NOTICE`); never blocks; False when that could not
        be written."""

    def drop_inherited(self) -> None:
        """In a forked child of the host: close the child's copies of the lifeline and the
        pidfd (see :mod:`isoplug.host.binding`)."""

    def open_pidfd(self) -> int | None:
        """A new pidfd of the runner, for the caller to close; None without pidfds."""

    def wait(self) -> ExitStatus:
        """Block until the runner has exited and was reaped; called once, by one thread."""

    def finished(self) -> bool:
        """Whether the runner has exited (never blocks)."""

    def kill(self) -> None:
        """SIGKILL the runner itself (not its group) unless it has exited."""

    def send_signal(self, signum: signal.Signals) -> bool:
        """Send ``signum`` to the runner itself (not its group), never to a process that
        reused its pid; False when it is gone. Raises OSError (PermissionError) when the
        signal could not be sent."""


def open_pidfd(pid: int) -> int | None:
    """``os.pidfd_open(pid)``; None where the kernel or Python has no pidfds (or it is gone)."""
    try:
        return os.pidfd_open(pid)
    except (AttributeError, OSError):
        return None


def pidfd_signal(pidfd: int, signum: signal.Signals) -> bool:
    """``pidfd_send_signal``; False when the process has exited (its pid may be reused: the
    pidfd still names the old process, so nothing else is hit)."""
    try:
        signal.pidfd_send_signal(pidfd, signum)
    except ProcessLookupError:
        return False
    return True


def close_file_in_forked_child(file: IO[bytes] | None) -> None:
    """Close a pipe's file object in a forked child: its raw file, never a flush of what a
    thread of the parent had left in its buffer (it would reach the other end), nor its lock
    (that thread may have held it at the fork, and is not in the child)."""
    raw = getattr(file, "raw", file)
    if raw is not None:
        with contextlib.suppress(OSError):  # closed either way
            raw.close()


class SpawnedChild:
    """A runner started with ``subprocess.Popen``: the host is its parent."""

    method = "spawn"
    stdin_preamble = b""

    def __init__(self, popen: subprocess.Popen[bytes], stdin: HostEnd) -> None:
        self._popen = popen
        self._stdin = stdin
        self.pid = popen.pid
        # Opened before anyone can reap it (only wait() does): signals through it can never
        # reach a process that reused the pid. Closed once the runner is reaped.
        self._pidfd = open_pidfd(self.pid)
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
        # Not reaped before wait() (only the waiting thread reaps): the pid names the runner.
        return open_pidfd(self.pid)

    def wait(self) -> ExitStatus:
        try:
            # Until it exits, leaving it unreaped (WNOWAIT): its zombie still tells its CPU time.
            os.waitid(os.P_PID, self.pid, os.WEXITED | os.WNOWAIT)
        except (AttributeError, ChildProcessError):
            usage = None  # no waitid here: the CPU time at the exit stays unknown
        else:
            usage = read_usage(self.pid)
        cpu = None if usage is None else usage.cpu
        status = ExitStatus(self._popen.wait(), cpu=cpu)
        with self._lock:
            pidfd, self._pidfd = self._pidfd, None
        if pidfd is not None:
            os.close(pidfd)
        return status

    def finished(self) -> bool:
        return self._popen.poll() is not None

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):  # gone: nothing to kill
            self.send_signal(signal.SIGKILL)

    def send_signal(self, signum: signal.Signals) -> bool:
        with self._lock:
            if self._pidfd is not None:
                return pidfd_signal(self._pidfd, signum)
        if self._popen.returncode is not None:
            return False
        # No pidfds here (or reaped just now): Popen signals only a process it has not reaped.
        self._popen.send_signal(signum)
        return self._popen.returncode is None
