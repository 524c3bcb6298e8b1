"""Reading back a dead sender's ring (:mod:`isoplug.logs.ring`): the records it held that never
arrived, in order (:func:`recover_records`, :class:`ReceiverRing`).

Everything read is the sender's to garble: positions out of range, counts the bytes cannot hold,
bytes that are no records. Each is a reported, counted loss (the ledger's count of accepted
records still stands), never an exception, a hang, or work and memory beyond what the ring's
bytes (at most :data:`~isoplug.logs.ring.MAX_RING_BYTES`) can hold:

- a header claiming more records than its bytes could hold, none shorter than
  :data:`MIN_WANTED_RECORD_BYTES`, is a problem at once, nothing decoded. A header claiming
  64 Mi one-byte records in a 64 MiB ring (what a receiver then read) cost 3.7 GB and over
  two minutes of CPU (an object per record claimed, all at once, and an exception for each;
  found by an outside check);
- the items are found a window at a time (:data:`WINDOW_ITEMS`), each decoded, checked and let
  go; :data:`MAX_GARBLED` items that are no records end the reading (an honest ring has none:
  a torn release makes its header inconsistent, not its items), and so does a record past the
  last one wanted (a ring's records come in order); the rest are counted lost;
- the records kept, those with sequence numbers still wanted in increasing order, stay encoded
  in the bytes read, and are decoded one at a time as they are replayed
  (:class:`RecoveredRecords`): decoded all at once, a ring of the shortest records would take
  twenty times its size.

So a recovery's memory is about the ring's size, and at most twice that: its bytes once, 12
bytes for each record kept (at most 0.8 times those bytes, for the shortest records; under 0.3
times for a sender's own, which are 41 bytes or more) and a window's references (about 0.75
MB), never an object per record. Its CPU goes with the ring's bytes, not with what its header
claims: about 0.3 s for 4 MiB of the shortest records, the worst a lying sender can do.

msgspec decodes whole documents only, so to find where items end the reader writes array
headers in the room just before a run of them (bytes of items it is done with, put back right
after: :data:`ROOM`), making the run one document. A run of at most :data:`WINDOW_ITEMS` items
is decoded as a list of :class:`msgspec.Raw`; a longer one is cut in two, its first half decoded
as one ``Raw``, whose length says where the second half begins, and its second half checked
(skipped in C) as the trailing elements of that document. Each level of cutting reads the bytes
once more, in C: ``log2(count / WINDOW_ITEMS)`` levels, at most 10.
"""

from __future__ import annotations

import dataclasses
import os
from array import array
from collections.abc import Callable, Iterator, Sequence
from typing import TypeVar

import msgspec

from isoplug.logs.ring import (
    CAPACITY_WORD,
    HEAD_SEQ_WORD,
    HEAD_WORD,
    HEADER_BYTES,
    MAGIC,
    MAGIC_WORD,
    TAIL_SEQ_WORD,
    TAIL_WORD,
)
from isoplug.wire import LogRecordData
from isoplug.wire.sanitize import clean_text

#: The longest decoder or system error quoted in a problem.
_ERROR_CHARS = 300

__all__ = [
    "MAX_GARBLED",
    "MIN_WANTED_RECORD_BYTES",
    "ROOM",
    "WINDOW_ITEMS",
    "ReceiverRing",
    "RecoveredRecords",
    "Recovery",
    "recover_records",
]

#: The shortest encoding of a record a receiver can want: an array that reaches ``seq`` (the
#: 14th field of :class:`~isoplug.wire.LogRecordData`), each field before it one byte (an empty
#: string, a 0, a nil), the number one byte. A sender's own records are longer (41 bytes at
#: least: :data:`isoplug.logs.limits.MIN_RECORD_BYTES`); this bounds what a ring can give
#: back, whoever wrote it (tests/test_logs_ring.py encodes that record).
MIN_WANTED_RECORD_BYTES = 15
#: Items that are no records (msgpack, but not a record's array) after which a ring is read no
#: further. In a row or not: a garbled item costs an exception, and a ring alternating garbage
#: with records would cost one per item.
MAX_GARBLED = 64
#: Items whose places one decode gives (their references: about 0.75 MB).
WINDOW_ITEMS = 8192
#: Bytes kept before the ring's data in the buffer it is read into: two array headers.
ROOM = 10
#: The most read with one ``pread``, so a ring is not held twice while it is read.
_READ_PIECE = 1024 * 1024
#: Sequence numbers of the records kept are stored from the first one wanted in 4 bytes each,
#: when the numbers wanted span no more than that (a ledger's count is bounded far below).
_NARROW_SPAN = 2**32

_ARRAY32 = b"\xdd"
_T = TypeVar("_T")


