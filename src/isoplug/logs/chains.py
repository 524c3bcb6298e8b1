"""Replaying once what a reconnecting sender's two connections both hold.

A receiver that ends a sender's connection itself (a host closing a runner's log connection,
say) reads the sender's ledger and recovers from its ring the records the sender had accepted
and not yet sent (see :mod:`isoplug.logs.ledger_reports`). A sender that is alive reconnects
and sends those same records again: the old ledger is set back only when the sender notices
the break, and the receiver may read it before that. Without more, such records would be
replayed twice.

Every forwarding handler therefore names its chain of connections (``LogBatch.chain``, a
random 63-bit number, kept across its reconnections), and a receiver keeps, per chain of a
sender process (the pid the kernel vouches for, never the sender's word: another process
cannot name this one's chains), the sequence numbers its connections have *claimed* out of
turn, as ranges. Ranges, not a highest number: the new connection's records start after
``resumed_after``, while the old one's ring may give back records below that (the sender had
set its ledger back to them), which the new connection never carries; a highest number
claimed by the new connection would hide them, and lose them silently. Two things claim:

- an old connection's recovery claims what it replays from the ring, skipping what a newer
  connection of the chain claimed first;
- a connection that resumes an earlier one (``LogBatch.resumed_after``) claims its records
  batch by batch, skipping what a recovery claimed first, for as long as an earlier
  connection of the chain may still recover (it is still open here) and then up to the
  highest number claimed. After that it checks nothing: the cost is paid by reconnections
  only, never by a steady connection.

Records are claimed before they are replayed, so one of the two replays each and the other
skips it; a skipped record was replayed, so it is neither a gap nor a loss. Nor is a record
a connection's own ring could not give back (a new ring the hand-over could not fill, say)
that another connection of the chain replayed: a connection's end counts lost only the
records no connection of its chain claimed (:meth:`ChainMember.replayed_between`), counted once
every earlier connection of the chain whose end is being accounted for has claimed what its ring
gave back (:meth:`ChainMember.earlier_ends`): ends are accounted for on different threads, or as
different tasks of an event loop (:mod:`isoplug.logs.pending_ends`), in any order. The state is
bounded: at most :data:`MAX_CLAIMED_RANGES` ranges per chain (past that the oldest is
forgotten, which risks a duplicate, never a loss), and a chain is forgotten when its last
connection ends, unless that connection's recovery replayed records a reconnection may still
bring (then it is kept among at most :data:`MAX_ENDED_CHAINS`, the oldest forgotten first).
"""

from __future__ import annotations

import bisect
import math
import threading
from array import array
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from concurrent.futures import Future

from isoplug.logs.pending_ends import PendingEnds
from isoplug.logs.ring_recovery import RecoveredRecords
from isoplug.wire import LogRecordData

__all__ = ["MAX_ENDED_CHAINS", "ChainMember", "SenderChain", "SenderChains"]

#: Chains kept after their last connection ended, waiting for a reconnection (per receiver).
MAX_ENDED_CHAINS = 1024
#: Claimed ranges kept per chain (a sender's drops make gaps, hence several ranges).
MAX_CLAIMED_RANGES = 64


