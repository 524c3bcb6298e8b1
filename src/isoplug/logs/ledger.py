"""The sequence ledger: how a receiver counts the records that died with their sender.

Every record a sender accepts gets the next sequence number. Records sent at once are in the
kernel when ``logger.info()`` returns and survive any death of the sender; records batched
under a burst wait in its memory, and a SIGKILL, ``os._exit`` or segfault takes them along.
Sequence numbers alone cannot tell how many: a gap shows only once a later record arrives.
Nor can the batches tell every drop: the drop totals travel with the next batch, and a sender
that ends first never sends one.

So the sender keeps, in a page of shared memory (a Linux ``memfd``), the highest sequence
number it has accepted (one 8-byte store per record), its drop totals by level (one store per
record dropped), and what its ``close()`` did (see :class:`LedgerState`). Over a unix socket it
passes the descriptor with its hello, in the same write (``SCM_RIGHTS``:
:mod:`isoplug.transport.passed_descriptors`), and names its number in its first batch (the
announcement, in that write too). The receiver takes the passed descriptor before it reads
the hello, or, without one, opens ``/proc/<pid>/fd/<n>`` of the pid the socket's peer
credentials vouch for (never the payload's), which works only while the sender lives. When
the connection ends, one ``pread`` of that memory says how many accepted records never arrived
and how many were dropped, however the sender died: delivered + reported = emitted. From the
moment the hello is written, the ledger, and the ring that follows it in the same file
(:mod:`isoplug.logs.ring`), outlive the sender: the kernel holds the passed descriptor for the
receiver until it reads it, so the sender writes its records there at once, without waiting
for the receiver.

Once the receiver has its own descriptor, it sets the ledger's acknowledgement word, with the
level its side handles records from in the word's upper half (see :func:`acknowledgement`):
:func:`~isoplug.logs.forward_logs` gives it to a root logger nobody configured.

The receiver only reads the memory with ``pread`` (no mapping, so a sender that shrinks the file
cannot crash the receiver with SIGBUS), and only opens a descriptor that is this kind of memfd,
a regular file of this layout's size (never a FIFO or a device that could block or lie); the
layout starts with a magic word that names its version. The counts are the one thing a sender
controls with it, and only about itself.

Layout, in 8-byte unsigned words of native order: the highest sequence number accepted (first,
so that the sender's store per record stays one index); the magic word; the flags; the
receiver's acknowledgement (:data:`ACKNOWLEDGED`, the one word it writes); then :data:`SLOTS`
pairs ``(key, count)`` of drop totals, a key naming the kind of drop and the level (0: an
unused slot). The sender's ring (:mod:`isoplug.logs.ring`), from which a receiver recovers the
records that never arrived, may follow in the same file: its size then is :data:`LEDGER_SIZE`
plus the ring's.
"""

from __future__ import annotations

import contextlib
import dataclasses
import mmap
import os
import stat
import sys
from collections.abc import Mapping

from isoplug.logs.ring import HEADER_BYTES, SenderRing, ring_layout
from isoplug.logs.ring_recovery import ReceiverRing
from isoplug.transport.fd_identity import FdIdentity

__all__ = [
    "ACKNOWLEDGED",
    "CLOSE_DEADLINE_PASSED",
    "CLOSING",
    "DROPPED_AT_CLOSE",
    "LEDGER_NAME",
    "LEDGER_SIZE",
    "OVERFLOW_LEVEL",
    "QUEUE_FULL",
    "SLOTS",
    "LedgerError",
    "LedgerState",
    "ReceiverLedger",
    "SenderLedger",
    "acknowledged_level",
    "acknowledgement",
    "parse_ledger",
    "private_ledger",
]