class _Halves(msgspec.Struct, array_like=True, gc=False):
    """A run of items cut in two: the first half as one item (an array), the second half the
    trailing elements, checked and not kept (array-like structs ignore trailing elements)."""

    first: msgspec.Raw


_halves_decoder = msgspec.msgpack.Decoder(_Halves)
_items_decoder = msgspec.msgpack.Decoder(list[msgspec.Raw])
_record_decoder = msgspec.msgpack.Decoder(LogRecordData)


class RecoveredRecords:
    """The records a ring gave back, oldest first: kept encoded, in the bytes read from the
    ring, and decoded one at a time as they are iterated (see the module docstring). Each was
    decoded and checked once already: iterating never fails."""

    __slots__ = ("_data", "_ends", "_first_seq", "_seqs", "_starts")

    def __init__(
        self, data: bytearray | None = None, first_seq: int = 1, *, wide: bool = False
    ) -> None:
        self._data = data if data is not None else bytearray()
        self._starts = array("I")
        self._ends = array("I")
        self._first_seq = first_seq
        #: Each record's sequence number less ``first_seq``: 4 bytes each, unless ``wide``
        #: (numbers further apart than that, which only a caller's odd bounds allow).
        self._seqs: array[int] | list[int] = [] if wide else array("I")

    def _add(self, start: int, end: int, seq: int) -> None:
        self._starts.append(start)
        self._ends.append(end)
        self._seqs.append(seq - self._first_seq)

    def __len__(self) -> int:
        return len(self._starts)

    def __iter__(self) -> Iterator[LogRecordData]:
        data = memoryview(self._data)
        for start, end in zip(self._starts, self._ends, strict=True):
            yield _record_decoder.decode(data[start:end])

    def seqs(self) -> Iterator[int]:
        """The records' sequence numbers, in order, without decoding them."""
        first = self._first_seq
        return (first + offset for offset in self._seqs)

    def only(self, positions: Sequence[int]) -> RecoveredRecords:
        """The records at ``positions`` (ascending), sharing these bytes."""
        if len(positions) == len(self):
            return self
        chosen = RecoveredRecords(self._data, self._first_seq, wide=isinstance(self._seqs, list))
        for position in positions:
            chosen._starts.append(self._starts[position])
            chosen._ends.append(self._ends[position])
            chosen._seqs.append(self._seqs[position])
        return chosen


@dataclasses.dataclass(frozen=True)
class Recovery:
    """What a ring gave back: the records to replay, oldest first, what was wrong with it
    (None: nothing), and how many of its items were decoded as records to find them."""

    records: RecoveredRecords = dataclasses.field(default_factory=RecoveredRecords)
    problem: str | None = None
    examined: int = 0


def recover_records(
    header: bytes, read_at: Callable[[int, int], bytes], capacity: int, after: int, upto: int
) -> Recovery:
    """The records a ring holds with sequence numbers in (``after``, ``upto``], in order.

    ``header``: the ring's first :data:`~isoplug.logs.ring.HEADER_BYTES`; ``read_at(offset,
    size)`` reads the ring's data (offset from the data's start; it may return less, the file
    being the sender's); ``capacity``: the capacity the file's size says. Never raises for what
    the bytes say: garbage is a :attr:`Recovery.problem`. Its memory: at most about the bytes
    the header says are unsent (at most ``capacity``), see the module docstring.
    """
    if len(header) < HEADER_BYTES:
        return Recovery(problem="its header was cut short")
    words = memoryview(header[:HEADER_BYTES]).cast("Q")
    if words[MAGIC_WORD] != MAGIC or words[CAPACITY_WORD] != capacity:
        return Recovery(problem="its header is not a ring's of this version")
    head, head_seq = words[HEAD_WORD], words[HEAD_SEQ_WORD]
    tail, tail_seq = words[TAIL_WORD], words[TAIL_SEQ_WORD]
    size = head - tail
    count = head_seq - tail_seq
    if not 0 <= size <= capacity or not 0 <= count <= size:
        return Recovery(
            problem=f"its positions are out of range ({count} records in {size:,} bytes)"
        )
    if count > size // MIN_WANTED_RECORD_BYTES:
        # Checked before anything is read: a count no bytes of real records can hold would
        # otherwise cost an object per record claimed.
        return Recovery(
            problem=f"its header claims {count:,} records in {size:,} bytes, more than the "
            f"{size // MIN_WANTED_RECORD_BYTES:,} records of {MIN_WANTED_RECORD_BYTES} bytes or "
            "more those can hold"
        )
    if count == 0 or upto <= after or head_seq <= after:
        return Recovery()
    buffer = _read(read_at, tail & (capacity - 1), size, capacity)
    if isinstance(buffer, str):
        return Recovery(problem=buffer)
    return _scan(buffer, count, after, upto)


