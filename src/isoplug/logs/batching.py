"""How records leave the queue of a :class:`~isoplug.logs.ForwardingHandler` (a base class of
it): the drop policy, write-through, the emitting thread's own pushes, the batches, and the
shared-memory ring that keeps every accepted record until the kernel has it.

The ring (:mod:`isoplug.logs.ring`) is installed with each connection over a unix socket, in
the connection's ledger, holding what is unsent; from then on every record accepted is written
into it before ``handle()`` returns,
and released once the frame carrying it went whole to the kernel. Records are sent in the
order they were taken, one frame in flight at a time, so releases come in the ring's order
(except while a close sends by level: nothing is released then, see closing.py).

The ring went to the receiver with the connection's hello (its descriptor passed with it:
:mod:`isoplug.transport.passed_descriptors`), so a record is durable as soon as it is in the
ring, and write-through is only for latency: a record
that comes after a pause still goes out at once (the cheapest way to deliver a lone record:
one ``send()``, where waking the sender thread costs two context switches more), but a burst's
second record is queued, not its 200th (:data:`RING_WRITE_THROUGH_BURST`); the sender thread,
woken from idle by it, sends the rest of the burst as one batch once the burst lets go of the
GIL.
"""

from __future__ import annotations

import logging
import socket
import ssl
import threading
import time
from typing import TYPE_CHECKING

from isoplug.logs.ledger import QUEUE_FULL, SenderLedger
from isoplug.logs.ring import SenderRing
from isoplug.logs.sendio import send_tls_now
from isoplug.transport.fd_identity import FdIdentity
from isoplug.wire import DEFAULT_MAX_FRAME_SIZE
from isoplug.wire.logframes import log_batch_frame

__all__ = ["RING_WRITE_THROUGH_BURST", "WRITE_THROUGH_BURST", "Batching"]

#: How many records above the rate may still write through back to back ...
WRITE_THROUGH_BURST = 200.0
#: ... and with a ring, where write-through is for latency alone: one.
RING_WRITE_THROUGH_BURST = 1.0
#: With a ring, the share of it the queue's level limits apply to: the rest is room for the
#: frames in flight, whose records stay in the ring until the kernel has them whole.
_RING_SHARE = 0.75
#: Fractions of the queue that records below INFO, and INFO records, may fill.
_DEBUG_SHARE = 0.5
_INFO_SHARE = 0.8