#: The memfd's name; the receiver checks it (``/proc`` shows ``/memfd:<name> (deleted)``).
LEDGER_NAME = "isoplug-log-ledger"
#: "isoplug" and the layout's version (2: drop totals and close flags; 1 was the sequence
#: number alone, 8 bytes).
_MAGIC = int.from_bytes(b"isoplug\x02", "little")
_SEQ, _MAGIC_WORD, _FLAGS = 0, 1, 2
#: The index of the word the receiver sets once it has the ledger open.
ACKNOWLEDGED = 3
_FIRST_SLOT = 4
#: Drop totals kept apart, by kind and level; past them, a kind's levels are summed in its
#: overflow slot (the last two).
SLOTS = 30
_WORDS = _FIRST_SLOT + 2 * SLOTS
LEDGER_SIZE = 8 * _WORDS

#: Kinds of drop: records the queue had no room for (they got no sequence number) ...
QUEUE_FULL = 0
#: ... and accepted records that ``close()`` dropped when its deadline passed.
DROPPED_AT_CLOSE = 1
_KINDS = (QUEUE_FULL, DROPPED_AT_CLOSE)
#: Flags: ``close()`` began (records may then come by level, and be dropped at its deadline) ...
CLOSING = 1
#: ... and its deadline passed before everything was sent.
CLOSE_DEADLINE_PASSED = 2

#: A key is ``kind * _KIND_STEP + level code``; the code is the level + 1 (0 is no level), or
#: _OVERFLOW for the levels summed in a kind's overflow slot (and levels out of range).
_KIND_STEP = 2**33
_OVERFLOW = 2**32
#: The level the receiver reads for a kind's overflow slot (report_throttle.OTHER_LEVELS).
OVERFLOW_LEVEL = -1


#: The acknowledgement word: nonzero once the receiver has the ledger open; its upper 32 bits,
#: when nonzero, are 1 + the level the receiving side handles records from.
_LEVEL_SHIFT = 32


def acknowledgement(level: int | None) -> int:
    """The acknowledgement word a receiver writes: 1, and ``level`` (None: not said)."""
    if level is None or not 0 <= level < 2**31:
        return 1
    return 1 | (level + 1) << _LEVEL_SHIFT


def acknowledged_level(word: int) -> int | None:
    """The level an acknowledgement word says the receiving side handles records from
    (None: not acknowledged, or not said)."""
    code = word >> _LEVEL_SHIFT
    return code - 1 if word and code else None


def private_ledger() -> memoryview:
    """The sequence number and an acknowledgement that never comes, in private memory, for a
    sender that has no shared ledger (yet)."""
    return memoryview(bytearray(8 * (ACKNOWLEDGED + 1))).cast("Q")


def _key(kind: int, level: int) -> int:
    code = level + 1 if 0 <= level < _OVERFLOW - 1 else _OVERFLOW
    return kind * _KIND_STEP + code


