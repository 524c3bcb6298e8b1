"""How long a thread was ready to run but waited for a CPU (Linux), so that a runner starved
of CPU is not taken for a hung one.

Runners run below the host (nice 19, ``SCHED_BATCH``: :mod:`isoplug.runner.priority`), so on a
busy machine a runner may get a few percent of a core: 50 ms of a plugin's work on its event
loop can take seconds by the clock. Health checks time a runner by the clock
(:mod:`isoplug.host.health`); what they must not count is the time the runner could not run.
The kernel keeps it per thread: the second field of ``/proc/<pid>/task/<tid>/schedstat`` is
the time the thread spent runnable on a run queue, in nanoseconds (``run_delay``; kernels
built with ``CONFIG_SCHED_INFO``, as distributions' are). A thread that sleeps, waits for a
lock or is stopped (``SIGSTOP``) does not add to it: only a thread that wanted a CPU does.
The kernel adds a wait when it ends (as the thread gets a CPU), so a wait under way shows as
a thread ready to run (state ``R`` in its ``stat``) that has not been given a CPU (the
third field) nor run (the first, the time on a CPU) since.

Without the file (not Linux, no ``/proc``) every reading is None, and the health checks time
by the clock alone, as before.
"""

from __future__ import annotations

import os

__all__ = ["ThreadCpuWait", "longest_wait", "process_cpu_waits"]

#: A schedstat line is three numbers: about 60 bytes.
_READ_BYTES = 128
#: A stat line's state follows its pid and the thread's name (16 bytes at most): well within.
_STAT_BYTES = 256


def _times(text: bytes) -> tuple[int, int, int] | None:
    """A schedstat line's time on a CPU and time waiting for one (ns), and how many times the
    thread was given a CPU."""
    fields = text.split()
    if len(fields) < 3:
        return None
    try:
        return int(fields[0]), int(fields[1]), int(fields[2])
    except ValueError:
        return None


def _run_delay(text: bytes) -> int | None:
    times = _times(text)
    return None if times is None else times[1]


class ThreadCpuWait:
    """The CPU wait of the thread that created it, readable from any thread afterwards: the
    files are opened through ``/proc/thread-self``, which names the opener, and a read of an
    open schedstat (or stat) file tells about the thread it was opened for."""

    def __init__(self) -> None:
        self._fd = _open("/proc/thread-self/schedstat")
        self._stat_fd = _open("/proc/thread-self/stat")

    def read(self) -> int | None:
        """Nanoseconds this thread has waited for a CPU since it started; None if unknown."""
        times = self.times()
        return None if times is None else times[1]

    def times(self) -> tuple[int, int, int] | None:
        """Nanoseconds this thread has run on a CPU, and waited for one, since it started, and
        how many times it was given one; None if unknown. A wait still under way is not in
        it yet: the kernel adds a wait when it ends, as the thread gets a CPU."""
        if self._fd is None:
            return None
        try:
            return _times(os.pread(self._fd, _READ_BYTES, 0))
        except OSError:
            return None

    def runnable(self) -> bool | None:
        """Whether this thread is on a CPU or ready for one (state ``R``), not asleep or
        stopped; None if unknown."""
        if self._stat_fd is None:
            return None
        try:
            text = os.pread(self._stat_fd, _STAT_BYTES, 0)
        except OSError:
            return None
        # After the name, which may hold anything but is in parentheses.
        fields = text.rpartition(b")")[2].split()
        return fields[0] == b"R" if fields else None

    def close(self) -> None:
        for fd in (self._fd, self._stat_fd):
            if fd is not None:
                os.close(fd)
        self._fd = self._stat_fd = None


def _open(path: str) -> int | None:
    try:
        return os.open(path, os.O_RDONLY)
    except OSError:
        return None


def process_cpu_waits(pid: int) -> dict[int, int] | None:
    """Each thread of ``pid``: nanoseconds it has waited for a CPU. None if not known (no
    ``/proc``, or the process is gone)."""
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return None
    waits: dict[int, int] = {}
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat", "rb") as file:
                delay = _run_delay(file.read(_READ_BYTES))
        except OSError:
            continue  # the thread ended meanwhile
        if delay is not None:
            waits[int(tid)] = delay
    return waits or None


def longest_wait(before: dict[int, int] | None, after: dict[int, int] | None) -> float:
    """Seconds the thread that waited most between two :func:`process_cpu_waits` readings
    waited for a CPU (threads in both only; 0 when either reading is unknown). While a
    process is starved its runnable threads all wait and its sleeping ones do not, so the
    thread that waited most (the one holding the GIL, when one does) says how long the
    process could not run."""
    if not before or not after:
        return 0.0
    return (
        max(
            (max(0, after[tid] - delay) for tid, delay in before.items() if tid in after),
            default=0,
        )
        / 1e9
    )