class Batching:
    """The queue's half of :class:`~isoplug.logs.ForwardingHandler`; see the module
    docstring. The state is the handler's (``SenderThread``'s declarations), guarded by
    ``_queue_lock`` unless said otherwise."""

    _queue_lock: threading.Lock
    _queue_changed: threading.Condition
    _send_lock: threading.Lock
    _queue: list[bytes]
    _queued_bytes: int
    _queue_bytes: int
    _debug_limit: int
    _info_limit: int
    _admit_freely_below: int
    _block_when_full: bool
    _block_timeout: float
    _flushing: int
    _write_through_rate: float
    _in_flight: int
    _seq: int
    _shared_ledger: SenderLedger | None
    _ledger: memoryview
    _dropped: dict[int, int]
    _drops_unsent: bool
    _unsent: bytes
    _unsent_frame: bytes
    _totals_written: dict[int, int]
    _tokens: float
    _last_created: float
    _sock: socket.socket | None
    _sock_identity: FdIdentity | None
    _sock_is_tls: bool
    _failed: str | None
    _batch_cap: int
    _ring: SenderRing | None
    #: What the ring releases once ``_unsent`` is sent: bytes and records of its frame.
    _unsent_release: tuple[int, int]

    if TYPE_CHECKING:  # SenderThread's (a base after this one: no stub may shadow it)

        def _break(
            self, reason: str, *, batch: list[bytes] | None = None, frame: bytes = b""
        ) -> None: ...

    def _set_limits(self, queue_bytes: int) -> None:
        """The queue's level limits for ``queue_bytes`` (see the handler's docstring)."""
        self._queue_bytes = queue_bytes
        self._debug_limit = int(queue_bytes * _DEBUG_SHARE)
        self._info_limit = int(queue_bytes * _INFO_SHARE)

    def _install_ring(self, ring: SenderRing) -> bool:
        """Put what is queued into a new connection's ``ring`` and write every later record
        there (queue lock held; while connecting, so every unsent record is queued); False if
        they do not fit."""
        first = self._seq - len(self._queue)
        ring.start_after(first)
        for seq, encoded in enumerate(self._queue, first + 1):
            if not ring.put(encoded, seq):
                return False
        self._ring = ring
        self._set_limits(min(self._queue_bytes, int(ring.capacity * _RING_SHARE)))
        if self._admit_freely_below >= 0:
            self._admit_freely_below = self._debug_limit
        return True

    def _released(self, size: int, count: int) -> None:
        """A frame of ``count`` records, ``size`` bytes of them, went whole to the kernel."""
        ring = self._ring
        if ring is not None:
            ring.release(size, count)

    def _count_drop(self, levelno: int) -> None:
        """Count a dropped record (queue lock held) and make sure the totals get sent."""
        self._dropped[levelno] = self._dropped.get(levelno, 0) + 1
        if self._shared_ledger is not None:
            # The totals reach the receiver even if no batch follows (a crash, a kill).
            self._shared_ledger.add_drops(QUEUE_FULL, levelno)
        if not self._drops_unsent:
            self._drops_unsent = True
            self._queue_changed.notify_all()

    def _admit(self, levelno: int) -> bool:
        """Whether a record of ``levelno`` may join the queue (queue lock held): False when
        forwarding failed or the level's share of the queue is full, and the drop is counted.
        Called only once the queue holds more than any level may always add."""
        if self._failed is None and (self._room_for(levelno) or self._wait_for_room(levelno)):
            return True
        self._count_drop(levelno)
        return False

    def _wrote_through(self, encoded: bytes, created: float) -> bool:
        """Send a record that found the queue empty at once, if the rate allows and the send
        lock is free (queue lock held); False when it must be queued.

        Token bucket on the records' own timestamps (no clock call): it refills here, at
        WRITE_THROUGH_RATE up to WRITE_THROUGH_BURST, and every record pays one token, sent
        alone or batched (batched ones when the queue is taken, see :meth:`_take_batch`). The
        debt may grow to a burst, so that during a flood records stay batched instead of every
        few going out alone; a record in a flood costs no token arithmetic at all.
        """
        burst = RING_WRITE_THROUGH_BURST if self._ring is not None else WRITE_THROUGH_BURST
        tokens = self._tokens + (created - self._last_created) * self._write_through_rate
        self._last_created = created
        self._tokens = tokens = burst if tokens > burst else tokens
        if (
            tokens < 1.0
            or self._in_flight
            or self._sock is None
            or not self._send_lock.acquire(blocking=False)
        ):
            return False
        try:
            self._tokens = tokens - 1.0
            self._drops_unsent = False
            self._write_through(
                log_batch_frame([encoded], self._dropped, DEFAULT_MAX_FRAME_SIZE), len(encoded), 1
            )
        finally:
            self._send_lock.release()
        return True

    def _room_for(self, levelno: int) -> bool:
        queued = self._queued_bytes
        if levelno >= logging.WARNING:
            return queued < self._queue_bytes
        if levelno >= logging.INFO:
            return queued < self._info_limit
        return queued < self._debug_limit

    def _wait_for_room(self, levelno: int) -> bool:
        """Lossless mode: wait (queue lock held by the caller) until the record fits."""
        if not self._block_when_full:
            return False
        deadline = time.monotonic() + self._block_timeout
        # The sender thread sends at once for a waiting thread, as for a flush: it would
        # otherwise linger (up to SENDER_LINGER_MAX) for records this thread cannot add, and a
        # small queue's flood went at a batch per 20 ms (20,000 records through 4 KiB: 7.7 s).
        self._flushing += 1
        try:
            while not self._room_for(levelno):
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._failed is not None:
                    return False
                self._queue_changed.notify_all()
                self._queue_changed.wait(remaining)
        finally:
            self._flushing -= 1
        return True

    def _send_queue_now(self) -> None:
        """Send the whole queue as one batch without blocking (both locks held)."""
        batch, size = self._take_batch()
        self._queued_bytes -= size
        self._drops_unsent = False
        self._write_through(
            log_batch_frame(batch, self._dropped, DEFAULT_MAX_FRAME_SIZE), size, len(batch)
        )

    def _write_through(self, frame: bytes, size: int, count: int) -> None:
        """Send ``frame`` (``count`` records of ``size`` bytes) now without blocking; what the
        kernel does not take is finished by the sender thread before anything else (or,
        should the connection break, sent again whole on the next one)."""
        sock = self._sock
        assert sock is not None
        identity = self._sock_identity
        if identity is not None and not identity.holds():
            # The program closed the socket's descriptor (and may have reused the number for
            # a file or connection of its own, which must get no log bytes): a break, as a
            # failed send; one fstat per frame (see isoplug.transport.fd_identity).
            self._break("the program closed the log socket's descriptor", frame=frame)
            return
        try:
            if self._sock_is_tls:
                assert isinstance(sock, ssl.SSLSocket)
                sent = send_tls_now(sock, frame)
            else:
                sent = sock.send(frame, socket.MSG_DONTWAIT)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError as exc:
            # Broken: its records go back to the queue for the next connection (sender.py).
            self._break(f"sending failed: {exc}", frame=frame)
            return
        if sent < len(frame):
            # The sender thread finishes this frame before anything else.
            self._unsent = frame[sent:]
            self._unsent_frame = frame
            self._unsent_release = (size, count)
            self._in_flight += 1
            self._queue_changed.notify_all()
            return
        self._released(size, count)
        if self._dropped:
            # What a break need not carry to the next connection (see sender.py).
            self._totals_written = dict(self._dropped)

    def _take_batch(self) -> tuple[list[bytes], int]:
        """Remove up to MAX_BATCH_BYTES of records (less while closing) from the head of the
        queue (lock held), and charge them their write-through tokens (see
        :meth:`_wrote_through`)."""
        queue = self._queue
        cap = self._batch_cap
        if self._queued_bytes <= cap:
            self._queue = []
            batch, size = queue, sum(map(len, queue))
        else:
            size = 0
            for index, encoded in enumerate(queue):
                size += len(encoded)
                if size >= cap:
                    batch = queue[: index + 1]
                    del queue[: index + 1]
                    break
            else:
                self._queue = []
                batch = queue
        self._tokens = max(self._tokens - len(batch), -WRITE_THROUGH_BURST)
        return batch, size
