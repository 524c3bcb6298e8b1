"""Whether the event loop's thread is waiting for the host to read its stdout or stderr (Linux).

A runner's file descriptors 1 and 2 are pipes the host reads. Text a plugin prints becomes
records in the runner (:mod:`isoplug.logs.streams`), but bytes written to the descriptors
themselves (``os.write(1, ...)``, a C library's ``printf``, ``stdio = "pipe"``) go through the
pipe, and a write to a full pipe waits until the host has read enough. When the plugin writes
faster than the host reads, that wait is the host's slowness, not a hung plugin: the host
must not kill the runner for it (:mod:`isoplug.host.health` leaves it out of the loop's
blocked time, as it does a wait for a CPU).

The kernel says which system call a blocked thread is in, and its arguments:
``/proc/<pid>/task/<tid>/syscall`` starts with the call's number and the first argument (for
``write`` and ``writev``, the descriptor) in hex, or reads ``running``. A thread may read that
file of a thread of its own process. The numbers are the architecture's; on one not listed
here, or without the file, nothing is known and nothing is excused.

Descriptors 1 and 2 count only while they are still the pipes the runner started with: a
plugin that puts another pipe there (``os.dup2``) and fills it waits for its own reader.

How long it waited (:class:`OutputWaits`): the health thread looks at the loop's thread at
every wake-up (a tick) and sees it writing to its output (``W``), ready to run or running
(``R``: the file reads ``running`` then), waiting on a futex (``F``: a lock, or the GIL, which
the health thread holds while it looks, so a loop's thread between two writes is often seen
so), in another system call (``S``: sleeping, polling, reading), or nothing known. Two
measures, the larger one counts:

- the time between two looks in a row that both saw ``W``;
- for a loop that did nothing else while it was blocked (no ``S`` look, one ``W`` look at
  least): the time from the start of the block to a tick after the last ``W`` look, less the
  time the thread ran on a CPU meanwhile. A flood of writes, each waiting for the host, with
  a CPU wait between two of them (runners run below the host, which is busy reading) is all
  the host's doing; a loop that then blocks on a lock for good counts from its last write.
"""

from __future__ import annotations

import collections
import math
import os
import platform
import stat

__all__ = ["OutputWaits", "ThreadOutputWait", "syscall_numbers"]

#: (``write`` and ``writev``, ``futex``) by ``platform.machine()``: x86-64's own numbers, the
#: generic table of the newer architectures, and the older tables of i386 and 32-bit ARM,
#: POWER, and s390.
_SYSCALLS: dict[str, tuple[frozenset[int], int]] = {
    **dict.fromkeys(("x86_64", "amd64"), (frozenset({1, 20}), 202)),
    **dict.fromkeys(("aarch64", "arm64", "riscv64", "loongarch64"), (frozenset({64, 66}), 98)),
    **dict.fromkeys(
        ("i386", "i486", "i586", "i686", "armv6l", "armv7l", "armv8l"), (frozenset({4, 146}), 240)
    ),
    **dict.fromkeys(("ppc64", "ppc64le"), (frozenset({4, 146}), 221)),
    "s390x": (frozenset({4, 146}), 238),
}
#: A syscall line is the number and eight hex values: about 170 bytes.
_READ_BYTES = 256

#: What a look saw the loop's thread doing (see the module docstring).
WRITING, READY, FUTEX, SLEEPING = "W", "R", "F", "S"


def syscall_numbers(machine: str | None = None) -> tuple[frozenset[int], int] | None:
    """The numbers of ``write`` and ``writev``, and of ``futex``, on ``machine`` (this one by
    default); None where unknown."""
    return _SYSCALLS.get((machine or platform.machine()).lower())


def parse_syscall(text: bytes) -> tuple[int, int] | None:
    """The system call number and first argument of a ``syscall`` file's line; None when the
    thread is running or ready to run (``running``), or the line is not understood."""
    fields = text.split(maxsplit=2)
    if len(fields) < 2:
        return None
    try:
        return int(fields[0]), int(fields[1], 16)
    except ValueError:
        return None


class ThreadOutputWait:
    """What the thread that created it is doing, as far as waiting for the host to read its
    output goes (:meth:`state`); readable from any thread of the process afterwards (the file
    is opened through ``/proc/thread-self``, which names the opener). ``fds``: the
    descriptors the host reads."""

    def __init__(self, fds: tuple[int, ...] = (1, 2)) -> None:
        self._fd: int | None = None
        self._outputs: dict[int, tuple[int, int]] = {}
        numbers = syscall_numbers()
        self._writes, self._futex = numbers if numbers is not None else (frozenset(), -1)
        if numbers is None:
            return
        for fd in fds:
            identity = _pipe_identity(fd)
            if identity is not None:
                self._outputs[fd] = identity
        if self._outputs:
            try:
                self._fd = os.open("/proc/thread-self/syscall", os.O_RDONLY)
            except OSError:
                self._fd = None

    @property
    def known(self) -> bool:
        """Whether :meth:`state` can ever say :data:`WRITING` here."""
        return self._fd is not None

    def state(self) -> str | None:
        """:data:`WRITING` while the thread is in a ``write`` to its stdout or stderr pipe
        (waiting for its reader: a write to a pipe with room returns at once), :data:`READY`,
        :data:`FUTEX` or :data:`SLEEPING` (see the module docstring); None if unknown."""
        if self._fd is None:
            return None
        try:
            text = os.pread(self._fd, _READ_BYTES, 0)
        except OSError:
            return None
        if text.startswith(b"running"):
            return READY
        call = parse_syscall(text)
        if call is None or call[0] < 0:
            return None  # not in a system call, yet not running: stopped, or traced
        if call[0] == self._futex:
            return FUTEX
        if call[0] in self._writes:
            identity = self._outputs.get(call[1])
            if identity is not None and _pipe_identity(call[1]) == identity:
                return WRITING
        return SLEEPING

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class OutputWaits:
    """The looks at the loop's thread, and how long it waited for the host to read its output
    (see the module docstring). Used by one thread."""

    def __init__(self, kept: int = 256) -> None:
        #: [start, end] of each run of consecutive WRITING looks, the latest last.
        self._runs: collections.deque[list[float]] = collections.deque(maxlen=kept)
        self._last: str | None = None
        self._last_writing = -math.inf
        self._last_sleeping = -math.inf

    def look(self, now: float, state: str | None) -> None:
        """Note what a look at ``now`` saw."""
        if state == WRITING:
            if self._last == WRITING:
                self._runs[-1][1] = now
            else:
                self._runs.append([now, now])
            self._last_writing = now
        elif state == SLEEPING:
            self._last_sleeping = now
        self._last = state

    def waited(self, start: float, now: float, tick: float, ran: float | None) -> float:
        """How long, of the block from ``start`` to ``now``, the loop's thread waited for the
        host to read its output, at least; ``ran``: its time on a CPU meanwhile (None:
        unknown). ``tick``: the time between two looks."""
        between = sum(max(0.0, min(now, end) - max(start, begin)) for begin, end in self._runs)
        if ran is None or self._last_writing <= start or self._last_sleeping > start:
            return between
        writing_only = min(now, self._last_writing + tick) - start - ran
        return max(between, writing_only, 0.0)


def _pipe_identity(fd: int) -> tuple[int, int] | None:
    """``fd``'s device and inode if it is a pipe, else None."""
    try:
        status = os.fstat(fd)
    except OSError:
        return None
    if not stat.S_ISFIFO(status.st_mode):
        return None
    return status.st_dev, status.st_ino