class SenderChain:
    """One sender's chain of connections, as a receiver knows it."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        #: The sequence numbers connections of the chain claimed out of turn, as ranges
        #: (first, last), ascending, none touching another. Ranges, not a high-water mark: a
        #: new connection's records start after ``resumed_after``, and an old connection's
        #: ring may still give back records below that, which nobody else has replayed.
        self.claimed: list[tuple[int, int]] = []
        #: Connections of the chain still open here (guarded by the SenderChains' lock).
        self.open_connections = 0
        #: Connections that joined so far, which numbers them in order (same lock).
        self.joined = 0
        #: The connections (by number) whose end is pending or being accounted for, each
        #: with what says it was (:meth:`ChainMember.end_begins`; guarded by ``lock``).
        self.ends: dict[int, Future[None]] = {}

    def claim(self, records: Sequence[LogRecordData]) -> tuple[list[LogRecordData], int]:
        """The records, in order, that no connection of the chain claimed yet (claimed now),
        and the highest sequence number of those it had (0: none)."""
        positions, highest_skipped = self.claim_numbers(data.seq for data in records)
        return [records[position] for position in positions], highest_skipped

    def claim_numbers(self, seqs: Iterable[int]) -> tuple[array[int], int]:
        """Where, among the sequence numbers ``seqs``, are those no connection of the chain
        claimed yet (claimed now), and the highest of those it had (0: none). A number that
        comes twice is claimed the first time. Positions in an array, and no list of the
        numbers: a ring may give back millions."""
        with self.lock:
            unclaimed = array("I")
            highest_skipped = 0
            for position, seq in enumerate(seqs):
                if self._covers(seq):
                    highest_skipped = max(highest_skipped, seq)
                else:
                    unclaimed.append(position)
                    self._add(seq)
        return unclaimed, highest_skipped

    def claimed_between(self, after: int, upto: int) -> int:
        """How many of the sequence numbers ``after + 1`` to ``upto`` a connection of the
        chain claimed (replayed)."""
        with self.lock:
            return sum(
                max(0, min(last, upto) - max(first, after + 1) + 1) for first, last in self.claimed
            )

    def highest_claimed(self) -> int:
        with self.lock:
            return self.claimed[-1][1] if self.claimed else 0

    # Both by bisection, not by going through the ranges: called for every record a ring
    # gives back, up to millions of them, with up to MAX_CLAIMED_RANGES ranges.

    def _covers(self, seq: int) -> bool:
        ranges = self.claimed
        index = bisect.bisect_right(ranges, (seq, math.inf)) - 1
        return index >= 0 and ranges[index][1] >= seq

    def _add(self, seq: int) -> None:
        ranges = self.claimed
        # The ranges before ``index`` begin at seq or below: the last of them may hold or end
        # right before it, and the next may begin right after it.
        index = bisect.bisect_right(ranges, (seq, math.inf))
        below = index > 0 and ranges[index - 1][1] >= seq - 1
        above = index < len(ranges) and ranges[index][0] == seq + 1
        if below and above:
            ranges[index - 1] = (ranges[index - 1][0], ranges.pop(index)[1])
        elif below:
            first, last = ranges[index - 1]
            ranges[index - 1] = (first, max(last, seq))
        elif above:
            ranges[index] = (seq, ranges[index][1])
        else:
            ranges.insert(index, (seq, seq))
            if len(ranges) > MAX_CLAIMED_RANGES:
                # Forgetting a claim risks a duplicate, never a loss: the oldest range goes.
                del ranges[0]


class ChainMember:
    """One connection of a sender's chain, as its replayer sees it."""

    def __init__(
        self,
        chains: SenderChains,
        sender_pid: int,
        chain: int,
        state: SenderChain,
        *,
        resumes: bool,
        order: int,
    ) -> None:
        self._chains = chains
        #: The chain's number, as the sender named it.
        self.chain = chain
        #: Which connection of the chain this is, in the order they joined (from 1).
        self.order = order
        self._key = (sender_pid, chain)
        self._state = state
        #: While true, a recovery of an earlier connection may replay this one's records.
        self.guarding = resumes
        self._recovered = False

    def not_replayed_yet(self, records: list[LogRecordData]) -> tuple[list[LogRecordData], int]:
        """Those of a resuming connection's ``records`` that no recovery of an earlier
        connection replayed (claimed now), and the highest sequence number of those it did
        (0: none), which count as arrived."""
        # Asked first: an earlier connection that is closed has finished its recovery.
        earlier_open = self._chains.others_open(self._state)
        unclaimed, highest_replayed = self._state.claim(records)
        if not earlier_open and records[-1].seq >= self._state.highest_claimed():
            # Nothing can claim out of turn any more, and what comes next is above it all.
            self.guarding = False
        return unclaimed, highest_replayed

    def recovered(self, records: RecoveredRecords) -> RecoveredRecords:
        """Of the records this connection's ring gave back, those no newer connection of the
        chain replayed (claimed now), read by their numbers alone (not decoded)."""
        positions, _ = self._state.claim_numbers(records.seqs())
        self._recovered = self._recovered or bool(positions)
        return records.only(positions)

    def replayed_between(self, after: int, upto: int) -> int:
        """How many of the records ``after + 1`` to ``upto`` a connection of the chain
        replayed out of turn: a recovery from its ring, this connection's own included, or a
        resuming connection. A connection's end counts none of them lost, whichever ring
        gave them back."""
        return self._state.claimed_between(after, upto) if upto > after else 0

    def end_begins(self) -> None:
        """This connection's end is pending or being accounted for, from now until
        :meth:`ended`: a later connection's end waits for it (:meth:`earlier_ends`)."""
        with self._state.lock:
            self._state.ends.setdefault(self.order, Future())

    def earlier_ends(self) -> list[Future[None]]:
        """What says each end of an earlier connection of the chain that is pending or being
        accounted for was accounted for: its recovery claimed what its ring gave back, which
        this end's count of what it lost must see (:meth:`replayed_between`)."""
        with self._state.lock:
            return [done for order, done in self._state.ends.items() if order < self.order]

    def ended(self) -> None:
        """The connection ended, after its recovery if any (also when accounting for it
        failed: a later end waits for this)."""
        with self._state.lock:
            done = self._state.ends.pop(self.order, None)
        if done is not None and not done.done():
            done.set_result(None)
        self._chains.ended(self._key, self._state, recovered=self._recovered)


