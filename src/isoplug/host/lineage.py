"""Which runner a process belongs to, in the kernel's view (Linux ``/proc``).

The log listener asks it of every connection before reading a byte of it (which runner's
handshake seats and log places it takes, see :mod:`isoplug.rpc.gate`) and again in the
handshake of one whose token matched: a runner's log token stays in the memory of the runner
and of every process it starts (they reconnect with it), and in the environment of a process
started with ``ctx.log_child_env()``, which the same user can read; so a process that took it
must still be refused unless it is one of the runner's. The pid comes from the socket
(``SO_PEERCRED``), never from what the peer says.

**The parents decide first.** A process is runner ``R``'s if walking its parents
(``/proc/<pid>/stat``) reaches ``R``: so is every process a plugin starts, for as long as the
processes between it and its runner live, whatever group or session it moved to. A process
whose parents lead to another runner is that runner's, whatever its process group says:
runners share the host's session (so that they share its scheduling group, see
:mod:`isoplug.host.process`), and within a session any process may join another's process
group (``setpgid``). A process whose parents lead to no runner is nobody's, unless the walk
shows it is an orphan.

**An orphan** is a process whose line of parents was cut: an ancestor exited, and the kernel
re-parented its children to init or to a subreaper, keeping no record of where they came
from. The walk sees the cut at the first process of the line that is not its session's leader
and whose parent is init (pid 1 of the pid namespace, which starts no process but a session's
leader), is outside its session (a fork keeps the session: only a re-parenting to a subreaper
puts a child outside its parent's, or a parent's ``setsid`` after the fork, which a plugin's
process could not use to escape: its parents would still lead to its runner), or is the host
while the host adopts orphans (a subreaper) and the process sits in a runner's group. A line
that reaches its session's leader, or the host, whole is not cut: a process of the host's
session that no runner started (another child of the host application, another job of its
shell) is nobody's, in whatever group.

An orphan is the runner's whose process group it is in (or session, for a runner leading
one): the group survives re-parenting, and Linux gives no new process a pid that a group or
session still uses. Unless something places it in another runner's tree first:

- it, or an ancestor of it below the cut, was seen there: the host records each runner's
  process tree every second while the runner lives (:mod:`isoplug.host.exit_watch`), each
  process by its pid and start time (which name it for good);
- its environment, or such an ancestor's, carries another runner's tag
  (``ISOPLUG_RUNNER_TAG``): then it is nobody's. The tag is no secret (any process of the
  user reads it in ``/proc/<pid>/environ``), so it only ever rules a runner out, never in:
  an orphan carrying a copied tag counts for no runner at all. Only the orphan and its
  nearest ancestors below the cut are looked at, and only the start of each environment:
  the log listener asks this before reading a byte of a connection, and a chain of a
  thousand processes with large environments must not stall it (one that hides the tag
  beyond that is the orphan with no tag below).

What is left (docs/security.md): an orphan that left another runner's tree between two records
and carries no tag of it (an ``exec`` with an environment of its own) counts as the runner whose
group it joined; :attr:`Lineage.by_group` says so, and the log listener gives such connections
places apart from those of the runner's own processes (:mod:`isoplug.host.logbridge`).
"""

from __future__ import annotations

import ctypes
import dataclasses
import enum
import functools
import os
from collections.abc import Callable, Mapping

from isoplug.host.descendants import tag_of
from isoplug.transport.process_tree import MAX_DEPTH as _MAX_DEPTH
from isoplug.transport.process_tree import parent_group_session, stat_fields

__all__ = ["Evidence", "Lineage", "TreeMarks", "family_of", "kinship_known", "lineage_of"]

#: How many of an orphan's line (itself, then its ancestors below the cut) are looked at for
#: another runner's tag, and how much of each one's environment.
_TAGGED_ANCESTORS = 4
_TAG_READ = 32 * 1024
#: ``prctl`` option (linux/prctl.h): whether this process adopts its descendants' orphans.
_PR_GET_CHILD_SUBREAPER = 37


class Evidence(enum.Enum):
    """What placed a process in a runner's tree, as a message says it."""

    PARENTS = "by its parents"
    GROUP = "an orphan, by its process group"
    RECORD = "an orphan seen in that runner's process tree"


@dataclasses.dataclass(frozen=True, slots=True)
class Lineage:
    """The runner a process belongs to, and what says so."""

    runner: str
    evidence: Evidence

    @property
    def by_group(self) -> bool:
        """Counted as the runner's by its process group (or session) alone: an orphan that
        nothing else places, which a process of another runner's could also be (see the
        module docstring)."""
        return self.evidence is Evidence.GROUP

    def __str__(self) -> str:
        return f"in runner {self.runner}'s tree ({self.evidence.value})"


@dataclasses.dataclass(frozen=True, slots=True)
class TreeMarks:
    """What marks the processes of one live runner's tree beyond their parents."""

    #: The value of ``ISOPLUG_RUNNER_TAG`` in the runner's environment (None: untagged).
    tag: str | None
    #: pid -> start time (clock ticks after boot) of each process seen in its tree while it
    #: lives, as the host's recording thread keeps it: read here, never written.
    seen: Mapping[int, int]


def _no_marks() -> Mapping[str, TreeMarks]:
    return {}


