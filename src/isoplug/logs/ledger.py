"""The sequence ledger: how a receiver counts the records that died with their sender.

Every record a sender accepts gets the next sequence number. Records sent at once are in the
kernel when ``logger.info()`` returns and survive any death of the sender; records batched
under a burst wait in its memory, and a SIGKILL, ``os._exit`` or segfault takes them along.
Sequence numbers alone cannot tell how many: a gap shows only once a later record arrives.

So the sender keeps, in a page of shared memory (a Linux ``memfd``), the highest sequence
number it has accepted, one 8-byte store per record. Right after connecting over a unix socket
it announces the descriptor's number in its first batch. The receiver, which knows the
sender's pid from the socket's peer credentials (never from the payload), opens
``/proc/<pid>/fd/<n>`` while the sender lives and keeps its own descriptor. When the connection
ends, one ``pread`` of that memory says how many accepted records never arrived, however the
sender died.

The receiver only reads the memory with ``pread`` (no mapping, so a sender that shrinks the file
cannot crash the receiver with SIGBUS), and only opens a descriptor that is this kind of memfd
and a regular file (never a FIFO or a device that could block or lie). The count is the one
thing a sender controls with it, and only about itself.
"""

from __future__ import annotations

import mmap
import os
import stat
import sys

__all__ = ["LEDGER_NAME", "LedgerError", "ReceiverLedger", "SenderLedger", "private_ledger"]

#: The memfd's name; the receiver checks it (``/proc`` shows ``/memfd:<name> (deleted)``).
LEDGER_NAME = "isoplug-log-ledger"
_SIZE = 8


def private_ledger() -> memoryview:
    """An 8-byte counter in private memory, for a sender that has no shared ledger (yet)."""
    return memoryview(bytearray(_SIZE)).cast("Q")


class SenderLedger:
    """The sender's side: a shared 8-byte counter; store into :attr:`view` ``[0]``."""

    def __init__(self) -> None:
        fd = os.memfd_create(LEDGER_NAME, os.MFD_CLOEXEC)
        try:
            os.ftruncate(fd, _SIZE)
            self._map = mmap.mmap(fd, _SIZE)
        except BaseException:
            os.close(fd)
            raise
        self.fd = fd
        #: The highest sequence number accepted, as an unsigned 64-bit integer in native order.
        self.view = memoryview(self._map).cast("Q")

    @classmethod
    def create(cls) -> SenderLedger | None:
        """A new ledger, or None where this system has no memfd (the sender works without)."""
        if not hasattr(os, "memfd_create"):
            return None
        try:
            return cls()
        except OSError as exc:
            sys.stderr.write(
                f"isoplug: no log sequence ledger ({exc}); if this process dies, records it "
                "had not sent yet are reported lost without a count\n"
            )
            return None

    def close(self) -> None:
        self.view.release()
        self._map.close()
        os.close(self.fd)


class LedgerError(Exception):
    """The descriptor a sender announced cannot be used as its ledger; the text says why."""


class ReceiverLedger:
    """The receiver's side: reads the highest sequence number a sender accepted."""

    def __init__(self, fd: int) -> None:
        self._fd: int | None = fd

    @classmethod
    def open(cls, pid: int, fd: int) -> ReceiverLedger:
        """Open ledger descriptor ``fd`` of live process ``pid``; raises :class:`LedgerError`
        (a ``FileNotFoundError`` once the process is gone)."""
        if not 0 <= fd < 2**31:
            raise LedgerError(f"descriptor number {fd} is out of range")
        path = f"/proc/{pid}/fd/{fd}"
        target = os.readlink(path)
        if not target.startswith(f"/memfd:{LEDGER_NAME} "):
            raise LedgerError(f"descriptor {fd} of pid {pid} is {target[:200]!r}, not a ledger")
        handle = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            status = os.fstat(handle)
            if not stat.S_ISREG(status.st_mode):
                raise LedgerError(f"descriptor {fd} of pid {pid} is not a regular file")
        except BaseException:
            os.close(handle)
            raise
        return cls(handle)

    def read(self) -> int | None:
        """The highest sequence number the sender accepted, or None if it cannot be read
        (closed, or shrunk by the sender)."""
        if self._fd is None:
            return None
        data = os.pread(self._fd, _SIZE, 0)
        if len(data) < _SIZE:
            return None
        return int.from_bytes(data, sys.byteorder)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
