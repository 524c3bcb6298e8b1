"""How a :class:`~isoplug.logs.ForwardingHandler` closes: within one deadline, the most severe
records first once the receiver cannot take them all, and nothing lost without a count.

``close(timeout)`` (also at interpreter exit, and at the normal end of a process that
``multiprocessing`` started, see :mod:`isoplug.logs.process_end`) hands the rest to the sender
thread, which sends what is queued:

- after the frame in progress (at most :data:`~isoplug.logs.sender.MAX_BATCH_BYTES`), in
  order while the kernel takes each frame at once (a receiver that keeps up: the usual case,
  whose records keep their order);
- by level as soon as a frame does not go at once (the receiver is behind, and the socket is
  full): WARNING and above first, then INFO, then the rest, each level in order, in frames
  small enough for the kernel to take whole or not at all (:func:`_whole_frame_bytes`), each
  waiting for room. The first such batch says so (``reordered_after``): the receiver then looks
  for no gaps, and counts at the end;
- when the deadline passes, what is still queued is dropped and counted by level, in the
  sequence ledger first (:mod:`isoplug.logs.ledger`), then in a last batch if the socket takes
  it (``dropped_at_close``). A frame the deadline interrupts (the one in progress when close()
  began, with a receiver far behind) is lost whole, and the receiver counts its records from
  the ledger. Unless the receiver never answered the connection (slow, or holding it until
  a place of its sender process tree frees): what is queued is in the ring its hello passed
  then, left there for the receiver to replay when it takes the connection up.

So a child that logged 50,000 DEBUG records and then 100 WARNINGs to a receiver whose handler
takes 1 ms a record gets its WARNINGs through before its DEBUG backlog, and exits after the
deadline rather than after three of them; the receiver reports, exactly, what did not arrive.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import socket
import threading
import time

import msgspec

from isoplug.logs.ledger import (
    CLOSE_DEADLINE_PASSED,
    CLOSING,
    DROPPED_AT_CLOSE,
    SenderLedger,
)
from isoplug.logs.sendio import say, send_now, send_within, wait_for_room
from isoplug.rpc.blocking import BlockingChannel
from isoplug.transport.fd_identity import FdIdentity, detach_if_not_ours
from isoplug.wire import DEFAULT_MAX_FRAME_SIZE
from isoplug.wire.logframes import log_batch_frame

__all__ = ["DEFAULT_CLOSE_TIMEOUT", "CloseByLevel", "encoded_levelno"]

#: How long ``close()`` may take by default (at interpreter exit too).
DEFAULT_CLOSE_TIMEOUT = 5.0
#: The largest frame a closing handler sends (see _whole_frame_bytes): about 80 records.
CLOSE_FRAME_BYTES = 16 * 1024
#: How much earlier than close()'s deadline the sender thread stops sending (see
#: _close_within).
_SENDER_GRACE = 0.1
#: A closing frame that found no room tries again after this, doubling up to _LAST_PAUSE.
_FIRST_PAUSE = 0.001
_LAST_PAUSE = 0.005

#: Queued records by level while closing: WARNING and above, INFO, the rest; each (levelno,
#: encoded record), oldest first.
ByLevel = tuple[
    collections.deque[tuple[int, bytes]],
    collections.deque[tuple[int, bytes]],
    collections.deque[tuple[int, bytes]],
]
#: Not sorting (an empty ByLevel), for a batch to be dropped rather than sorted.
_NO_LEVELS: ByLevel = (collections.deque(), collections.deque(), collections.deque())


class _Head(msgspec.Struct, array_like=True):
    """The start of an encoded record (capture's layout): its logger name and level."""

    name: str
    levelno: int


_head_decoder = msgspec.msgpack.Decoder(_Head)


def encoded_levelno(encoded: bytes) -> int:
    """The level of a record as the queue holds it (0.4 us: the queue keeps no level, which
    would cost every record; only a closing handler needs it)."""
    try:
        return _head_decoder.decode(encoded).levelno
    except msgspec.DecodeError:
        return logging.NOTSET  # not a record of capture's (never happens): the lowest


class CloseByLevel:
    """``close()``'s half of :class:`~isoplug.logs.ForwardingHandler` (a base class of it);
    see the module docstring. The state it shares is the handler's (``SenderThread``'s
    declarations), guarded by ``_queue_lock`` unless said otherwise."""

    _queue_lock: threading.Lock
    _queue_changed: threading.Condition
    _send_lock: threading.Lock
    _queue: list[bytes]
    _queued_bytes: int
    _in_flight: int
    _seq: int
    _shared_ledger: SenderLedger | None
    _dropped: dict[int, int]
    _drops_unsent: bool
    _unsent: bytes
    _unsent_frame: bytes
    _totals_written: dict[int, int]
    _channel: BlockingChannel | None
    _sock_identity: FdIdentity | None
    _sock_is_tls: bool
    _thread: threading.Thread | None
    _failed: str | None
    _dropped_when_failed: int
    _closed: bool
    _closing: bool
    _batch_cap: int
    _pid: int
    _dropped_before: dict[int, int]
    _unreachable_since: float | None
    _dropped_when_unreachable: int
    sender_name: str
    address: str

    def _init_close_state(self) -> None:
        self._closing = False
        #: time.monotonic() by which close() must be done.
        self._close_deadline = 0.0
        #: The sender thread finished closing with the stream between two frames: a goodbye
        #: can follow.
        self._close_clean = False
        #: Accepted records dropped at close()'s deadline, by level.
        self._dropped_at_close: dict[int, int] = {}
        #: While closing by level: the queue's records, sorted (see ByLevel).
        self._by_level: ByLevel | None = None

    def _close_within(self, timeout: float) -> bool:
        """Send what is queued within ``timeout``, say goodbye, release the connection;
        False if another call did or does (it alone tears the handler down)."""
        deadline = time.monotonic() + max(timeout, 0.0)
        with self._queue_changed:
            if self._closing:
                return False
            self._closing = True
            # The sender thread's own deadline comes a little earlier, so that it ends the
            # close itself (everything counted, the totals told) while close() still waits.
            self._close_deadline = deadline - min(_SENDER_GRACE, timeout / 10)
            if self._shared_ledger is not None:
                self._shared_ledger.set_flag(CLOSING)
            self._queue_changed.notify_all()
            thread = self._thread
            while (
                not self._closed
                and self._failed is None
                and thread is not None
                and thread.is_alive()
                and self._pid == os.getpid()
            ):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                # In slices: a sender thread that ends (it gave up) does not notify.
                self._queue_changed.wait(min(remaining, 0.05))
            if not self._closed:
                # The sender thread is still in a frame at the deadline (a receiver far
                # behind), or connecting, or gone: what is queued stays unsent.
                if self._channel is None and self._shared_ledger is not None:
                    self._leave_to_receiver(self._shared_ledger)
                else:
                    self._drop_rest_at_close(interrupted=thread is not None and thread.is_alive())
                self._closed = True
                self._queue_changed.notify_all()
        if thread is not None and thread is not threading.current_thread():
            thread.join(max(0.0, deadline - time.monotonic()))
        self._release_connection(deadline)
        self._say_dropped_since_failure()
        self._say_unreachable_at_close()
        return True

    def _say_dropped_since_failure(self) -> None:
        """Forwarding stopped for good (said then): say at the close how many records were
        dropped after it, which no receiver will ever count."""
        with self._queue_lock:
            failed, later = self._failed, sum(self._dropped.values()) - self._dropped_when_failed
        if failed is not None and later > 0 and self._pid == os.getpid():
            say(
                f"isoplug: log forwarding from {self.sender_name} to {self.address} had "
                f"stopped ({failed}); {later:,} later log records were dropped"
            )

    def _say_unreachable_at_close(self) -> None:
        """Closed while a tcp:// or tls:// receiver was unreachable (said then, see
        isoplug.logs.sender_link): say what that cost, which no receiver will ever count."""
        with self._queue_lock:
            since = self._unreachable_since
            dropped = sum(
                sum(counts.values())
                for counts in (self._dropped_before, self._dropped, self._dropped_at_close)
            )
        if since is not None and self._failed is None and self._pid == os.getpid():
            say(
                f"isoplug: log forwarding from {self.sender_name} to {self.address} closed "
                f"with the receiver unreachable for {time.monotonic() - since:.1f} s; "
                f"{dropped - self._dropped_when_unreachable:,} records were dropped meanwhile "
                f"and at the close"
            )

    def _release_connection(self, deadline: float) -> None:
        """Say goodbye if the stream allows it by the deadline, and close the socket."""
        channel = self._channel
        if channel is None or self._pid != os.getpid():
            return
        # A descriptor the program closed (and may have reused) is not ours to close.
        detach_if_not_ours(channel.socket, self._sock_identity)
        remaining = max(0.0, deadline - time.monotonic())
        if self._close_clean and self._send_lock.acquire(timeout=remaining):
            try:
                # One try, without blocking (a blocked writer of a unix socket waits for its
                # buffer to be three quarters empty, see send_within): a receiver far behind
                # may have no room left even for a goodbye; then the connection ends without
                # one, and the ledger says the handler was closing.
                with contextlib.suppress(OSError):  # closed already: close() is all there is
                    channel.socket.settimeout(0.0)
                with contextlib.suppress(OSError):  # gone already: nothing left to release
                    channel.close("log handler closed")
            finally:
                self._send_lock.release()
            return
        # The sender thread is stuck in a frame the receiver does not read: cut it off.
        with contextlib.suppress(OSError):  # already gone: closing it is all that is left
            channel.socket.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(OSError):  # gone already: nothing left to release
            channel.socket.close()

    # -- the sender thread's part -------------------------------------------------------------

    def _send_for_close(self, channel: BlockingChannel) -> None:
        """Send the rest within the deadline (the sender thread, when close() began)."""
        with self._send_lock:
            clean = self._send_rest(channel.socket)
        with self._queue_changed:
            self._close_clean = clean
            self._queue_changed.notify_all()

    def _send_rest(self, sock: socket.socket) -> bool:
        """Send the queue in order while the kernel takes it at once, then by level; at the
        deadline drop the rest. Returns whether the stream ended between two frames. Send
        lock held: the emitting threads queue meanwhile, they neither write through nor push.
        """
        deadline = self._close_deadline
        tls = self._sock_is_tls
        if self._unsent:
            if not _send_until(sock, self._unsent, deadline, tls=tls):
                return self._end_close(sock, interrupted=True)
            with self._queue_changed:
                self._released(*self._unsent_release)
                self._unsent = self._unsent_frame = b""
                self._in_flight -= 1
        cap = _whole_frame_bytes(sock)
        with self._queue_changed:
            self._batch_cap = cap
        marker: int | None = None
        interrupted = False
        while not interrupted:
            with self._queue_changed:
                if self._closed:
                    return False  # close() stopped waiting for us: it counted the rest
                by_level = self._by_level
                if by_level is not None:
                    self._sort_queue(by_level)
                if time.monotonic() >= deadline:
                    break
                if by_level is None:
                    batch, size = self._take_batch()
                else:
                    batch, size = _take_by_level(by_level, cap)
                if not batch:
                    break
                self._in_flight += len(batch)
                dropped = dict(self._dropped)
                self._drops_unsent = False
            frame = log_batch_frame(batch, dropped, DEFAULT_MAX_FRAME_SIZE, reordered_after=marker)
            try:
                sent = send_now(sock, frame, tls=tls)
                # By level, a frame waits for room to go whole (a frame of at most `cap` goes
                # whole or not at all): the deadline never cuts one.
                pause = _FIRST_PAUSE
                while sent == 0 and by_level is not None:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    wait_for_room(sock, min(pause, left))
                    pause = min(pause * 2, _LAST_PAUSE)
                    sent = send_now(sock, frame, tls=tls)
            except OSError:
                sent = 0  # the receiver is gone: the batch is dropped with the rest
                by_level = by_level or self._by_level or _NO_LEVELS
            if sent == 0:
                with self._queue_changed:
                    self._in_flight -= len(batch)
                    self._queue[:0] = batch
                    if by_level is not None:
                        break  # the deadline passed: the batch is dropped with the rest
                    # The receiver is behind: nothing of this frame went, so it goes back, and
                    # from here on the most severe records go first.
                    marker = self._by_levels_from_now()
                continue
            # A frame the deadline cuts is lost whole: the receiver counts its records from the
            # ledger's sequence number.
            interrupted = sent < len(frame) and not _send_until(
                sock, memoryview(frame)[sent:], deadline, tls=tls
            )
            with self._queue_changed:
                self._in_flight -= len(batch)
                self._queued_bytes -= size
                if by_level is None and not interrupted:
                    # In order: the ring's oldest records (by level, nothing is released).
                    self._released(size, len(batch))
                self._queue_changed.notify_all()
                if not interrupted:
                    self._totals_written = dropped
                    marker = None
                    if sent < len(frame) and self._by_level is None:
                        # The receiver is behind: the rest by level, the most severe first.
                        marker = self._by_levels_from_now()
        return self._end_close(sock, interrupted=interrupted)

    def _by_levels_from_now(self) -> int:
        """Sort what is queued by level from now on (queue lock held); returns the sequence
        number the records continue after: every earlier one was handed to the kernel."""
        after = self._seq - len(self._queue)
        self._by_level = (collections.deque(), collections.deque(), collections.deque())
        self._sort_queue(self._by_level)
        return after

    def _sort_queue(self, by_level: ByLevel) -> None:
        """Move the queue's records, the newest included, into ``by_level`` (lock held)."""
        queue = self._queue
        if not queue:
            return
        for encoded in queue:
            level = encoded_levelno(encoded)
            bucket = 0 if level >= logging.WARNING else 1 if level >= logging.INFO else 2
            by_level[bucket].append((level, encoded))
        self._queue = []

    def _end_close(self, sock: socket.socket, *, interrupted: bool) -> bool:
        """Drop what the deadline left, count it, mark the handler closed and tell the
        receiver the totals if the socket takes them; returns whether the stream ended
        between two frames (a goodbye may follow). ``interrupted``: a frame was cut."""
        with self._queue_changed:
            if self._closed:
                return False
            self._drop_rest_at_close(interrupted=interrupted)
            self._closed = True
            self._queue_changed.notify_all()
            tell = self._drops_unsent or bool(self._dropped_at_close)
            self._drops_unsent = False
            dropped, at_close = dict(self._dropped), dict(self._dropped_at_close)
        if interrupted:
            return False
        if not tell:
            return True
        frame = log_batch_frame([], dropped, DEFAULT_MAX_FRAME_SIZE, dropped_at_close=at_close)
        try:
            sent = send_now(sock, frame, tls=self._sock_is_tls)
        except OSError:
            return False  # the receiver is gone: no goodbye either
        if sent in (0, len(frame)):
            # Told, or not at all (the ledger tells): either way between two frames.
            return True
        return _send_until(
            sock, memoryview(frame)[sent:], self._close_deadline, tls=self._sock_is_tls
        )

    def _leave_to_receiver(self, ledger: SenderLedger) -> None:
        """The deadline passed with the hello unanswered (a receiver slow to answer, or
        holding the connection until a place of its process tree frees): the ledger and ring
        it passed hold what is queued, accepted and unsent, for the receiver to replay when
        it takes the connection up, as it would after a crash. Dropped and counted instead,
        those records were lost though the ring had them (lock held)."""
        if self._queue:
            ledger.set_flag(CLOSE_DEADLINE_PASSED)
        self._queue = []
        self._queued_bytes = 0

    def _drop_rest_at_close(self, *, interrupted: bool = False) -> None:
        """Drop and count by level what is still queued (lock held): in the ledger first,
        which the receiver reads whatever happens next."""
        records = [(encoded_levelno(encoded), encoded) for encoded in self._queue]
        by_level, self._by_level = self._by_level, None
        if by_level is not None:
            for bucket in by_level:
                records.extend(bucket)
        self._queue = []
        self._queued_bytes = 0
        ledger = self._shared_ledger
        totals = self._dropped_at_close
        for level, _ in records:
            totals[level] = totals.get(level, 0) + 1
        if ledger is not None:
            counts = collections.Counter(level for level, _ in records)
            for level, count in counts.items():
                ledger.add_drops(DROPPED_AT_CLOSE, level, count)
            if records or interrupted:
                ledger.set_flag(CLOSE_DEADLINE_PASSED)

    _unsent_release: tuple[int, int]

    def _take_batch(self) -> tuple[list[bytes], int]:
        raise NotImplementedError  # Batching's

    def _released(self, size: int, count: int) -> None:
        raise NotImplementedError  # Batching's


def _take_by_level(by_level: ByLevel, cap: int) -> tuple[list[bytes], int]:
    """Up to ``cap`` bytes of records (one at least), the most severe first (lock held)."""
    batch: list[bytes] = []
    size = 0
    for bucket in by_level:
        while bucket and (not batch or size + len(bucket[0][1]) <= cap):
            encoded = bucket.popleft()[1]
            batch.append(encoded)
            size += len(encoded)
    return batch, size


def _whole_frame_bytes(sock: socket.socket) -> int:
    """How many bytes of records a frame may hold while closing, so that the kernel takes it
    whole or not at all: a unix socket splits a send into buffers of about 32 KiB, each at
    most half the send buffer (net/unix/af_unix.c), and takes each buffer while it has room.
    A frame of one buffer is never cut by the deadline."""
    room = CLOSE_FRAME_BYTES
    if sock.family == socket.AF_UNIX:
        # getsockopt gives the kernel's value: twice what was asked for.
        with contextlib.suppress(OSError):
            room = min(room, sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF) // 2)
    # Room for the frame's own bytes (header, drop totals).
    return max(room - 1024, 1024)


def _send_until(
    sock: socket.socket, data: bytes | memoryview, deadline: float, *, tls: bool
) -> bool:
    """Send all of ``data`` by ``deadline``; False if it passed first (or the connection
    broke): the frame is then cut."""
    try:
        return send_within(sock, data, tls=tls, deadline=deadline)
    except OSError:
        return False  # the receiver is gone, or close() closed the socket
