"""The log sender thread's connection: opening it (the first, and another after a break),
trying again, giving up, letting it go.

A connection on a unix socket announces a new sequence ledger and its ring (the records a
crash would take, readable by the receiver), and after a break, where the records continue
and what was lost meanwhile (see :mod:`isoplug.logs.sender`, whose thread this serves, and
:mod:`isoplug.logs.reconnect` for the delays between attempts). Giving up stops forwarding for
good, counting what is queued as lost and saying so once on the real stderr. A ``tcp://`` or
``tls://`` sender never gives up for want of a listener after a break (a collector restarts):
it says once on the real stderr that the receiver is unreachable, and once that it is back.

The program may close the connection's descriptor and reuse its number (a daemonizing plugin,
an fd-cleanup loop): :func:`release_channel` then forgets the number rather than close the
program's file (see :mod:`isoplug.transport.fd_identity`).
"""

from __future__ import annotations

import contextlib
import logging
import socket
import ssl
import threading
import time

import msgspec

from isoplug.errors import AuthenticationFailed, SelfForwarding, VersionMismatch
from isoplug.logs.ledger import CLOSING, QUEUE_FULL, SenderLedger, private_ledger
from isoplug.logs.own_receivers import loops_back
from isoplug.logs.reconnect import (
    NETWORK_MAX_DELAY,
    RECONNECT_TIMEOUT,
    Reconnection,
    nobody_listens,
)
from isoplug.logs.ring import SenderRing
from isoplug.logs.sender_tls import described, failed_verification, permanent_tls_failure
from isoplug.logs.sendio import say as _say
from isoplug.rpc.blocking import BlockingChannel
from isoplug.transport.fd_identity import FdIdentity, detach_if_not_ours
from isoplug.wire import LogBatch, encode_frame

__all__ = ["KERNEL_SEND_BUFFER", "SenderLink", "release_channel"]

#: Bytes the kernel may hold for us (capped by net.core.wmem_max). Records in the kernel
#: survive the sender's death, and write-through keeps working while the receiver stalls: at
#: 4 MiB, several seconds of records at 10,000/s instead of a tenth of a second by default.
KERNEL_SEND_BUFFER = 4 * 1024 * 1024
#: An empty msgpack array: the records of a connection's announcing batch.
_NO_RECORDS = msgspec.Raw(b"\x90")


