"""Counters of what a log receiver did with the records of one sender."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

__all__ = ["DropReason", "LogMetrics"]


class DropReason:
    """Why records did not reach the host's logging; keys of :attr:`LogMetrics.dropped`."""

    #: The sender's queue was full (counted by the sender, reported in its batches).
    SENDER_QUEUE_FULL = "sender_queue_full"
    #: The sender's connection failed and it could not send what it held.
    SENDER_CONNECTION_LOST = "sender_connection_lost"
    #: Over the per-sender rate limit on the receiving side.
    RATE_LIMITED = "rate_limited"
    #: A record (or a whole batch) that did not decode or validate.
    MALFORMED = "malformed"
    #: Sequence numbers that never arrived and were never reported as dropped.
    LOST_IN_TRANSIT = "lost_in_transit"
    #: Accepted by the sender but never sent: it ended first (a crash, a kill, or a last flush
    #: that timed out), counted from its sequence ledger.
    SENDER_ENDED = "sender_ended"
    #: Accepted by the sender and dropped when its ``close()`` deadline passed before the
    #: receiver took them (the least severe are the ones left; counted by the sender, reported
    #: in its last batch or its ledger).
    SENDER_CLOSE_DEADLINE = "sender_close_deadline"
    #: Lines a runner wrote on its stdout/stderr pipes (fd-level output) that the host's log
    #: handlers could not keep up with: the host never makes a runner wait on its handlers, so
    #: past a bounded backlog it drops them instead, the least severe first.
    HOST_BACKLOG = "host_backlog"
    #: Not replayed when the receiver closed at the end of its ``drain_timeout``: received and
    #: not replayed yet, or accepted by the sender and not arrived yet (counted from its
    #: sequence ledger). The receiver replays nothing once it has closed.
    RECEIVER_CLOSED = "receiver_closed"


