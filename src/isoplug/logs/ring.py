"""The sender's queue in shared memory: what a receiver recovers when its sender dies.

A :class:`~isoplug.logs.ForwardingHandler` connected over a unix socket writes every record it
accepts into a ring of shared memory (a Linux ``memfd``) before it returns: one copy of the
encoded bytes and two 8-byte stores (where the ring's bytes end, and the last record's
sequence number). Sending a batch whole to the kernel releases its records (two stores per
batch). A record is therefore always somewhere the receiver can get it: in the ring until the
kernel has it, in the kernel after; a SIGKILL, ``os._exit`` or segfault loses nothing.

The ring is a byte stream, the records' msgpack arrays back to back (msgpack delimits them), the
positions counting bytes since the ring was made, wrapping at its capacity (a power of two).
It lives in the same memfd as the connection's sequence ledger (:mod:`isoplug.logs.ledger`),
after the ledger's page, so the receiver has both or neither: it takes the ledger's descriptor
passed with the connection's hello (or, without one, opens ``/proc/<pid>/fd/<n>`` of the pid
the socket's peer credentials vouch for), only a memfd of the ledger's name and a regular file
of a size the layouts allow, and the ring is the rest of that file (kept only up to
:data:`MAX_RING_BYTES`, and as many at once as :mod:`isoplug.logs.ring_budget` allows). A new
connection makes a new ledger, and a new ring holding what is still unsent.
When the connection ends without everything accepted having arrived, the receiver reads the
released position, the end and the records between with ``pread`` (never a mapping: a sender
that shrinks the file cannot SIGBUS the receiver), and replays those whose sequence numbers
never arrived (:mod:`isoplug.logs.ring_recovery`, which says what a ring that lies costs).

Layout, 8-byte unsigned words in native order: the magic word naming the version; the capacity;
the end (bytes written since the start); the sequence number of the last record written; the
released position; the sequence number of the last record released; two words for later. Then
the capacity's bytes.
"""

from __future__ import annotations

__all__ = [
    "CAPACITY_WORD",
    "HEADER_BYTES",
    "HEAD_SEQ_WORD",
    "HEAD_WORD",
    "MAGIC",
    "MAGIC_WORD",
    "MAX_RING_BYTES",
    "MIN_RING_BYTES",
    "RING_BYTES",
    "TAIL_SEQ_WORD",
    "TAIL_WORD",
    "SenderRing",
    "ring_capacity",
    "ring_layout",
    "valid_capacity",
]

#: The first word of a ring of this layout.
MAGIC = int.from_bytes(b"isoring\x01", "little")
#: The header's words, by index.
MAGIC_WORD, CAPACITY_WORD, HEAD_WORD, HEAD_SEQ_WORD, TAIL_WORD, TAIL_SEQ_WORD = range(6)
HEADER_BYTES = 64
#: The default capacity: 4 MiB, some 20,000 typical records, a few hundred milliseconds of a
#: flood. Shared memory is only spent as the ring's bytes are first written.
RING_BYTES = 4 * 1024 * 1024
#: The smallest and largest capacity a sender makes or a receiver reads. The largest is the
#: default: a receiver read rings of up to 64 MiB, sixteen times what any sender of isoplug's
#: makes, which let one that made its own cost the receiver that much memory for nothing.
MIN_RING_BYTES = 4096
MAX_RING_BYTES = RING_BYTES


def valid_capacity(capacity: int) -> bool:
    """Whether a ring may have ``capacity`` bytes: a power of two within the bounds."""
    return capacity <= MAX_RING_BYTES and ring_layout(capacity)


def ring_layout(capacity: int) -> bool:
    """Whether ``capacity`` is a ring's of this layout, a power of two from
    :data:`MIN_RING_BYTES`, whatever its size: a receiver still takes the ledger in front of
    one too large to read."""
    return capacity >= MIN_RING_BYTES and not capacity & (capacity - 1)


def ring_capacity(queue_bytes: int) -> int:
    """The ring for a queue of ``queue_bytes``: the power of two that holds it, within
    [:data:`MIN_RING_BYTES`, :data:`RING_BYTES`]."""
    capacity = MIN_RING_BYTES
    while capacity < queue_bytes and capacity < RING_BYTES:
        capacity *= 2
    return capacity


class SenderRing:
    """The sender's side, over ``memory`` (the header and the capacity's bytes, in the ledger's
    mapping); every method is called with the handler's queue lock held."""

    def __init__(self, memory: memoryview) -> None:
        capacity = len(memory) - HEADER_BYTES
        if not valid_capacity(capacity):
            raise ValueError(f"a ring's capacity is a power of two, got {capacity}")
        self.capacity = capacity
        self._mask = capacity - 1
        self._words = memory[:HEADER_BYTES].cast("Q")
        self._data = memory[HEADER_BYTES:]
        self._words[MAGIC_WORD] = MAGIC
        self._words[CAPACITY_WORD] = capacity
        #: Bytes written and released since the start (the header's copies are for the reader).
        self.head = 0
        self.tail = 0
        self._tail_seq = 0

    def start_after(self, seq: int) -> None:
        """The next record written is ``seq + 1`` (before the first :meth:`put`)."""
        self._tail_seq = seq
        self._words[HEAD_SEQ_WORD] = seq
        self._words[TAIL_SEQ_WORD] = seq

    def put(self, encoded: bytes, seq: int) -> bool:
        """Write record ``seq``; False (nothing written) when the ring has no room for it.
        Once for every record: each line here costs every ``logger.info()``."""
        head = self.head
        end = head + len(encoded)
        if end - self.tail > self.capacity:
            return False
        start = head & self._mask
        stop = start + end - head
        if stop <= self.capacity:
            self._data[start:stop] = encoded
        else:
            self._wrap(encoded, start)
        # The bytes before the end that says they are there.
        self.head = end
        words = self._words
        words[HEAD_WORD] = end
        words[HEAD_SEQ_WORD] = seq
        return True

    def _wrap(self, encoded: bytes, start: int) -> None:
        """Write a record that runs past the ring's end: its rest goes to the start."""
        first = self.capacity - start
        view = memoryview(encoded)
        self._data[start:] = view[:first]
        self._data[: len(encoded) - first] = view[first:]

    def release(self, size: int, count: int) -> None:
        """The oldest ``count`` records, ``size`` bytes, are in the kernel whole."""
        self.tail = tail = self.tail + size
        self._tail_seq = seq = self._tail_seq + count
        words = self._words
        words[TAIL_SEQ_WORD] = seq
        words[TAIL_WORD] = tail

    @property
    def used(self) -> int:
        """Bytes of records not released yet."""
        return self.head - self.tail

    def close(self) -> None:
        """Let go of the memory (before its mapping is closed)."""
        self._words.release()
        self._data.release()
