"""How many senders' rings one receiver holds open at once (:class:`RingBudget`).

A sender's ring (:mod:`isoplug.logs.ring`) is shared memory the receiver keeps a descriptor
of for the life of the connection (and of its pending end: :mod:`isoplug.logs.pending_ends`),
and reads back when the sender dies: up to the ring's capacity, at most
:data:`~isoplug.logs.ring.MAX_RING_BYTES`, and as much again in index while it replays
(:mod:`isoplug.logs.ring_recovery`). The connection limits bound the rings of one sender
process tree, not those of every tree together: an event loop's receiver serves any number
of trees, and an orphan that left its group and session is a tree of its own. So each
receiver (a :class:`~isoplug.logs.LogReceiver`, the host's log listener) takes at most
``max_rings`` rings at once, whoever sends them: with rings of at most 4 MiB, at most
``max_rings`` times that of senders' memory held open, and at most that read back at once.

Past it a sender's ledger is still taken (its counts cost the receiver one page, read once),
its ring is not: the sender goes on sending every record on its socket as before (its ring
only ever held a copy), and what a crash leaves unsent is counted lost and reported from the
ledger instead of replayed. Said with a warning naming the sender and the limit, and
counted (:attr:`~isoplug.logs.LogMetrics.rings_refused`).
"""

from __future__ import annotations

import threading

__all__ = ["DEFAULT_MAX_RINGS", "RingBudget"]

#: Rings a receiver holds at once by default: 1 GiB of senders' memory at the largest ring.
DEFAULT_MAX_RINGS = 256


class RingBudget:
    """The rings one receiver holds; shared by its connections' threads."""

    def __init__(self, max_rings: int = DEFAULT_MAX_RINGS, setting: str = "max_rings") -> None:
        if max_rings < 0:
            raise ValueError(
                f"{setting} must not be negative (0: no sender's ring is kept), not {max_rings!r}"
            )
        self.max_rings = max_rings
        #: How the limit is set where this receiver is made, for the warnings.
        self.setting = setting
        self._lock = threading.Lock()
        self._held = 0

    @property
    def held(self) -> int:
        """Rings taken and not given back."""
        return self._held

    def take(self) -> bool:
        """Take a place for one ring; False when all ``max_rings`` are held."""
        with self._lock:
            if self._held >= self.max_rings:
                return False
            self._held += 1
            return True

    def give_back(self) -> None:
        """Free the place of a ring :meth:`take` gave, once that ring is closed."""
        with self._lock:
            self._held -= 1
