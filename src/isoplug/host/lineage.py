"""Whether a process descends from a runner, in the kernel's view (Linux ``/proc``).

The log listener asks it of every log connection whose token matched: the token of a runner's
log connections stays in the memory of the runner and of every process it starts (they need it
to reconnect), so a process that read it out of a runner's memory must still be refused unless
it is one of those processes. The pid comes from the socket (``SO_PEERCRED``), never from what
the peer says.

A process descends from runner ``R`` if walking its parents (``/proc/<pid>/stat``) reaches
``R``, or if it is in ``R``'s process group (or session, for a runner started as a session
leader): the host starts every runner in a process group of its own, whose id is the runner's
pid. The group covers descendants whose parent exited (re-parented to init) or that outlived
the runner; the walk covers descendants that left the group (``setpgid``, ``setsid``). Linux
does not give a pid to a new process while a session or process group still uses it, so
neither check can be met by a process that merely reused a number.

A session can only be entered by being forked inside it; a process group can also be joined
(``setpgid``) by a process of the same session: the host's, where runners are started so that
they share its scheduling group (see :mod:`isoplug.host.process`). Such a process runs in the
host application's own session, as a rule under its user and terminal; it would still need
the runner's log token, which only the memory of the runner and its descendants holds.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from isoplug.transport.process_tree import MAX_DEPTH as _MAX_DEPTH
from isoplug.transport.process_tree import parent_group_session as _parent_and_session

__all__ = ["descends_from", "family_of", "kinship_known"]


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
    parent, group, session = current
    if ancestor in (group, session):
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


def family_of(pid: int, runners: Mapping[int, str]) -> str | None:
    """The runner (its value in ``runners``, keyed by runner pid) that ``pid`` is, or
    descends from (see the module docstring); None if it is none of theirs, or gone.

    One walk up ``pid``'s parents for every runner at once: the log listener asks it of every
    connection before reading a byte of it (which lane of handshake places it takes, see
    :mod:`isoplug.rpc.gate`), strangers included, so it must not cost a walk per runner."""
    if not runners:
        return None
    found = runners.get(pid)
    if found is not None:
        return found
    current = _parent_and_session(pid)
    if current is None:
        return None
    parent, group, session = current
    found = runners.get(group)
    if found is None:
        found = runners.get(session)
    for _ in range(_MAX_DEPTH):
        if found is not None or parent <= 1:
            return found
        found = runners.get(parent)
        if found is not None:
            return found
        current = _parent_and_session(parent)
        if current is None:
            return None
        parent = current[0]
    return found
