"""The receiving end of standalone log forwarding: a replacement for ``QueueListener``.

A :class:`LogReceiver` listens on a private socket (a fresh 0700 directory by default) and
replays the records of every connected sender into this process's ``logging``. Senders are
processes that called :func:`isoplug.logs.forward_logs`; they authenticate with the receiver's
token, which :meth:`LogReceiver.child_env` hands out.

Use it either way::

    async with LogReceiver() as receiver:      # inside an event loop: runs on that loop
        ...

    with LogReceiver() as receiver:            # in a synchronous program: its own threads
        ...

In a synchronous program each sender gets a thread that sleeps in ``recv()``: a record is
replayed the moment it arrives, with no event loop in between (see :meth:`LogReceiver.open`).

Leaving the block waits (up to ``drain_timeout``) for connected senders to finish, replaying
what they still send and what the rings of those that ended give back, then closes
everything. A sender still connected then is cut off: what it had not delivered yet
(received and not replayed, or not arrived) is counted as
:attr:`~isoplug.logs.DropReason.RECEIVER_CLOSED` and reported, and nothing is replayed once
leaving returned. In a synchronous program the replay threads get :data:`CLOSE_GRACE` more
to hand the record in progress to the handlers, report and say goodbye.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import secrets
import ssl
import threading
import time
from typing import Any

from isoplug.errors import ConnectionClosed, IsoplugError
from isoplug.logs.chains import SenderChains
from isoplug.logs.connection_ends import ConnectionEnds
from isoplug.logs.handler_errors import HandlerErrors
from isoplug.logs.limits import ReplayLimits, TransitLosses
from isoplug.logs.metrics import LogMetrics
from isoplug.logs.replay import LogReplayer
from isoplug.logs.replay_end import Settle
from isoplug.logs.replay_reports import handled_level
from isoplug.logs.report_throttle import ReportThrottle, report_refusal
from isoplug.logs.routing import DEFAULT_LOGGER_BUDGET, LoggerBudget
from isoplug.logs.sender_trees import own_family, sender_tree_limit
from isoplug.logs.session import replay_until_closed
from isoplug.logs.settling import LoopSettler
from isoplug.rpc import Peer, serve
from isoplug.rpc.blocking import (
    DEFAULT_MAX_CONNECTIONS,
    BlockingChannel,
    BlockingServer,
    serve_blocking,
)
from isoplug.rpc.gate import DEFAULT_HELLO_TIMEOUT, DEFAULT_MAX_HANDSHAKES
from isoplug.transport import Address, Listener
from isoplug.transport.stream import peer_credentials_of
from isoplug.wire import Hello
from isoplug.wire.sanitize import clean_text

__all__ = ["ADDRESS_ENV", "NAME_ENV", "TOKEN_ENV", "LogReceiver"]

ADDRESS_ENV = "ISOPLUG_LOG_ADDRESS"
TOKEN_ENV = "ISOPLUG_LOG_TOKEN"
#: The sender name :func:`forward_logs` gives when none is passed (a plugin's child process
#: sends under its runner's, see ``PluginContext.log_child_env``).
NAME_ENV = "ISOPLUG_LOG_NAME"

_log = logging.getLogger("isoplug.logs")
#: Longest sender name or role quoted in a report (a hello may carry 256 characters).
_MAX_HELLO_CHARS = 200

#: How long leaving the receiver waits for connected senders to send their last records.
DEFAULT_DRAIN_TIMEOUT = 5.0
#: How often a closing receiver on an event loop looks whether the ends its watcher thread took
#: have been handed to the loop (a callback of the loop's, due at once).
_HANDOVER_POLL = 0.001
#: After the drain time, how long a synchronous receiver's threads have to end: to finish the
#: record a host handler is handling, report what is lost and say goodbye. A thread still in a
#: handler then is left to finish that record alone; it replays nothing more.
CLOSE_GRACE = 1.0
#: Standalone forwarding has no rate limit by default: the program trusts its own children.
STANDALONE_LIMITS = ReplayLimits(rate=None)
#: Connections one sender process tree may hold at once (see :class:`LogReceiver`): a pool
#: of workers each forwarding its logs fits, a tree forking without end takes no more than
#: this of the receiver's places.
DEFAULT_MAX_SENDERS_PER_TREE = 64


class LogReceiver:
    """Receives forwarded log records and replays them here (see the module docstring).

    ``prefix`` is put in front of every forwarded logger name (``"workers"`` turns a child's
    ``"app.db"`` into ``"workers.app.db"``); empty keeps the names as they are. Each replayed
    record also carries ``sender`` (the name the child gave) and ``sender_pid`` (the child's pid
    as the kernel reports it, on unix sockets).

    ``max_senders`` bounds the senders served at once in a synchronous program (a thread
    each); past it a new sender is refused and told why (:func:`forward_logs` raises; a
    :class:`ForwardingHandler` says so on stderr and counts its records as dropped), and a
    warning here says so once. ``max_senders_per_tree`` bounds the connections of one sender
    process tree, in both modes (a thread each in threads; on an event loop a socket and the
    state its session keeps), so that one tree forking without end cannot take every place
    (nor, on a loop, every file descriptor). The tree is found on unix sockets on Linux, by
    the kernel's word on the pid that connected: the child of this process it is or descends
    from; for a process not below us by its parents (an orphan whose parent exited, re-parented
    to init or a subreaper), the tree its process group or session still names: this
    process's own when it kept our group or session (the child it came from cannot be told
    then), the child's when that child leads the group or session (started with
    ``start_new_session``) and still runs; otherwise its oldest ancestor below init. A
    tree's connections count from their accept, before a byte is read: past its limit its
    new ones are refused at once and told why, with a warning here once per report interval
    (then a count). Senders over TCP or TLS, whose pid the socket cannot give, count for no
    tree. An orphan that also left its group and session (``setsid`` before a double fork,
    as a daemon does) keeps no trace of its tree, which the kernel does not record, and the
    hello's name and token are the sender's to choose: it counts as a tree of its own (see
    :mod:`isoplug.transport.process_tree`), and only ``max_senders`` (in threads) bounds
    all of them together. ``max_senders`` applies in threads only.

    Until it has shown the token, a connection has ``handshake_timeout`` seconds for its
    hello (TLS included) and frames of at most 64 KiB; at most ``max_handshakes`` are in
    their handshake at once, and past it a new one is refused at once, with one warning (see
    :mod:`isoplug.rpc.gate`). Both modes. (A tree's handshakes count among its
    ``max_senders_per_tree``: with the defaults, one tree holds at most half those places.)

    Every host logger made for a sender's logger name stays in ``logging``'s registry for the
    life of the process: ``max_logger_entries`` bounds the entries (loggers and their dotted
    parents) all its senders together may add, over every connection it ever takes (a sender
    that reconnects, or a pool forking without end, gets no fresh allowance); loggers that
    exist already cost nothing, and each also spends the process's bound (all senders: see
    :func:`~isoplug.logs.set_process_logger_budget`). Past either, records on a name with no
    logger yet go on the prefix's logger (the root logger without a prefix), said in one
    warning per report interval, each counted in :attr:`LogMetrics.over_logger_budget`.
    """

    def __init__(
        self,
        address: str | Address = "unix:",
        *,
        token: str | None = None,
        prefix: str = "",
        limits: ReplayLimits = STANDALONE_LIMITS,
        ssl_context: ssl.SSLContext | None = None,
        drain_timeout: float = DEFAULT_DRAIN_TIMEOUT,
        max_senders: int = DEFAULT_MAX_CONNECTIONS,
        max_senders_per_tree: int = DEFAULT_MAX_SENDERS_PER_TREE,
        handshake_timeout: float = DEFAULT_HELLO_TIMEOUT,
        max_handshakes: int = DEFAULT_MAX_HANDSHAKES,
        max_logger_entries: int = DEFAULT_LOGGER_BUDGET,
    ) -> None:
        self._requested_address = address
        self.token = token or secrets.token_urlsafe(32)
        self.prefix = prefix
        self.limits = limits
        self._ssl_context = ssl_context
        self.drain_timeout = drain_timeout
        if max_senders_per_tree < 1:
            raise ValueError(
                f"max_senders_per_tree must be at least 1, not {max_senders_per_tree!r}"
            )
        self.max_senders = max_senders
        self.max_senders_per_tree = max_senders_per_tree
        self.handshake_timeout = handshake_timeout
        self.max_handshakes = max_handshakes
        self._address: Address | None = None
        # Async use: the listener on the caller's loop. Sync use: threads of our own.
        self._listener: Listener | None = None
        self._server: BlockingServer | None = None
        self._replayers: dict[int, tuple[str, LogReplayer]] = {}
        # Connections that ended: those whose end is accounted for later (by connection
        # number: a close waits for them within its drain time), the others' final metrics.
        self._ends = ConnectionEnds()
        # Async use: each open connection, with what says its end was accounted for.
        self._open_peers: dict[Peer, asyncio.Future[None]] = {}
        self._closing = False
        # Shared by the sync mode's sender threads: next() on a count is atomic.
        self._connection_numbers = itertools.count(1)
        # Handlers of ours that raise on a sender's record: reported here, once for all.
        self._handler_errors = HandlerErrors(_log, limits.report_interval)
        # Which of a reconnected sender's records a recovery replayed already.
        self._chains = SenderChains()
        # One for every connection, ever: per connection, N reconnections made N allowances
        # of loggers that are never freed (found by an outside check).
        self._logger_budget = LoggerBudget(max_logger_entries)
        # Likewise the records sequence gaps count lost: one connection's in-flight worth for
        # all of them, so reconnecting gives a gapping sender no fresh allowance.
        self._transit_losses = TransitLosses()
        # Refused connections a token holder can repeat: said once per interval, counted.
        self._refusals = ReportThrottle(limits.report_interval, timer=True)
        # Closing once, however often and from wherever it is asked (see close(), aclose()).
        self._close_lock = threading.Lock()
        self._aclosing: asyncio.Future[None] | None = None
        # Ended connections' accounting on the event loop, in slices (async use).
        self._settler: LoopSettler | None = None

    # -- facts for the children --------------------------------------------------------------

    @property
    def address(self) -> str:
        """Where senders connect; available once the receiver runs."""
        if self._address is None:
            raise IsoplugError("the LogReceiver is not running; enter it first")
        return str(self._address)

    def child_env(self) -> dict[str, str]:
        """Environment variables with which :func:`forward_logs` (no arguments) finds us."""
        return {ADDRESS_ENV: self.address, TOKEN_ENV: self.token}

    def metrics(self) -> dict[str, LogMetrics]:
        """Per-connection metrics (snapshots), keyed ``"<sender name> #<n>"``: every open
        connection and the latest :data:`~isoplug.logs.connection_ends.MAX_ENDED_KEPT` that
        ended; older ones are summed under ``"(N earlier connections)"``. A connection that
        ended without a goodbye while its sender lives on says ``pending_ends == 1`` until its
        end is accounted for (the sender's new connection brings records, or it exits, or this
        receiver closes): its ``recovered`` and ``dropped`` may still grow until then (see
        :mod:`isoplug.logs.pending_ends`)."""
        # list(): sender threads may add or end a connection meanwhile (sync use).
        replayers = list(self._replayers.values())
        found = self._ends.metrics()
        found.update((label, replayer.metrics.snapshot()) for label, replayer in replayers)
        return found

    def _ended_connection(self, number: int, clean: bool) -> None:
        """A connection ended: finish its replayer and keep only its final metrics."""
        entry = self._replayers.get(number)
        if entry is None:
            return
        # A sender that lives on after a connection ended without a goodbye: its accounting
        # waits until it reconnects or exits (isoplug.logs.pending_ends).
        if not clean and self._deferred(number, entry, run_in=None):
            return
        entry[1].finish(clean=clean)
        self._forget_connection(number, entry)

    async def _ended_connection_async(self, number: int, clean: bool) -> None:
        """:meth:`_ended_connection` on the event loop, in slices."""
        entry = self._replayers.get(number)
        if entry is None:
            return
        if not clean and self._deferred(
            number, entry, run_in=self._settler_for(asyncio.get_running_loop()).run
        ):
            return
        await entry[1].finish_async(clean=clean)
        self._forget_connection(number, entry)

    def _deferred(self, number: int, entry: tuple[str, LogReplayer], run_in: Settle | None) -> bool:
        return self._ends.deferred(
            number, entry[1], lambda: self._forget_connection(number, entry), run_in
        )

    def _settler_for(self, loop: asyncio.AbstractEventLoop) -> LoopSettler:
        if self._settler is None:
            self._settler = LoopSettler(loop)
        return self._settler

    def _forget_connection(self, number: int, entry: tuple[str, LogReplayer]) -> None:
        label, replayer = entry
        # Kept before it leaves the open ones: metrics() lists it meanwhile, if twice, once.
        self._ends.accounted(number, label, replayer.metrics.snapshot())
        del self._replayers[number]

    # -- async use ----------------------------------------------------------------------------

    async def __aenter__(self) -> LogReceiver:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def start(self) -> None:
        """Start listening on the running event loop."""
        self._listener = await serve(
            self._requested_address, self.token, self._on_peer, **self._listening()
        )
        self._address = self._listener.address
        self._settler = LoopSettler(asyncio.get_running_loop())

    async def aclose(self) -> None:
        """Wait up to ``drain_timeout`` for senders to finish, then close everything.

        Idempotent: a second call, or one from another task meanwhile, waits for the first
        to end (cancelling it cancels only its own wait), and one after :meth:`close` or
        before :meth:`start` does nothing."""
        closing = self._aclosing
        if closing is None:
            if self._listener is None:
                return
            closing = self._aclosing = asyncio.ensure_future(self._aclose(self._listener))
        await asyncio.shield(closing)

    async def _aclose(self, listener: Listener) -> None:
        try:
            await self._drain_and_close(listener)
        finally:
            self._listener = None
            self._aclosing = None

    async def _drain_and_close(self, listener: Listener) -> None:
        loop = asyncio.get_running_loop()
        drain_ends = loop.time() + self.drain_timeout
        # Each connection's end accounted for, not only the connection closed: what its
        # sender's ring gives back is replayed in slices on this loop after it closed.
        ended = list(self._open_peers.values())
        if ended:
            _, still_open = await asyncio.wait(ended, timeout=self.drain_timeout)
            if still_open:
                self._warn_still_connected(len(still_open))
        # Senders that did not come back in time: their ends are accounted for now.
        self._chains.pending.close()
        # Their accounting runs on this loop in slices: done before replaying stops. So does
        # that of the ends the watcher thread took just before (a sender that exited): handed
        # to this loop, maybe not started yet. Stopping the replay before them counted what
        # their rings give back as lost to the close, for senders that ended before it began.
        settler = self._settler_for(loop)
        await settler.wait()
        while self._ends.any_deferred and loop.time() < drain_ends:
            await asyncio.sleep(_HANDOVER_POLL)
            await settler.wait()
        self._stop_replaying()
        await listener.aclose()
        # Its watcher thread hands every end to this loop, so it ends at once; polled, not
        # joined: the loop stays free meanwhile.
        grace_ends = loop.time() + CLOSE_GRACE
        while not self._chains.pending.wait_closed(0) and loop.time() < grace_ends:
            await asyncio.sleep(0.001)
        # What it handed over meanwhile (replaying stopped now: quick).
        await self._settler_for(loop).wait()
        self._handler_errors.close()
        self._refusals.close()

    async def _on_peer(self, peer: Peer) -> None:
        hello = peer.remote_hello
        assert hello is not None
        if not self._accepts(hello):
            return
        credentials = peer.stream.peer_credentials
        number, replayer = self._replayer_for(credentials.pid if credentials else None, hello)
        replayer.use_passed_ledger(peer.stream.passed_descriptor)
        peer.on_log_batch(replayer.receive)
        accounted: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._open_peers[peer] = accounted
        try:
            await peer.wait_closed()
        finally:
            try:
                # Cut off by aclose() is no crash: only what it had not sent yet is reported.
                await self._ended_connection_async(
                    number, self._closing or isinstance(peer.close_error, ConnectionClosed)
                )
            finally:
                del self._open_peers[peer]
                accounted.set_result(None)

    def _warn_still_connected(self, count: int) -> None:
        _log.warning(
            "%d log sender(s) still connected after %.1f s; closing them (what they have not "
            "delivered yet is lost)",
            count,
            self.drain_timeout,
        )

    def _stop_replaying(self) -> None:
        """The drain time is up: every replayer stops (see :meth:`LogReplayer.stop`), and one
        made from now on starts stopped (see :meth:`_replayer_for`)."""
        self._closing = True
        # list(): sender threads may add or end a connection meanwhile (sync use).
        for _, replayer in list(self._replayers.values()):
            replayer.stop()

    def _listening(self) -> dict[str, Any]:
        """How either mode listens: its own children get handshake seats of their own, and the
        welcome tells a sender the level records are handled from here (one whose logging
        nobody configured logs from there, see :func:`forward_logs`)."""
        return {
            "name": "log-receiver",
            "ssl_context": self._ssl_context,
            "handshake_timeout": self.handshake_timeout,
            "max_handshakes": self.max_handshakes,
            "client_limit": sender_tree_limit(
                self.max_senders_per_tree, self._refusals, _log.warning
            ),
            "welcome_level": lambda: handled_level(self.prefix),
            "kinship": own_family,
            "takes_descriptors": True,
        }

    def _accepts(self, hello: Hello) -> bool:
        if hello.role == "logs":
            return True
        text = (
            f"refused a '{clean_text(hello.role, _MAX_HELLO_CHARS)}' connection from "
            f"{clean_text(hello.name, _MAX_HELLO_CHARS) or 'a sender'}: this receiver only "
            "takes logs"
        )
        report_refusal(self._refusals, text, _log.warning)
        return False

    def _replayer_for(self, sender_pid: int | None, hello: Hello) -> tuple[int, LogReplayer]:
        number = next(self._connection_numbers)
        sender = clean_text(hello.name, _MAX_HELLO_CHARS)
        label = f"{sender or 'sender'} #{number}"
        replayer = LogReplayer(
            self.prefix,
            identity={"sender": sender, "sender_pid": sender_pid},
            limits=self.limits,
            description=f"log sender {sender or '(unnamed)'}",
            sender_pid=sender_pid,
            handler_errors=self._handler_errors,
            chains=self._chains,
            logger_budget=self._logger_budget,
            transit_losses=self._transit_losses,
        )
        self._replayers[number] = (label, replayer)
        if self._closing:
            # Registered first: either _stop_replaying() sees it, or it sees _closing.
            replayer.stop()
        return number, replayer

    # -- sync use (own threads) ---------------------------------------------------------------

    def __enter__(self) -> LogReceiver:
        self.open()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def open(self) -> None:
        """Start listening in threads of our own: one accepts, one per sender replays.

        A sender's thread sleeps in ``recv()`` and replays each record the moment it arrives,
        so no event loop stands between the socket and ``logging``. Back-pressure is the
        socket's: while a thread replays, it does not read, and a flooding sender waits.
        """
        self._server = serve_blocking(
            self._requested_address,
            self.token,
            self._serve_sender,
            max_connections=self.max_senders,
            **self._listening(),
        )
        self._address = self._server.address

    def close(self) -> None:
        """Wait up to ``drain_timeout`` for senders to finish, replaying what they still send;
        then close everything (see :meth:`aclose`), in at most :data:`CLOSE_GRACE` more.
        Nothing is replayed once it returned: what was not is counted and reported.

        Idempotent: a second call, or one from another thread meanwhile, waits for the first
        to end; one after :meth:`aclose` or before :meth:`open` does nothing, and so does one
        on a receiver started on an event loop (:meth:`start`), which :meth:`aclose` closes."""
        with self._close_lock:
            server = self._server
            if server is not None:
                self._close_server(server)

    def _close_server(self, server: BlockingServer) -> None:
        drain_ends = time.monotonic() + self.drain_timeout
        still_open = server.wait_idle(self.drain_timeout)
        if still_open:
            self._warn_still_connected(still_open)
        # Senders that did not come back in time: their ends are accounted for now, here.
        self._chains.pending.close()
        # Those the watcher thread took just before (a sender that exited) are accounted for
        # on it, replaying what their rings give back: stopping the replay before they are
        # done counted that as lost to the close, for senders that ended before it began.
        self._ends.wait_settled(max(0.0, drain_ends - time.monotonic()))
        self._stop_replaying()
        grace_ends = time.monotonic() + CLOSE_GRACE
        server.close(CLOSE_GRACE)
        # The watcher thread may be accounting for an end it took just before (replaying
        # stopped now): it ends within the same grace, closing its wake pipe.
        self._chains.pending.wait_closed(max(0.0, grace_ends - time.monotonic()))
        self._server = None
        self._handler_errors.close()
        self._refusals.close()

    def _serve_sender(self, channel: BlockingChannel) -> None:
        hello = channel.connection.peer_hello
        assert hello is not None
        if not self._accepts(hello):
            return
        credentials = peer_credentials_of(channel.socket)
        number, replayer = self._replayer_for(credentials.pid if credentials else None, hello)
        clean = False
        try:
            clean = replay_until_closed(
                channel, replayer, clean_text(hello.name, _MAX_HELLO_CHARS) or "(unnamed)"
            )
        finally:
            self._ended_connection(number, clean)

    def __repr__(self) -> str:
        where = str(self._address) if self._address else "not running"
        return f"<LogReceiver {where}>"
