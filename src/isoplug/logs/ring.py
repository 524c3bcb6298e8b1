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
of a size the layouts allow, and the ring is the rest of that file. A new connection makes a
new ledger, and a new ring holding what is still unsent.
When the connection ends without everything accepted having arrived, the receiver reads the
released position, the end and the records between with ``pread`` (never a mapping: a sender
that shrinks the file cannot SIGBUS the receiver), and replays those whose sequence numbers
never arrived (:func:`recover_records`).

Everything read is the sender's to garble: positions out of range, counts the bytes cannot hold,
bytes that are no records. Each is a reported, counted loss (the ledger's count of accepted
records still stands), never an exception, a hang, or memory beyond the ring's capacity, which
is capped at :data:`MAX_RING_BYTES`. A sender killed between the two stores of a release
(nanoseconds, once per batch) leaves such an inconsistent ring too: its unsent records are then
counted lost, as without a ring.

Layout, 8-byte unsigned words in native order: the magic word naming the version; the capacity;
the end (bytes written since the start); the sequence number of the last record written; the
released position; the sequence number of the last record released; two words for later. Then
the capacity's bytes.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable

import msgspec

from isoplug.wire import LogRecordData

__all__ = [
    "HEADER_BYTES",
    "MAX_RING_BYTES",
    "MIN_RING_BYTES",
    "RING_BYTES",
    "ReceiverRing",
    "Recovery",
    "SenderRing",
    "recover_records",
    "ring_capacity",
    "valid_capacity",
]

_MAGIC = int.from_bytes(b"isoring\x01", "little")
_MAGIC_WORD, _CAPACITY, _HEAD, _HEAD_SEQ, _TAIL, _TAIL_SEQ = range(6)
HEADER_BYTES = 64
#: The default capacity: 4 MiB, some 20,000 typical records, a few hundred milliseconds of a
#: flood. Shared memory is only spent as the ring's bytes are first written.
RING_BYTES = 4 * 1024 * 1024
#: The smallest and largest capacity a sender makes or a receiver reads.
MIN_RING_BYTES = 4096
MAX_RING_BYTES = 64 * 1024 * 1024

_raw_list_decoder = msgspec.msgpack.Decoder(list[msgspec.Raw])
_record_decoder = msgspec.msgpack.Decoder(LogRecordData)


def valid_capacity(capacity: int) -> bool:
    """Whether a ring may have ``capacity`` bytes: a power of two within the bounds."""
    return MIN_RING_BYTES <= capacity <= MAX_RING_BYTES and not capacity & (capacity - 1)


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
        self._words[_MAGIC_WORD] = _MAGIC
        self._words[_CAPACITY] = capacity
        #: Bytes written and released since the start (the header's copies are for the reader).
        self.head = 0
        self.tail = 0
        self._tail_seq = 0

    def start_after(self, seq: int) -> None:
        """The next record written is ``seq + 1`` (before the first :meth:`put`)."""
        self._tail_seq = seq
        self._words[_HEAD_SEQ] = seq
        self._words[_TAIL_SEQ] = seq

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
        words[_HEAD] = end
        words[_HEAD_SEQ] = seq
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
        words[_TAIL_SEQ] = seq
        words[_TAIL] = tail

    @property
    def used(self) -> int:
        """Bytes of records not released yet."""
        return self.head - self.tail

    def close(self) -> None:
        """Let go of the memory (before its mapping is closed)."""
        self._words.release()
        self._data.release()


@dataclasses.dataclass(frozen=True)
class Recovery:
    """What a ring gave back: the records to replay, oldest first, and what was wrong with it
    (None: nothing)."""

    records: list[LogRecordData]
    problem: str | None = None


def recover_records(
    header: bytes, read_at: Callable[[int, int], bytes], capacity: int, after: int, upto: int
) -> Recovery:
    """The records a ring holds with sequence numbers in (``after``, ``upto``], in order.

    ``header``: the ring's first :data:`HEADER_BYTES`; ``read_at(offset, size)`` reads the
    ring's data (offset from the data's start; it may return less, the file being the
    sender's); ``capacity``: the capacity the file's size says. Never raises for what the
    bytes say: garbage is a :attr:`Recovery.problem`.
    """
    if len(header) < HEADER_BYTES:
        return Recovery([], "its header was cut short")
    words = memoryview(header[:HEADER_BYTES]).cast("Q")
    if words[_MAGIC_WORD] != _MAGIC or words[_CAPACITY] != capacity:
        return Recovery([], "its header is not a ring's of this version")
    head, head_seq, tail, tail_seq = words[_HEAD], words[_HEAD_SEQ], words[_TAIL], words[_TAIL_SEQ]
    size = head - tail
    count = head_seq - tail_seq
    if not 0 <= size <= capacity or not 0 <= count <= size:
        return Recovery([], f"its positions are out of range ({count} records in {size:,} bytes)")
    if count == 0 or upto <= after or head_seq <= after:
        return Recovery([])
    start = tail & (capacity - 1)
    first = min(size, capacity - start)
    data = read_at(start, first)
    if first < size and len(data) == first:
        data += read_at(0, size - first)
    if len(data) != size:
        return Recovery([], f"it holds {len(data):,} of the {size:,} bytes its header says")
    try:
        items = _raw_list_decoder.decode(b"\xdd" + count.to_bytes(4, "big") + data)
    except (msgspec.DecodeError, RecursionError) as exc:
        return Recovery([], f"its bytes are not {count} records ({exc})")
    records: list[LogRecordData] = []
    garbled = 0
    last = after
    for item in items:
        try:
            record = _record_decoder.decode(item)
        except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
            garbled += 1
            continue
        if last < record.seq <= upto:
            records.append(record)
            last = record.seq
    problem = f"{garbled} of its {count} records are garbled" if garbled else None
    return Recovery(records, problem)


class ReceiverRing:
    """The receiver's side: reads a dead sender's ring with ``pread``, from ``offset`` in the
    file ``fd`` (its own descriptor, closed by :meth:`close`)."""

    def __init__(self, fd: int, offset: int, capacity: int) -> None:
        self._fd: int | None = fd
        self._offset = offset
        self.capacity = capacity

    def recover(self, after: int, upto: int) -> Recovery:
        """The records with sequence numbers in (``after``, ``upto``] (see
        :func:`recover_records`); reading errors are a problem too."""
        fd = self._fd
        if fd is None:
            return Recovery([], "it was closed")

        start = self._offset

        def read_at(offset: int, size: int) -> bytes:
            return os.pread(fd, size, start + HEADER_BYTES + offset)

        try:
            return recover_records(
                os.pread(fd, HEADER_BYTES, start), read_at, self.capacity, after, upto
            )
        except OSError as exc:
            return Recovery([], f"it cannot be read ({exc})")

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
