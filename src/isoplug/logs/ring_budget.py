"""How many senders' rings one receiver holds open at once (:class:`RingBudget`).

A sender's ring (:mod:`isoplug.logs.ring`) is shared memory the receiver keeps a descriptor
of for the life of the connection (and of its pending end: :mod:`isoplug.logs.pending_ends`),
and reads back when the sender dies: up to the ring's capacity, at most
:data:`~isoplug.logs.ring.MAX_RING_BYTES`, and as much again in index while it replays
(:mod:`isoplug.logs.ring_recovery`). So each receiver (a :class:`~isoplug.logs.LogReceiver`,
the host's log listener) takes at most ``max_rings`` rings at once, whoever sends them: with
rings of at most 4 MiB, at most ``max_rings`` times that of senders' memory held open, and at
most that read back at once.

That bound alone let one sender process tree take every place: a process that drops its log
connections without a goodbye while it lives keeps each one's ring in a pending end, and the
connection limits count only open connections (an outside check held all 256 of a host's
rings from one plugin's child, and the next plugin's ring was refused, its crash recovery
gone, the warning naming that victim). So the rings of one tree -- a runner's processes on
the host, a sender process tree of a ``LogReceiver`` (:mod:`isoplug.logs.sender_trees`) --
count apart too, open connections and pending ends together, at most ``max_per_tree`` (the
tree's connection places: ``max_log_connections``, ``max_senders_per_tree``): a tree past it
is refused its own next ring, and the warning names that tree, so a plugin hoarding rings
denies only itself. ``max_rings`` stays the last bound, for every tree together (and for
senders no tree is known for: over TCP, or ended before they were served).

Past either, a sender's ledger is still taken (its counts cost the receiver one page, read
once), its ring is not: the sender goes on sending every record on its socket as before (its
ring only ever held a copy), and what a crash leaves unsent is counted lost and reported from
the ledger instead of replayed. Said with a warning naming the sender, the tree or the
receiver's biggest holder, and the limit, and counted
(:attr:`~isoplug.logs.LogMetrics.rings_refused`).
"""

from __future__ import annotations

import threading

__all__ = ["DEFAULT_MAX_RINGS", "RingBudget", "RingPlace", "RingRefused", "tree_share"]

#: Rings a receiver holds at once by default: 1 GiB of senders' memory at the largest ring.
DEFAULT_MAX_RINGS = 256


def tree_share(places: int, waiting: int, max_rings: int) -> int:
    """The rings one sender tree keeps at most: as many as its connections may be at once,
    its ``places`` and its ``waiting`` room together (a fork burst's children that wait for a
    place have logged into their rings alone: the ring is how their records arrive), but no
    more than half of ``max_rings``, so that one tree leaves the others half of them; and
    never fewer than its places."""
    return max(places, min(places + waiting, max_rings // 2))


class RingRefused:
    """Why a ring was not given a place: ``kind`` sums up the reports of one limit together,
    ``why`` says it to the user."""

    __slots__ = ("kind", "why")

    def __init__(self, kind: str, why: str) -> None:
        self.kind = kind
        self.why = why


class RingPlace:
    """The place one ring holds in a :class:`RingBudget`, until :meth:`give_back`."""

    __slots__ = ("_budget", "_tree")

    def __init__(self, budget: RingBudget, tree: str | None) -> None:
        self._budget: RingBudget | None = budget
        self._tree = tree

    def give_back(self) -> None:
        """Free the place, once the ring is closed; once only, however often called."""
        budget, self._budget = self._budget, None
        if budget is not None:
            budget._give_back(self._tree)


class RingBudget:
    """The rings one receiver holds, in all and per sender tree; shared by its connections'
    threads."""

    def __init__(
        self,
        max_rings: int = DEFAULT_MAX_RINGS,
        setting: str = "max_rings",
        *,
        max_per_tree: int | None = None,
        per_tree_setting: str = "max_senders_per_tree",
    ) -> None:
        if max_rings < 0:
            raise ValueError(
                f"{setting} must not be negative (0: no sender's ring is kept), not {max_rings!r}"
            )
        if max_per_tree is not None and max_per_tree < 0:
            raise ValueError(
                f"{per_tree_setting} must not be negative for a ring budget, not {max_per_tree!r}"
            )
        self.max_rings = max_rings
        #: Rings one sender tree holds at most (None: only ``max_rings`` bounds a tree).
        self.max_per_tree = max_per_tree
        #: How the limits are set where this receiver is made, for the warnings.
        self.setting = setting
        self.per_tree_setting = per_tree_setting
        self._lock = threading.Lock()
        self._held = 0
        self._held_by: dict[str, int] = {}

    @property
    def held(self) -> int:
        """Rings taken and not given back."""
        return self._held

    def held_by(self, tree: str) -> int:
        """Rings of ``tree`` taken and not given back."""
        return self._held_by.get(tree, 0)

    def take(self, tree: str | None) -> RingPlace | RingRefused:
        """Take a place for one ring of the sender tree ``tree`` (None: no tree known, only
        ``max_rings`` bounds it); or why not: the tree holds ``max_per_tree``, or the
        receiver ``max_rings``."""
        with self._lock:
            held_by_tree = 0 if tree is None else self._held_by.get(tree, 0)
            limit = self.max_per_tree
            if limit is not None and tree is not None and held_by_tree >= limit:
                return RingRefused(
                    "tree_rings_spent",
                    f"{tree} is at its limit of {limit:,} log rings, open connections, waiting "
                    f"ones and ends pending together ({self.per_tree_setting})",
                )
            if self._held >= self.max_rings:
                return RingRefused(
                    "ring_budget_spent",
                    f"this receiver holds {self.max_rings:,} senders' rings already "
                    f"({self.setting}{self._biggest_holder()})",
                )
            self._held += 1
            if tree is not None:
                self._held_by[tree] = held_by_tree + 1
            return RingPlace(self, tree)

    def _biggest_holder(self) -> str:
        """Who holds the most rings, said with a refusal of ``max_rings`` (lock held): the
        refused sender is only the one that came last."""
        if not self._held_by:
            return ""
        tree, count = max(self._held_by.items(), key=lambda item: item[1])
        return f"; the most, {count:,}, held by {tree}"

    def _give_back(self, tree: str | None) -> None:
        with self._lock:
            self._held -= 1
            if tree is not None:
                left = self._held_by[tree] - 1
                if left:
                    self._held_by[tree] = left
                else:
                    del self._held_by[tree]
