"""Finding and ending what a runner left behind: the processes its plugins started (Linux).

Killing the runner's process group reaches most of them, but not a process that started a
session or group of its own (``os.setsid()``, ``start_new_session=True``, a daemon's double
fork). Those are found three ways, and a process any way finds is ended with everything below
it:

- the **tag**: every runner process gets ``ISOPLUG_RUNNER_TAG=<random>`` in its environment,
  which its descendants inherit (``/proc/<pid>/environ`` keeps the environment a process was
  started with, whatever it later does to ``os.environ``; a runner forked by the host's
  zygote writes its tag over a placeholder in the block it inherited, see
  :mod:`isoplug.runner.forked_start`);
- the **group** (and the **session**, for a runner started as a session leader): the runner
  leads a process group whose id is its pid; a process that leaves it (``setpgid``,
  ``setsid``) is still found by its tag or the record;
- the **record**: while the runner lives, its process tree is walked now and then
  (:func:`subtree`) and what was seen is remembered, which catches a child that both left the
  session and dropped its environment, as long as it was seen once before the runner died.

A pid is never trusted alone: every process is named by its pid *and* its start time
(``/proc/<pid>/stat``), checked again right before the signal, which goes through a pidfd
where the kernel has them, so that a pid reused meanwhile is never signalled.

Not chosen: making the host a child subreaper (``PR_SET_CHILD_SUBREAPER``). Orphans would then
be re-parented to the user's application, which would owe them a ``wait()``; and an orphan of
the host is no easier to tell from the application's own children than an orphan of init.
What is beyond reach here is a process that leaves the session, drops the tag and loses its
link to the runner before it is ever seen; only a cgroup per runner contains that.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import time
from collections.abc import Iterable, Mapping

from isoplug.transport import process_tree
from isoplug.transport.process_tree import stat_fields

__all__ = [
    "TAG_LENGTH",
    "TAG_VARIABLE",
    "ProcessStat",
    "end_processes",
    "find_descendants",
    "read_stat",
    "subtree",
    "tag_of",
]

#: The environment variable whose value names a runner process's descendants.
TAG_VARIABLE = "ISOPLUG_RUNNER_TAG"
#: A tag's length (hexadecimal digits): a runner forked by the zygote writes its tag over a
#: placeholder of this length (see isoplug.runner.forked_start).
TAG_LENGTH = 16
#: Far more than any plugin should start; it bounds what a fork bomb costs the host.
MAX_RECORDED = 4096
#: How much of a process's environment :func:`tag_of` reads: far more than a runner's, and a
#: bound on what a process that connects in a loop with a huge one costs the log listener.
MAX_ENVIRON_READ = 256 * 1024


@dataclasses.dataclass(frozen=True)
class ProcessStat:
    """What ``/proc/<pid>/stat`` says of one process."""

    pid: int
    ppid: int
    pgid: int
    sid: int
    #: Clock ticks after boot: with the pid, it names one process for good.
    start: int
    state: str

    @property
    def gone(self) -> bool:
        """A zombie (exited, waiting for its parent's wait) or being reaped."""
        return self.state in ("Z", "X", "x")


def read_stat(pid: int) -> ProcessStat | None:
    """``/proc/<pid>/stat`` parsed; None when the process is gone (or there is no ``/proc``)."""
    fields = stat_fields(pid)
    if fields is None:
        return None
    try:
        return ProcessStat(
            pid=pid,
            ppid=int(fields[1]),
            pgid=int(fields[2]),
            sid=int(fields[3]),
            start=int(fields[19]),
            state=fields[0].decode("ascii", "replace"),
        )
    except (IndexError, ValueError):
        return None


def subtree(root: int, limit: int = MAX_RECORDED) -> dict[int, int]:
    """Every live descendant of ``root`` (not ``root``), as pid -> start time; at most
    ``limit``. Cheap: it reads only the tree's own entries, not all of ``/proc``."""
    return process_tree.subtree(root, limit)


def _process_table() -> dict[int, ProcessStat]:
    table: dict[int, ProcessStat] = {}
    try:
        names = os.listdir("/proc")
    except OSError:
        return table
    for name in names:
        if name.isdigit():
            stat = read_stat(int(name))
            if stat is not None:
                table[stat.pid] = stat
    return table


def _tagged(pid: int, needle: bytes) -> bool:
    try:
        with open(f"/proc/{pid}/environ", "rb") as environ:
            data = environ.read()
    except OSError:  # another user's, or gone
        return False
    return data.startswith(needle) or b"\0" + needle in data


def tag_of(pid: int, limit: int = MAX_ENVIRON_READ) -> str | None:
    """The value of :data:`TAG_VARIABLE` in the environment ``pid`` was started with (the
    first, as ``getenv`` reads it; within its first ``limit`` bytes); None when it has none,
    or it cannot be read (another user's, or gone)."""
    try:
        with open(f"/proc/{pid}/environ", "rb") as environ:
            data = environ.read(limit)
    except OSError:
        return None
    needle = f"{TAG_VARIABLE}=".encode()
    if data.startswith(needle):
        start = len(needle)
    else:
        found = data.find(b"\0" + needle)
        if found < 0:
            return None
        start = found + 1 + len(needle)
    end = data.find(b"\0", start)
    return data[start : end if end >= 0 else None].decode("ascii", "replace")


def find_descendants(
    runner_pid: int, tag: str | None, recorded: Mapping[int, int] = {}
) -> list[ProcessStat]:
    """Every live process the runner ``runner_pid`` (started with ``tag``) left behind, found
    by tag, session, group or ``recorded`` (pid -> start time), and everything below those.

    Call it once the runner has exited. The runner's pid may then name a newcomer, but never
    a session or group: Linux does not reuse a pid while a session or group of that id has a
    member. Never includes this process or its ancestors, whatever a process's tag says.
    """
    table = _process_table()
    needle = f"{TAG_VARIABLE}={tag}\0".encode() if tag else None
    protected = _ancestors(os.getpid(), table)
    roots: set[int] = set()
    for stat in table.values():
        if stat.gone or stat.pid in protected:
            continue
        if (
            runner_pid in (stat.sid, stat.pgid)
            or recorded.get(stat.pid) == stat.start
            or (needle is not None and _tagged(stat.pid, needle))
        ):
            roots.add(stat.pid)
    children: dict[int, list[int]] = {}
    for stat in table.values():
        children.setdefault(stat.ppid, []).append(stat.pid)
    found: dict[int, ProcessStat] = {}
    pending = list(roots)
    while pending:
        pid = pending.pop()
        if pid in found or pid in protected or pid == runner_pid:
            continue
        stat = table[pid]
        if not stat.gone:
            found[pid] = stat
        pending.extend(children.get(pid, ()))
    return sorted(found.values(), key=lambda s: s.pid)


def _ancestors(pid: int, table: Mapping[int, ProcessStat]) -> set[int]:
    seen = {0, 1}
    while pid not in seen:
        seen.add(pid)
        stat = table.get(pid)
        if stat is None:
            break
        pid = stat.ppid
    return seen


def end_processes(processes: Iterable[ProcessStat], wait: float = 1.0) -> list[ProcessStat]:
    """SIGKILL each of ``processes`` that is still the same process (same start time); wait up
    to ``wait`` seconds for them to be gone. Returns those it signalled."""
    signalled: list[ProcessStat] = []
    for process in processes:
        if _kill(process):
            signalled.append(process)
    deadline = time.monotonic() + wait
    waiting = list(signalled)
    while waiting and time.monotonic() < deadline:
        waiting = [p for p in waiting if _same_and_alive(p)]
        if waiting:
            time.sleep(0.01)
    return signalled


def _same_and_alive(process: ProcessStat) -> bool:
    now = read_stat(process.pid)
    return now is not None and now.start == process.start and not now.gone


def _kill(process: ProcessStat) -> bool:
    pidfd_open = getattr(os, "pidfd_open", None)
    send = getattr(signal, "pidfd_send_signal", None)
    if pidfd_open is None or send is None:
        if not _same_and_alive(process):
            return False
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(process.pid, signal.SIGKILL)
            return True
        return False
    try:
        pidfd = pidfd_open(process.pid)
    except OSError:  # gone, or a kernel without pidfds
        return False
    try:
        # The pidfd holds the process the pid named when it was opened: if that one has the
        # start time we know, the signal cannot reach a newcomer with the same pid.
        if not _same_and_alive(process):
            return False
        send(pidfd, signal.SIGKILL)
        return True
    except (ProcessLookupError, PermissionError):
        return False
    finally:
        os.close(pidfd)
