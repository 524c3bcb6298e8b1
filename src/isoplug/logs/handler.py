"""The forwarding handler: a ``logging.Handler`` that ships every record to a receiving process.

How a record travels
--------------------
``handle()`` (no handler lock: the queue has its own) encodes the record on the caller's thread
(see :mod:`isoplug.logs.capture`), on a unix socket copies it into the connection's
shared-memory ring (:mod:`isoplug.logs.ring`: the receiver replays from there what a crash
left unsent, so from then on the record survives ``os._exit``, SIGKILL or a segfault a
microsecond later), and then takes one of two paths (:mod:`isoplug.logs.batching`):

- **write-through**: when nothing is queued and the record rate is moderate (a token bucket of
  :data:`WRITE_THROUGH_RATE` records/s), the caller sends the record right away with a
  non-blocking ``send``. Without a ring this is what makes a record durable: once ``handle()``
  returns it is in the kernel. With one, it is for latency alone, and only a burst's first
  record goes this way;
- **batching**: under pressure (a burst, or the socket momentarily full) the record joins a
  bounded in-memory queue. Once the oldest queued record is :data:`EMIT_PUSH_INTERVAL` old (or
  :data:`EMIT_PUSH_RECORDS` wait) the emitting thread pushes the queue into the kernel itself
  (non-blocking); a sender thread ships whatever is left, and the drop totals. The thread never
  depends on the program's event loop, so logs keep flowing while a plugin blocks its loop.

When the connection breaks, the sender thread connects again and the new connection carries on
where the old one stopped, saying what was lost meanwhile (:mod:`isoplug.logs.sender`).

``handle()`` and ``emit()`` never block on I/O and never raise. When the queue is full, records
are dropped by level: below INFO once the queue is half full, INFO at 80 %, WARNING and above
only when it is full; every drop is counted by level, in the sequence ledger too (see
:mod:`isoplug.logs.ledger`), and the running totals travel with the next batch, so the receiver
reports them even when no batch follows. ``block_when_full=True`` makes them wait (up to
``block_timeout``) for room instead: lossless mode.

``close()`` (at exit too) sends what is queued within one deadline: in order while the receiver
keeps up, by level once it does not (WARNING and above first, then INFO, then the rest),
dropping and counting what the deadline leaves (:mod:`isoplug.logs.closing`).

The first record
----------------
The first record of a process waits, up to ``first_record_wait`` (0.5 s by default), until
the connection is open; on a unix socket its records are safe from the moment the hello is
written (the ledger and ring go with it), so that a process that ends at once (``os._exit`` in
a forked child, a crash) is never unseen: see :mod:`isoplug.logs.first_record`, and
:meth:`start` to connect beforehand.

Records logged by this module's own sender thread never come back into it (no re-entrance).
After ``os.fork()`` the child gets a fresh, empty handler state and opens its own connection on
its first record, waiting as above; it never writes on the parent's socket. A default sender
name (``pid <pid>``) is the child's own; a name given explicitly is kept.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import socket
import ssl
import threading
import time
import weakref
from collections.abc import Callable

import msgspec

from isoplug.logs.batching import WRITE_THROUGH_BURST, Batching
from isoplug.logs.capture import LineSite, capture_record, encode_line
from isoplug.logs.closing import DEFAULT_CLOSE_TIMEOUT, CloseByLevel
from isoplug.logs.first_record import FIRST_RECORD_WAIT, wait_ready
from isoplug.logs.first_record import may_forward as _may_forward
from isoplug.logs.ledger import SenderLedger, private_ledger
from isoplug.logs.limits import MAX_QUEUE_BYTES
from isoplug.logs.process_end import close_all_at_exit
from isoplug.logs.ring import SenderRing, ring_capacity
from isoplug.logs.sender import SenderThread
from isoplug.logs.sender_tls import check_sender_tls
from isoplug.logs.standard_types import level_of as _level_of
from isoplug.logs.standard_types import time_of as _time_of
from isoplug.rpc.blocking import BlockingChannel
from isoplug.transport import AddressLike, parse_connect_address
from isoplug.transport.fd_identity import detach_if_not_ours

__all__ = ["DEFAULT_QUEUE_BYTES", "WRITE_THROUGH_RATE", "ForwardingHandler"]

#: 8 MiB of encoded records (~40,000 typical records): rides out a burst of several hundred
#: milliseconds at full speed while keeping the worst case a small fraction of a process.
DEFAULT_QUEUE_BYTES = 8 * 1024 * 1024
#: Records per second that go out one by one, right away; above it records are batched. 20,000
#: covers the "moderate" rates at which no record may be lost in a crash (10,000/s) with room,
#: while a burst is batched and costs the caller only the encoding.
WRITE_THROUGH_RATE = 20_000.0
#: Under pressure, the emitting thread itself sends the queue once its oldest record is this old
#: (by the records' own timestamps: no clock call), so that a crash in a flood takes at most
#: about the last millisecond of records (each one counted by the receiver, see
#: isoplug.logs.ledger). Pushing every 32 records instead cost the caller ~20 % more by the
#: clock on a 2-core VM: each send wakes the receiver on the other core.
EMIT_PUSH_INTERVAL = 0.001
#: ... or once it holds this many records, whatever the timestamps say (a clock set back).
EMIT_PUSH_RECORDS = 256
#: How long ``flush()`` / ``close()`` wait for queued records by default (atexit included).
DEFAULT_FLUSH_TIMEOUT = DEFAULT_CLOSE_TIMEOUT

#: What encoding a line's text can raise (lone surrogates): the record path then carries it.
_LINE_ENCODE_FAILURES = (msgspec.EncodeError, UnicodeEncodeError)

_live_handlers: weakref.WeakSet[ForwardingHandler] = weakref.WeakSet()


def _reset_after_fork() -> None:
    for handler in list(_live_handlers):
        handler._after_fork_in_child()
    if _live_handlers:
        close_all_at_exit(_flush_all_at_exit, forked=True)


def _lock_before_fork() -> None:
    for handler in list(_live_handlers):
        handler._queue_lock.acquire()


def _unlock_after_fork_in_parent() -> None:
    for handler in list(_live_handlers):
        handler._queue_lock.release()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(
        before=_lock_before_fork,
        after_in_parent=_unlock_after_fork_in_parent,
        after_in_child=_reset_after_fork,
    )


def _flush_all_at_exit() -> None:
    for handler in list(_live_handlers):
        handler._kept_open = None  # the process ends: kept open no longer
        handler.close()


atexit.register(_flush_all_at_exit)


class ForwardingHandler(Batching, CloseByLevel, SenderThread, logging.Handler):
    """Forwards every record it handles to a receiver at ``address`` (see the module doc).

    ``token`` authenticates the connection; ``name`` identifies this sender in the receiver's
    reports (default ``pid <pid>``, recomputed in a forked child). The connection is opened by
    the sender thread, on :meth:`start` or on the first record, which waits for it up to
    ``first_record_wait`` seconds (``0``: never waits; see the module docstring).

    ``write_through_rate`` (records/s) is how fast records may come and each still be sent at
    once; above it they are batched. Each record sent alone wakes the receiver (28-42 us of
    this process's CPU on a 2-core VM); ``0`` batches every record, pushed within about a
    millisecond, for the least CPU at the price of what a crash can take: that millisecond.
    """

    def __init__(
        self,
        address: AddressLike,
        token: str,
        *,
        name: str = "",
        role: str = "logs",
        level: int = logging.NOTSET,
        queue_bytes: int = DEFAULT_QUEUE_BYTES,
        block_when_full: bool = False,
        block_timeout: float = 5.0,
        write_through_rate: float = WRITE_THROUGH_RATE,
        ssl_context: ssl.SSLContext | None = None,
        connect_timeout: float = 10.0,
        first_record_wait: float = FIRST_RECORD_WAIT,
    ) -> None:
        if queue_bytes > MAX_QUEUE_BYTES:
            # A receiver bounds what a sender can have lost in flight by this (see
            # isoplug.logs.limits): a larger queue would make honest losses look forged.
            raise ValueError(
                f"ForwardingHandler: queue_bytes must be at most {MAX_QUEUE_BYTES:,}, "
                f"not {queue_bytes:,}"
            )
        parsed = parse_connect_address(address)
        check_sender_tls(parsed, ssl_context)
        super().__init__(level)
        self.address = str(parsed)
        self.sender_name = name or f"pid {os.getpid()}"
        # A default name says which process sends: a forked child's is its own pid (F5).
        self._default_name = not name
        self._first_record_wait = first_record_wait
        self._token = token
        self._role = role
        self._ssl_context = ssl_context
        self._connect_timeout = connect_timeout
        self._requested_queue_bytes = queue_bytes
        self._block_when_full = block_when_full
        self._block_timeout = block_timeout
        self._write_through_rate = write_through_rate
        self._init_state()
        # Set by keep_open(): what close() does instead, until the process exits.
        self._kept_open: Callable[[], bool] | None = None
        _live_handlers.add(self)
        # In a process of multiprocessing's (a pool initializer's handler), which ends with
        # os._exit(): close there too, or the receiver takes its normal end for a crash.
        close_all_at_exit(_flush_all_at_exit, forked=False)

    def child_settings(self) -> tuple[str, str, str]:
        """``(address, token, name)``: what a process this one starts without forking
        (``spawn``, ``forkserver``, a Python subprocess) passes to
        :func:`~isoplug.logs.forward_logs` to send its records as this one's descendant (a
        forked child keeps this handler). ``name`` is empty where this handler's is the
        default (the child's is then its own pid)."""
        return self.address, self._token, "" if self._default_name else self.sender_name

    @property
    def write_through_rate(self) -> float:
        """Records/s that may each go out at once (see the class docstring)."""
        return self._write_through_rate

    def _init_state(self) -> None:
        self._set_limits(self._requested_queue_bytes)
        #: The capacity of each connection's ring, on unix sockets (see isoplug.logs.batching).
        self._ring_capacity = ring_capacity(self._requested_queue_bytes)
        self._ring: SenderRing | None = None
        self._unsent_release = (0, 0)
        # Guards the queue, the sequence number and the drop counters; held only briefly.
        self._queue_lock = threading.Lock()
        self._queue_changed = threading.Condition(self._queue_lock)
        # Held while bytes are written to the socket, so frames never interleave.
        self._send_lock = threading.Lock()
        self._queue: list[bytes] = []
        self._queued_bytes = 0
        # Below this many queued bytes a record joins the queue with no further check (-1 once
        # forwarding failed: every record is then counted as dropped).
        self._admit_freely_below = self._debug_limit
        self._in_flight = 0
        self._seq = 0
        # The highest sequence number accepted, stored for every record: in shared memory once
        # connected over a unix socket, so the receiver can count what a crash took (see
        # isoplug.logs.ledger).
        self._ledger = private_ledger()
        self._shared_ledger: SenderLedger | None = None
        self._dropped: dict[int, int] = {}
        # True while the drop totals changed since they last went out in a frame.
        self._drops_unsent = False
        self._unsent = b""
        # With write-through off, not even a first burst goes out alone.
        self._tokens = WRITE_THROUGH_BURST if self._write_through_rate > 0 else 0.0
        # record.created at which the emitting thread pushes the queue (see EMIT_PUSH_INTERVAL).
        self._push_due = 0.0
        # True while the sender thread waits with nothing queued: the next record must wake it.
        self._sender_idle = False
        # Threads waiting for the queue to go out (in flush(), or for room in lossless mode):
        # the sender sends at once instead of lingering.
        self._flushing = 0
        self._last_created = 0.0
        self._channel: BlockingChannel | None = None
        self._sock: socket.socket | None = None
        # Decided once: isinstance() in the write-through path cost ~500 instructions a record.
        self._sock_is_tls = False
        self._thread: threading.Thread | None = None
        self._sender_ident: int | None = None
        self._failed: str | None = None
        self._closed = False
        self._pid = os.getpid()
        self._init_link_state()
        self._init_close_state()

    # -- logging.Handler ---------------------------------------------------------------------

    def handle(self, record: logging.LogRecord) -> bool | logging.LogRecord:  # type: ignore[override]
        """Filter, then queue or send ``record``; never blocks on I/O, never raises.

        No handler lock: the queue has its own. One function on purpose: it runs for every
        record on the caller's thread, and each Python call it saves is a few percent of a
        ``logger.info()``.
        """
        if self.filters:
            result = self.filter(record)
            if not result:
                return result
            if isinstance(result, logging.LogRecord):
                record = result
        if (
            record.thread == self._sender_ident or self._closed or self._thread is None
        ) and not _may_forward(self, record):
            return True
        try:
            lock = self._queue_lock
            # acquire/release rather than `with`: no bound methods built for every record.
            lock.acquire()
            try:
                if self._queued_bytes >= self._admit_freely_below and not self._admit(
                    _level_of(record)
                ):
                    return True
                created = record.created
                if type(created) is not float:
                    # Plugin code set it (a filter's ``record.created = "now"``): the record
                    # goes out with the claim kept (capture), timed here by when it was sent.
                    created = _time_of(created)
                seq = self._seq + 1
                encoded = capture_record(record, seq)
                ring = self._ring
                if ring is not None and not ring.put(encoded, seq):
                    # The ring is full of records the kernel has not taken yet.
                    self._count_drop(_level_of(record))
                    return True
                self._seq = seq
                self._ledger[0] = seq
                self._accept(encoded, created)
            finally:
                lock.release()
        except Exception:
            self.handleError(record)
        return True

    def forward_line(
        self, site: LineSite, created: float, message: str, task_name: str | None, thread: int
    ) -> bool:
        """Forward a plain printed line as :meth:`handle` would its record, without a
        ``LogRecord`` (see :func:`~isoplug.logs.capture.encode_line`); the caller has checked
        that this handler, without filters, is the only one its record would reach. False when
        the line needs the record path instead: before the first record, after ``close()``, on
        the sender thread, or for text msgpack cannot carry (lone surrogates)."""
        if thread == self._sender_ident or self._closed or self._thread is None:
            return False
        lock = self._queue_lock
        lock.acquire()
        try:
            if self._queued_bytes >= self._admit_freely_below and not self._admit(site[3]):
                return True
            seq = self._seq + 1
            try:
                encoded = encode_line(site, created, seq, message, task_name)
            except _LINE_ENCODE_FAILURES:
                return False
            ring = self._ring
            if ring is not None and not ring.put(encoded, seq):
                self._count_drop(site[3])
                return True
            self._seq = seq
            self._ledger[0] = seq
            self._accept(encoded, created)
        finally:
            lock.release()
        return True

    def _accept(self, encoded: bytes, created: float) -> None:
        """Send or queue an encoded record (queue lock held)."""
        queue = self._queue
        if not queue:
            if self._wrote_through(encoded, created):
                return
            self._push_due = created + EMIT_PUSH_INTERVAL
        queue.append(encoded)
        self._queued_bytes += len(encoded)
        if self._sender_idle:
            self._sender_idle = False
            self._queue_changed.notify_all()
        elif (
            (created >= self._push_due or len(queue) >= EMIT_PUSH_RECORDS)
            and not self._in_flight
            and self._sock is not None
            and self._send_lock.acquire(blocking=False)
        ):
            # Under pressure the caller still pushes the queue into the kernel itself every
            # millisecond, so what a crash can take is bounded by that, not by when the sender
            # thread next gets the GIL.
            try:
                self._send_queue_now()
            finally:
                self._send_lock.release()

    def emit(self, record: logging.LogRecord) -> None:
        """Forward ``record`` (through :meth:`handle`, so this handler's filters apply too)."""
        self.handle(record)

    def start(self, timeout: float | None = None) -> bool:
        """Connect now instead of on the first record; wait up to ``timeout`` for the
        receiver's welcome (see :mod:`isoplug.logs.first_record`).

        Returns True once connected; False if still connecting or failed (see :attr:`failure`).
        """
        if self._thread is None:
            self._start()
        deadline = time.monotonic() + (self._connect_timeout if timeout is None else timeout)
        return wait_ready(self, deadline)

    def flush(self, timeout: float | None = None) -> None:
        """Wait until everything queued so far has been handed to the kernel, or ``timeout``.

        Returns early if the connection has failed (those records are counted as dropped).
        """
        deadline = time.monotonic() + (DEFAULT_FLUSH_TIMEOUT if timeout is None else timeout)
        with self._queue_changed:
            self._flushing += 1
            try:
                # Once closed (logging.shutdown() flushes at exit, after close), no more goes.
                while (
                    (self._queue or self._in_flight) and self._failed is None and not self._closed
                ):
                    remaining = deadline - time.monotonic()
                    if remaining <= 0 or self._thread is None:
                        return
                    self._queue_changed.notify_all()
                    self._queue_changed.wait(remaining)
            finally:
                self._flushing -= 1

    def close(self, timeout: float = DEFAULT_FLUSH_TIMEOUT) -> None:
        """Send what is queued within ``timeout`` seconds, say goodbye and release the
        connection. Idempotent.

        In order while the receiver keeps up; once it does not, the most severe records first
        (WARNING and above, then INFO, then the rest); what the deadline leaves is dropped,
        counted by level (:attr:`dropped`) and reported by the receiver
        (:mod:`isoplug.logs.closing`).

        After :meth:`keep_open`, and until the process exits, it first calls what that was
        given, and returns at once, leaving the handler open, when that says True.
        """
        kept_open = self._kept_open
        if kept_open is not None and kept_open():
            return
        if not self._close_within(timeout):
            return
        with self._queue_lock:
            ledger, self._shared_ledger = self._shared_ledger, None
            abandoned, self._abandoned_ledger = self._abandoned_ledger, None
            self._ledger = private_ledger()
            # The ring lives in the ledger's file, and closes with it.
            self._ring = None
        if self._pid == os.getpid():
            for each in (ledger, abandoned):
                if each is not None:
                    each.close()
        _live_handlers.discard(self)
        super().close()

    def keep_open(self, instead: Callable[[], bool] | None) -> None:
        """Make :meth:`close` call ``instead`` first, and leave the connection open when it
        returns True; until the process exits (its own close at exit always closes) or
        ``keep_open(None)``. For a runner, whose handler belongs to the runtime: a plugin's
        logging configuration closes every handler it replaces (``basicConfig(force=True)``,
        ``dictConfig()``, ``fileConfig()``), and would otherwise take the plugin's records, its
        prints and its crash's last words off the host's connection."""
        self._kept_open = instead

    # -- statistics --------------------------------------------------------------------------

    @property
    def dropped(self) -> dict[int, int]:
        """Records dropped so far, by level number (``logging.NOTSET``: lost with a connection
        that could not be replaced), at ``close()``'s deadline included."""
        with self._queue_lock:
            totals = dict(self._dropped_before)
            for counts in (self._dropped, self._dropped_at_close):
                for level, count in counts.items():
                    totals[level] = totals.get(level, 0) + count
            return totals

    @property
    def failure(self) -> str | None:
        """Why the connection failed, or ``None`` while it works."""
        return self._failed

    # -- internals ---------------------------------------------------------------------------

    def _after_fork_in_child(self) -> None:
        """In a forked child: forget the parent's connection and thread, start afresh."""
        sock, ledger, identity = self._sock, self._shared_ledger, self._sock_identity
        abandoned = self._abandoned_ledger
        if self._default_name:
            self.sender_name = f"pid {os.getpid()}"
        self._init_state()
        for each in (ledger, abandoned):
            if each is not None:
                # Our copy of the parent's ledger and ring: the parent keeps writing to its own.
                each.close()
        if sock is not None and not detach_if_not_ours(sock, identity):
            # Our copy of the parent's socket; closing it does not disturb the parent.
            with contextlib.suppress(OSError):
                sock.close()

    def __repr__(self) -> str:
        return f"<ForwardingHandler to {self.address} ({logging.getLevelName(self.level)})>"
