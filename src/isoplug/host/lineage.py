"""Whether a process descends from a runner, in the kernel's view (Linux ``/proc``).

The log listener asks it of every log connection whose token matched: the token of a runner's
log connections stays in the memory of the runner and of every process it starts (they need it
to reconnect), so a process that read it out of a runner's memory must still be refused unless
it is one of those processes. The pid comes from the socket (``SO_PEERCRED``), never from what
the peer says.

A process descends from runner ``R`` if walking its parents (``/proc/<pid>/stat``) reaches
``R``, or if it is in ``R``'s session: every runner is started in a session of its own, whose
id is the runner's pid, and a session can only be entered by being forked inside it. The
session covers descendants whose parent exited (re-parented to init) or that outlived the
runner; the walk covers descendants that started a session of their own (``setsid``). Linux
does not give a pid to a new process while a session or process group still uses it, so
neither check can be met by a process that merely reused a number.
"""

from __future__ import annotations

import os

__all__ = ["descends_from", "kinship_known"]

#: Far deeper than any real process tree; it bounds the walk whatever ``/proc`` says.
_MAX_DEPTH = 1024


def kinship_known() -> bool:
    """True when :func:`descends_from` can answer (a mounted ``/proc``, as on Linux)."""
    return _parent_and_session(os.getpid()) is not None


def descends_from(pid: int, ancestor: int) -> bool:
    """True if ``pid`` is ``ancestor``, or a process it started (see the module docstring).
    False also when ``pid`` has exited: whoever connected is gone."""
    if pid == ancestor:
        return True
    current = _parent_and_session(pid)
    if current is None:
        return False
    parent, session = current
    if session == ancestor:
        return True
    for _ in range(_MAX_DEPTH):
        if parent == ancestor:
            return True
        if parent <= 1:
            return False
        current = _parent_and_session(parent)
        if current is None:
            return False
        parent = current[0]
    return False


def _parent_and_session(pid: int) -> tuple[int, int] | None:
    """``(ppid, session id)`` of ``pid`` from ``/proc/<pid>/stat``; None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            data = stat.read()
    except OSError:
        return None
    # The command name (second field) may hold spaces and parentheses: split after its end.
    fields = data.rpartition(b")")[2].split()
    try:
        return int(fields[1]), int(fields[3])
    except (IndexError, ValueError):
        return None
