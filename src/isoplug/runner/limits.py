"""A runner limits itself (``[limits]`` of plugin.toml), once, before it imports a plugin.

What the runner sets with ``setrlimit``, soft and hard alike (a plugin that lowers its own
limits further may; one that wants them raised needs root, which these limits do not stop:
they guard against accidents, not against a plugin that attacks its host):

- ``cpu_seconds``: ``RLIMIT_CPU``, counted from now (the CPU time the runner used to start,
  rounded up, is added). At the soft limit the kernel sends SIGXCPU, which ends a Python
  process; the hard limit, :data:`~isoplug.control.CPU_LIMIT_GRACE` seconds later, is a
  SIGKILL for a plugin that handles SIGXCPU. The host's exit account names the limit (see
  isoplug.host.limits).
- ``open_files``: ``RLIMIT_NOFILE``, set so that exactly ``open_files`` descriptor numbers are
  free below it: the plugins may open that many more descriptors than the runner holds now
  (its connections, pipes, health channel); the next open fails with EMFILE ("Too many open
  files"), in the plugin; the runner's own descriptors stay open. The kernel limits the
  *numbers* a new descriptor may take, not how many are open: a descriptor of the runner's at
  or above the limit (a forked runner inherits one from its zygote, numbered after the
  zygote's other runners) takes no room below it, so it is not counted (counting it let the
  plugins open one more).
- ``processes``: ``RLIMIT_NPROC``, which the kernel counts per *user*, over all their processes
  and threads, and ignores for root (``CAP_SYS_RESOURCE``/``CAP_SYS_ADMIN``). So it is set to
  the user's tasks now + ``processes`` + :data:`THREAD_ROOM` (the runner's own threads to
  come): up to some ``THREAD_ROOM`` more than ``processes`` while the runner's own threads are
  few, shifted by whatever else the user starts or ends.
  As root it cannot be enforced this way: the runner says so in a WARNING and runs on.
- ``memory``: enforced by the host, which watches the runner's RSS (see isoplug.host.limits).
  The runner sets a backstop, ``RLIMIT_AS`` = its address space now + :data:`AS_FACTOR` x
  ``memory`` + :data:`AS_HEADROOM` (thread stacks and malloc arenas reserve address space they
  never touch), so that one huge allocation fails at once with ``MemoryError`` instead of
  eating the machine between two of the host's checks; and, with glibc, caps malloc's arenas
  at :data:`ARENA_MAX` (each thread's arena reserves 64 MiB of address space, and fragments).
  A ``MemoryError`` in a plugin call is logged as an ERROR on ``isoplug.runner`` (the host
  shows it as ``plugin.<id>.isoplug.runner``) naming the cap (:func:`note_memory_error`); the
  call fails with it, as any exception. ``address_space`` (``ResourceLimits``) turns the
  backstop off (0) or sets the cap itself: the cap also stops many threads (8 MiB stacks),
  large mappings (``mmap``) and children that reserve address space (they inherit it).

What cannot be set is logged as a WARNING on ``isoplug.runner`` (it reaches the host's
logging) and the runner goes on: a missing limit must not keep a plugin from running.
"""

from __future__ import annotations

import ctypes
import fcntl
import math
import os
import resource
from collections.abc import Iterable

from isoplug.control import CPU_LIMIT_GRACE, CallOutcome, CallRequest, ResourceLimits
from isoplug.log_guard import guarded_logger
from isoplug.sizes import format_size

__all__ = [
    "AS_FACTOR",
    "AS_HEADROOM",
    "THREAD_ROOM",
    "apply_limits",
    "note_memory_error",
]

#: The address-space backstop: this many times ``memory`` beyond what is mapped at start ...
AS_FACTOR = 2
#: ... plus this much, for thread stacks (8 MiB each) and malloc arenas that are reserved,
#: not used.
AS_HEADROOM = 1024**3
#: glibc's malloc arenas at most (``M_ARENA_MAX``), in a runner with a memory limit.
ARENA_MAX = 2
_M_ARENA_MAX = -8
#: Threads the runner may start after its limits are set (its worker pool: at most 32 plus
#: ``max_stuck_threads``; log forwarding, health), counted by RLIMIT_NPROC like processes.
THREAD_ROOM = 48

_log = guarded_logger("isoplug.runner")
_MEMORY_ERROR = "builtins.MemoryError"
#: The address-space cap set (RLIMIT_AS, what it was set for), for note_memory_error; empty:
#: none.
_backstop: list[tuple[int, str]] = []


def apply_limits(limits: ResourceLimits, *, thread_room: int = THREAD_ROOM) -> list[str]:
    """Set ``limits`` on this process; return what could not be done (each also logged)."""
    problems: list[str] = []
    if limits.cpu_seconds is not None:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        soft = limits.cpu_seconds + math.ceil(usage.ru_utime + usage.ru_stime)
        _set(resource.RLIMIT_CPU, soft, soft + CPU_LIMIT_GRACE, "cpu_seconds", problems)
    if limits.open_files is not None:
        held = _open_descriptors()
        if held is None:
            problems.append("open_files: cannot list the runner's descriptors (no /proc)")
        else:
            total = nofile_limit(held, limits.open_files)
            _set(resource.RLIMIT_NOFILE, total, total, "open_files", problems)
    if limits.processes is not None:
        _limit_processes(limits.processes, thread_room, problems)
    if limits.memory is not None:
        _cap_arenas(problems)
    if limits.address_space is not None:
        if limits.address_space > 0:
            _address_cap(limits.address_space, "its limit address_space", problems)
    elif limits.memory is not None:
        _memory_backstop(limits.memory, problems)
    for problem in problems:
        _log.warning("runner limits: %s; the runner goes on", problem)
    return problems


