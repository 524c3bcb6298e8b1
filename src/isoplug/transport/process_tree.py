"""Which process tree a peer belongs to, in the kernel's view (Linux ``/proc``).

A unix socket says which pid connected (``SO_PEERCRED``, :func:`peer_credentials_of`); a
listener that caps connections per client needs more: the *tree* that pid belongs to, so that a
process forking without end, each child opening a connection, counts as one client. Walking
``/proc/<pid>/stat`` up the parents gives it. The host's log listener asks which runner a pid
descends from (:mod:`isoplug.host.lineage`); a :class:`~isoplug.logs.LogReceiver` asks which
of its own process's children a sender descends from (:func:`tree_under`).

What a walk cannot see: a process whose parent exited is re-parented (to init, or to a
subreaper), so a tree that double-forks (fork, the middle process exits) grows trees of its
own. The kernel keeps no record of who started an orphan; a listener that must hold against
that too needs a process group or session it controls, as the host's runners have.

:mod:`isoplug.transport.stream` gives the pid; this module only reads ``/proc``.
"""

from __future__ import annotations

__all__ = ["MAX_DEPTH", "parent_group_session", "stat_fields", "tree_under"]

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
    process that does not descend from ``root``, its oldest ancestor below init (pid 1, or
    the top of a pid namespace). None when ``pid`` is gone or ``/proc`` cannot say.

    One walk up the parents, at most :data:`MAX_DEPTH` steps."""
    if pid == root:
        return root
    current = pid
    for _ in range(MAX_DEPTH):
        found = parent_group_session(current)
        if found is None:
            # ``pid`` itself is gone: nobody to count. An ancestor gone mid-walk: its child
            # is the top this walk could see.
            return None if current == pid else current
        parent = found[0]
        if parent == root or parent <= 1:
            return current
        current = parent
    return current
