"""The sender thread of a :class:`~isoplug.logs.ForwardingHandler`, and its connection.

The emitting threads send what they can themselves (see :mod:`isoplug.logs.handler`). This
thread opens the connection, ships what they leave (see :meth:`SenderThread._wait_for_work`)
and, when the connection breaks while the process lives (the receiver closed it, a send
failed), connects again (:mod:`isoplug.logs.reconnect`), losing as little as it can and
saying what it lost:

- nothing accepted is given up at the break: a frame the kernel did not take whole (the one
  whose send failed, or the rest of a partial write) goes back, as its records, to the head of
  the queue; the queue keeps taking records meanwhile, within its limits (what it must drop
  is counted by level, as always);
- the new connection's first batch says where its records continue (``resumed_after``: the
  highest sequence number handed whole to the old connection), so the receiver sees no gap,
  and carries as drop totals what the sender lost since its totals last went out whole: drop
  totals count per connection (:attr:`ForwardingHandler.dropped` adds them up). The receiver
  reports the reconnection and that count;
- the old connection's sequence ledger and ring keep counting and holding every record
  accepted until the new connection's ledger is installed, once the receiver welcomed that
  connection, holding its ledger (a kill meanwhile leaves them to the receiver, which waits
  for this process to
  reconnect or exit: :mod:`isoplug.logs.pending_ends`; see
  :mod:`isoplug.logs.sender_link`); then the old ledger is set back to ``resumed_after`` and
  abandoned, so that a receiver reading it afterwards counts only the records that died in
  the old socket, not those the new connection carries;
- a ``tcp://`` or ``tls://`` sender never takes its receiver for gone (a collector restarts):
  it keeps trying, saying once that the receiver is unreachable and once that it is back;
- when the receiver is gone for good, forwarding stops as when the first connection fails:
  the queue is counted lost, later records are counted as dropped, and a line on the real
  stderr says so (never through ``sys.stderr``, which in a runner makes records that would
  come back here; never with a lock held).

A first connection that finds nothing listening is not tried again (``start()`` and
:func:`~isoplug.logs.forward_logs` say so at once); one that met a receiver busy or cut
short is, as after a break.
"""

from __future__ import annotations

import logging
import os
import threading
import traceback

import msgspec

from isoplug.errors import IsoplugError
from isoplug.logs.ledger import QUEUE_FULL, SenderLedger
from isoplug.logs.sender_link import SenderLink
from isoplug.logs.sendio import say as _say
from isoplug.logs.sendio import send_within
from isoplug.rpc.blocking import BlockingChannel
from isoplug.wire import DEFAULT_MAX_FRAME_SIZE, LogBatch
from isoplug.wire.framing import HEADER_SIZE
from isoplug.wire.logframes import log_batch_frame

__all__ = [
    "MAX_BATCH_BYTES",
    "SENDER_LINGER",
    "SENDER_LINGER_MAX",
    "SenderThread",
]

#: How long queued records may wait for the emitting thread to push them before the sender
#: thread takes over: the most a short burst's last few records are delayed.
SENDER_LINGER = 0.002
#: While a flood lasts the sender thread looks less and less often, up to this interval (the
#: emitting thread pushes by itself): each look costs the emitting thread a GIL hand-over,
#: which at every SENDER_LINGER came to ~7,000 futex calls per 100,000 records. A long
#: flood's last records are therefore delayed up to about twice this.
SENDER_LINGER_MAX = 0.02
#: Batches are split at 64 KiB (about 400 records): a frame once begun must be sent whole, and
#: ``close()`` can put WARNING records before a DEBUG flood queued ahead of them only after the
#: frame in progress: a 1 MiB frame of DEBUG took 5 s to a receiver whose handler spent 1 ms a
#: record, 64 KiB takes 0.4 s. A send of 64 KiB is amortised as well as one of 1 MiB (200,000
#: records end to end: 1.9-3.3 s either way, interleaved runs).
MAX_BATCH_BYTES = 64 * 1024
#: Unforeseen failures of the sender thread in a row (none of its frames sent between them)
#: after which it gives up, counting what is queued as lost, rather than loop on a bug.
MAX_SENDER_FAILURES = 3

_batch_decoder = msgspec.msgpack.Decoder(LogBatch)
_raw_list_decoder = msgspec.msgpack.Decoder(list[msgspec.Raw])


