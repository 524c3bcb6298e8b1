"""What a listener grants a connection before it has authenticated; shared by
:func:`~isoplug.rpc.serve` and :func:`~isoplug.rpc.blocking.serve_blocking`.

Until its hello is checked a connection is anyone's, so it gets little: a short deadline for
the whole handshake, TLS included (:data:`DEFAULT_HELLO_TIMEOUT`); a small frame limit (the
wire's :data:`~isoplug.wire.framing.HANDSHAKE_MAX_FRAME_SIZE`); and one of at most
``max_handshakes`` seats (:class:`HandshakeGate`). Past that, a new connection gets a ``busy``
reject at once and is closed, before anything it sent is read.

What a server says about connections it refused is rate limited: a client connecting in a
loop, with garbage or none of the listener's seats free, must not flood the host's log. Every
refusal is counted, and the count is said.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Final

from isoplug.wire import Reject, RejectCode, encode_frame
from isoplug.wire.sanitize import clean_text

__all__ = [
    "DEFAULT_HELLO_TIMEOUT",
    "DEFAULT_MAX_HANDSHAKES",
    "HandshakeGate",
    "busy_reject",
]

_log = logging.getLogger("isoplug.rpc")

#: A runner's or a sender's hello follows its connect within milliseconds; a few seconds leave
#: room for a loaded machine, and bound what a silent or trickling peer holds.
DEFAULT_HELLO_TIMEOUT: Final = 5.0
#: Connections waiting to authenticate at once, per listener. Far above what a host's runners
#: open together (each handshake takes a millisecond); at 64 KiB each, a ceiling of 8 MiB.
DEFAULT_MAX_HANDSHAKES: Final = 128
#: What a refused connection's error may quote (sanitized) in a warning.
MAX_REFUSAL_CHARS: Final = 300
#: Warnings about failed handshakes: this many at once, then one per interval.
_WARNING_BURST: Final = 10
_WARNING_INTERVAL: Final = 1.0


def busy_reject(reason: str) -> bytes:
    """The frame that tells a client it was turned away before its hello was read."""
    return encode_frame(Reject(code=RejectCode.BUSY, reason=reason))


class HandshakeGate:
    """Seats for connections that have not authenticated yet, and a server's word on those
    it refused. Thread-safe: a blocking server's connections leave from their own threads.

    ``name`` and :attr:`address` make the messages (the address is set once listening).
    """

    def __init__(
        self, name: str, max_handshakes: int, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if max_handshakes < 1:
            raise ValueError(f"max_handshakes must be at least 1, got {max_handshakes}")
        self.name = name or "server"
        self.address: object = "(a listener starting up)"
        self.max_handshakes = max_handshakes
        self._clock = clock
        self._lock = threading.Lock()
        self._pending = 0
        # Connections turned away since the gate last admitted one.
        self._turned_away = 0
        self._allowance = float(_WARNING_BURST)
        self._refilled_at = clock()
        # Failed handshakes not logged yet (over the rate): said in the next warning.
        self._unlogged = 0

    def __str__(self) -> str:
        return f"{self.name} on {self.address}"

    @property
    def pending(self) -> int:
        """Connections that hold a seat: in their handshake now."""
        return self._pending

    @property
    def full_reason(self) -> str:
        return f"at its limit of {self.max_handshakes} connections waiting to authenticate"

    def enter(self) -> bool:
        """Take a seat for a connection about to authenticate; False when none is free."""
        with self._lock:
            if self._pending >= self.max_handshakes:
                return False
            self._pending += 1
            return True

    def leave(self) -> None:
        """Give the seat back: the handshake ended, whichever way."""
        with self._lock:
            self._pending -= 1

    def turn_away(self, why: str) -> None:
        """Count a connection refused before its handshake. Said once, until the server
        admits a connection again (then :meth:`admitted` says how many)."""
        with self._lock:
            first = self._turned_away == 0
            self._turned_away += 1
        if first:
            _log.warning("%s: refusing new connections: %s", self, why)

    def admitted(self) -> None:
        """A connection got a seat: if some were turned away before it, say how many."""
        if not self._turned_away:
            return
        with self._lock:
            count, self._turned_away = self._turned_away, 0
        if count:
            _log.warning("%s: accepting connections again; %d refused meanwhile", self, count)

    def failed(self, error: BaseException, who: str = "") -> None:
        """Report a connection whose handshake failed (wrong token, no hello in time, an
        oversized or malformed frame...): its error, sanitized and short, rate limited.
        ``who`` (``" from pid N"``, the kernel's word) goes after "a connection"."""
        text = clean_text(str(error), MAX_REFUSAL_CHARS)
        with self._lock:
            now = self._clock()
            self._allowance = min(
                float(_WARNING_BURST),
                self._allowance + (now - self._refilled_at) / _WARNING_INTERVAL,
            )
            self._refilled_at = now
            if self._allowance < 1:
                self._unlogged += 1
                return
            self._allowance -= 1
            unlogged, self._unlogged = self._unlogged, 0
        more = f" ({unlogged} more refused before it, not logged one by one)" if unlogged else ""
        _log.warning("refused a connection%s on %s: %s%s", who, self.address, text, more)

    def close(self) -> None:
        """The server stops: say how many failed handshakes went unlogged, if any."""
        with self._lock:
            unlogged, self._unlogged = self._unlogged, 0
        if unlogged:
            _log.warning("%s: %d more connection(s) refused, not logged one by one", self, unlogged)
