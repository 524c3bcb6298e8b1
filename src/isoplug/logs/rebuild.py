"""Rebuilding a sender's record as a complete ``LogRecord`` in this process (step 6 of
:mod:`isoplug.logs.replay`).

Every field comes from the sender, cleaned of control characters and capped
(:mod:`isoplug.wire.sanitize`); nothing is filled in with this process's own process, thread or
task. An exception becomes a genuine ``exc_info`` with the sender's traceback
(:mod:`isoplug.logs.tracebacks`). The identity the host vouches for (``plugin_id``,
``runner_pid``...) is stamped last, so it overrides anything the sender put in ``extra``; a
sender's ``extra`` named like an attribute of the record, like one the host sets, or like a
name formatters read a record's identity, level or message under (``logger``, ``level``,
``event``: see :mod:`isoplug.logs.record_names`, the one list for every path), like a field
the host's formatters write themselves (``timestamp``, ``exception``, ``stack``...) or like a
host marker (any ``isoplug_`` name) is renamed ``extra_<name>`` (``extra_extra_<name>`` if
the sender has that name too: nothing is lost).
A record with no exception (no ``exc_type``, nothing structured) has no ``exc_text`` nor
``exc_message``: a sender's texts there are kept as ``extra_exc_text`` and
``extra_exc_message``, so that no formatter prints them as a traceback and no exporter takes
them for an exception's. (With a type but nothing structured, as when the sender could not
convert its exception, the text stays: it is the only traceback there is.)
A level number that is not a standard one never carries a standard level's name
(:func:`~isoplug.logs.record_names.level_name`). Where the connection has a pid the kernel
vouches for, ``process`` is that pid (the sender's own claim, when it differs, is kept as
``extra_process``). A record's ``created`` lies between its process's start (the kernel's,
for that pid, a little clock skew allowed) and its arrival: a time outside is replaced by the
arrival's, the claim kept as ``extra_created`` (what a plugin's filter or loguru's
``patch`` can set, every formatter prints as the record's time).

A structlog event dict (``record.msg`` of a record structlog's ``ProcessorFormatter`` renders
as its own) gets the same truth (:mod:`isoplug.logs.event_truth`), and so do the
``timestamp``, ``lineno`` and ``func_name`` of a printed JSON line (a structlog that prints).
Every text inside a nested value, and every key of a nested dict, is cleaned as the extras'
own are
(:mod:`isoplug.logs.extra_values`); keys that clean to the same text (an escape character and
the text ``\\x1b``, long keys cut to one prefix) all stay, the later ones told apart as
``<key>#2``, ``<key>#3``...

The fields that repeat from record to record (source locations, thread names, templates) are
cleaned once and remembered, within bounds a sender inventing names cannot grow.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

from isoplug.logs.capture import STANDARD_ATTRIBUTES
from isoplug.logs.event_truth import keep_printed_truths, state_the_level, state_the_truth
from isoplug.logs.exceptions import ExcInfo
from isoplug.logs.extra_values import clean_value, unique_key
from isoplug.logs.limits import ReplayLimits
from isoplug.logs.metrics import LogMetrics
from isoplug.logs.record_factory import FactoryFailed, propagate_failure, replayed_record
from isoplug.logs.record_names import (
    RESERVED_NAMES,
    TRUNCATED_KEYS,
    level_name,
    renamed,
    reserved_field,
)
from isoplug.logs.replay_reports import ReplayReports
from isoplug.logs.stream_claims import CUT_FLAG, UNCUT_FD_LINE, believed_stream_flags
from isoplug.logs.templates import LogEvent, LogTemplate
from isoplug.logs.tracebacks import ExceptionRebuilder
from isoplug.transport.process_tree import started_at
from isoplug.wire import LogRecordData
from isoplug.wire.sanitize import cap_text, clean_block, clean_text, shows_as_is

__all__ = ["RecordRebuilder"]

#: Attributes the host sets on every record besides the identity: a sender's extras so named
#: are renamed too, rather than overwritten. ``truncated`` is isoplug's flag on a printed line
#: it cut: on records of output streams (``stream`` set) a sender's is kept where its capture
#: could have set it (see isoplug.logs.stream_claims), as is its count of a JSON line's fields
#: left out (``isoplug_truncated_keys``); elsewhere, or past that, both are renamed.
_HOST_FIELDS = frozenset({"exc_type", "exc_message"})
_STREAM_FLAGS = frozenset({CUT_FLAG})
#: Source and thread names up to this long that need no cleaning are remembered, at most
#: _MAX_SITES of them (bounded: a sender inventing names must not grow the cache).
_SITE_CHARS = 256
_MAX_SITES = 10_000
#: Templates up to this long are remembered (sanitized, as the LogTemplate every record of
#: theirs shares), at most _MAX_TEMPLATES of them: at most 4 MiB or so per sender.
_TEMPLATE_CHARS = 1024
_MAX_TEMPLATES = 4096
#: The name of each level number this process knows (getLevelName: CRITICAL, not its alias
#: FATAL): one dict lookup for almost every record; other numbers go to level_name().
_LEVEL_NAMES = {
    level: logging.getLevelName(level) for level in set(logging.getLevelNamesMapping().values())
}
#: ``created`` outside [0, this] is no time a Formatter can print (asctime raises
#: OverflowError past year 9999, NaN and infinities raise in every time function).
_MAX_CREATED = 253402300799.0
#: How far a record's ``created`` may lie before its sending process started (the start read
#: from ``/proc`` is good to a second, and clocks are set) or after the record arrived.
_EARLIER_THAN_START = 2.0
_LATER_THAN_ARRIVAL = 1.0
#: Line numbers beyond a C int are no line of any source file.
_MAX_LINENO = 2**31 - 1


class RecordRebuilder:
    """Rebuilds one sender's records (see the module docstring)."""

    def __init__(
        self,
        limits: ReplayLimits,
        identity: Mapping[str, Any],
        reports: ReplayReports,
        metrics: LogMetrics,
        sender_pid: int | None = None,
        *,
        factory_failed: FactoryFailed | None = None,
    ) -> None:
        """``sender_pid`` is the sender's pid as the kernel vouches for it (None where the
        connection cannot say: TCP, TLS, no peer credentials). ``factory_failed`` is told
        when the record factory fails on a record, which is then made without it (see
        :mod:`isoplug.logs.record_factory`); without it, the exception propagates."""
        self._limits = limits
        self._identity = identity
        self._sender_pid = sender_pid
        host_keys = STANDARD_ATTRIBUTES | RESERVED_NAMES | _HOST_FIELDS | identity.keys()
        # A sender's extra is renamed under these names; on records of output streams, the
        # flags isoplug's capture sets are kept where it could have set them.
        self._reserved = frozenset(host_keys | _STREAM_FLAGS)
        self._reports = reports
        self._metrics = metrics
        self._factory_failed = factory_failed or propagate_failure
        self._sites: dict[str, str] = {}
        self._templates: dict[str, LogTemplate] = {}
        self._start_time: float = getattr(logging, "_startTime", time.time())
        # No record of the sender's was made before its process started: the kernel's word
        # for when that was, where the kernel vouches for its pid (read once: the ring of a
        # process that died is replayed after it is gone).
        started = started_at(sender_pid) if sender_pid is not None else None
        self._earliest = 0.0 if started is None else started - _EARLIER_THAN_START
        # The latest time a record may claim, as of the last look at the clock: a record up to
        # it needs no look (the clock only moves on; set back, the bound is a little loose).
        self._latest = time.time() + _LATER_THAN_ARRIVAL
        # Rebuilds records' exceptions as genuine exc_info (see isoplug.logs.tracebacks).
        self._exceptions = ExceptionRebuilder(
            max_message_chars=limits.max_message_chars,
            max_text_chars=limits.max_traceback_chars,
        )

    def rebuild(
        self, data: LogRecordData, logger: logging.Logger, levelno: int, identity: dict[str, Any]
    ) -> logging.LogRecord:
        """The record ``data`` describes, for ``logger`` at ``levelno``, stamped with
        ``identity`` (which overrides anything the sender sent)."""
        limits = self._limits
        created = data.created
        lineno = data.lineno
        if (
            not 0.0 <= created <= _MAX_CREATED
            or type(lineno) is not int
            or not 0 <= lineno <= _MAX_LINENO
        ):
            created, lineno = self._repair(data)
        claimed_time: float | None = None
        if not self._earliest <= created <= self._latest and not (
            self._earliest <= created <= self._now_and_later()
        ):
            # A time the record cannot have (a filter's record.created, loguru's
            # patch(time=...)): formatters print the arrival's, the claim stays as an extra.
            claimed_time, created = created, time.time()
        message = data.message
        if not shows_as_is(message) or len(message) > limits.max_message_chars:
            message = clean_text(message, limits.max_message_chars)
        msg: Any = message
        args: tuple[str, ...] = ()
        sent = data.extra
        if sent is UNCUT_FD_LINE:
            # The host's own flag, on a line its fd-level capture read (see UNCUT_FD_LINE).
            extra: dict[str, Any] = {CUT_FLAG: False}
        elif not sent:
            extra = {}
        elif "stream" in identity:
            extra = self._clean_mapping(
                sent, self._reserved, believed_stream_flags(sent, data.message)
            )
        else:
            extra = self._clean_mapping(sent, self._reserved)
        if claimed_time is not None:
            extra[renamed("created", data.extra or {}, extra)] = claimed_time
        process = data.process
        if self._sender_pid is not None and process != self._sender_pid:
            # The kernel's word for the process, not the payload's (a filter in the plugin
            # can set record.process): the claim stays, renamed, for a record a process
            # relayed for another (a multiprocessing QueueHandler).
            extra[renamed("process", extra, extra)] = process
            process = self._sender_pid
        exc_info = self._exc_info(data) if data.exception is not None else None
        # A record the sender says has no exception (no type, nothing structured) shows no
        # exception block: its exception fields are claims, kept as extras.
        excepted = data.exception is not None or bool(data.exc_type)
        if not excepted and (data.exc_text is not None or data.exc_message is not None):
            self._unexcepted(data, extra)
        levelname = _LEVEL_NAMES.get(levelno) or level_name(levelno, data.levelname)
        if data.event_method is not None and data.event is not None:
            # structlog's ProcessorFormatter recognises its records by these two attributes,
            # which structlog's wrap_for_formatter set in the sender (the method name is
            # sent only then). A dict the plugin logged with plain logging has neither: it
            # stays a foreign record, which the formatter runs through its foreign_pre_chain
            # (level, timestamp...) as it would in-process. The event itself is stated
            # against the finished record (below).
            extra["_logger"] = logger
            extra["_name"] = clean_text(data.event_method, 32)
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
        # One dict, built at once: the sender's extras first, so that neither they nor
        # anything else can override the record's own fields or the identity the host stamps.
        fields = {
            **extra,
            "name": logger.name,
            "msg": msg,
            "args": args,
            "levelname": levelname,
            "levelno": levelno,
            "pathname": sites.get(data.pathname) or self._clean_site(data.pathname, 1024),
            "filename": sites.get(data.filename) or self._clean_site(data.filename, 256),
            "module": sites.get(data.module) or self._clean_site(data.module, 256),
            "exc_info": exc_info,
            # With exc_info, formatters render it (as the sender printed it): no text to repeat.
            # A blank text stays: loguru sets "\n" so that its message, which holds its own
            # rendering of the traceback, is not followed by a second one. So does the text of
            # an exception that came without its frames (loguru's enqueue=True cannot pickle a
            # traceback; the one it printed is all there is of them).
            "exc_text": (
                clean_block(data.exc_text, limits.max_traceback_chars)
                if excepted
                and data.exc_text
                and (exc_info is None or exc_info[2] is None or data.exc_text.isspace())
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
            "process": process,
            "taskName": (
                sites.get(data.task_name) or self._clean_site(data.task_name, 256)
                if data.task_name
                else None
            ),
            "exc_type": clean_text(data.exc_type, 256) if data.exc_type else None,
            "exc_message": (
                clean_text(data.exc_message, limits.max_message_chars)
                if excepted and data.exc_message
                else None
            ),
            "seq": data.seq,
            **identity,
        }
        if extra and "stream" in identity and sent is not UNCUT_FD_LINE:
            keep_printed_truths(fields, data.extra or {}, data, self._limits.max_extra_value_chars)
        if data.event is not None:
            event = state_the_truth(
                self._clean_mapping(data.event, None),
                data,
                logger_name=logger.name,
                identity=identity,
                process=process,
                record=fields,
                limit=self._limits.max_extra_value_chars,
            )
            state_the_level(event, levelno, levelname)
            if "exc_info" in event:
                # The sender's exception, rebuilt; never True, which structlog would resolve
                # against this process's own sys.exc_info().
                event["exc_info"] = exc_info
            fields["msg"] = LogEvent(event, message)
        # Through the application's record factory or its logger class's makeRecord, if it
        # has one (after every field is final: the factory sees the record's own message).
        return replayed_record(fields, self._factory_failed, logger)

    def _now_and_later(self) -> float:
        """The latest time a record may claim now (the clock read again)."""
        self._latest = time.time() + _LATER_THAN_ARRIVAL
        return self._latest

    def _exc_info(self, data: LogRecordData) -> ExcInfo | None:
        """The record's exception as a genuine exc_info; None (the record keeps the text) if
        even a bounded rebuild fails, which is reported."""
        assert data.exception is not None
        try:
            return self._exceptions.rebuild(data.exception)
        except Exception as exc:
            self._reports.rebuild_failed(f"{type(exc).__name__}: {clean_text(str(exc), 200)}")
            return None

    def _unexcepted(self, data: LogRecordData, extra: dict[str, Any]) -> None:
        """Keep the ``exc_text`` and ``exc_message`` of a record without an exception in
        ``extra``, as ``extra_exc_text`` and ``extra_exc_message``: a formatter prints a
        record's ``exc_text`` as its traceback (a plugin's filter can set one, naming any
        file), and an exporter takes it for an exception's."""
        limits = self._limits
        sent = data.extra or {}
        if data.exc_text is not None:
            key = renamed("exc_text", sent, extra)
            extra[key] = clean_block(data.exc_text, limits.max_traceback_chars)
        if data.exc_message is not None:
            key = renamed("exc_message", sent, extra)
            extra[key] = clean_text(data.exc_message, limits.max_message_chars)

    def _template(self, text: str) -> LogTemplate:
        """The sanitized template, as one object for every record that has it (remembered)."""
        limit = self._limits.max_message_chars
        template = LogTemplate(
            text if shows_as_is(text) and len(text) <= limit else clean_text(text, limit)
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
        self._metrics.repaired += 1
        self._reports.repaired(", ".join(fixed))
        return created, lineno

    def _clean_site(self, text: str, limit: int) -> str:
        """``clean_text`` for a source or thread name; remembers names that need no change."""
        cleaned = clean_text(text, limit)
        if cleaned is text and len(text) <= _SITE_CHARS and len(self._sites) < _MAX_SITES:
            # Only texts that pass unchanged under any limit are remembered, so one cache
            # serves every field whatever its limit.
            self._sites[text] = text
        return cleaned

    def _clean_mapping(
        self,
        values: dict[str, Any],
        reserved: frozenset[str] | None,
        markers: frozenset[str] = frozenset(),
    ) -> dict[str, Any]:
        """``values`` cleaned; unless ``reserved`` is None (a structlog event dict, judged
        key by key in :func:`~isoplug.logs.event_truth.state_the_truth`), a key in
        ``reserved`` or that :func:`~isoplug.logs.record_names.reserved_field` names (other
        than those in ``markers``, which isoplug's own capture set) renamed ``extra_<key>``.
        Keys that clean to the same text all stay, told apart by a suffix (``#2``)."""
        limits = self._limits
        cleaned: dict[str, Any] = {}
        for index, (sender_key, value) in enumerate(values.items()):
            if index == limits.max_extra_keys:
                cleaned[TRUNCATED_KEYS] = self._left_out(values, index, cleaned, markers)
                break
            key = clean_text(sender_key, 100) if type(sender_key) is str else str(sender_key)
            if (
                reserved is not None
                and (key in reserved or reserved_field(key, value))
                and key not in markers
            ):
                # Never let a sender's extra shadow a record field, the host's identity, what
                # the host's formatters write themselves, or a marker of the host's.
                key = renamed(key, values, cleaned)
            cleaned[unique_key(key, cleaned)] = clean_value(value, limits.max_extra_value_chars)
        return cleaned

    @staticmethod
    def _left_out(
        values: dict[str, Any], index: int, cleaned: dict[str, Any], markers: frozenset[str]
    ) -> int:
        """How many of ``values``' extras a record lacks once those from ``index`` on are cut:
        those, plus what the sender's capture had left out already (its own
        ``isoplug_truncated_keys``, allowed in ``markers``), which the cut would replace."""
        left = len(values) - index
        carried = values.get(TRUNCATED_KEYS) if TRUNCATED_KEYS in markers else None
        if type(carried) is int:  # in markers: believed (see isoplug.logs.stream_claims)
            # Among the cut keys the marker is no field of the record's: not one left out.
            left += carried if TRUNCATED_KEYS in cleaned else carried - 1
        return left
