"""Whether, and when, a log sender whose connection broke tries again: :class:`Reconnection`.

A connection that worked and then broke (the receiver closed it, a send failed) is tried again
at once, then after growing delays (:data:`RECONNECT_DELAYS`, about 6 s in all). The sender
gives up sooner when the receiver is clearly gone: nothing has listened at the address for
:data:`GONE_AFTER_REFUSALS` attempts in a row (no socket file, connection refused: a host that
shut down), or the receiver refused the sender's token or protocol version (another receiver
now has that address). A receiver restarted on the same address within the first second or so
is found again.
"""

from __future__ import annotations

from collections.abc import Iterable

from isoplug.errors import AuthenticationFailed, ConnectError, SelfForwarding, VersionMismatch

__all__ = ["GONE_AFTER_REFUSALS", "RECONNECT_DELAYS", "RECONNECT_TIMEOUT", "Reconnection"]

#: Seconds to wait before each attempt; after the last one fails, the sender gives up.
RECONNECT_DELAYS: tuple[float, ...] = (0.0, 0.05, 0.1, 0.2, 0.4, 0.8, 1.6, 3.2)
#: Attempts in a row that find nothing listening, after which the receiver is taken for gone
#: (with the delays above: about 0.75 s after the break).
GONE_AFTER_REFUSALS = 5
#: The longest one attempt may take (connect and handshake): a receiver that is there
#: answers within milliseconds; one that does not must not hold the sender for long.
RECONNECT_TIMEOUT = 5.0


class Reconnection:
    """The attempts after one break: :meth:`next_delay` before each, :meth:`failed` after
    each that failed, until one succeeds or a reason to give up is returned."""

    def __init__(
        self, delays: Iterable[float] | None = None, gone_after: int | None = None
    ) -> None:
        # The module's values as they are now (a test may change them).
        self._delays = iter(RECONNECT_DELAYS if delays is None else delays)
        self._gone_after = GONE_AFTER_REFUSALS if gone_after is None else gone_after
        self._refusals = 0
        #: Attempts that failed so far.
        self.failures = 0

    def next_delay(self) -> float | None:
        """Seconds to wait before the next attempt; None once every attempt is spent."""
        return next(self._delays, None)

    def failed(self, error: BaseException) -> str | None:
        """Note a failed attempt; return why to give up now, or None to try again."""
        self.failures += 1
        if isinstance(error, AuthenticationFailed | VersionMismatch):
            return f"the receiver at that address refused this sender ({error})"
        if isinstance(error, SelfForwarding):
            return str(error)
        if nobody_listens(error):
            self._refusals += 1
            if self._refusals >= self._gone_after:
                return f"nothing listens at the address any more ({error})"
        else:
            self._refusals = 0
        return None


def nobody_listens(error: BaseException) -> bool:
    """Whether a failed connect found no listener (rather than a busy or slow one)."""
    cause = error.__cause__ if isinstance(error, ConnectError) else error
    return isinstance(cause, FileNotFoundError | ConnectionRefusedError)