def note_memory_error(request: CallRequest, outcome: CallOutcome) -> None:
    """Log a call that failed with ``MemoryError`` in a runner with a backstop: the caller
    gets the error, and the host's log says what it means."""
    error = outcome.error
    if not _backstop or error is None or error.type != _MEMORY_ERROR:
        return
    limit, why = _backstop[0]
    _log.error(
        "plugin %r: %s raised MemoryError: an allocation would have passed the runner's "
        "address-space cap (RLIMIT_AS %s, %s); the call failed, the runner goes on",
        request.plugin,
        request.method,
        format_size(limit),
        why,
    )


def _set(which: int, soft: int, hard: int, name: str, problems: list[str]) -> None:
    _, current_hard = resource.getrlimit(which)
    if current_hard != resource.RLIM_INFINITY and hard > current_hard:
        # The runner does not raise a hard limit (only root could): the lower one stays, and
        # is the limit, which the log says.
        problems.append(
            f"{name}: asks for {hard}, above the hard limit the runner inherited "
            f"({current_hard}): limited to that"
        )
        hard = current_hard
        soft = min(soft, hard)
    try:
        resource.setrlimit(which, (soft, hard))
    except (OSError, ValueError) as exc:
        problems.append(f"{name}: setrlimit({soft}, {hard}) failed: {exc}")


def nofile_limit(held: Iterable[int], free: int) -> int:
    """The ``RLIMIT_NOFILE`` that leaves exactly ``free`` descriptor numbers unused below it,
    ``held`` being the numbers in use: each held one below the limit pushes it up by one."""
    limit = free
    for fd in sorted(held):
        if fd >= limit:
            break  # this one and the rest take no room below the limit
        limit += 1
    return limit


def _open_descriptors() -> list[int] | None:
    """The descriptor numbers this process holds, None without /proc."""
    try:
        names = os.listdir("/proc/self/fd")
    except OSError:
        return None
    held: list[int] = []
    for name in names:
        fd = int(name)
        try:
            fcntl.fcntl(fd, fcntl.F_GETFD)
        except OSError:
            continue  # listdir's own descriptor, closed since
        held.append(fd)
    return held


def _limit_processes(processes: int, thread_room: int, problems: list[str]) -> None:
    if os.geteuid() == 0:
        problems.append(
            f"processes = {processes} is not enforced: the runner runs as root, for whom the "
            "kernel ignores RLIMIT_NPROC (and no delegated cgroup v2 pids.max is available)"
        )
        return
    tasks = _user_tasks(os.getuid())
    if tasks is None:
        problems.append("processes: cannot count the user's processes (no /proc)")
        return
    total = tasks + processes + thread_room
    _set(resource.RLIMIT_NPROC, total, total, "processes", problems)


def _user_tasks(uid: int) -> int | None:
    """Processes and threads whose real user is ``uid`` (what RLIMIT_NPROC counts)."""
    try:
        names = os.listdir("/proc")
    except OSError:
        return None
    count = 0
    for name in names:
        if not name.isdigit():
            continue
        try:
            # The process's name (Name:) is whatever bytes it chose; only numbers are read.
            with open(f"/proc/{name}/status", encoding="utf-8", errors="replace") as status:
                fields = dict(line.split(":", 1) for line in status if ":" in line)
        except OSError:
            continue  # it ended meanwhile
        if int(fields.get("Uid", "-1").split()[0]) == uid:
            count += int(fields.get("Threads", "1"))
    return count


def _memory_backstop(memory: int, problems: list[str]) -> None:
    mapped = _address_space()
    if mapped is None:
        problems.append("memory: cannot read the runner's address space (no /proc)")
        return
    limit = mapped + AS_FACTOR * memory + AS_HEADROOM
    why = f"the backstop set for its limit memory = {format_size(memory)}"
    _address_cap(limit, why, problems)


def _address_cap(limit: int, why: str, problems: list[str]) -> None:
    before = len(problems)
    _set(resource.RLIMIT_AS, limit, limit, "memory (RLIMIT_AS backstop)", problems)
    if len(problems) == before:
        _backstop[:] = [(resource.getrlimit(resource.RLIMIT_AS)[0], why)]


def _address_space() -> int | None:
    try:
        with open("/proc/self/statm", encoding="ascii") as statm:
            return int(statm.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def _cap_arenas(problems: list[str]) -> None:
    try:
        # The process's own symbols: libc's, where it is linked (find_library would run
        # ldconfig in a subprocess).
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return  # not glibc: its allocator has no such arenas to cap
    if mallopt(_M_ARENA_MAX, ARENA_MAX) != 1:
        problems.append(f"memory: mallopt(M_ARENA_MAX, {ARENA_MAX}) failed")
