"""A :class:`~isoplug.logs.LogReceiver`'s connections: one replayer each, its end, its metrics.

The receiver's life (listening in threads or on an event loop, closing within its drain time)
is :mod:`isoplug.logs.receiver`'s; this base class of it keeps what both modes share about the
senders it serves: which connection replays through which :class:`~isoplug.logs.LogReplayer`,
how each connection's end is accounted for (at once, or later for a sender that lives on:
:mod:`isoplug.logs.pending_ends`), and the metrics of those open and of those that ended.
"""

from __future__ import annotations

import asyncio
import itertools

from isoplug.log_guard import guarded_logger
from isoplug.logs.chains import SenderChains
from isoplug.logs.connection_ends import ConnectionEnds
from isoplug.logs.handler_errors import HandlerErrors
from isoplug.logs.limits import ReplayLimits, TransitLosses
from isoplug.logs.metrics import LogMetrics
from isoplug.logs.replay import LogReplayer
from isoplug.logs.replay_end import Settle
from isoplug.logs.report_throttle import ReportThrottle, report_refusal
from isoplug.logs.ring_budget import RingBudget, tree_share
from isoplug.logs.routing import LoggerBudget
from isoplug.logs.sender_trees import tree_of
from isoplug.logs.settling import LoopSettler
from isoplug.wire import Hello
from isoplug.wire.sanitize import clean_quoted, clean_text

__all__ = ["MAX_HELLO_CHARS", "ReceiverConnections"]

_log = guarded_logger("isoplug.logs")
#: Longest sender name or role quoted in a report (a hello may carry 256 characters).
MAX_HELLO_CHARS = 200


class ReceiverConnections:
    """The connections half of :class:`~isoplug.logs.LogReceiver` (a base class of it); see
    the module docstring. Its state is set up by :meth:`_init_connections`."""

    prefix: str
    limits: ReplayLimits
    _replayers: dict[int, tuple[str, LogReplayer]]
    #: Connections that ended: those whose end is accounted for later (by connection number:
    #: a close waits for them within its drain time), the others' final metrics.
    _ends: ConnectionEnds
    #: The drain time is up: replayers stop, and one made from now on starts stopped.
    _closing: bool
    _connection_numbers: itertools.count[int]
    _handler_errors: HandlerErrors
    _chains: SenderChains
    _logger_budget: LoggerBudget
    _transit_losses: TransitLosses
    _refusals: ReportThrottle
    #: The senders' rings held at once, by every connection together.
    _ring_budget: RingBudget
    #: Ended connections' accounting on the event loop, in slices (async use).
    _settler: LoopSettler | None

    def _init_connections(
        self, max_logger_entries: int, max_rings: int, max_per_tree: int, max_waiting_per_tree: int
    ) -> None:
        self._replayers = {}
        # A sender tree keeps as many pending ends as it has connection places, and rings for
        # those and its waiting room, at most half of all: one that drops its connections
        # while it lives cannot take every other tree's.
        self._ring_budget = RingBudget(
            max_rings,
            max_per_tree=tree_share(max_per_tree, max_waiting_per_tree, max_rings),
            per_tree_setting=(
                "its places and waiting room, max_senders_per_tree + max_waiting_per_tree, at "
                "most half of max_rings"
            ),
        )
        self._ends = ConnectionEnds()
        self._closing = False
        # Shared by the sync mode's sender threads: next() on a count is atomic.
        self._connection_numbers = itertools.count(1)
        # Handlers of ours that raise on a sender's record: reported here, once for all.
        self._handler_errors = HandlerErrors(_log, self.limits.report_interval)
        # Which of a reconnected sender's records a recovery replayed already.
        self._chains = SenderChains(max_pending_per_tree=max_per_tree)
        # One for every connection, ever: per connection, N reconnections made N allowances
        # of loggers that are never freed (found by an outside check).
        self._logger_budget = LoggerBudget(max_logger_entries)
        # Likewise the records sequence gaps count lost: one connection's in-flight worth for
        # all of them, so reconnecting gives a gapping sender no fresh allowance.
        self._transit_losses = TransitLosses()
        # Refused connections a token holder can repeat: said once per interval, counted.
        self._refusals = ReportThrottle(self.limits.report_interval, timer=True)
        self._settler = None

    def metrics(self) -> dict[str, LogMetrics]:
        """Per-connection metrics (snapshots), keyed ``"<sender name> #<n>"``: every open
        connection and the latest :data:`~isoplug.logs.connection_ends.MAX_ENDED_KEPT` that
        ended; older ones are summed under ``"(N earlier connections)"``. A connection that
        ended without a goodbye while its sender lives on says ``pending_ends == 1`` until its
        end is accounted for (the sender's new connection brings records, or it exits, or this
        receiver closes): its ``recovered`` and ``dropped`` may still grow until then (see
        :mod:`isoplug.logs.pending_ends`). Kept after the receiver closed."""
        # list(): sender threads may add or end a connection meanwhile (sync use).
        replayers = list(self._replayers.values())
        found = self._ends.metrics()
        found.update((label, replayer.metrics.snapshot()) for label, replayer in replayers)
        return found

    def _accepts(self, hello: Hello, who: str) -> bool:
        """Whether ``hello`` asks for a log connection; ``who``: the socket's word on the
        peer (``" from pid N"`` or ``" from host:port"``), the hello's name only its claim."""
        if hello.role == "logs":
            return True
        claim = (
            f" (the client says it is {clean_quoted(hello.name, MAX_HELLO_CHARS)})"
            if hello.name
            else ""
        )
        text = (
            f"refused a {clean_quoted(hello.role, MAX_HELLO_CHARS)} connection{who}{claim}: "
            "this receiver only takes logs"
        )
        report_refusal(self._refusals, text, _log.warning)
        return False

    def _replayer_for(self, sender_pid: int | None, hello: Hello) -> tuple[int, LogReplayer]:
        number = next(self._connection_numbers)
        sender = clean_text(hello.name, MAX_HELLO_CHARS)
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
            ring_budget=self._ring_budget,
            # Found now, while the sender runs (the kernel's word on its pid): which
            # tree's rings and pending ends it counts in.
            sender_tree=None if sender_pid is None else tree_of(sender_pid),
        )
        self._replayers[number] = (label, replayer)
        if self._closing:
            # Registered first: either _stop_replaying() sees it, or it sees _closing.
            replayer.stop()
        return number, replayer

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

    def _stop_replaying(self) -> None:
        """The drain time is up: every replayer stops (see :meth:`LogReplayer.stop`), and one
        made from now on starts stopped (see :meth:`_replayer_for`)."""
        self._closing = True
        # list(): sender threads may add or end a connection meanwhile (sync use).
        for _, replayer in list(self._replayers.values()):
            replayer.stop()