class SenderLedger:
    """The sender's side: store the sequence number into :attr:`view` ``[0]``; count drops
    with :meth:`add_drops`; with a ``ring_capacity``, :attr:`ring` follows in the same file.
    Written by one thread at a time (the caller's lock)."""

    def __init__(self, ring_capacity: int = 0) -> None:
        size = LEDGER_SIZE + (HEADER_BYTES + ring_capacity if ring_capacity else 0)
        fd = os.memfd_create(LEDGER_NAME, os.MFD_CLOEXEC)
        try:
            os.ftruncate(fd, size)
            self._map = mmap.mmap(fd, size)
        except BaseException:
            os.close(fd)
            raise
        self.fd = fd
        # The program may close our descriptor (a daemonizing plugin, an fd-cleanup loop) and
        # reuse its number: close() must not close the program's file then.
        self._identity = FdIdentity(fd)
        whole = memoryview(self._map)
        #: The words of the layout; ``view[0]`` is the highest sequence number accepted.
        self.view = whole[:LEDGER_SIZE].cast("Q")
        self.view[_MAGIC_WORD] = _MAGIC
        #: The shared-memory ring of this connection, if asked for.
        self.ring = SenderRing(whole[LEDGER_SIZE:]) if ring_capacity else None
        whole.release()
        # (kind, level) -> index of its count word.
        self._slots: dict[tuple[int, int], int] = {}

    @classmethod
    def create(cls, ring_capacity: int = 0) -> SenderLedger | None:
        """A new ledger (with a ring of ``ring_capacity`` bytes), or None where this system
        has no memfd (the sender works without)."""
        if not hasattr(os, "memfd_create"):
            return None
        try:
            return cls(ring_capacity)
        except OSError as exc:
            sys.stderr.write(
                f"isoplug: no log sequence ledger ({exc}); if this process dies, records it "
                "had not sent yet are reported lost without a count\n"
            )
            return None

    def add_drops(self, kind: int, level: int, count: int = 1) -> None:
        """Add ``count`` records of ``level`` to the drop total of ``kind``."""
        index = self._slots.get((kind, level)) or self._new_slot(kind, level)
        self.view[index] += count

    def set_drops(self, kind: int, totals: Mapping[int, int]) -> None:
        """Make the drop totals of ``kind`` these (a connection handing its totals on)."""
        view = self.view
        for (slot_kind, _), index in self._slots.items():
            if slot_kind == kind:
                view[index] = 0
        for level, count in totals.items():
            if count:
                self.add_drops(kind, level, count)

    def set_flag(self, flag: int) -> None:
        self.view[_FLAGS] |= flag

    def _new_slot(self, kind: int, level: int) -> int:
        view = self.view
        key = _key(kind, level)
        # Each kind's overflow slot is one of the last two; the others are shared, first come.
        overflow = _FIRST_SLOT + 2 * (SLOTS - len(_KINDS) + kind)
        slot = _FIRST_SLOT
        while slot < _FIRST_SLOT + 2 * (SLOTS - len(_KINDS)):
            if not view[slot]:
                break
            slot += 2
        else:
            slot, key = overflow, _key(kind, _OVERFLOW)
        # A new slot's count is 0 (an overflow slot's, its kind's sum so far).
        view[slot] = key
        self._slots[(kind, level)] = slot + 1
        return slot + 1

    def close(self) -> None:
        if self.ring is not None:
            self.ring.close()
        self.view.release()
        self._map.close()
        if self._identity.holds():
            os.close(self.fd)


@dataclasses.dataclass(frozen=True)
class LedgerState:
    """What a sender's ledger said when the receiver read it."""

    #: The highest sequence number the sender accepted.
    accepted: int
    #: Drop totals by level: records the queue had no room for (no sequence number) ...
    queue_full: dict[int, int]
    #: ... and accepted records dropped when ``close()``'s deadline passed.
    dropped_at_close: dict[int, int]
    #: :data:`CLOSING`, :data:`CLOSE_DEADLINE_PASSED`.
    flags: int


def _check_name(target: str, what: str) -> None:
    """Raise :class:`LedgerError` unless ``target`` (a descriptor's link in ``/proc``) names
    a ledger's memfd."""
    if not target.startswith(f"/memfd:{LEDGER_NAME} "):
        raise LedgerError(f"{what} is {target[:200]!r}, not a ledger")


def parse_ledger(data: bytes) -> LedgerState | None:
    """The state in a ledger's bytes; None if they are not this layout (shrunk, another
    version)."""
    if len(data) < LEDGER_SIZE:
        return None
    words = memoryview(data[:LEDGER_SIZE]).cast("Q")
    if words[_MAGIC_WORD] != _MAGIC:
        return None
    totals: dict[int, dict[int, int]] = {kind: {} for kind in _KINDS}
    for slot in range(_FIRST_SLOT, _WORDS, 2):
        key, count = words[slot], words[slot + 1]
        kind, code = divmod(key, _KIND_STEP)
        if not key or not count or kind not in totals or not 0 < code <= _OVERFLOW:
            continue
        level = code - 1 if code < _OVERFLOW else OVERFLOW_LEVEL
        totals[kind][level] = totals[kind].get(level, 0) + count
    return LedgerState(
        accepted=words[_SEQ],
        queue_full=totals[QUEUE_FULL],
        dropped_at_close=totals[DROPPED_AT_CLOSE],
        flags=words[_FLAGS],
    )