class SenderLink:
    """The connection's half of :class:`~isoplug.logs.sender.SenderThread` (a base class of
    it). Below: the state the sender thread shares with the emitting threads, set up by the
    handler's ``_init_state``, guarded by ``_queue_lock`` unless said otherwise."""

    address: str
    sender_name: str
    _token: str
    _role: str
    _ssl_context: ssl.SSLContext | None
    _connect_timeout: float
    _pid: int
    _queue_lock: threading.Lock
    _queue_changed: threading.Condition
    _send_lock: threading.Lock
    _queue: list[bytes]
    _queued_bytes: int
    _admit_freely_below: int
    _in_flight: int
    _seq: int
    _ledger: memoryview
    _shared_ledger: SenderLedger | None
    _abandoned_ledger: SenderLedger | None
    _dropped: dict[int, int]
    _drops_unsent: bool
    #: What the kernel has not taken yet of a frame written through (under ``_send_lock``).
    _unsent: bytes
    _push_due: float
    _sender_idle: bool
    _flushing: int
    _channel: BlockingChannel | None
    _sock: socket.socket | None
    #: The descriptor ``_sock`` had when connected: the program may close it and reuse the
    #: number (see :mod:`isoplug.transport.fd_identity`).
    _sock_identity: FdIdentity | None
    _sock_is_tls: bool
    _thread: threading.Thread | None
    _sender_ident: int | None
    _failed: str | None
    _closed: bool
    #: Why the connection broke, while the sender thread connects again.
    _broken: str | None
    #: The whole frame of which ``_unsent`` is the rest (a break puts its records back).
    _unsent_frame: bytes
    #: The drop totals in the last frame the kernel took whole (what a break need not carry).
    _totals_written: dict[int, int]
    #: Drop totals of earlier connections.
    _dropped_before: dict[int, int]
    #: Since when (time.monotonic()) a tcp:// or tls:// receiver has been unreachable, as
    #: said on stderr; None while it is not (see _say_unreachable).
    _unreachable_since: float | None
    #: The records dropped in all when it was said to be unreachable.
    _dropped_when_unreachable: int
    #: The failed verifications said since the receiver was last reachable (see _say_doubt).
    _doubts_said: set[str]
    #: The most a batch may hold: MAX_BATCH_BYTES, less while closing (see closing.py).
    _batch_cap: int
    #: ``close()`` began: the sender thread sends the rest within its deadline.
    _closing: bool
    #: Names this handler's chain of connections to the receiver (LogBatch.chain): random, so
    #: that several handlers of one process never share one.
    _chain: int

    #: The level the receiver's welcome said it handles records from (None: it said none).
    welcome_level: int | None = None
    #: False while a caller that raises the failure itself waits for the first connection
    #: (forward_logs): giving up is not said on stderr then.
    say_failures: bool = True
    #: The records dropped in all when forwarding stopped for good: a close says how many
    #: more were dropped since (no receiver hears of them).
    _dropped_when_failed: int = 0
    #: What made forwarding stop for good (the last failed attempt to connect), if anything.
    failure_cause: BaseException | None = None
    #: A TLS receiver at the address welcomed this sender once (sender thread only): a
    #: failed verification after that is not a configuration error (see reconnect.py).
    _welcomed_over_tls: bool = False
    _ring: SenderRing | None
    _ring_capacity: int
    _requested_queue_bytes: int
    _unsent_release: tuple[int, int]

    def _install_ring(self, ring: SenderRing) -> bool:
        raise NotImplementedError  # Batching's

    def _connect(self, *, resumed: bool, timeout: float) -> BlockingChannel:
        """Open a connection, announce the ledger (on a unix socket, passed with the hello)
        and, after a break, where the records continue; then let the emitting threads write
        to it."""
        announced: list[SenderLedger] = []
        # What the announcement carried, for the hand-over (resumed_after, drop totals).
        told: list[tuple[int | None, dict[int, int]]] = []

        def announce(sock: socket.socket) -> tuple[bytes, int | None]:
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, KERNEL_SEND_BUFFER)
            except OSError as exc:
                # Not fatal: the default buffer works, it only rides out shorter stalls.
                if not resumed:
                    _say(f"isoplug: could not enlarge the log socket's buffer: {exc}")
            ledger = None
            if sock.family == socket.AF_UNIX:
                ledger = SenderLedger.create(self._ring_capacity)
                if ledger is not None:
                    announced.append(ledger)
            resumed_after: int | None = None
            dropped: dict[int, int] = {}
            if resumed:
                with self._queue_lock:
                    # The queue holds every record not handed to the old connection whole.
                    resumed_after = self._seq - len(self._queue)
                    dropped = dict(self._dropped)
            told.append((resumed_after, dropped))
            if ledger is None and not resumed:
                return b"", None
            frame = encode_frame(
                LogBatch(
                    records=_NO_RECORDS,
                    dropped=dropped,
                    ledger_fd=ledger.fd if ledger is not None else None,
                    resumed_after=resumed_after,
                    chain=self._chain if ledger is not None else None,
                    queue_bytes=self._requested_queue_bytes,
                )
            )
            return frame, ledger.fd if ledger is not None else None

        def sent() -> None:
            # The kernel holds the ledger for the receiver now (passed with the hello), and
            # will until it reads it, whatever becomes of this process: a process's very
            # first ledger takes over at once (there is none to hand over from), so that its
            # records are safe in the ring before the receiver has even accepted the
            # connection, the first one waiting for the welcome included: a process that
            # ends while a loaded receiver is slow to answer loses none (see
            # isoplug.logs.first_record).
            if announced and self._shared_ledger is None and self._abandoned_ledger is None:
                with self._queue_lock:
                    if self._shared_ledger is None and self._abandoned_ledger is None:
                        self._take_over(announced[0])

        try:
            channel = BlockingChannel.connect(
                self.address,
                self._token,
                name=self.sender_name,
                role=self._role,
                ssl_context=self._ssl_context,
                timeout=timeout,
                after_hello=announce,
                on_sent=sent,
            )
        except BaseException:
            if announced:
                self._announced_in_vain(announced[0])
            raise
        welcome = channel.connection.peer_welcome
        loop = None if welcome is None else loops_back(self, self._token, welcome.pid)
        if loop is not None:
            if announced:
                self._disown(announced[0])
            channel.close("this sender's records would come back to it")
            raise SelfForwarding(loop)
        resumed_after, dropped = told[0] if told else (None, {})
        ledger = announced[0] if announced else None
        # The hand-over, all under the queue lock: until it, the old ledger and ring count and
        # hold every record accepted, and nothing but the announcement goes out on the new
        # connection, which is how a receiver knows it happened (its first records): it
        # settles the old end at resumed_after only then (isoplug.logs.replay). A kill
        # before the hand-over leaves the old ledger whole, for the receiver to read at the
        # exit. After it, the new ledger counts what is unsent, and the old one is set back.
        # The receiver that welcomed us holds the new ledger already: it took the descriptor
        # passed with the hello before it read the hello.
        with self._queue_changed:
            if ledger is not None and self._shared_ledger is not ledger:
                self._take_over(ledger, resumed_after)
            elif ledger is None and self._abandoned_ledger is not None:
                abandoned, self._abandoned_ledger = self._abandoned_ledger, None
                self._ring = None
                self._ledger = private_ledger()
                abandoned.view[0] = self._seq if resumed_after is None else resumed_after
                abandoned.close()
            if resumed:
                # The announcement carried the totals so far; later drops go with the next frame.
                self._totals_written = dropped
                self._drops_unsent = self._dropped != dropped
                self._broken = None
            self._channel = channel
            welcome = channel.connection.peer_welcome
            said = welcome.level if welcome is not None else None
            # One outside any level's range is none: the receiver's side said nothing.
            self.welcome_level = said if said is not None and 0 <= said < 2**31 else None
            self._sock_is_tls = isinstance(channel.socket, ssl.SSLSocket)
            self._welcomed_over_tls = self._welcomed_over_tls or self._sock_is_tls
            self._sock_identity = FdIdentity.of_socket(channel.socket)
            self._sock = channel.socket
            self._queue_changed.notify_all()
        return channel

    def _take_over(self, ledger: SenderLedger, resumed_after: int | None = None) -> None:
        """Make ``ledger`` (and its ring) the one that counts and holds every unsent record,
        setting back the one it replaces, if any (queue lock held; while connecting, so every
        unsent record is queued)."""
        abandoned, self._abandoned_ledger = self._abandoned_ledger, None
        # The broken connection's ring, which kept taking records until now.
        self._ring = None
        # What is unsent (all of it is queued now) goes into the new connection's ring; if it
        # does not fit (a huge queue_bytes, a long break), records wait in memory only, and
        # what a crash takes is counted instead.
        if ledger.ring is not None:
            self._install_ring(ledger.ring)
        ledger.view[0] = self._seq
        # What this connection's batches will tell, should none be sent.
        ledger.set_drops(QUEUE_FULL, self._dropped)
        if self._closing:
            ledger.set_flag(CLOSING)
        self._ledger = ledger.view
        self._shared_ledger = ledger
        if abandoned is not None:
            # The new connection takes over: a receiver reading the old ledger from now on
            # counts only what died in the old socket (a receiver that resolves the old end
            # when this connection arrives stops at resumed_after anyway). Nothing went out on
            # an attempt that was never welcomed: all it counts is unsent, queued now.
            abandoned.view[0] = (
                resumed_after if resumed_after is not None else self._seq - len(self._queue)
            )
            abandoned.close()

    def _disown(self, ledger: SenderLedger) -> None:
        """``ledger`` went to a receiver that must get none of this process's records (it
        would replay them back here): it says none accepted there, and takes no more."""
        with self._queue_lock:
            if self._shared_ledger is ledger:
                self._shared_ledger = None
                self._ring = None
                self._ledger = private_ledger()
                self._ledger[0] = self._seq
            # Nothing went out on that connection: all it counts is queued.
            ledger.view[0] = self._seq - len(self._queue)
        ledger.close()

    def _announced_in_vain(self, ledger: SenderLedger) -> None:
        """An attempt to connect that announced ``ledger`` failed (refused, not answered in
        time): if it took over already (a first ledger, see :meth:`_connect`), it keeps
        counting and holding the records until the next attempt's takes over, as a broken
        connection's does (a receiver that did read it accounts for them if this process
        dies meanwhile); else it is nobody's."""
        with self._queue_lock:
            if self._shared_ledger is ledger:
                self._shared_ledger = None
                if self._abandoned_ledger is not None:
                    self._abandoned_ledger.close()
                self._abandoned_ledger = ledger
                return
        ledger.close()

    def _first_connection(self) -> BlockingChannel | None:
        """The first connection; None when giving up (see the module docstring)."""
        try:
            return self._connect(resumed=False, timeout=self._connect_timeout)
        except Exception as exc:
            why = f"cannot connect to {self.address}"
            if isinstance(exc, SelfForwarding):
                self._give_up(str(exc), exc)  # it connected: the receiver is the trouble
                return None
            if (permanent := permanent_tls_failure(exc)) is not None:
                self._give_up(f"{why}: {permanent}", exc)
                return None
            if nobody_listens(exc) or isinstance(exc, AuthenticationFailed | VersionMismatch):
                # A failure to connect names the address already.
                self._give_up(str(exc) if str(exc).startswith(why) else f"{why}: {exc}", exc)
                return None
            attempts = Reconnection()
            attempts.failed(exc)
            return self._keep_trying(attempts, why, exc, resumed=False)

    def _reconnect(self, old: BlockingChannel, reason: str) -> BlockingChannel | None:
        """Connect again after a break; None when giving up (forwarding then stops)."""
        with self._queue_lock:
            if self._channel is old:
                self._channel = None
            identity, self._sock_identity = self._sock_identity, None
        release_channel(old, identity, "the connection broke")
        # A collector on the network restarts and comes back; a unix socket's receiver is the
        # sender's parent, and one that is gone must not hold the sender's exit.
        attempts = Reconnection(
            endless=not self.address.startswith("unix:"), known_receiver=self._welcomed_over_tls
        )
        return self._keep_trying(attempts, reason, None, resumed=True)

    def _keep_trying(
        self, attempts: Reconnection, why: str, last: Exception | None, *, resumed: bool
    ) -> BlockingChannel | None:
        """Connect after each of ``attempts``' delays until it works or they say to give up;
        None then (forwarding stops, ``why`` opening the reason given)."""
        while (delay := attempts.next_delay()) is not None:
            if not self._pause(delay):
                if attempts.endless:
                    # Not a failure of forwarding: the close counts what is left and says it.
                    return None
                self._give_up(f"{why}; the handler was closed before it could connect")
                return None
            try:
                channel = self._connect(
                    resumed=resumed, timeout=min(self._connect_timeout, RECONNECT_TIMEOUT)
                )
            # Anything: an attempt that fails in a way not foreseen is one more failed attempt,
            # never the end of the sender thread.
            except Exception as exc:
                last = exc
                verdict = attempts.failed(exc)
                if verdict is not None:
                    self._give_up(f"{why}; cannot connect: {verdict}", exc)
                    return None
                if attempts.endless:
                    self._say_unreachable(exc)
                    self._say_doubt(exc)
                continue
            self._say_back()
            return channel
        said = "" if last is None else f" (the last: {described(last, self.address)})"
        self._give_up(f"{why}; no connection after {attempts.failures} attempts{said}", last)
        return None

    def _dropped_so_far(self) -> int:
        """Records dropped in all, over every connection (queue lock held)."""
        return sum(self._dropped_before.values()) + sum(self._dropped.values())

    def _say_unreachable(self, error: Exception) -> None:
        """Say once, at the first failed attempt after a break, that the receiver is
        unreachable and what becomes of the records meanwhile."""
        with self._queue_lock:
            if self._unreachable_since is not None:
                return
            self._unreachable_since = time.monotonic()
            self._dropped_when_unreachable = self._dropped_so_far()
        queue = self._requested_queue_bytes
        room = f"{queue / 2**20:.1f} MiB" if queue >= 2**20 else f"{queue:,} bytes"
        _say(
            f"isoplug: log forwarding from {self.sender_name} to {self.address}: the receiver "
            f"is unreachable ({described(error, self.address)}), retrying every up to "
            f"{NETWORK_MAX_DELAY:g} s; records queue up to "
            f"{room}, then are dropped and counted"
        )

    def _say_doubt(self, error: Exception) -> None:
        """Say once per distinct failure, until the receiver is back, that whoever answered at
        the address failed TLS verification (a sender welcomed there before retries it)."""
        failed = failed_verification(error)
        with self._queue_lock:
            if failed is None or failed in self._doubts_said:
                return
            self._doubts_said.add(failed)
        _say(
            f"isoplug: log forwarding from {self.sender_name}: the receiver at {self.address} "
            f"failed verification ({failed}): not the collector this sender knew? retrying"
        )

    def _say_back(self) -> None:
        """Say that a receiver said to be unreachable is back, and what was dropped meanwhile
        (the receiver reports that count too, with the reconnection)."""
        with self._queue_lock:
            since, self._unreachable_since = self._unreachable_since, None
            self._doubts_said.clear()
            dropped = self._dropped_so_far() - self._dropped_when_unreachable
        if since is not None:
            _say(
                f"isoplug: log forwarding from {self.sender_name} to {self.address} resumed "
                f"after {time.monotonic() - since:.1f} s unreachable; {dropped:,} records were "
                f"dropped meanwhile"
            )

    def _pause(self, seconds: float) -> bool:
        """Wait ``seconds`` unless the handler is closed meanwhile; whether it is still open."""
        deadline = time.monotonic() + seconds
        with self._queue_changed:
            while not self._closed and (left := deadline - time.monotonic()) > 0:
                self._queue_changed.wait(left)
            return not self._closed

    def _give_up(self, reason: str, cause: BaseException | None = None) -> None:
        """Stop forwarding for good: count what is lost, and say so once on the real stderr."""
        with self._queue_changed:
            if self._failed is not None:
                return
            self._failed = reason
            self.failure_cause = cause
            self._admit_freely_below = -1
            lost = len(self._queue) + self._in_flight
            if lost:
                self._dropped[logging.NOTSET] = self._dropped.get(logging.NOTSET, 0) + lost
            self._dropped_when_failed = sum(self._dropped.values())
            self._queue = []
            self._queued_bytes = 0
            self._in_flight = 0
            self._unsent = self._unsent_frame = b""
            self._queue_changed.notify_all()
            quiet = (self._closed or not self.say_failures) and not lost
        if not quiet:
            _say(
                f"isoplug: log forwarding from {self.sender_name} to {self.address} stopped: "
                f"{reason}; {lost} queued records lost, later records are counted as dropped"
            )


def release_channel(
    channel: BlockingChannel, identity: FdIdentity | None, reason: str = "closed"
) -> None:
    """Close a log connection, unless the program closed its descriptor and perhaps reused
    the number: then forget the number first (closing it would close the program's file, a
    goodbye would be written there)."""
    detach_if_not_ours(channel.socket, identity)
    # Closing our own socket can still fail (EINTR); the descriptor is released anyway, and
    # the connection is over either way: nothing waits on it.
    with contextlib.suppress(OSError):
        channel.close(reason)
