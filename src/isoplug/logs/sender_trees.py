"""A receiver's bound on the log connections of one sender process tree
(``LogReceiver(max_senders_per_tree=...)``; which tree a process belongs to is
:mod:`isoplug.transport.process_tree`'s).

The same in both of the receiver's modes: a tree's connections count from their accept (the
kernel's word, before a byte is read), so silent ones take no more threads, sockets or
handshake seats than that, and a hello adds nothing to say whose they are (its name is the
sender's claim).
"""

from __future__ import annotations

import os

from isoplug.logs.report_throttle import Emit, ReportThrottle
from isoplug.rpc.blocking import ClientLimit
from isoplug.transport.process_tree import parent_group_session, stat_fields, tree_under
from isoplug.transport.stream import PeerCredentials

__all__ = ["own_family", "sender_tree_limit", "tree_of"]

#: A process's state in ``/proc/<pid>/stat`` once it has ended (zombie, dead).
_ENDED = (b"Z", b"X", b"x")


def sender_tree_limit(max_per_tree: int, refusals: ReportThrottle, warn: Emit) -> ClientLimit:
    """At most ``max_per_tree`` connections of one sender process tree; a refusal is said
    through ``refusals`` (see :func:`over_tree_limit`) with ``warn``."""
    return ClientLimit(
        lambda _hello, _credentials: None,
        max_per_tree,
        lambda tree, credentials: over_tree_limit(tree, credentials, max_per_tree, refusals, warn),
        peer_client=tree_of,
    )


def tree_of(pid: int) -> str | None:
    """The sender process tree of the process ``pid`` (see :class:`~isoplug.logs.LogReceiver`);
    None when it has ended already (a zombie too): it counts for no tree then. Such a
    sender's connection cannot grow, and it cannot try again: refused, the records it left in
    the ledger it passed with its hello were lost uncounted (a fork burst's children, each
    ending at once, filled their tree's places with their ends still being accounted for)."""
    fields = stat_fields(pid)
    if fields is None or fields[0] in _ENDED:
        return None
    me = os.getpid()
    top = tree_under(pid, me)
    if top is None:
        return None
    if top == me:
        # Orphans that kept this process's group or session: no child of ours to name.
        return f"sender process tree of pid {top} (this process, and orphans of its group)"
    return f"sender process tree of pid {top}"


#: The family (:data:`~isoplug.rpc.gate.Kinship`) of a receiver's own senders.
OWN_FAMILY = "the receiver's own processes"


def own_family(pid: int) -> str | None:
    """:data:`OWN_FAMILY` for this process and the processes it started (by their parents, or
    orphans that kept its group or session), None for any other: a receiver's own children
    get handshake seats of their own, which a stranger's connections cannot take."""
    me = os.getpid()
    top = tree_under(pid, me)
    if top is None:
        return None
    if top == me:
        return OWN_FAMILY
    found = parent_group_session(top)
    return OWN_FAMILY if found is not None and found[0] == me else None


def over_tree_limit(
    tree: str,
    credentials: PeerCredentials | None,
    max_per_tree: int,
    refusals: ReportThrottle,
    warn: Emit,
) -> None:
    """A connection of ``tree`` was refused: it holds all its places. Said once per report
    interval, then summed up: a tree forking in a loop must not cost a line each time."""
    limit = f"at its limit of {max_per_tree} open log connections"
    who = "" if credentials is None else f" from pid {credentials.pid}"
    refusals.report(
        "sender_tree_limit",
        f"refused a log sender{who}: {tree}: {limit} (max_senders_per_tree); it tries again, "
        "and what it logs meanwhile is lost, uncounted, if it ends before it is let in: raise "
        "max_senders_per_tree for a program that runs more of its processes at once",
        summary=lambda tally: (
            f"refused {tally.events} more log sender(s) in the last {tally.seconds:.0f} s "
            f"for their process tree's limit of {max_per_tree} open log "
            f"connections (the latest: {tally.detail})"
        ),
        emit=warn,
        detail=f"{tree}{who}",
    )
