"""A token bucket: how many log records per second a sender may put into the host's logging."""

from __future__ import annotations

import time
from collections.abc import Callable

__all__ = ["TokenBucket"]


class TokenBucket:
    """``rate`` tokens per second, holding at most ``burst``.

    :meth:`take` spends one token if there is one. :meth:`take_priority` is for records that
    should be the last to go (WARNING and above): it may borrow up to another ``burst`` tokens,
    so that a flood of debug output cannot starve errors, while a flood of errors is still
    bounded.
    """

    __slots__ = ("_clock", "_tokens", "_updated", "burst", "rate")

    def __init__(
        self, rate: float, burst: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if not (0 < rate < float("inf") and 1 <= burst < float("inf")):
            raise ValueError(
                f"rate must be a finite number > 0 and burst a finite number >= 1 "
                f"(got rate={rate}, burst={burst})"
            )
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._tokens = burst
        self._updated: float = clock()

    def _refill(self) -> float:
        now = self._clock()
        tokens = self._tokens + (now - self._updated) * self.rate
        self._updated = now
        self._tokens = tokens = min(tokens, self.burst)
        return tokens

    def take(self) -> bool:
        """Spend a token; False when the bucket is empty."""
        if self._refill() >= 1.0:
            self._tokens -= 1.0
            return True
        return False

    def take_priority(self) -> bool:
        """Spend a token, borrowing down to ``-burst``; False only past that."""
        if self._refill() >= -self.burst + 1.0:
            self._tokens -= 1.0
            return True
        return False
