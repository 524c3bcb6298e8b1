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
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Awaitable, Iterable, Iterator, Mapping
from typing import Any

import msgspec

from isoplug.logs.capture import STANDARD_ATTRIBUTES
from isoplug.logs.exceptions import ExcInfo
from isoplug.logs.handler_errors import HandlerErrors, Replaying
from isoplug.logs.limits import ReplayLimits
from isoplug.logs.metrics import DropReason, LogMetrics
from isoplug.logs.ratelimit import TokenBucket
from isoplug.logs.replay_reports import ReplayReports
from isoplug.logs.report_throttle import ReportThrottle
from isoplug.logs.routing import LoggerBudget, LoggerRoutes
from isoplug.logs.templates import LogTemplate
from isoplug.logs.tracebacks import ExceptionRebuilder
from isoplug.wire import LogBatch, LogRecordData
from isoplug.wire.sanitize import cap_text, clean_block, clean_text

__all__ = ["LogReplayer", "ReplayLimits"]

_record_list_decoder = msgspec.msgpack.Decoder(list[LogRecordData])
_raw_list_decoder = msgspec.msgpack.Decoder(list[msgspec.Raw])
_record_decoder = msgspec.msgpack.Decoder(LogRecordData)
_value_encoder = msgspec.msgpack.Encoder()

#: What next() gives once a batch's steps are done.
_DONE = object()
#: Records replayed between two yields to the event loop in :meth:`LogReplayer.replay_async`:
#: about a millisecond of work, so a flood never stalls the loop for long.
REPLAY_SLICE = 256
#: Attributes the host sets itself; a sender's ``extra`` with these names is renamed.
_HOST_ATTRIBUTES = frozenset({"plugin_id", "runner_pid", "seq", "sender", "isoplug_report"})
#: Source and thread names up to this long that need no cleaning are remembered, at most
#: _MAX_SITES of them (bounded: a sender inventing names must not grow the cache).
_SITE_CHARS = 256
_MAX_SITES = 10_000
#: Templates up to this long are remembered (sanitized, as the LogTemplate every record of
#: theirs shares), at most _MAX_TEMPLATES of them: at most 4 MiB or so per sender.
_TEMPLATE_CHARS = 1024
_MAX_TEMPLATES = 4096
#: The standard name of each level number (getLevelName: CRITICAL, not its alias FATAL).
_LEVEL_NAMES = {
    level: logging.getLevelName(level) for level in set(logging.getLevelNamesMapping().values())
}
#: A sender's name for a level of its own (loguru's SUCCESS, TRACE): one short word. Anything
#: else ("INFO isoplug.host:") could forge the start of a host line: it becomes "Level <n>".
_CUSTOM_LEVEL_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,15}")
#: ``created`` outside [0, this] is no time a Formatter can print (asctime raises
#: OverflowError past year 9999, NaN and infinities raise in every time function).
_MAX_CREATED = 253402300799.0
#: Line numbers beyond a C int are no line of any source file.
_MAX_LINENO = 2**31 - 1


