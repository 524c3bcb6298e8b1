"""What a listener grants a connection before it has authenticated; shared by
:func:`~isoplug.rpc.serve` and :func:`~isoplug.rpc.blocking.serve_blocking`.

Until its hello is checked a connection is anyone's, so it gets little: a short deadline for
the whole handshake, TLS included (:data:`DEFAULT_HELLO_TIMEOUT`); a small frame limit (the
wire's :data:`~isoplug.wire.framing.HANDSHAKE_MAX_FRAME_SIZE`); and one of at most
``max_handshakes`` seats (:class:`HandshakeGate`). Past that, a new connection gets a ``busy``
reject at once and is closed, before anything it sent is read.

Those seats would let whoever holds them all keep everyone out, a listener's own clients
included: a local process that connects and says nothing, 128 times over, would keep a
restarting runner from reaching its host. So a listener that knows its clients by the kernel's
word (``SO_PEERCRED`` on a unix socket) says so with a *kinship* function: the pid that
connected, the kernel's word, is looked up before a byte is read, and a connection of a known
family (a runner, or a process it started) takes one of ``max_handshakes`` seats of its
family's own, never one of the strangers' seats. Strangers cannot hold those, and a family
cannot hold another's. Where the socket cannot say who connected (TCP, TLS, not Linux), every
connection is a stranger, as before.

What a server says about connections it refused is rate limited: a client connecting in a
loop, with garbage or none of the listener's seats free, must not flood the host's log, and
seats freed and taken again at once (a client that holds them all, and reconnects whenever
one closes) must not make a warning each time. Refusals for lack of a seat: one warning when
they start, then at most one line per :data:`REFUSAL_REPORT_INTERVAL` with the count of those
since. Failed handshakes: a burst of warnings, then one per interval, with the count of those
left out. Every refusal is counted, and the count is said (at the latest when the server
closes).
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable
from typing import Final

from isoplug.errors import ConnectionBroken
from isoplug.log_guard import guarded_logger
from isoplug.transport.stream import PeerCredentials
from isoplug.wire import Reject, RejectCode, encode_frame
from isoplug.wire.sanitize import clean_text

__all__ = [
    "DEFAULT_HELLO_TIMEOUT",
    "DEFAULT_MAX_HANDSHAKES",
    "REFUSAL_REPORT_INTERVAL",
    "HandshakeGate",
    "Kinship",
    "Seat",
    "busy_reject",
]

_log = guarded_logger("isoplug.rpc")

#: A runner's or a sender's hello follows its connect within milliseconds; a few seconds leave
#: room for a loaded machine, and bound what a silent or trickling peer holds.
DEFAULT_HELLO_TIMEOUT: Final = 5.0
#: Connections waiting to authenticate at once, per listener (and as many more per family of
#: the listener's own clients, see the module docstring). Far above what a host's runners open
#: together (each handshake takes a millisecond); at 64 KiB each, a ceiling of 8 MiB.
DEFAULT_MAX_HANDSHAKES: Final = 128
#: What a refused connection's error may quote (sanitized) in a warning.
MAX_REFUSAL_CHARS: Final = 300
#: After the first warning about connections turned away for lack of a seat, or the burst of
#: warnings about failed handshakes, at most one line per this many seconds: whoever can
#: connect can repeat either as fast as connections open.
REFUSAL_REPORT_INTERVAL: Final = 60.0
#: Warnings about failed handshakes said one by one before they are summed up.
_WARNING_BURST: Final = 10

Kinship = Callable[[int], str | None]
"""``kinship(pid)``: the family of the process the kernel says connected (a runner's id: the
runner, or for a log listener a process it started), or ``None`` for a stranger. Called for
every connection on a socket that can tell its peer, before anything it sent is read."""


@dataclasses.dataclass(frozen=True, slots=True)
class Seat:
    """What :meth:`HandshakeGate.enter` gave a connection: a seat in the strangers' lane
    (``family`` None) or in its family's; false when none was free (``refused`` says why)."""

    family: str | None = None
    refused: str = ""

    def __bool__(self) -> bool:
        return not self.refused


def busy_reject(reason: str) -> bytes:
    """The frame that tells a client it was turned away before its hello was read."""
    return encode_frame(Reject(code=RejectCode.BUSY, reason=reason))