class SenderThread(SenderLink):
    """The sender thread's half of :class:`~isoplug.logs.ForwardingHandler` (a base class of
    it); see the module docstring. Its connection, and the state it shares with the emitting
    threads, are :class:`~isoplug.logs.sender_link.SenderLink`'s."""

    def _take_batch(self) -> tuple[list[bytes], int]:
        raise NotImplementedError  # Batching's

    def _released(self, size: int, count: int) -> None:
        raise NotImplementedError  # Batching's

    def _send_for_close(self, channel: BlockingChannel) -> None:
        raise NotImplementedError  # CloseByLevel's

    def _init_link_state(self) -> None:
        """The sender side's part of a fresh state (called by ``_init_state``)."""
        self._broken = None
        self._unsent_frame = b""
        self._totals_written = {}
        self._dropped_before = {}
        self._batch_cap = MAX_BATCH_BYTES
        self._unreachable_since = None
        self._dropped_when_unreachable = 0
        self._doubts_said = set()
        self._welcomed_over_tls = False
        self._sock_identity = None
        self._sender_failures = 0
        # A broken connection's ledger (and ring), counting until a new one takes over.
        self._abandoned_ledger: SenderLedger | None = None
        # A positive 63-bit number: msgpack carries it as an int64 however it is decoded.
        self._chain = int.from_bytes(os.urandom(8), "big") >> 1

    def _start(self) -> None:
        with self._queue_lock:
            if self._thread is not None and self._pid == os.getpid():
                return
            thread = threading.Thread(
                target=self._run_sender, name=f"isoplug-log-sender:{self.sender_name}", daemon=True
            )
            self._thread = thread
        thread.start()

    def _run_sender(self) -> None:
        """The thread's life: it never ends by an exception, which would leave the queue to
        grow unsent and every later record lost without a count. Whatever breaks, it
        connects again (or gives up, counting and saying what is lost)."""
        self._sender_ident = threading.get_ident()
        channel = self._first_connection()
        while channel is not None:
            try:
                broken = self._send_until_broken(channel)
            except Exception as exc:
                broken = self._sender_failed(exc)
            if broken is None:
                return
            channel = self._reconnect(channel, broken)

    def _sender_failed(self, exc: Exception) -> str | None:
        """Something unforeseen raised in the sender thread (a bug): say it with its traceback
        on the real stderr (a record of this thread's cannot be forwarded by it), and treat the
        connection as broken. Records a failed step had taken and not put back are counted
        lost, told with the next connection's drop totals. After MAX_SENDER_FAILURES in a row,
        give up (None)."""
        text = "".join(traceback.format_exception(exc)).rstrip()
        _say(f"isoplug: the log sender of {self.sender_name} failed; it connects again:\n{text}")
        reason = f"the log sender failed: {exc!r}"
        with self._queue_changed:
            self._sender_failures += 1
            if self._broken is None:
                self._break(reason)
            if self._in_flight:
                lost, self._in_flight = self._in_flight, 0
                self._dropped[logging.NOTSET] = self._dropped.get(logging.NOTSET, 0) + lost
                self._drops_unsent = True
                self._queued_bytes = sum(map(len, self._queue))
            broken = self._broken
            give_up = self._sender_failures >= MAX_SENDER_FAILURES
        if give_up:
            self._give_up(f"{reason} ({MAX_SENDER_FAILURES} times in a row)")
            return None
        return broken

    def _sock_still_ours(self) -> bool:
        """Whether the connection's descriptor still names its socket: the program may have
        closed it (a daemonizing plugin, an fd-cleanup loop) and reused the number for a file
        or a connection of its own, which must get no log bytes. Asked before each batch's
        send (one ``fstat``), not for every record."""
        identity = self._sock_identity
        return identity is None or identity.holds()

    def _send_until_broken(self, channel: BlockingChannel) -> str | None:
        """Send what the emitting threads leave until the handler is closed (None) or the
        connection breaks (why)."""
        while True:
            with self._queue_changed:
                self._wait_for_work()
                if self._broken is not None:
                    return self._broken  # an emitting thread's send failed
                closing = self._closing
            if closing:
                if not self._sock_still_ours():
                    # Closing on a connection the program closed would count the rest as
                    # dropped in a ledger the receiver read already: a new connection takes it.
                    with self._queue_changed:
                        self._break(_NOT_OURS)
                    return _NOT_OURS
                self._send_for_close(channel)
                return None
            with self._queue_changed:
                batch, size = self._take_batch()
                self._in_flight += len(batch)
                # Drop totals go out even with no record to carry them (an empty batch), so
                # drops at the end of a burst are reported without waiting for the next record.
                report_drops = self._drops_unsent
                self._drops_unsent = False
                dropped = dict(self._dropped)
            try:
                frame = (
                    log_batch_frame(batch, dropped, DEFAULT_MAX_FRAME_SIZE)
                    if batch or report_drops
                    else b""
                )
            except IsoplugError as exc:
                # A batch no connection can carry (far past the frame limit): never sent.
                with self._queue_changed:
                    self._in_flight -= len(batch)
                    self._queue[:0] = batch
                self._give_up(f"cannot send a log batch: {exc}", exc)
                return None
            try:
                with self._send_lock:
                    if not self._sock_still_ours():
                        raise _DescriptorLost(_NOT_OURS)
                    if self._unsent:
                        send_within(channel.socket, self._unsent, tls=self._sock_is_tls)
                        with self._queue_changed:
                            self._released(*self._unsent_release)
                            self._unsent = self._unsent_frame = b""
                            self._in_flight -= 1
                    if frame:
                        send_within(channel.socket, frame, tls=self._sock_is_tls)
            except (OSError, ValueError) as exc:
                # ValueError: a socket object closed under us (its fileno() is -1).
                with self._queue_changed:
                    if self._closing and (self._closed or not isinstance(exc, _DescriptorLost)):
                        # close() shut the socket at its deadline: it counts what is left,
                        # the receiver what died in this frame (from the ledger).
                        self._in_flight -= len(batch)
                        self._queued_bytes -= size
                        self._queue_changed.notify_all()
                        return None
                    self._break(f"sending failed: {exc}", batch=batch)
                return f"sending failed: {exc}"
            with self._queue_changed:
                self._in_flight -= len(batch)
                self._queued_bytes -= size
                self._released(size, len(batch))
                if frame:
                    self._totals_written = dropped
                    self._sender_failures = 0
                self._queue_changed.notify_all()

    def _wait_for_work(self) -> None:
        """Wait (queue lock held) until there is something for the sender thread to send.

        Queued records are left to the emitting thread while it keeps adding to the queue (it
        pushes the queue itself every EMIT_PUSH_INTERVAL); the sender takes them once no record
        came for a whole linger, which starts at SENDER_LINGER and doubles, up to
        SENDER_LINGER_MAX, while the emitting thread keeps batching. With nothing queued and
        no batch started since it last looked, the sender sleeps until a record is queued.
        Waking this thread for every batch would cost the emitting thread a GIL hand-over each
        time.
        """
        seen_seq, seen_due, linger = -1, -1.0, SENDER_LINGER
        # A flush waiting only for a batch in flight is no work: taking the empty queue would
        # spin this thread until the flushing thread got the GIL back (milliseconds).
        while not (
            self._unsent
            or self._closing
            or self._drops_unsent
            or self._broken is not None
            or (self._flushing and self._queue)
        ):
            if self._queue:
                if self._seq == seen_seq:
                    return  # nothing added for a whole linger: ours to send
            elif self._push_due == seen_due:
                # Empty, and no batch started since the last look (records written through
                # do not count): idle until the emitting thread queues a record.
                self._sender_idle = True
                self._queue_changed.wait()
                self._sender_idle = False
                if self._queue and self._ring is not None:
                    # The rest of a short burst (with a ring only its first record is written
                    # through): this thread got the GIL, so the burst has paused; with the
                    # records safe in the ring, no push comes for them: they go now.
                    return
                seen_seq, seen_due, linger = -1, -1.0, SENDER_LINGER
                continue
            if seen_seq != -1:
                linger = min(linger * 2, SENDER_LINGER_MAX)
            seen_seq, seen_due = self._seq, self._push_due
            self._queue_changed.wait(linger)

    def _break(self, reason: str, *, batch: list[bytes] | None = None, frame: bytes = b"") -> None:
        """The connection broke (queue lock held): stop writing to it and put back what it did
        not take whole, for the sender thread to send on a new one (see the module docstring).
        ``batch``: the sender thread's records whose frame failed; ``frame``: a frame an
        emitting thread could not write at all."""
        self._broken = reason
        self._sock = None
        records: list[bytes] = []
        if self._unsent_frame:
            back = _records_of(self._unsent_frame)
            records += back
            self._queued_bytes += sum(map(len, back))
            self._unsent = self._unsent_frame = b""
            self._unsent_release = (0, 0)
            self._in_flight -= 1
        if frame:
            back = _records_of(frame)
            records += back
            self._queued_bytes += sum(map(len, back))
        if batch:
            # Still counted in _queued_bytes: only a whole send subtracts them.
            records += batch
            self._in_flight -= len(batch)
        self._queue[:0] = records
        ledger, self._shared_ledger = self._shared_ledger, None
        written = self._totals_written
        if ledger is not None:
            # The drops the old connection told stay in its ledger; the rest the new one
            # carries. Its count of accepted records and its ring stay, though, and keep
            # taking every record until a new connection's ledger takes over (set back
            # then, in _connect): a receiver whose connection ended keeps the old ledger
            # until the sender reconnects or dies (isoplug.logs.pending_ends), and a
            # crash while reconnecting must leave the records it took in the old ring, or
            # at least counted there, not in this process's memory alone.
            ledger.set_drops(QUEUE_FULL, written)
            if self._abandoned_ledger is not None:
                self._abandoned_ledger.close()
            self._abandoned_ledger = ledger
        # Drop totals start afresh with the new connection, carrying what the old one may not
        # have told (the totals in the last frame it took whole were told, as far as we know).
        carried = {
            level: count - written.get(level, 0)
            for level, count in self._dropped.items()
            if count > written.get(level, 0)
        }
        before = self._dropped_before
        for level, count in written.items():
            before[level] = before.get(level, 0) + count
        self._dropped = carried
        self._totals_written = {}
        self._drops_unsent = bool(carried)
        self._queue_changed.notify_all()


#: Why a connection whose descriptor the program closed (or reused) is given up.
_NOT_OURS = "the program closed the log socket's descriptor (or reused its number)"


class _DescriptorLost(OSError):
    """The connection's descriptor no longer names its socket (see _sock_still_ours)."""


def _records_of(frame: bytes) -> list[bytes]:
    """The encoded records of a log batch frame, as the queue holds them."""
    batch = _batch_decoder.decode(memoryview(frame)[HEADER_SIZE:])
    return [bytes(raw) for raw in _raw_list_decoder.decode(batch.records)]