class LogReplayer:
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
    ) -> None:
        self.prefix = prefix
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
            over_budget=lambda fallback: self._reports.logger_budget_spent(fallback),  # noqa: PLW0108
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
        )
        # Host handlers that raise: one reporter of the caller's for all its connections, or
        # this sender's own (see isoplug.logs.handler_errors).
        self._owns_handler_errors = handler_errors is None
        self._handler_errors = handler_errors or HandlerErrors(
            logging.getLogger("isoplug.logs"), self.limits.report_interval
        )
        # Entered around every replay on its thread: a host handler's handleError then
        # reports here, once with a count, instead of printing for every record.
        self._catching = Replaying(self._handler_swallowed)
        # A bucket of the caller's makes one rate limit for several connections (a plugin and
        # the processes it forks); otherwise each sender has its own.
        self._bucket = rate_bucket or (
            TokenBucket(self.limits.rate, self.limits.burst) if self.limits.rate else None
        )
        self._sites: dict[str, str] = {}
        self._templates: dict[str, LogTemplate] = {}
        self._last_seq = 0
        # Once a closing sender sends by level (LogBatch.reordered_after): the sequence number
        # its records continue after, and how many arrived since (counted, not checked).
        self._reordered_after: int | None = None
        self._reordered_count = 0
        # Whether a batch came yet: only the first may say the connection resumes another.
        self._first_batch = True
        # Records replayed since the last yield to the event loop (see receive()).
        self._since_yield = 0
        self._unreported_rate_drops: dict[int, int] = {}
        self._start_time: float = getattr(logging, "_startTime", time.time())
        # Rebuilds records' exceptions as genuine exc_info (see isoplug.logs.tracebacks).
        self._exceptions = ExceptionRebuilder(
            max_message_chars=self.limits.max_message_chars,
            max_text_chars=self.limits.max_traceback_chars,
        )

    # -- entry points -------------------------------------------------------------------------

    def replay(self, batch: LogBatch) -> None:
        """Replay a whole batch now (for threads with no event loop to yield to)."""
        with self._catching:
            for _ in self._replay_steps(batch):
                pass

    def receive(self, batch: LogBatch) -> Awaitable[None] | None:
        """Replay a batch as a :meth:`Peer.on_log_batch <isoplug.rpc.Peer.on_log_batch>`
        handler: now, unless a slice of :data:`REPLAY_SLICE` records ends on the way; then the
        rest is returned as an awaitable that yields to the event loop between slices.

        Slices are counted across batches, so a flood of small batches yields as often as one
        large batch, while a trickle costs no task switch at all.
        """
        steps = self._replay_steps(batch)
        with self._catching:
            for _ in steps:
                return self._replay_rest(steps)
        return None

    async def replay_async(self, batch: LogBatch) -> None:
        """Replay a batch, yielding to the event loop every :data:`REPLAY_SLICE` records."""
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

    async def _replay_rest(self, steps: Iterator[None]) -> None:
        await asyncio.sleep(0)
        while True:
            # Only while a slice runs: between them the loop runs the host's own code.
            with self._catching:
                step = next(steps, _DONE)
            if step is _DONE:
                return
            await asyncio.sleep(0)

    def finish(self, *, clean: bool = True) -> None:
        """Report what is still unreported; call when the sender is gone.

        Records the sender accepted but never sent (it crashed, was killed, or its last flush
        timed out) are counted from its sequence ledger and reported, however it ended.
        ``clean=False`` (the connection ended without a goodbye) says so too, even when nothing
        was lost; without a ledger, it warns that unsent records, if any, are lost.
        """
        reordered = (
            None
            if self._reordered_after is None
            else (self._reordered_after, self._reordered_count)
        )
        with self._catching:
            self._report_rate_drops()
            self._reports.flush(final=True)
            self._reports.sender_ended(
                self._last_seq, clean=clean, reordered=reordered, recover=self._replay_recovered
            )
            self._reports.flush(final=True)
        if self._owns_handler_errors:
            self._handler_errors.close()

    def _replay_recovered(self, records: list[LogRecordData]) -> None:
        """Replay, in order, records that never arrived but that the dead sender's ring gave
        back (see :mod:`isoplug.logs.ledger_reports`), as if they had."""
        self.metrics.received += len(records)
        self.metrics.recovered += len(records)
        for data in records:
            self._last_seq = max(self._last_seq, data.seq)
            self._replay_one(data)
        self._report_rate_drops()

    # -- the pipeline -------------------------------------------------------------------------

    def _replay_steps(self, batch: LogBatch) -> Iterator[None]:
        metrics = self.metrics
        metrics.bytes += len(batch.records)
        if batch.ledger_fd is not None:
            self._reports.open_ledger(batch.ledger_fd)
        records = self._decode(batch.records)
        if batch.resumed_after is not None:
            self._resumed(batch.resumed_after, sum(n for n in batch.dropped.values() if n > 0))
        self._first_batch = False
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
            self._reordered_count += len(records)
        replay_one = self._replay_one
        for data in records:
            if not in_order:
                pass
            elif data.seq == self._last_seq + 1:
                self._last_seq = data.seq
            else:
                self._check_sequence(data.seq)
            replay_one(data)
            self._since_yield += 1
            if self._since_yield >= REPLAY_SLICE:
                self._since_yield = 0
                yield
        self._report_rate_drops()

    def _decode(self, raw: msgspec.Raw) -> list[LogRecordData]:
        try:
            return _record_list_decoder.decode(raw)
        except (msgspec.DecodeError, UnicodeDecodeError, RecursionError) as batch_error:
            problem = f"{batch_error}"
        # Salvage what can be salvaged: one bad record must not cost the others.
        good: list[LogRecordData] = []
        bad = 0
        try:
            items = _raw_list_decoder.decode(raw)
        except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
            items = []
            bad = 1
        for item in items:
            try:
                good.append(_record_decoder.decode(item))
            except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
                bad += 1
        self.metrics.count_drop(DropReason.MALFORMED, bad)
        self._reports.malformed(bad, problem)
        return good

    def _resumed(self, after: int, lost: int) -> None:
        """The sender reconnected after its connection broke: its records continue after
        ``after``, and the drop totals of this, its first batch, are what it lost meanwhile
        (reported by reason as usual, besides this report)."""
        description = self.description
        if not self._first_batch:
            self._reports.limited(
                "resume_ignored",
                f"{description} said its log connection resumes an earlier one, after its "
                "first batch; ignored",
                lambda t: f"{description} said so {t.events:,} more times over {t.seconds:.1f} s",
            )
            return
        self._last_seq = max(self._last_seq, after)
        lost_text = f"{lost:,} log records" if lost else "no log record"
        self._reports.limited(
            "resumed",
            f"{description} reconnected after its log connection broke; it lost {lost_text} "
            f"meanwhile, and its records continue after #{after}",
            lambda t: (
                f"{description} reconnected {t.events:,} more times over {t.seconds:.1f} s "
                f"after its log connection broke; it lost {t.records:,} log records meanwhile"
            ),
            records=lost,
        )

    def _check_sequence(self, seq: int) -> None:
        expected = self._last_seq + 1
        if seq > expected:
            self._reports.sequence_gap(expected, seq)
        self._last_seq = max(self._last_seq, seq)

    def _replay_one(self, data: LogRecordData) -> None:
        levelno = data.levelno
        if not 1 <= levelno <= 100:
            # Out of any sensible range: the lowest level there is, or CRITICAL.
            levelno = logging.CRITICAL if levelno > 100 else 1
        logger, identity = self._names.get(data.name) or self._routes.logger_for(data.name)
        if "stream" in identity:
            streams = self.metrics.streams
            streams[identity["stream"]] = streams.get(identity["stream"], 0) + 1
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

    def _handler_swallowed(self, handler: logging.Handler, error: BaseException) -> None:
        """Count and report (limited) a host handler that failed on a record or a report and
        called handleError, instead of its printing (see isoplug.logs.handler_errors)."""
        self.metrics.handler_errors += 1
        self._handler_errors.swallowed(error, handler, self.description)

    def _rebuild(
        self, data: LogRecordData, logger: logging.Logger, levelno: int, identity: dict[str, Any]
    ) -> logging.LogRecord:
        limits = self.limits
        created = data.created
        lineno = data.lineno
        if (
            not 0.0 <= created <= _MAX_CREATED
            or type(lineno) is not int
            or not 0 <= lineno <= _MAX_LINENO
        ):
            created, lineno = self._repair(data)
        message = data.message
        if not message.isprintable() or len(message) > limits.max_message_chars:
            message = clean_text(message, limits.max_message_chars)
        msg: Any = message
        args: tuple[str, ...] = ()
        extra = self._clean_mapping(data.extra, rename_reserved=True) if data.extra else {}
        exc_info = self._exc_info(data) if data.exception is not None else None
        if data.event is not None:
            msg = self._clean_mapping(data.event, rename_reserved=False)
            if "exc_info" in msg:
                # The sender's exception, rebuilt; never True, which structlog would resolve
                # against this process's own sys.exc_info().
                msg["exc_info"] = exc_info
            # structlog's ProcessorFormatter recognises its records by these two attributes.
            extra["_logger"] = logger
            extra["_name"] = clean_text(data.event_method or "info", 32)
        elif data.template is not None:
            msg = self._templates.get(data.template) or self._template(data.template)
            # getMessage() formats only when args is non-empty. The sender's arguments do not
            # cross the wire (turning each into something msgpack carries would cost the
            # plugin's every call, and "%d" or "%.2f" of their text would not give back what the
            # plugin printed), so args is the one value the host has: the rendered message. It
            # is a real tuple, as tools that read args expect (Sentry sends it as "params",
            # beside "formatted", which is getMessage()).
            args = (message,)
        # The fields that name where a record comes from repeat from record to record: they
        # are cleaned once and then looked up (see _clean_site).
        sites = self._sites
        record = logging.LogRecord.__new__(logging.LogRecord)
        # One dict, built at once: the sender's extras first, so that neither they nor
        # anything else can override the record's own fields or the identity the host stamps.
        record.__dict__ = {
            **extra,
            "name": logger.name,
            "msg": msg,
            "args": args,
            "levelname": _LEVEL_NAMES.get(levelno) or self._custom_level_name(data, levelno),
            "levelno": levelno,
            "pathname": sites.get(data.pathname) or self._clean_site(data.pathname, 1024),
            "filename": sites.get(data.filename) or self._clean_site(data.filename, 256),
            "module": sites.get(data.module) or self._clean_site(data.module, 256),
            "exc_info": exc_info,
            # With exc_info, formatters render it (as the sender printed it): no text to repeat.
            # A blank text stays: loguru sets "\n" so that its message, which holds its own
            # rendering of the traceback, is not followed by a second one.
            "exc_text": (
                clean_block(data.exc_text, limits.max_traceback_chars)
                if data.exc_text and (exc_info is None or data.exc_text.isspace())
                else None
            ),
            "stack_info": (
                clean_block(data.stack_info, limits.max_traceback_chars)
                if data.stack_info
                else None
            ),
            "lineno": lineno,
            "funcName": (
                sites.get(data.func_name) or self._clean_site(data.func_name, 256)
                if data.func_name
                else data.func_name
            ),
            "created": created,
            "msecs": int((created - int(created)) * 1000) + 0.0,
            "relativeCreated": (created - self._start_time) * 1000,
            "thread": data.thread,
            "threadName": (
                sites.get(data.thread_name) or self._clean_site(data.thread_name, 256)
                if data.thread_name
                else data.thread_name
            ),
            "processName": (
                sites.get(data.process_name) or self._clean_site(data.process_name, 256)
                if data.process_name
                else data.process_name
            ),
            "process": data.process,
            "taskName": (
                sites.get(data.task_name) or self._clean_site(data.task_name, 256)
                if data.task_name
                else None
            ),
            "exc_type": clean_text(data.exc_type, 256) if data.exc_type else None,
            "exc_message": (
                clean_text(data.exc_message, limits.max_message_chars) if data.exc_message else None
            ),
            "seq": data.seq,
            **identity,
        }
        return record

    def _exc_info(self, data: LogRecordData) -> ExcInfo | None:
        """The record's exception as a genuine exc_info; None (the record keeps the text) if
        even a bounded rebuild fails, which is reported."""
        assert data.exception is not None
        try:
            return self._exceptions.rebuild(data.exception)
        except Exception as exc:
            self._reports.rebuild_failed(f"{type(exc).__name__}: {clean_text(str(exc), 200)}")
            return None

    def _template(self, text: str) -> LogTemplate:
        """The sanitized template, as one object for every record that has it (remembered)."""
        limit = self.limits.max_message_chars
        template = LogTemplate(
            text if text.isprintable() and len(text) <= limit else clean_text(text, limit)
        )
        if len(text) <= _TEMPLATE_CHARS and len(self._templates) < _MAX_TEMPLATES:
            self._templates[text] = template
        return template

    def _repair(self, data: LogRecordData) -> tuple[float, int]:
        """``created`` and ``lineno`` that every formatter can print, for a record whose sender
        sent a time that is no time (NaN, infinite, before 1970, past year 9999) or no line
        number (None, negative, huge): the arrival time, and 0. Counted in
        ``metrics.repaired`` and reported (limited, as every report a sender can repeat)."""
        created, lineno = data.created, data.lineno
        fixed: list[str] = []
        if not 0.0 <= created <= _MAX_CREATED:
            fixed.append(f"created={created!r}")
            created = time.time()
        if type(lineno) is not int or not 0 <= lineno <= _MAX_LINENO:
            fixed.append(f"lineno={cap_text(repr(lineno), 40)}")
            lineno = 0
        self.metrics.repaired += 1
        self._reports.repaired(", ".join(fixed))
        return created, lineno

    def _custom_level_name(self, data: LogRecordData, levelno: int) -> str:
        """The sender's name for a level the host does not know, if it is one short word."""
        name = data.levelname
        return name if _CUSTOM_LEVEL_NAME.fullmatch(name) else f"Level {levelno}"

    def _clean_site(self, text: str, limit: int) -> str:
        """``clean_text`` for a source or thread name; remembers names that need no change."""
        cleaned = clean_text(text, limit)
        if cleaned is text and len(text) <= _SITE_CHARS and len(self._sites) < _MAX_SITES:
            # Only texts that pass unchanged under any limit are remembered, so one cache
            # serves every field whatever its limit.
            self._sites[text] = text
        return cleaned

    def _clean_mapping(self, values: dict[str, Any], *, rename_reserved: bool) -> dict[str, Any]:
        limits = self.limits
        cleaned: dict[str, Any] = {}
        for index, (sender_key, value) in enumerate(values.items()):
            if index == limits.max_extra_keys:
                cleaned["isoplug_truncated_keys"] = len(values) - index
                break
            key = clean_text(sender_key, 100)
            if rename_reserved and (
                key in STANDARD_ATTRIBUTES or key in _HOST_ATTRIBUTES or key in self.identity
            ):
                # Never let a sender's extra shadow a record field or the host's identity.
                key = f"extra_{key}"
            cleaned[key] = self._clean_value(value)
        return cleaned

    def _clean_value(self, value: Any) -> Any:
        limit = self.limits.max_extra_value_chars
        if isinstance(value, str):
            return clean_text(value, limit)
        if isinstance(value, bool | int | float) or value is None:
            return value
        if isinstance(value, bytes):
            return value if len(value) <= limit else value[:limit] + b"...[truncated]"
        encoded = _value_encoder.encode(value)
        if len(encoded) <= limit:
            return value
        return cap_text(repr(value), limit)

    # -- reports ------------------------------------------------------------------------------

    def _report_rate_drops(self) -> None:
        """Report the rate limit's drops since the last batch; and any summary now due."""
        if self._unreported_rate_drops:
            drops, self._unreported_rate_drops = self._unreported_rate_drops, {}
            self._reports.rate_drops(drops, self.limits.rate)
        self._reports.flush()
