"""A receiver's bound on the log connections of one sender process tree
(``LogReceiver(max_senders_per_tree=...)``; which tree a process belongs to is
:mod:`isoplug.transport.process_tree`'s).

The same in both of the receiver's modes: a tree's connections count from their accept (the
kernel's word, before a byte is read), so silent ones take no more threads, sockets or
handshake seats than that, and a hello adds nothing to say whose they are (its name is the
sender's claim).

Past its limit, a tree's new connection waits, unread, for one of its places
(:mod:`isoplug.rpc.waiting_room`; ``max_waiting_per_tree`` of them per tree,
``max_waiting`` in all), and is served when one of the tree's connections ends, or at once
when its sender ends first: a sender refused there used to take what it logged along,
uncounted, when it ended before it was let in (a fork burst's children, each logging and
ending at once, lost 3-123 of 900 records), though its hello had passed the ring that held
them. A waiting connection holds its socket (on an event loop, the descriptor it passed
too), never a thread; past the room's bounds a connection is refused as before, and the
warning says what that may cost.
"""

from __future__ import annotations

import os

from isoplug.logs.report_throttle import Emit, ReportThrottle
from isoplug.rpc.blocking import ClientLimit
from isoplug.rpc.waiting_room import WaitingRoom, full_for
from isoplug.transport.process_tree import parent_group_session, stat_fields, tree_under
from isoplug.transport.stream import PeerCredentials

__all__ = ["closed_unread_warning", "own_family", "sender_tree_limit", "tree_of"]

#: A process's state in ``/proc/<pid>/stat`` once it has ended (zombie, dead).
_ENDED = (b"Z", b"X", b"x")
#: What the messages call the limits, as ``LogReceiver`` takes them.
_LIMIT = "max_senders_per_tree"


def sender_tree_limit(
    max_per_tree: int,
    max_waiting_per_tree: int,
    max_waiting: int,
    refusals: ReportThrottle,
    warn: Emit,
) -> ClientLimit:
    """At most ``max_per_tree`` connections of one sender process tree, and past it at most
    ``max_waiting_per_tree`` waiting for a place (``max_waiting`` for all trees together);
    a connection that waits, or is refused, is said through ``refusals`` with ``warn``."""
    room = WaitingRoom(
        max_waiting_per_tree,
        max_waiting,
        waits=lambda tree, credentials: waits_for_place(
            tree, credentials, max_per_tree, refusals, warn
        ),
    )
    return ClientLimit(
        lambda _hello, _credentials: None,
        max_per_tree,
        lambda tree, credentials: over_tree_limit(
            tree, credentials, max_per_tree, room=room, refusals=refusals, warn=warn
        ),
        peer_client=tree_of,
        waiting_room=room,
    )


def tree_of(pid: int) -> str | None:
    """The sender process tree of the process ``pid`` (see :class:`~isoplug.logs.LogReceiver`);
    None when it has ended already (a zombie too): it counts for no tree then. Such a
    sender's connection cannot grow, and it cannot try again: refused, or made to wait for
    a place, the records it left in the ledger it passed with its hello were lost uncounted,
    or late (a fork burst's children, each ending at once, filled their tree's places with
    their ends still being accounted for)."""
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


def waits_for_place(
    tree: str,
    credentials: PeerCredentials | None,
    max_per_tree: int,
    refusals: ReportThrottle,
    warn: Emit,
) -> None:
    """A connection of ``tree`` waits for one of its places. Said once per report interval,
    then summed up: a fork burst must not cost a line per child."""
    who = "" if credentials is None else f" from pid {credentials.pid}"
    refusals.report(
        "sender_tree_wait",
        f"a log sender{who} waits for a place: {tree}: at its limit of {max_per_tree} open "
        f"log connections ({_LIMIT}); its connection is served, unread until then, when one "
        "of the tree's ends, or as soon as the sender ends (what it logged comes from the "
        f"ring it passed with its hello): raise {_LIMIT} for a program that runs more of its "
        "processes at once",
        summary=lambda tally: (
            f"{tally.events} more log sender(s) waited for a place of their process tree in "
            f"the last {tally.seconds:.0f} s, each tree at its limit of {max_per_tree} open "
            f"log connections (the latest: {tally.detail})"
        ),
        emit=warn,
        detail=f"{tree}{who}",
    )


def over_tree_limit(
    tree: str,
    credentials: PeerCredentials | None,
    max_per_tree: int,
    *,
    room: WaitingRoom,
    refusals: ReportThrottle,
    warn: Emit,
) -> None:
    """A connection of ``tree`` was refused: it holds all its places, and no more may wait
    for one. Said once per report interval, then summed up: a tree forking in a loop must
    not cost a line each time."""
    limit = f"at its limit of {max_per_tree} open log connections ({_LIMIT})"
    who = "" if credentials is None else f" from pid {credentials.pid}"
    full = full_for(
        room, tree, per_client="max_waiting_per_tree", in_all="max_waiting", clients="trees"
    )
    refusals.report(
        "sender_tree_limit",
        f"refused a log sender{who}: {tree}: {limit}, and {full}; it tries again, and what it "
        "logs meanwhile is lost, uncounted, if it ends before it is let in: raise "
        f"{_LIMIT} or max_waiting_per_tree for a program that runs more of its processes at "
        "once",
        summary=lambda tally: (
            f"refused {tally.events} more log sender(s) in the last {tally.seconds:.0f} s "
            f"for their process tree's limit of {max_per_tree} open log connections, none "
            f"more waiting for one (the latest: {tally.detail})"
        ),
        emit=warn,
        detail=f"{tree}{who}",
    )


def closed_unread_warning(room: WaitingRoom) -> str | None:
    """What a receiver that closed says of the connections that still waited for a place of
    their tree (None: there were none). Their senders lived on: one that ended was let in."""
    count = room.closed_unread
    if not count:
        return None
    return (
        f"closed {count} log connection(s) that still waited for a place of their process "
        f"tree ({_LIMIT}): the receiver closed before one freed, and read nothing of them; "
        "their senders, alive then, count what they lose (each says so on its stderr when "
        "it stops trying to connect)"
    )
