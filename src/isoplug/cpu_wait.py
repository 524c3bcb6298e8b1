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

Without the file (not Linux, no ``/proc``) every reading is None, and the health checks time
by the clock alone, as before.
"""

from __future__ import annotations

import os

__all__ = ["ThreadCpuWait", "longest_wait", "process_cpu_waits"]

#: A schedstat line is three numbers: about 60 bytes.
_READ_BYTES = 128


def _run_delay(text: bytes) -> int | None:
    fields = text.split()
    if len(fields) < 2:
        return None
    try:
        return int(fields[1])
    except ValueError:
        return None


class ThreadCpuWait:
    """The CPU wait of the thread that created it, readable from any thread afterwards: the
    file is opened through ``/proc/thread-self``, which names the opener, and a read of an
    open schedstat file tells about the thread it was opened for."""

    def __init__(self) -> None:
        try:
            self._fd: int | None = os.open("/proc/thread-self/schedstat", os.O_RDONLY)
        except OSError:
            self._fd = None

    def read(self) -> int | None:
        """Nanoseconds this thread has waited for a CPU since it started; None if unknown."""
        if self._fd is None:
            return None
        try:
            return _run_delay(os.pread(self._fd, _READ_BYTES, 0))
        except OSError:
            return None

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


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
