"""Whether, and when, a log sender whose connection broke tries again: :class:`Reconnection`.

A connection that worked and then broke (the receiver closed it, a send failed) is tried again
at once, then after growing delays (:data:`RECONNECT_DELAYS`, about 6 s in all). The sender
gives up sooner when the receiver is clearly gone: nothing has listened at the address for
:data:`GONE_AFTER_REFUSALS` attempts in a row (no socket file, connection refused: a host that
shut down), or the receiver refused the sender's token or protocol version (another receiver
now has that address), or a TLS failure no attempt can mend (see
:func:`~isoplug.logs.sender_tls.permanent_tls_failure`) from a sender never welcomed over TLS
at that address. A receiver restarted on the same address within the first second or so is
found again.

That is for a unix socket, whose receiver is the sender's parent: a child whose parent died
must not hang at its exit waiting for it. A ``tcp://`` or ``tls://`` receiver is a collector
that restarts, for seconds, while its senders live on: after a break such a sender keeps
trying for as long as its process lives (:func:`network_delays`: at once, then 0.1 s doubling
up to :data:`NETWORK_MAX_DELAY`), its records queued meanwhile within the queue's bound.

A TLS failure that ends forwarding at once is there for a configuration error (a CA not
trusted, a certificate for another name, a client certificate missing): the first connection
shows it. Once a TLS receiver has welcomed the sender (``known_receiver``), the same failure
means that whoever answers at the address now is not that receiver: anyone who can take the
port while the collector restarts, with any certificate or a 7-byte alert, would otherwise
end forwarding for good. Those failures are retried like any other.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from isoplug.errors import AuthenticationFailed, ConnectError, SelfForwarding, VersionMismatch
from isoplug.logs.sender_tls import permanent_tls_failure

__all__ = [
    "GONE_AFTER_REFUSALS",
    "NETWORK_FIRST_DELAY",
    "NETWORK_MAX_DELAY",
    "RECONNECT_DELAYS",
    "RECONNECT_TIMEOUT",
    "Reconnection",
    "network_delays",
]

#: Seconds to wait before each attempt; after the last one fails, the sender gives up.
RECONNECT_DELAYS: tuple[float, ...] = (0.0, 0.05, 0.1, 0.2, 0.4, 0.8, 1.6, 3.2)
#: Attempts in a row that find nothing listening, after which the receiver is taken for gone
#: (with the delays above: about 0.75 s after the break).
GONE_AFTER_REFUSALS = 5
#: The longest one attempt may take (connect and handshake): a receiver that is there
#: answers within milliseconds; one that does not must not hold the sender for long.
RECONNECT_TIMEOUT = 5.0
#: A tcp:// or tls:// sender's second attempt after a break comes this long after the first,
#: each later one twice as long after the one before, up to NETWORK_MAX_DELAY.
NETWORK_FIRST_DELAY = 0.1
#: The longest a tcp:// or tls:// sender waits between two attempts: how late at most it finds
#: a restarted collector.
NETWORK_MAX_DELAY = 5.0


def network_delays() -> Iterator[float]:
    """A tcp:// or tls:// sender's delays after a break: endless (the module's values as they
    are now: a test may change them)."""
    yield 0.0
    delay = NETWORK_FIRST_DELAY
    while True:
        yield delay
        delay = min(delay * 2, NETWORK_MAX_DELAY)


class Reconnection:
    """The attempts after one break: :meth:`next_delay` before each, :meth:`failed` after
    each that failed, until one succeeds or a reason to give up is returned. ``endless``:
    a tcp:// or tls:// sender's, which nothing listening does not end; ``known_receiver``: a
    TLS receiver welcomed this sender before, so a failed verification ends nothing either
    (see the module doc)."""

    def __init__(
        self,
        delays: Iterable[float] | None = None,
        gone_after: int | None = None,
        *,
        endless: bool = False,
        known_receiver: bool = False,
    ) -> None:
        self.endless = endless
        self.known_receiver = known_receiver
        # The module's values as they are now (a test may change them).
        if delays is None:
            delays = network_delays() if endless else RECONNECT_DELAYS
        self._delays = iter(delays)
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
        if not self.known_receiver and (permanent := permanent_tls_failure(error)) is not None:
            return permanent
        if self.endless:
            return None
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