def _read(
    read_at: Callable[[int, int], bytes], start: int, size: int, capacity: int
) -> bytearray | str:
    """The ring's ``size`` bytes from ``start`` (wrapping at ``capacity``), after :data:`ROOM`
    bytes of room; or what is wrong (a file shorter than its header says)."""
    buffer = bytearray(ROOM + size)
    got = 0
    first = min(size, capacity - start)
    for segment_start, segment_size in ((start, first), (0, size - first)):
        for offset in range(segment_start, segment_start + segment_size, _READ_PIECE):
            wanted = min(segment_start + segment_size - offset, _READ_PIECE)
            piece = read_at(offset, wanted)[:wanted]
            buffer[ROOM + got : ROOM + got + len(piece)] = piece
            got += len(piece)
            if len(piece) < wanted:
                return f"it holds {got:,} of the {size:,} bytes its header says"
    return buffer


def _scan(buffer: bytearray, count: int, after: int, upto: int) -> Recovery:
    """The wanted records among the ``count`` items in ``buffer`` (after its room)."""
    kept = RecoveredRecords(buffer, after + 1, wide=upto - after > _NARROW_SPAN)
    examined = garbled = 0
    last = after
    problem: str | None = None
    try:
        for start, item in _items(buffer, count):
            examined += 1
            try:
                record = _record_decoder.decode(item)
            except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
                garbled += 1
                if garbled >= MAX_GARBLED:
                    problem = (
                        f"{garbled} of the first {examined:,} of its {count:,} records are "
                        "garbled; the rest were not read"
                    )
                    break
                continue
            seq = record.seq
            if seq > upto:
                break  # in order: the rest are past it too
            if seq > last:
                kept._add(start, start + len(item), seq)
                last = seq
    except (msgspec.DecodeError, RecursionError) as exc:
        # The decoder's words describe the sender's bytes: cleaned as any text from outside.
        problem = f"its bytes are not {count:,} records ({clean_text(str(exc), _ERROR_CHARS)})"
    if problem is None and garbled:
        problem = f"{garbled} of its {count:,} records are garbled"
    return Recovery(kept if len(kept) else RecoveredRecords(), problem, examined)


def _items(buffer: bytearray, count: int) -> Iterator[tuple[int, msgspec.Raw]]:
    """The ``count`` msgpack items in ``buffer`` after its room, in order, each with where it
    begins; raises :class:`msgspec.DecodeError` (or RecursionError) before the first if those
    bytes are not exactly that many items (see the module docstring)."""
    # Runs of items still to give, (start, end, count), the next one last.
    runs = [(ROOM, len(buffer), count)]
    while runs:
        start, end, items = runs.pop()
        if items <= WINDOW_ITEMS:
            window = _decode_run(buffer, start, end, _header(items), _items_decoder)
            for item in window:
                yield start, item
                start += len(item)
            del window  # before the next run's decode: one window at a time
            continue
        half = items // 2
        header = _header(items - half + 1) + _header(half)
        first = _decode_run(buffer, start, end, header, _halves_decoder).first
        middle = start + len(first) - len(_header(half))
        runs.append((middle, end, items - half))
        runs.append((start, middle, half))


def _decode_run(
    buffer: bytearray,
    start: int,
    end: int,
    header: bytes,
    decoder: msgspec.msgpack.Decoder[_T],
) -> _T:
    """``buffer[start:end]`` decoded with ``header`` written just before it: into bytes of
    items already given (or the room), put back after."""
    before = start - len(header)
    kept = bytes(buffer[before:start])
    buffer[before:start] = header
    try:
        return decoder.decode(memoryview(buffer)[before:end])
    finally:
        buffer[before:start] = kept


def _header(items: int) -> bytes:
    return _ARRAY32 + items.to_bytes(4, "big")


class ReceiverRing:
    """The receiver's side: reads a dead sender's ring with ``pread``, from ``offset`` in the
    file ``fd`` (its own descriptor, closed by :meth:`close`)."""

    def __init__(self, fd: int, offset: int, capacity: int) -> None:
        self._fd: int | None = fd
        self._offset = offset
        self.capacity = capacity

    def recover(self, after: int, upto: int) -> Recovery:
        """The records with sequence numbers in (``after``, ``upto``] (see
        :func:`recover_records`); reading errors are a problem too. Blocking work, for a
        thread: on an event loop it runs off the loop."""
        fd = self._fd
        if fd is None:
            return Recovery(problem="it was closed")

        start = self._offset

        def read_at(offset: int, size: int) -> bytes:
            return os.pread(fd, size, start + HEADER_BYTES + offset)

        try:
            return recover_records(
                os.pread(fd, HEADER_BYTES, start), read_at, self.capacity, after, upto
            )
        except OSError as exc:
            return Recovery(problem=f"it cannot be read ({clean_text(str(exc), _ERROR_CHARS)})")

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
