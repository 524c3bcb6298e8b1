"""A thread that cannot start (``RuntimeError: can't start new thread``), said with the limits
that may have stopped it, as this process sees them, and what to change.

The kernel refuses a new thread for a few reasons, and says which to nobody: a limit on
tasks (every process and thread counts) of the cgroup (``pids.max``: docker's
``--pids-limit``, systemd's ``TasksMax=``) or of the user (``RLIMIT_NPROC``, ``ulimit -u``,
which root is exempt from), the address space (``RLIMIT_AS``, ``ulimit -v``: each thread's
stack reserves 8 MiB of it by default), or the system's own (``kernel.threads-max``). So the
text names those that are set here, with how many tasks are in use where it can read that.
Both sides use it: the host for its own threads, a runner for its own.
"""

from __future__ import annotations

import os
import resource
import threading
from pathlib import Path

__all__ = ["ThreadShortage", "cannot_start_thread", "start_thread", "thread_limits"]

#: What ``threading`` raises when the kernel refuses a thread (``RuntimeError`` since 3.x).
_REFUSED = "can't start new thread"
#: Where cgroup file systems are mounted (v2's unified tree, or v1's ``pids`` hierarchy).
_CGROUP_ROOT = Path("/sys/fs/cgroup")
#: How many levels of a cgroup path are read, its own and its ancestors'.
_MAX_LEVELS = 32


class ThreadShortage(RuntimeError):
    """A thread isoplug needed could not start; ``str()`` says for what, the limits set
    here, and what to change."""

    def __init__(self, purpose: str) -> None:
        self.purpose = purpose
        super().__init__(f"cannot start a thread ({purpose}): {_REFUSED}; {thread_limits()}")


def cannot_start_thread(error: BaseException) -> bool:
    """Whether ``error`` is the kernel refusing a new thread (ours or threading's)."""
    return isinstance(error, RuntimeError) and _REFUSED in str(error)


def start_thread(thread: threading.Thread, purpose: str) -> None:
    """``thread.start()``, raising :class:`ThreadShortage` (naming ``purpose``) when the kernel
    refuses it."""
    try:
        thread.start()
    except RuntimeError as exc:
        if not cannot_start_thread(exc):
            raise
        raise ThreadShortage(purpose) from exc


def thread_limits() -> str:
    """The limits on this process's threads that are set, and the fix: ``"threads and
    processes are limited here: cgroup pids.max 20 (20 in use: docker --pids-limit, systemd
    TasksMax=); ulimit -u 4096 (RLIMIT_NPROC: ...); raise the limit reached, or run fewer
    plugins"``."""
    limits = [text for text in (_cgroup_limit(), _user_limit(), _address_space()) if text]
    threads = _own_threads()
    here = f" (this process has {threads} thread{'s' if threads != 1 else ''})" if threads else ""
    if not limits:
        return (
            f"no limit on tasks or address space is set for this process{here}: the system's "
            "(kernel.threads-max, kernel.pid_max) or its memory may be exhausted"
        )
    return (
        f"threads and processes are limited here{here}: {'; '.join(limits)}; raise the limit "
        "reached, or run fewer plugins"
    )


def _cgroup_limit() -> str | None:
    """The tightest ``pids.max`` of this process's cgroup and its ancestors, if any is set."""
    tightest: tuple[int, int, Path] | None = None
    for folder in _pids_cgroups():
        try:
            written = (folder / "pids.max").read_text(encoding="ascii").strip()
            used = int((folder / "pids.current").read_text(encoding="ascii").strip())
            most = None if written == "max" else int(written)
        except (OSError, ValueError):
            continue  # not this level's to say (no pids controller there, or gone)
        if most is not None and (tightest is None or most - used < tightest[0] - tightest[1]):
            tightest = (most, used, folder)
    if tightest is None:
        return None
    limit, in_use, where = tightest
    return (
        f"cgroup pids.max {limit} ({in_use} in use, {where}: docker --pids-limit, systemd "
        "TasksMax=; every process and thread counts)"
    )


def _pids_cgroups() -> list[Path]:
    """This process's cgroup folders with a ``pids`` controller, innermost first: its v1
    ``pids`` hierarchy's, else its v2 (unified) one's, then each ancestor's."""
    try:
        lines = (
            Path("/proc/self/cgroup")
            .read_text(encoding="utf-8", errors="surrogateescape")
            .splitlines()
        )
    except OSError:
        return []
    places: list[Path] = []
    for line in lines:
        fields = line.split(":", 2)
        if len(fields) != 3:
            continue
        _, controllers, path = fields
        if "pids" in controllers.split(","):
            places.append(_CGROUP_ROOT / "pids" / path.lstrip("/"))
        elif controllers == "":
            places.append(_CGROUP_ROOT / path.lstrip("/"))
    folders: list[Path] = []
    for place in places:
        folder = place
        for _ in range(_MAX_LEVELS):
            folders.append(folder)
            if folder in (_CGROUP_ROOT, _CGROUP_ROOT / "pids") or folder == folder.parent:
                break
            folder = folder.parent
    return folders


def _user_limit() -> str | None:
    soft, _ = resource.getrlimit(resource.RLIMIT_NPROC)
    if soft == resource.RLIM_INFINITY or os.geteuid() == 0:
        return None  # root is exempt from it
    return (
        f"ulimit -u {soft} (RLIMIT_NPROC: every process and thread of this user counts; "
        "LimitNPROC= in a systemd unit)"
    )


def _address_space() -> str | None:
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft == resource.RLIM_INFINITY:
        return None
    return (
        f"ulimit -v {soft // 1024} (KiB; RLIMIT_AS: each thread's stack reserves 8 MiB of it; "
        "LimitAS= in a systemd unit)"
    )


def _own_threads() -> int | None:
    try:
        for line in (
            Path("/proc/self/status").read_text(encoding="utf-8", errors="replace").splitlines()
        ):
            if line.startswith("Threads:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None
