"""The caps a :class:`~isoplug.logs.replay.LogReplayer` applies to an untrusted sender:
:class:`ReplayLimits`.

Sizes (message, traceback, logger name, ``extra``) are cut to these caps when a record is
rebuilt (:mod:`isoplug.wire.sanitize`), and the record rate is limited per sender
(:mod:`isoplug.logs.ratelimit`); reports about the sender go out at most every
``report_interval`` per kind (:mod:`isoplug.logs.report_throttle`).
"""

from __future__ import annotations

import dataclasses
import math
import threading

__all__ = [
    "KERNEL_IN_FLIGHT_BYTES",
    "MAX_DROPS_PER_SECOND",
    "MAX_QUEUE_BYTES",
    "MIN_RECORD_BYTES",
    "ReplayLimits",
    "TransitLosses",
    "most_dropped",
    "most_in_flight",
    "most_unsent",
]

#: The largest ``queue_bytes`` a :class:`~isoplug.logs.handler.ForwardingHandler` takes (128
#: times the default): what bounds, for a receiver, the records an honest sender can have
#: accepted and not yet sent.
MAX_QUEUE_BYTES = 1024 * 1024 * 1024
#: No record the sender's encoder makes is shorter (an array of 15 fields, a float timestamp
#: among them; the smallest possible is 41 bytes: tests/test_logs_sequence_claims.py).
MIN_RECORD_BYTES = 24
#: What the kernel may hold of a connection between the two processes, at most, and be lost
#: with it: the sender's send buffer (it asks for 4 MiB, which Linux doubles) and the
#: receiver's receive buffer (net.core.rmem_max, a few MiB by default), with room.
KERNEL_IN_FLIGHT_BYTES = 64 * 1024 * 1024


def most_in_flight(queue_bytes: int | None) -> int:
    """The most records a sender whose queue holds ``queue_bytes`` (None: not announced, any
    it may have) can have accepted and not yet handed to the kernel: the largest sequence gap
    an honest sender can cause on one connection. A wider gap is no loss but a sender whose
    sequence numbers jumped (see :mod:`isoplug.logs.replay_reports`)."""
    return (queue_bytes or MAX_QUEUE_BYTES) // MIN_RECORD_BYTES


def most_unsent(queue_bytes: int | None) -> int:
    """The most records a sender can have accepted and not delivered when its connection
    ends: those in its queue and those in the kernel (see :func:`most_in_flight`). A ledger
    claiming more is no loss but a sender's false count."""
    return ((queue_bytes or MAX_QUEUE_BYTES) + KERNEL_IN_FLIGHT_BYTES) // MIN_RECORD_BYTES


#: More records than a sender process can refuse per second of its life, its queue full: a
#: refusal is a call of ``logging``'s ``handle()`` that takes the queue lock and compares levels,
#: a microsecond or so of CPython, one thread at a time under the GIL. Ten times that, for fast
#: machines and free-threaded builds, bounds what a sender may say its full queue dropped.
MAX_DROPS_PER_SECOND = 10_000_000


def most_dropped(seconds: float) -> int:
    """The most records a sender that has lived ``seconds`` can have dropped, its queue full
    (see :data:`MAX_DROPS_PER_SECOND`); a second more, so a young sender's burst fits."""
    return int((max(0.0, seconds) + 1.0) * MAX_DROPS_PER_SECOND)


class TransitLosses:
    """The records counted lost in transit (sequence gaps) of the connections that share it:
    a runner's in a host (all its lives, the processes it forks included), all of a standalone
    receiver's. Together they count at most what one connection can have in flight
    (:func:`most_in_flight` of its queue): an honest sender leaves no gap on a connection at
    all (its stream is ordered and complete; a reconnection says where it resumes; a record
    the receiver rejects still counts as arrived), so a gap is a broken or forging sender,
    and connecting again, or forking, must not give it a fresh allowance. Past it, every gap
    is a protocol violation (``LogMetrics.sequence_violations``)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        #: Records counted lost in transit so far.
        self.counted = 0

    def take(self, missing: int, bound: int) -> bool:
        """Count ``missing`` more records lost if the total stays within ``bound``; whether
        it did. A lock: the connections sharing this run on threads of their own."""
        with self._lock:
            if self.counted + missing > bound:
                return False
            self.counted += missing
            return True


@dataclasses.dataclass(frozen=True)
class ReplayLimits:
    """Caps applied to every record from an untrusted sender; each default says why."""

    #: 32 Ki characters: a few screens of text; longer messages are almost always a dump.
    max_message_chars: int = 32 * 1024
    #: 64 Ki characters: deep tracebacks with chained causes fit.
    max_traceback_chars: int = 64 * 1024
    #: 200 characters of logger name after the prefix.
    max_logger_name_chars: int = 200
    #: At most this many ``extra`` (and structlog) keys per record.
    max_extra_keys: int = 64
    #: An ``extra`` value longer than this (characters of text or bytes of msgpack) is cut.
    max_extra_value_chars: int = 4 * 1024
    #: Records per second per sender before rate limiting (in a Host: per runner, the
    #: processes it forks included); None disables the limit.
    rate: float | None = 20_000.0
    #: Records a sender may emit at once above the rate.
    burst: float = 100_000.0
    #: Each kind of report a sender can repeat (rate-limit drops, its own drops, sequence
    #: gaps, malformed records...) goes out at once the first time, then summed up at most
    #: this often (seconds); in a Host, per runner.
    report_interval: float = 1.0

    def __post_init__(self) -> None:
        # A NaN would make every comparison false (nothing ever limited, or every report held
        # for ever), an infinity would never refill: refused here, naming the setting, rather
        # than met as odd behaviour later.
        for name in ("rate", "burst", "report_interval"):
            value = getattr(self, name)
            if value is None and name == "rate":
                continue
            if not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
                raise ValueError(
                    f"ReplayLimits: {name} must be a finite number of 0 or more"
                    f"{' (or None)' if name == 'rate' else ''}, not {value!r}"
                )