def kinship_known() -> bool:
    """True when :func:`lineage_of` can answer (a mounted ``/proc``, as on Linux)."""
    return parent_group_session(os.getpid()) is not None


def family_of(
    pid: int,
    runners: Mapping[int, str],
    marks: Callable[[], Mapping[str, TreeMarks]] = _no_marks,
) -> str | None:
    """The runner (its value in ``runners``, keyed by runner pid) that ``pid`` is or belongs to
    (see :func:`lineage_of`); None if it is none of theirs, or gone."""
    found = lineage_of(pid, runners, marks)
    return None if found is None else found.runner


def lineage_of(
    pid: int,
    runners: Mapping[int, str],
    marks: Callable[[], Mapping[str, TreeMarks]] = _no_marks,
) -> Lineage | None:
    """The runner (its value in ``runners``, keyed by runner pid) that ``pid`` is or belongs to,
    and why (see the module docstring); None if it is none of theirs, or gone. ``marks`` gives
    each live runner's :class:`TreeMarks` by runner id, asked only for an orphan.

    One walk up ``pid``'s parents for every runner at once: the log listener asks it of every
    connection before reading a byte of it, strangers included, so it must not cost a walk per
    runner."""
    if not runners:
        return None
    found = runners.get(pid)
    if found is not None:
        return Lineage(found, Evidence.PARENTS)
    stat = _stat(pid)
    if stat is None:
        return None
    parent, group, session, start = stat
    child, child_group = pid, group
    # The process and its ancestors below the cut: the orphan's own line, for its marks.
    line = [(pid, start)]
    cut: bool | None = None
    for _ in range(_MAX_DEPTH):
        found = runners.get(parent)
        if found is not None:
            return Lineage(found, Evidence.PARENTS)
        above = None if parent <= 1 else _stat(parent)
        if above is None and parent > 1:
            # The parent exited (and was reaped) mid-walk: the kernel re-parented the child,
            # whose stat now names where its line is cut.
            again = _stat(child)
            if again is None or again[0] == parent:
                return None
            parent = again[0]
            continue
        if cut is None:
            in_runner_group = child_group in runners or session in runners
            cut = _cut(child, session, parent, above, in_runner_group=in_runner_group)
            if cut is None and above is not None:
                line.append((parent, above[3]))
        if above is None:
            break
        child, (parent, child_group, _, _) = parent, above
    if not cut:
        return None
    owner = runners.get(group)
    if owner is None:
        owner = runners.get(session)
    if owner is None:
        return None
    found_marks = marks()
    placed = _recorded(line, owner, found_marks)
    if placed is not None:
        return placed
    if _tagged_by_another(line, owner, found_marks):
        return None
    return Lineage(owner, Evidence.GROUP)


def _cut(
    child: int,
    session: int,
    parent: int,
    above: tuple[int, int, int, int] | None,
    *,
    in_runner_group: bool,
) -> bool | None:
    """Whether the line of parents is cut between ``child`` (of ``session``; in a runner's
    process group or session: ``in_runner_group``) and its parent ``parent`` (whose stat is
    ``above``; None: init); None when this link says nothing (both in the session, neither
    its leader nor the host)."""
    if child == session:
        return False
    if above is None:
        return True
    if parent == os.getpid():
        # The host starts no process in a runner's group but the runner: one there is adopted.
        return in_runner_group and _host_adopts_orphans()
    if above[2] != session:
        return True
    return None


def _recorded(
    line: list[tuple[int, int]], owner: str, marks: Mapping[str, TreeMarks]
) -> Lineage | None:
    """The runner whose recorded tree holds ``line`` (an orphan's, pid and start time each),
    another runner's before ``owner``'s (the one whose group it is in); None if none does."""
    ordered = sorted(marks.items(), key=lambda item: item[0] == owner)
    # The same pid and start time name one process for good: a pid reused is no match.
    for runner, tree in ordered:
        if any(tree.seen.get(pid) == start for pid, start in line):
            return Lineage(runner, Evidence.RECORD)
    return None


def _tagged_by_another(
    line: list[tuple[int, int]], owner: str, marks: Mapping[str, TreeMarks]
) -> bool:
    """Whether the orphan of ``line``, or one of its nearest ancestors below the cut, carries
    the tag of a runner other than ``owner`` (see the module docstring)."""
    tags = {tree.tag for runner, tree in marks.items() if tree.tag and runner != owner}
    if not tags:
        return False
    return any(tag_of(pid, _TAG_READ) in tags for pid, _ in line[:_TAGGED_ANCESTORS])


def _stat(pid: int) -> tuple[int, int, int, int] | None:
    """``(ppid, process group id, session id, start time)`` of ``pid``; None if it is gone."""
    fields = stat_fields(pid)
    if fields is None:
        return None
    try:
        return int(fields[1]), int(fields[2]), int(fields[3]), int(fields[19])
    except (IndexError, ValueError):
        return None


def _host_adopts_orphans() -> bool:
    """Whether the host is a child subreaper (the application may make it one): its runners'
    orphans are then its children."""
    value = ctypes.c_int(0)
    prctl = _libc().prctl
    if prctl(_PR_GET_CHILD_SUBREAPER, ctypes.byref(value), 0, 0, 0) != 0:
        return False
    return value.value != 0


@functools.cache
def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)