class SenderChains:
    """The chains of the senders of one receiver (a host's log listener, a LogReceiver)."""

    def __init__(
        self, max_ended: int = MAX_ENDED_CHAINS, *, max_pending_per_tree: int | None = None
    ) -> None:
        self._lock = threading.Lock()
        self._chains: dict[tuple[int, int], SenderChain] = {}
        self._ended: OrderedDict[tuple[int, int], None] = OrderedDict()
        self._max_ended = max_ended
        #: Ends of connections whose sender lives on, waiting for it to reconnect or exit (at
        #: most ``max_pending_per_tree`` of one sender tree).
        self.pending = PendingEnds(max_per_tree=max_pending_per_tree)

    def __len__(self) -> int:
        return len(self._chains)

    def join(self, sender_pid: int, chain: int, *, resumes: bool) -> ChainMember:
        """A connection of ``chain`` of process ``sender_pid`` announced itself; ``resumes``:
        it continues an earlier one (``LogBatch.resumed_after``)."""
        key = (sender_pid, chain)
        with self._lock:
            state = self._chains.get(key)
            if state is None:
                state = self._chains[key] = SenderChain()
            self._ended.pop(key, None)
            state.open_connections += 1
            state.joined += 1
            order = state.joined
        return ChainMember(self, sender_pid, chain, state, resumes=resumes, order=order)

    def ended(self, key: tuple[int, int], state: SenderChain, *, recovered: bool) -> None:
        """A connection of the chain ``key`` ended; its recovery replayed records or not."""
        with self._lock:
            state.open_connections -= 1
            if state.open_connections > 0 or self._chains.get(key) is not state:
                return
            if not recovered:
                del self._chains[key]
                return
            # A reconnection may still bring what the recovery replayed: keep it, bounded.
            self._ended[key] = None
            while len(self._ended) > self._max_ended:
                oldest, _ = self._ended.popitem(last=False)
                del self._chains[oldest]

    def others_open(self, state: SenderChain) -> bool:
        """Whether a connection of the chain other than the caller's is still open here."""
        with self._lock:
            return state.open_connections > 1