class HandshakeGate:
    """Seats for connections that have not authenticated yet, and a server's word on those
    it refused. Thread-safe: a blocking server's connections leave from their own threads.

    ``name`` and :attr:`address` make the messages (the address is set once listening).
    ``kinship`` gives the listener's own clients seats of their own (see the module
    docstring); ``report_interval`` is :data:`REFUSAL_REPORT_INTERVAL` but in tests.
    """

    def __init__(
        self,
        name: str,
        max_handshakes: int,
        *,
        kinship: Kinship | None = None,
        report_interval: float = REFUSAL_REPORT_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_handshakes < 1:
            raise ValueError(f"max_handshakes must be at least 1, got {max_handshakes}")
        self.name = name or "server"
        self.address: object = "(a listener starting up)"
        self.max_handshakes = max_handshakes
        self._kinship = kinship
        self._interval = report_interval
        self._clock = clock
        self._lock = threading.Lock()
        self._pending = 0
        # Seats taken in each family's lane; a family leaves the dict with its last seat.
        self._kin: dict[str, int] = {}
        # Turned away for lack of a seat: how many not said yet, the latest reason, when the
        # gate last said anything about it, and whether its last word was "refusing".
        self._turned_away = 0
        self._turned_away_why = ""
        self._said_at = -float("inf")
        self._refusing = False
        # Failed handshakes: warnings left before they are summed up, and those not said.
        self._allowance = float(_WARNING_BURST)
        self._refilled_at = clock()
        self._unlogged = 0

    def __str__(self) -> str:
        return f"{self.name} on {self.address}"

    @property
    def pending(self) -> int:
        """Connections of strangers that hold a seat: in their handshake now."""
        return self._pending

    def kin_pending(self, family: str) -> int:
        """Connections of ``family`` that hold a seat of its own: in their handshake now."""
        return self._kin.get(family, 0)

    @property
    def full_reason(self) -> str:
        return f"at its limit of {self.max_handshakes} connections waiting to authenticate"

    def enter(self, credentials: PeerCredentials | None = None) -> Seat:
        """Take a seat for a connection about to authenticate, whose peer the kernel says is
        ``credentials`` (None: the socket cannot say). A false seat when none is free: the
        refusal is counted (and said, see the module docstring) before this returns."""
        return self.enter_family(self.family_of(credentials))

    def family_of(self, credentials: PeerCredentials | None) -> str | None:
        """The family of a connection whose peer the kernel says is ``credentials`` (None:
        a stranger, or a socket that cannot say)."""
        if credentials is None or self._kinship is None:
            return None
        return self._kinship(credentials.pid)

    def enter_family(self, family: str | None) -> Seat:
        """:meth:`enter` for a connection whose family (:meth:`family_of`) is known."""
        with self._lock:
            if family is None:
                seated = self._pending < self.max_handshakes
                if seated:
                    self._pending += 1
            else:
                taken = self._kin.get(family, 0)
                seated = taken < self.max_handshakes
                if seated:
                    self._kin[family] = taken + 1
        if not seated:
            why = (
                self.full_reason
                if family is None
                else f"{clean_text(family, MAX_REFUSAL_CHARS)}: at its limit of "
                f"{self.max_handshakes} connections of its own waiting to authenticate"
            )
            self.turn_away(why)
            return Seat(family, refused=why)
        if family is None:
            # A family's seat says nothing about strangers: they may still be turned away.
            self._admitted()
        return Seat(family)

    def leave(self, seat: Seat | None = None) -> None:
        """Give the seat back: the handshake ended, whichever way."""
        family = None if seat is None else seat.family
        with self._lock:
            if family is None:
                self._pending -= 1
            else:
                left = self._kin[family] - 1
                if left:
                    self._kin[family] = left
                else:
                    del self._kin[family]

    def turn_away(self, why: str) -> None:
        """Count a connection refused before its handshake: said at once when the gate has
        said nothing about it for an interval, else counted into the next line."""
        with self._lock:
            self._turned_away += 1
            self._turned_away_why = why
            now = self._clock()
            if now - self._said_at < self._interval:
                return
            count, self._turned_away = self._turned_away, 0
            seconds = now - self._said_at
            refusing, self._refusing = self._refusing, True
            self._said_at = now
        if not refusing and count == 1:
            _log.warning("%s: refusing new connections: %s", self, why)
        else:
            _log.warning(
                "%s: refusing new connections: %d refused in the last %.0f s (the latest: %s)",
                self,
                count,
                seconds,
                why,
            )

    def _admitted(self) -> None:
        """A stranger got a seat: once an interval has passed since the gate said it was
        refusing, say that it accepts again, and how many it refused since."""
        if not self._refusing and not self._turned_away:
            return  # the usual case, without the lock: nothing was refused
        with self._lock:
            now = self._clock()
            if now - self._said_at < self._interval or not (self._refusing or self._turned_away):
                return
            count, self._turned_away = self._turned_away, 0
            seconds = now - self._said_at
            self._refusing = False
            self._said_at = now
        if count:
            _log.warning(
                "%s: accepting connections again; %d refused in the last %.0f s",
                self,
                count,
                seconds,
            )
        else:
            _log.warning("%s: accepting connections again", self)

    def failed(self, error: BaseException, who: str = "") -> None:
        """Report a connection whose handshake failed (wrong token, no hello in time, an
        oversized or malformed frame...): its error, sanitized and short, rate limited.
        ``who`` (``" from pid N"``, the kernel's word) goes after "a connection". One the
        peer ended (:class:`~isoplug.errors.ConnectionBroken`: it closed or reset the
        connection before its hello was whole) is said to have ended, not to be refused."""
        text = clean_text(str(error), MAX_REFUSAL_CHARS)
        with self._lock:
            now = self._clock()
            self._allowance = min(
                float(_WARNING_BURST),
                self._allowance + (now - self._refilled_at) / self._interval,
            )
            self._refilled_at = now
            if self._allowance < 1:
                self._unlogged += 1
                return
            self._allowance -= 1
            unlogged, self._unlogged = self._unlogged, 0
        more = (
            f" ({unlogged} more failed handshakes before it, not logged one by one)"
            if unlogged
            else ""
        )
        if isinstance(error, ConnectionBroken):
            _log.warning(
                "a connection%s on %s ended during its handshake, neither admitted nor "
                "refused: %s%s",
                who,
                self.address,
                text,
                more,
            )
            return
        _log.warning("refused a connection%s on %s: %s%s", who, self.address, text, more)

    def close(self) -> None:
        """The server stops: say how many refusals went unsaid, if any."""
        with self._lock:
            unlogged, self._unlogged = self._unlogged, 0
            turned_away, self._turned_away = self._turned_away, 0
            why = self._turned_away_why
        if turned_away:
            _log.warning(
                "%s: %d more connection(s) refused at once, not logged one by one (the latest: %s)",
                self,
                turned_away,
                why,
            )
        if unlogged:
            _log.warning(
                "%s: %d more failed handshake(s) (refused, or ended by the peer), not logged "
                "one by one",
                self,
                unlogged,
            )
