"""Which process tree a peer belongs to, in the kernel's view (Linux ``/proc``).

A unix socket says which pid connected (``SO_PEERCRED``, :func:`peer_credentials_of`); a
listener that caps connections per client needs more: the *tree* that pid belongs to, so that a
process forking without end, each child opening a connection, counts as one client. Walking
``/proc/<pid>/stat`` up the parents gives it. The host's log listener asks which runner a pid
descends from (:mod:`isoplug.host.lineage`); a :class:`~isoplug.logs.LogReceiver` asks which
of its own process's children a sender descends from (:func:`tree_under`).

What a walk cannot see: a process whose parent exited is re-parented (to init, or to a
subreaper), so after a double fork (fork, the middle process exits) the walk no longer
reaches the tree it came from. Its process group and session survive that, and
:func:`adopted_tree` counts it in the tree they still name (``root``'s own group: ``root``'s
tree; a group or session led by a process below ``root``: that one's). The kernel keeps no
record of an orphan's first parent, so one that also left its group and session (``setsid``
before the double fork, as a daemon does) counts as a tree of its own; a listener that must
hold against that too needs a process group or session it controls, as the host's runners
have, and a limit on all its connections together. A subreaper ``root`` adopts orphans as
children of its own: each counts as the top of a tree.

:mod:`isoplug.transport.stream` gives the pid; this module only reads ``/proc``.
"""

from __future__ import annotations

import os

__all__ = [
    "MAX_DEPTH",
    "adopted_tree",
    "children",
    "parent_group_session",
    "started_at",
    "stat_fields",
    "subtree",
    "tree_under",
]

#: Far deeper than any real process tree; it bounds a walk whatever ``/proc`` says.
MAX_DEPTH = 1024


def stat_fields(pid: int) -> list[bytes] | None:
    """The fields of ``/proc/<pid>/stat`` after the command name, so that index 0 is field 3
    (the state) of ``man 5 proc``; None when it cannot be read (the process is gone, or
    there is no ``/proc``). The one reader of that file for every caller in isoplug."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            data = stat.read()
    except OSError:
        return None
    # The command name (second field) may hold spaces and parentheses: split after its end.
    return data.rpartition(b")")[2].split()


def started_at(pid: int) -> float | None:
    """When ``pid`` started, in seconds since the epoch (``/proc/stat``'s boot time plus
    the process's start in clock ticks after boot): good to a second (the boot time is whole
    seconds, and moves when the clock is set). None when ``/proc`` cannot say."""
    fields = stat_fields(pid)
    try:
        with open("/proc/stat", "rb") as stat:
            boot = next(int(line.split()[1]) for line in stat if line.startswith(b"btime "))
        # Field 22 (index 19): the start time in clock ticks after boot.
        ticks = int(fields[19]) if fields is not None and len(fields) > 19 else None
    except (OSError, StopIteration, ValueError, IndexError):
        return None
    if ticks is None:
        return None
    return boot + ticks / os.sysconf("SC_CLK_TCK")


def children(pid: int) -> list[int]:
    """The children of ``pid``, from ``/proc/<pid>/task/*/children`` (empty when unknown)."""
    found: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return found  # gone, or no /proc
    for task in tasks:
        try:
            with open(f"/proc/{pid}/task/{task}/children", "rb") as listed:
                found.extend(int(child) for child in listed.read().split())
        except (OSError, ValueError):
            continue  # the task ended meanwhile: its children are read through another
    return found


def subtree(root: int, limit: int) -> dict[int, int]:
    """Every live descendant of ``root`` (not ``root``; zombies left out), as pid -> start
    time (clock ticks after boot: with the pid, it names one process for good); at most
    ``limit``. Cheap: it reads only the tree's own entries, not all of ``/proc``."""
    found: dict[int, int] = {}
    pending = children(root)
    while pending and len(found) < limit:
        pid = pending.pop()
        if pid in found:
            continue
        fields = stat_fields(pid)
        try:
            if fields is None or fields[0] in (b"Z", b"X", b"x"):
                continue
            found[pid] = int(fields[19])
        except (IndexError, ValueError):
            continue
        pending.extend(children(pid))
    return found


def parent_group_session(pid: int) -> tuple[int, int, int] | None:
    """``(ppid, process group id, session id)`` of ``pid``; None if it is gone (or there is
    no ``/proc``)."""
    fields = stat_fields(pid)
    try:
        return None if fields is None else (int(fields[1]), int(fields[2]), int(fields[3]))
    except (IndexError, ValueError):
        return None


def tree_under(pid: int, root: int) -> int | None:
    """The pid at the top of ``pid``'s process tree as seen from ``root``: ``root`` itself
    when ``pid`` is ``root``; the child of ``root`` that ``pid`` is or descends from; for a
    process that does not descend from ``root`` by its parents, the tree its process group or
    session still names (see :func:`adopted_tree`), else its oldest ancestor below init (pid
    1, or the top of a pid namespace). None when ``pid`` is gone or ``/proc`` cannot say.

    One walk up the parents, at most :data:`MAX_DEPTH` steps; for a process not below
    ``root``, at most two more (its group's leader's, its session's)."""
    if pid == root:
        return root
    found = parent_group_session(pid)
    if found is None:
        return None
    top, below_root = _walk(pid, found[0], root)
    if below_root:
        return top
    adopted = adopted_tree(found[1], found[2], root)
    return top if adopted is None else adopted


def adopted_tree(group: int, session: int, root: int) -> int | None:
    """The tree under ``root`` (as :func:`tree_under` names it) that a process in process
    group ``group`` and session ``session``, but not below ``root`` by its parents, still
    belongs to; None when they name none.

    An orphan (its parent exited: the kernel re-parented it to init or a subreaper) keeps
    its group and session, which only a fork passes on (or ``setpgid``, within one session)
    and whose ids the kernel gives no new process while they are in use. So:

    - in ``root``'s own process group, or in the session ``root`` leads: ``root``'s own
      tree. The child of ``root`` it came from cannot be told (all of them share the group
      unless started in one of their own), so such orphans share the tree of ``root``. When
      ``root`` does not lead its group, the processes it shares it with (the shell script
      that started it, a pipeline's other commands) count there too: a shared cap, never
      one escaped;
    - in a group or session whose leader still runs below ``root`` (a child started with a
      group or session of its own, ``start_new_session``): that leader's tree.

    A process that left its group and session (``setsid``, then a fork whose middle process
    exits: the daemon's double fork) keeps no trace of where it came from: nothing in
    ``/proc`` records an orphan's first parent, so it counts as a tree of its own. So does
    an orphan of a group whose leader is gone."""
    own = parent_group_session(root)
    if own is not None and group == own[1]:
        return root
    if session == root:
        return root
    for leader in (group, session):
        if leader <= 1:
            continue
        found = parent_group_session(leader)
        if found is None:
            continue
        top, below_root = _walk(leader, found[0], root)
        if below_root:
            return top
    return None


def _walk(pid: int, parent: int, root: int) -> tuple[int, bool]:
    """Up the parents from ``pid`` (whose parent is ``parent``): the child of ``root`` it is
    or descends from and True, or the top the walk reached (below init, or the last
    ancestor still there) and False."""
    current = pid
    for _ in range(MAX_DEPTH):
        if parent == root:
            return current, True
        if parent <= 1:
            return current, False
        found = parent_group_session(parent)
        if found is None:
            # An ancestor gone mid-walk: its child is the top this walk could see.
            return current, False
        current, parent = parent, found[0]
    return current, False
