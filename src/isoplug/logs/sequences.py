"""The records of one sender process replayed so far, across its connections: so that a
record is replayed once, even when two connections deliver it.

A sender whose connection breaks reconnects and sends again what it had accepted but not
seen arrive (its new connection "resumes" the old one, the sequence numbers continuing).
Meanwhile the receiver may end the old connection and recover, from that connection's
shared-memory ring, the same records (:mod:`isoplug.logs.ledger_reports`): the record would
be replayed twice, once by each. A :class:`SenderSequences` shared by a sender's connections
(the host's per runner, a :class:`~isoplug.logs.LogReceiver`'s for all) keeps, per sender pid
the kernel vouches for, the highest sequence number replayed and by which connection; a
record of another connection at or below it was replayed already and is skipped. Within one
connection nothing changes (its own order and gaps are the replayer's to judge), so a sender
that sends a huge number can only hide its own later records on its own next connection.
"""

from __future__ import annotations

import threading

__all__ = ["SenderSequences"]

#: Sender processes remembered at most; past it the oldest is forgotten (a pool that starts
#: a process per task must not grow this without bound).
_MAX_SENDERS = 4096


class SenderSequences:
    """Per sender pid: the highest sequence number replayed, and the connection that did."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._highest: dict[int, tuple[int, object]] = {}

    def claim(self, pid: int, seq: int, connection: object) -> bool:
        """Whether ``connection`` should replay record ``seq`` of process ``pid``: False if
        another connection of that process replayed it (or a later one) already."""
        with self._lock:
            known = self._highest.get(pid)
            if known is not None and seq <= known[0] and known[1] is not connection:
                return False
            if known is None or seq > known[0]:
                if known is None and len(self._highest) >= _MAX_SENDERS:
                    del self._highest[next(iter(self._highest))]
                self._highest[pid] = (seq, connection)
            return True