class LedgerError(Exception):
    """The descriptor a sender announced cannot be used as its ledger; the text says why."""


class ReceiverLedger:
    """The receiver's side: reads what a sender's ledger says."""

    def __init__(self, fd: int, ring_capacity: int = 0) -> None:
        self._fd: int | None = fd
        self._ring_capacity = ring_capacity

    @classmethod
    def open(cls, pid: int, fd: int, level: int | None = None) -> ReceiverLedger:
        """Open ledger descriptor ``fd`` of live process ``pid``, and acknowledge it, saying
        ``level``: records below it would be handled by nothing here (see
        :func:`acknowledgement`); raises :class:`LedgerError` (a ``FileNotFoundError`` once the
        process is gone)."""
        if not 0 <= fd < 2**31:
            raise LedgerError(f"descriptor number {fd} is out of range")
        path = f"/proc/{pid}/fd/{fd}"
        what = f"descriptor {fd} of pid {pid}"
        _check_name(os.readlink(path), what)
        # Read-write for the acknowledgement alone: everything else is read with pread.
        return cls._checked(os.open(path, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC), what, level)

    @classmethod
    def adopt(cls, passed: int, pid: int | None, level: int | None = None) -> ReceiverLedger:
        """The ledger a sender passed with its hello (``passed``, a descriptor of this
        process's, left open: the reader gets a duplicate), acknowledged as :meth:`open`
        does; raises :class:`LedgerError` or ``OSError`` when it is no ledger. Readable
        whatever became of the sender (see :mod:`isoplug.transport.passed_descriptors`)."""
        what = f"the descriptor pid {pid} passed" if pid is not None else "the passed descriptor"
        handle = os.dup(passed)
        try:
            _check_name(os.readlink(f"/proc/self/fd/{handle}"), what)
        except BaseException:
            os.close(handle)
            raise
        return cls._checked(handle, what, level)

    @classmethod
    def _checked(cls, handle: int, what: str, level: int | None) -> ReceiverLedger:
        """A reader of ``handle`` once it proved to be a ledger (closed if it is not)."""
        try:
            status = os.fstat(handle)
            if not stat.S_ISREG(status.st_mode):
                raise LedgerError(f"{what} is not a regular file")
            ring_capacity = status.st_size - LEDGER_SIZE - HEADER_BYTES
            if status.st_size != LEDGER_SIZE and not ring_layout(ring_capacity):
                raise LedgerError(
                    f"the ledger in {what} has {status.st_size} bytes, not {LEDGER_SIZE} "
                    "or that and a ring's: a sender of another isoplug version"
                )
        except BaseException:
            os.close(handle)
            raise
        # A file the sender sealed against writes stays unacknowledged: its forward_logs()
        # then takes the level from the receiver's welcome instead.
        with contextlib.suppress(OSError):
            os.pwrite(handle, acknowledgement(level).to_bytes(8, sys.byteorder), 8 * ACKNOWLEDGED)
        return cls(handle, ring_capacity if status.st_size != LEDGER_SIZE else 0)

    @property
    def ring_capacity(self) -> int:
        """The capacity of the ring that follows the ledger in its file (0: none), as its
        size said when it was opened: possibly more than a receiver reads."""
        return self._ring_capacity

    def ring(self) -> ReceiverRing | None:
        """The ring that follows the ledger in its file, if any: a reader with a descriptor
        of its own."""
        if self._fd is None or not self._ring_capacity:
            return None
        return ReceiverRing(os.dup(self._fd), LEDGER_SIZE, self._ring_capacity)

    def read(self) -> LedgerState | None:
        """What the sender's ledger says, or None if it cannot be read (closed, shrunk by the
        sender, another layout)."""
        if self._fd is None:
            return None
        return parse_ledger(os.pread(self._fd, LEDGER_SIZE, 0))

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
