"""Replaying a sender's log batches into this process's ``logging`` as real ``LogRecord`` objects.

One :class:`LogReplayer` serves one connection. For every batch it:

1. decodes the records (a malformed batch falls back to record-by-record decoding, so one bad
   record is rejected alone; rejections are counted and reported once);
2. reports what the sender dropped (the running totals carried by every batch) and any gap in
   the sequence numbers that no drop report explains;
3. puts the record under ``<prefix>.<sanitized logger name>`` (the sender's root logger maps to
   ``<prefix>`` itself), so that a sender can never log as any logger outside its prefix;
4. neutralizes control characters and caps sizes (:mod:`isoplug.wire.sanitize`);
5. applies the per-sender rate limit and the host logger's level;
6. rebuilds a complete ``LogRecord`` — every field from the sender, nothing filled in with the
   host's own process, thread or task; its exception a genuine ``exc_info`` with the sender's
   traceback (:mod:`isoplug.logs.tracebacks`) — adds the identity attributes the host vouches for
   (``plugin_id``, ``runner_pid``...), which always override anything the sender put in
   ``extra``, and hands it to ``logging.getLogger(name).handle()``.

Reports (drops, gaps, malformed batches) are WARNING records on the ``<prefix>`` logger itself,
so they reach the same handlers as the sender's records; each kind at once the first time, then
summed up at most once per ``report_interval`` (:mod:`isoplug.logs.replay_reports`).

The end of a connection, :meth:`~LogReplayer.stop` and :meth:`~LogReplayer.finish` (replaying
what a dead sender's ring gives back, reporting what never arrived), is
:mod:`isoplug.logs.replay_end`'s (:class:`~isoplug.logs.replay_end.ReplayEnd`, a base class of
:class:`LogReplayer`).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from typing import Any

import msgspec

from isoplug.log_guard import guarded_logger
from isoplug.logs.batch_decode import decode_records
from isoplug.logs.chains import ChainMember, SenderChains
from isoplug.logs.handler_errors import HandlerErrors, Replaying
from isoplug.logs.limits import ReplayLimits, TransitLosses
from isoplug.logs.loop_share import SliceTurns, Step
from isoplug.logs.metrics import DropReason, LogMetrics
from isoplug.logs.ratelimit import TokenBucket
from isoplug.logs.rebuild import RecordRebuilder
from isoplug.logs.record_factory import RecordFactory
from isoplug.logs.replay_checks import run_replay_checks
from isoplug.logs.replay_end import ReplayEnd
from isoplug.logs.replay_reports import ReplayReports
from isoplug.logs.report_throttle import ReportThrottle
from isoplug.logs.ring_budget import RingBudget
from isoplug.logs.routing import LoggerBudget, LoggerRoutes
from isoplug.wire import LogBatch, LogRecordData

__all__ = ["LogReplayer", "ReplayLimits"]


#: Most records replayed between two yields to the event loop in :meth:`LogReplayer.receive`:
#: about a millisecond of work with quick handlers, so a flood never stalls the loop for long.
REPLAY_SLICE = 256
#: Longest slice, in seconds: with slow handlers (a file on a busy disk, a network logger) a
#: slice ends after this, however few records it replayed. One clock read per record.
REPLAY_SLICE_SECONDS = 0.003


class LogReplayer(ReplayEnd, SliceTurns):
    """Replays the log batches of one sender; see the module docstring."""

    def __init__(
        self,
        prefix: str,
        *,
        identity: Mapping[str, Any] | None = None,
        strip_prefixes: tuple[str, ...] = (),
        routes: Mapping[str, tuple[str, Mapping[str, Any]]] | None = None,
        limits: ReplayLimits | None = None,
        description: str = "",
        metrics: LogMetrics | None = None,
        sender_pid: int | None = None,
        rate_bucket: TokenBucket | None = None,
        report_throttle: ReportThrottle | None = None,
        logger_budget: LoggerBudget | None = None,
        handler_errors: HandlerErrors | None = None,
        chains: SenderChains | None = None,
        on_stderr: Callable[[str, float], None] | None = None,
        transit_losses: TransitLosses | None = None,
        tell_level: bool = True,
        ring_budget: RingBudget | None = None,
        sender_tree: str | None = None,
    ) -> None:
        self.prefix = prefix
        #: Told the message and ``created`` of every record of the sender's stderr stream,
        #: before the level or the rate limit may drop it (a runner's last words: see
        #: isoplug.host.stderr_tail).
        self._on_stderr = on_stderr
        self.identity = dict(identity or {})
        self.limits = limits or ReplayLimits()
        self.description = description or prefix
        self.metrics = metrics if metrics is not None else LogMetrics()
        self._routes = LoggerRoutes(
            prefix,
            self.identity,
            strip_prefixes=strip_prefixes,
            routes=routes,
            max_name_chars=self.limits.max_logger_name_chars,
            budget=logger_budget,
            # A lambda: self._reports, which needs the routes' names, is made below.
            over_budget=lambda fallback, process_wide: self._reports.logger_budget_spent(
                fallback, process_wide=process_wide
            ),
        )
        # The routes' own dict, read first for every record (see _replay_one).
        self._names = self._routes.names
        # Reports on the <prefix> logger, and the sender's ledger once announced.
        self._reports = ReplayReports(
            prefix,
            identity=self.identity,
            description=self.description,
            metrics=self.metrics,
            known=self._names,
            sender_pid=sender_pid,
            interval=self.limits.report_interval,
            # A throttle of the caller's limits the reports of several connections together
            # (a runner's), as rate_bucket limits their records.
            throttle=report_throttle,
            handler_failed=self._handler_failed,
            factory_failed=self._factory_failed,
            # Shared by the caller's connections (a runner's, a receiver's): reconnecting or
            # forking gives a sender no fresh allowance of gaps counted lost.
            transit_losses=transit_losses,
            tell_level=tell_level,
        )
        # Shared by the caller's connections: the senders' rings it holds at once, those of
        # the sender's tree counted together (its pending ends too, see finish_when_settled).
        self._reports.ring_budget = ring_budget
        self._reports.sender_tree = sender_tree
        self._sender_tree = sender_tree
        # Host handlers that raise: one reporter of the caller's for all its connections, or
        # this sender's own (see isoplug.logs.handler_errors).
        self._owns_handler_errors = handler_errors is None
        self._handler_errors = handler_errors or HandlerErrors(
            guarded_logger("isoplug.logs"), self.limits.report_interval
        )
        # Entered around every replay on its thread: a host handler's handleError then
        # reports here, once with a count, instead of printing for every record.
        self._catching = Replaying(self._handler_swallowed)
        # A bucket of the caller's makes one rate limit for several connections (a plugin and
        # the processes it forks); otherwise each sender has its own.
        self._bucket = rate_bucket or (
            TokenBucket(self.limits.rate, self.limits.burst) if self.limits.rate else None
        )
        self._last_seq = 0
        # The sequence numbers of the batch's records the decoder rejected, not yet placed in
        # the sequence: they arrived, counted malformed, and no gap counts them lost too.
        self._rejected: list[int] = []
        # Whether the batch is a resuming connection's that the chain filters: records a
        # recovery replayed are left out, so its numbers may seem to go back (see chains).
        self._guarded = False
        # The sender's chain of connections, once announced (see isoplug.logs.chains): only a
        # receiver that tells the chains of its senders apart (``chains``) and knows the
        # sender's pid from the kernel keeps one.
        self._chains = chains if sender_pid is not None else None
        self._sender_pid = sender_pid
        self._chain: ChainMember | None = None
        # Once a closing sender sends by level (LogBatch.reordered_after): the sequence number
        # its records continue after, and how many arrived since (counted, not checked).
        self._reordered_after: int | None = None
        self._reordered_count = 0
        # Whether a batch came yet: only the first may say the connection resumes another.
        self._first_batch = True
        # A resuming connection's resumed_after, until its first records settle the end of
        # the connection it resumes (see _replay_steps).
        self._takes_over_after: int | None = None
        # Records replayed since the last yield to the event loop (see receive()), when the
        # slice ends at the latest (never, in a thread: replay()), and whether the event loop
        # has not run since the slice began.
        self._since_yield = 0
        self._slice_ends = math.inf
        self._in_slice = False
        # Whether the loop turned twice since the last slice ended (see loop_share).
        self._rested = True
        # Set by stop(), from any thread: replay nothing more (see stop()).
        self._stopped = False
        # The records of the batch being replayed that are still to come (a replay suspended
        # between slices), for finish() to count if it never resumes.
        self._unfinished: Iterator[LogRecordData] | None = None
        # Received records that stop() kept from being replayed, by level: reported at the end.
        self._not_replayed: dict[int, int] = {}
        self._unreported_rate_drops: dict[int, int] = {}
        # Step 6: the LogRecord itself (see isoplug.logs.rebuild).
        self._rebuild = RecordRebuilder(
            self.limits,
            self.identity,
            self._reports,
            self.metrics,
            sender_pid,
            factory_failed=self._factory_failed,
        ).rebuild

    # -- entry points -------------------------------------------------------------------------

    def replay(self, batch: LogBatch) -> None:
        """Replay a whole batch now (for threads with no event loop to yield to)."""
        if self._stopped:
            return  # not received: the sender's ledger counts it as not arrived
        with self._catching:
            for _ in self._replay_steps(batch):
                pass

    def receive(self, batch: LogBatch) -> Awaitable[None] | None:
        """Replay a batch as a :meth:`Peer.on_log_batch <isoplug.rpc.Peer.on_log_batch>`
        handler: now, unless a slice ends on the way (:data:`REPLAY_SLICE` records, or
        :data:`REPLAY_SLICE_SECONDS`); then the rest is returned as an awaitable that yields to
        the event loop between slices.

        A slice lasts until the event loop runs again, across batches: a flood of small
        batches yields as often as one large batch, while a trickle costs no task switch at
        all. Must be called on the running event loop.
        """
        if self._stopped:
            return None  # not received: the sender's ledger counts it as not arrived
        if not self._in_slice:
            if not self._rested:
                # A slice ended a turn ago: what it woke runs first (isoplug.logs.loop_share).
                return self._replay_rest(self._replay_steps(batch), None)
            self._start_slice()
        steps = self._replay_steps(batch)
        with self._catching:
            for step in steps:
                return self._replay_rest(steps, step)
        return None

    async def replay_async(self, batch: LogBatch) -> None:
        """Replay a batch, yielding to the event loop between slices (see :meth:`receive`)."""
        rest = self.receive(batch)
        if rest is not None:
            await rest

    def replay_records(self, records: Iterable[LogRecordData]) -> None:
        """Replay records that did not arrive in a batch (a runner's stdout/stderr lines, read
        by the host) through the same pipeline: logger mapping under the prefix, level filter,
        rate limit, sanitizing, rebuild and identity. No wire decoding, no sequence or ledger
        accounting: their ``seq`` is ignored. Counted in :attr:`metrics` like batches' records.
        """
        batch = records if isinstance(records, list) else list(records)
        if not batch:
            return
        run_replay_checks()
        metrics = self.metrics
        metrics.received += len(batch)
        metrics.last_record_time = time.time()
        replay_one = self._replay_one
        with self._catching:
            for data in batch:
                replay_one(data)
            self._report_rate_drops()

    def report(self, text: str) -> None:
        """Say ``text`` in a WARNING record on the ``<prefix>`` logger, stamped with the
        identity, as the replayer's own reports (drops, gaps) are."""
        self._reports.report(text)

    def _start_slice(self) -> None:
        """Begin a slice that lasts until the event loop runs its next callbacks."""
        self._since_yield = 0
        self._in_slice = True
        self._rested = False
        # Once stopped, the slice is over before it began (stop() may come from any thread).
        ends = time.monotonic() + REPLAY_SLICE_SECONDS
        self._slice_ends = -math.inf if self._stopped else ends
        asyncio.get_running_loop().call_soon(self._slice_over)

    def _replay_recovered(self, rest: Iterator[LogRecordData]) -> bool:
        """Replay, in order, recovered records as if they had arrived, until the slice ends;
        whether all are done (or stop() dropped the rest)."""
        for data in rest:
            self._last_seq = max(self._last_seq, data.seq)
            self._replay_one(data)
            if self._stopped:
                self._drop_rest(rest)
                break
            self._since_yield += 1
            if self._since_yield >= REPLAY_SLICE or time.monotonic() >= self._slice_ends:
                self._since_yield = 0
                self._report_rate_drops()
                return False
        self._report_rate_drops()
        return True

    # -- the pipeline -------------------------------------------------------------------------

    def _replay_steps(self, batch: LogBatch) -> Iterator[Step]:
        run_replay_checks()
        metrics = self.metrics
        metrics.bytes += len(batch.records)
        if batch.ledger_fd is not None:
            self._reports.open_ledger(batch.ledger_fd)
        records = self._decode(batch.records)
        if self._first_batch and batch.chain is not None and self._chains is not None:
            assert self._sender_pid is not None  # no chains without it
            self._chain = self._chains.join(
                self._sender_pid, batch.chain, resumes=batch.resumed_after is not None
            )
            if batch.resumed_after is not None:
                self._takes_over_after = batch.resumed_after
        if self._takes_over_after is not None and records:
            # The end of the connection this one resumes may be pending (its sender lived
            # on): accounted for now, up to where this one takes over, before any record of
            # this one is replayed (isoplug.logs.pending_ends). Only once this connection
            # brings records, not at its announcement: the sender sends none on it before it
            # has set its old ledger back and moved what is unsent into the new ring (a
            # lock's width after the announcement). A sender killed in between has its
            # unsent records only in the old ring, counted only by the old ledger: cutting
            # the old end at resumed_after then lost them with no word (the new ledger said
            # none accepted). Unresolved here, that end is resolved by the exit, reading the
            # old ledger whole (set back or not, it is right: see isoplug.logs.sender_link).
            # Set with _takes_over_after.
            assert self._chains is not None and self._chain is not None
            assert self._sender_pid is not None
            settling = self._chains.pending.resume(
                self._sender_pid, self._chain.chain, self._takes_over_after
            )
            self._takes_over_after = None
            if settling is not None:
                yield settling
        if self._first_batch and batch.queue_bytes is not None:
            self._reports.announced_queue(batch.queue_bytes)
        if batch.resumed_after is not None:
            self._resumed(batch.resumed_after, sum(n for n in batch.dropped.values() if n > 0))
        self._first_batch = False
        self._guarded = self._chain is not None and self._chain.guarding
        if self._chain is not None and self._chain.guarding and records:
            records, replayed_before = self._chain.not_replayed_yet(records)
            # Replayed by a recovery: arrived, as far as gaps go.
            self._last_seq = max(self._last_seq, replayed_before)
        if batch.reordered_after is not None and self._reordered_after is None:
            # Records come by level from now on: no gap until the end says anything.
            self._reordered_after = min(self._last_seq, batch.reordered_after)
        if batch.dropped:
            self._reports.sender_drops(batch.dropped)
        if batch.dropped_at_close:
            self._reports.close_drops(batch.dropped_at_close)
        metrics.received += len(records)
        if records:
            metrics.last_record_time = time.time()
        in_order = self._reordered_after is None
        if not in_order:
            # Rejected records arrived too: the end does not count them lost.
            self._reordered_count += len(records) + len(self._rejected)
            self._rejected = []
        replay_one = self._replay_one
        clock = time.monotonic
        rest = iter(records)
        self._unfinished = rest
        for data in rest:
            if not in_order:
                pass
            elif data.seq == self._last_seq + 1:
                self._last_seq = data.seq
            else:
                if self._rejected:
                    self._place_rejected(data.seq)
                self._check_sequence(data.seq)
            replay_one(data)
            self._since_yield += 1
            if self._since_yield >= REPLAY_SLICE or clock() >= self._slice_ends:
                if self._stopped:
                    self._drop_rest(rest)
                    break
                self._since_yield = 0
                yield None
        self._unfinished = None
        if self._rejected:
            self._place_rejected(None)
        self._report_rate_drops()

    def _decode(self, raw: msgspec.Raw) -> list[LogRecordData]:
        records, bad, problem, rejected = decode_records(raw)
        self._rejected = rejected
        if problem is not None:
            self.metrics.count_drop(DropReason.MALFORMED, bad)
            self._reports.malformed(bad, problem)
        return records

    def _resumed(self, after: int, lost: int) -> None:
        """The sender reconnected after its connection broke: its records continue after
        ``after``, and the drop totals of this, its first batch, are what it lost meanwhile
        (reported by reason as usual, besides this report)."""
        if not self._first_batch:
            self._reports.resume_ignored()
            return
        self._last_seq = max(self._last_seq, after)
        self._reports.resumed(after, lost)

    def _place_rejected(self, before: int | None) -> None:
        """Take the rejected records numbered below ``before`` (None: all) as arrived, in
        their order, through the sequence checks."""
        keep: list[int] = []
        for seq in self._rejected:
            if before is not None and seq >= before:
                keep.append(seq)
            elif seq == self._last_seq + 1:
                self._last_seq = seq
            else:
                self._check_sequence(seq)
        self._rejected = keep

    def _check_sequence(self, seq: int) -> None:
        """A record numbered ``seq`` arrived after ``#_last_seq``, not right after it.

        An honest sender's numbers on one connection run on without a gap (each accepted
        record is sent, in order; a record it could not take got no number; a reconnection
        says where it resumes), so a gap or a step back is a broken or forging sender. A gap
        is still counted lost, in case, up to what the sender could have had in flight in
        all (:class:`~isoplug.logs.limits.TransitLosses`); anything past that is a violation.
        """
        last = self._last_seq
        expected = last + 1
        if seq < expected:
            # Back, or a repeat; still replayed. A resuming connection whose records a
            # recovery replayed in part may seem to go back: not a violation there.
            if not self._guarded:
                self._reports.sequence_back(last, seq)
            return
        if seq - expected > self._reports.most_in_flight:
            # Wider than any honest sender's queue: the sender's numbers, not records, jumped.
            self._reports.sequence_jump(expected, seq)
        elif seq > expected:
            self._reports.sequence_gap(expected, seq)
        self._last_seq = seq

    def _replay_one(self, data: LogRecordData) -> None:
        levelno = data.levelno
        if not 1 <= levelno <= 100:
            # Out of any sensible range: the lowest level there is, or CRITICAL.
            levelno = logging.CRITICAL if levelno > 100 else 1
        logger, identity = self._names.get(data.name) or self._routes.logger_for(data.name)
        if "stream" in identity:
            streams = self.metrics.streams
            streams[identity["stream"]] = streams.get(identity["stream"], 0) + 1
            if self._on_stderr is not None and identity["stream"] == "stderr":
                self._on_stderr(data.message, data.created)
        if not logger.isEnabledFor(levelno) and not (
            # A disabled logger is enabled for no level: looked at only here, off the hot path.
            logger.disabled and self._reports.enable_again(logger) and logger.isEnabledFor(levelno)
        ):
            self.metrics.filtered += 1
            return
        bucket = self._bucket
        if bucket is not None and not (
            bucket.take_priority() if levelno >= logging.WARNING else bucket.take()
        ):
            self.metrics.count_drop(DropReason.RATE_LIMITED, 1, levelno)
            self._unreported_rate_drops[levelno] = self._unreported_rate_drops.get(levelno, 0) + 1
            return
        # Counted first: whoever sees the record in a handler and then reads the metrics (from
        # another thread when replay runs in one) finds it counted.
        metrics = self.metrics
        metrics.replayed += 1
        levels = metrics.replayed_levels
        levels[levelno] = levels.get(levelno, 0) + 1
        record = self._rebuild(data, logger, levelno, identity)
        try:
            logger.handle(record)
        except Exception as error:
            # A host handler or filter that raises costs this record those handlers, never
            # the connection (a try costs nothing until something raises).
            self._handler_failed(error, logger)

    def _handler_failed(self, error: Exception, logger: logging.Logger) -> None:
        """Count and report (limited) a host handler that raised on a record or a report."""
        self.metrics.handler_errors += 1
        self._handler_errors.failed(error, logger, self.description)

    def _factory_failed(self, factory: RecordFactory, error: Exception) -> None:
        """Count, and say once, the record factory's failure on a record or a report of this
        sender's, which was made without it (see isoplug.logs.record_factory)."""
        self.metrics.record_factory_errors += 1
        self._handler_errors.factory_failed(factory, error, f"a record of {self.description}")

    def _handler_swallowed(self, handler: logging.Handler, error: BaseException) -> None:
        """Count and report (limited) a host handler that failed on a record or a report and
        called handleError, instead of its printing (see isoplug.logs.handler_errors)."""
        self.metrics.handler_errors += 1
        self._handler_errors.swallowed(error, handler, self.description)

    # -- reports ------------------------------------------------------------------------------

    def _report_rate_drops(self) -> None:
        """Report the rate limit's drops since the last batch; and any summary now due."""
        if self._unreported_rate_drops:
            drops, self._unreported_rate_drops = self._unreported_rate_drops, {}
            self._reports.rate_drops(drops, self.limits.rate)
        self._reports.flush()