@dataclasses.dataclass
class LogMetrics:
    """What arrived from one sender and what became of it. Updated in place as records flow."""

    #: Records decoded from the sender's batches.
    received: int = 0
    #: Records handed to the host's logging (after level filtering and rate limiting).
    replayed: int = 0
    #: Records below the level the host's logger is enabled for (not a loss).
    filtered: int = 0
    #: Records lost, by reason (see :class:`DropReason`).
    dropped: dict[str, int] = dataclasses.field(default_factory=dict)
    #: Bytes of log batches received.
    bytes: int = 0
    #: ``time.time()`` when the last record arrived, or None.
    last_record_time: float | None = None
    #: Records received per output stream (``"stdout"``, ``"stderr"``): a runner's fd-level
    #: output read from its pipes, and its Python-level output captured as records. Included
    #: in :attr:`received`.
    streams: dict[str, int] = dataclasses.field(default_factory=dict)
    #: Records replayed with fields repaired: a ``created`` that is no time, a ``lineno`` that
    #: is no line number (replaced by the arrival time, 0). Included in :attr:`received`.
    repaired: int = 0
    #: Times a host handler or filter raised on a replayed record (or on a report of the
    #: receiver's own about this sender): that record reached the handlers before the failing
    #: one, later records reach them all; the error is reported on the host's own logger (see
    #: :mod:`isoplug.logs.handler_errors`).
    handler_errors: int = 0
    #: Records of this sender (and reports of the receiver's own about it) that this process's
    #: record factory (``logging.setLogRecordFactory``) raised on, or made no ``LogRecord`` for:
    #: each was made without it, so without the attributes it adds, and delivered; the first
    #: failure of each factory is said on the host's own logger (see
    #: :mod:`isoplug.logs.record_factory`).
    record_factory_errors: int = 0
    #: Records that never arrived but were recovered from the dead sender's shared-memory ring
    #: (see :mod:`isoplug.logs.ring`) and replayed. Included in :attr:`received`.
    recovered: int = 0
    #: Connections that ended without a goodbye while their sender process lived on (it
    #: closed the socket's descriptor) and whose end is not accounted for yet (0 or 1 for
    #: one connection): the records the sender accepted since the break are recovered or
    #: counted lost only when it reconnects, exits, or the receiver closes (see
    #: :mod:`isoplug.logs.pending_ends`); until then :attr:`recovered` and :attr:`dropped`
    #: may still grow. The connection itself is closed.
    pending_ends: int = 0
    #: Shared-memory rings of this sender's connections the receiver did not keep: larger
    #: than it reads, or past its bound on rings held at once (see
    #: :mod:`isoplug.logs.ring_budget`). Such a connection's records still arrive; what a
    #: crash leaves unsent is counted in :attr:`dropped`, not recovered.
    rings_refused: int = 0
    #: Times the sender broke the sequence protocol in a way no honest sender can: sequence
    #: numbers that jumped further than it could have had records in flight, a ledger that
    #: claims more unsent records than its queue and the kernel could hold, a queue size no
    #: sender may have (see :mod:`isoplug.logs.limits`). Each is reported as what it is;
    #: none is counted as records lost in :attr:`dropped`, so a forging sender cannot inflate
    #: (or drown) its loss counts.
    sequence_violations: int = 0
    #: Records whose logger name got no host logger of its own, because making it would have
    #: passed a logger budget: the sender's share (a runner's, or a standalone receiver's
    #: ``max_logger_entries``) or the process's (:func:`~isoplug.logs.set_process_logger_budget`).
    #: They are replayed on the prefix's logger instead (see :mod:`isoplug.logs.routing`).
    #: Each such record counts one, as it arrives (before the level and the rate limit), whether
    #: its name is new or repeated, and however many names the sender invents.
    over_logger_budget: int = 0
    #: :attr:`replayed` by level number.
    replayed_levels: dict[int, int] = dataclasses.field(default_factory=dict)
    #: The part of :attr:`dropped` whose level is known (the rate limit's, the sender's full
    #: queue's, the host backlog's), by reason, then level number.
    dropped_levels: dict[str, dict[int, int]] = dataclasses.field(default_factory=dict)

    def count_drop(self, reason: str, count: int = 1, level: int | None = None) -> None:
        self.dropped[reason] = self.dropped.get(reason, 0) + count
        if level is not None:
            levels = self.dropped_levels.get(reason)
            if levels is None:
                levels = self.dropped_levels[reason] = {}
            levels[level] = levels.get(level, 0) + count

    def snapshot(self) -> LogMetrics:
        """A copy that no longer changes."""
        return dataclasses.replace(
            self,
            dropped=dict(self.dropped),
            streams=dict(self.streams),
            replayed_levels=dict(self.replayed_levels),
            dropped_levels={reason: dict(n) for reason, n in list(self.dropped_levels.items())},
        )

    @classmethod
    def combined(cls, parts: Iterable[LogMetrics]) -> LogMetrics:
        """The totals of several senders' metrics (say, one plugin's connections)."""
        total = cls()
        for part in parts:
            total.received += part.received
            total.replayed += part.replayed
            total.filtered += part.filtered
            total.bytes += part.bytes
            total.repaired += part.repaired
            total.handler_errors += part.handler_errors
            total.record_factory_errors += part.record_factory_errors
            total.recovered += part.recovered
            total.pending_ends += part.pending_ends
            total.rings_refused += part.rings_refused
            total.sequence_violations += part.sequence_violations
            total.over_logger_budget += part.over_logger_budget
            # list(): the sender's thread may add a reason meanwhile.
            for reason, count in list(part.dropped.items()):
                total.count_drop(reason, count)
            for stream, count in list(part.streams.items()):
                total.streams[stream] = total.streams.get(stream, 0) + count
            for level, count in list(part.replayed_levels.items()):
                total.replayed_levels[level] = total.replayed_levels.get(level, 0) + count
            for reason, levels in list(part.dropped_levels.items()):
                into = total.dropped_levels.setdefault(reason, {})
                for level, count in list(levels.items()):
                    into[level] = into.get(level, 0) + count
            if part.last_record_time is not None:
                total.last_record_time = max(total.last_record_time or 0.0, part.last_record_time)
        return total
