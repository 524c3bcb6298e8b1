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

__all__ = ["ReplayLimits"]


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
