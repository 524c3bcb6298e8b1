"""The log pipeline within one process, for the tests of its two ends: what a logger sends, as a
runner's forwarding handler encodes it, and what a fresh :class:`~isoplug.logs.LogReplayer`
makes of it.

The host side's records are watched with :func:`tests.record_waiter.watching`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import traceback
import warnings
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence
from typing import Any

import msgspec

from isoplug.logs import LogReceiver, LogReplayer, ReplayLimits
from isoplug.logs.capture import capture_record
from isoplug.logs.tracebacks import AST_PARSE_SHARES_STATE
from isoplug.wire import LogBatch, LogRecordData
from tests.record_waiter import attached

record_decoder = msgspec.msgpack.Decoder(LogRecordData)
_record_encoder = msgspec.msgpack.Encoder()


@contextlib.contextmanager
def sending(name: str) -> Iterator[list[bytes]]:
    """What the logger ``name`` sends during the block, record by record, encoded as a runner's
    handler encodes it (sequence numbers from 1). Meanwhile the logger is at DEBUG and does not
    propagate; its handlers, level and propagation are as they were afterwards."""
    sent: list[bytes] = []

    class Capture(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            sent.append(capture_record(record, len(sent) + 1))

    with attached(Capture(), name, propagate=False):
        yield sent


def captured(log: Callable[[logging.Logger], object], name: str = "sender") -> list[bytes]:
    """What ``log(logger)`` sends, the logger being ``name`` (see :func:`sending`)."""
    with sending(name) as sent:
        log(logging.getLogger(name))
    return sent


def batch(records: Sequence[LogRecordData | bytes]) -> LogBatch:
    """One batch of ``records``: decoded, or as a sender encoded them (sent as they are)."""
    encoded = [r if isinstance(r, bytes) else _record_encoder.encode(r) for r in records]
    # A msgpack array (array 32 header) of the records.
    header = b"\xdd" + len(encoded).to_bytes(4, "big")
    return LogBatch(records=msgspec.Raw(header + b"".join(encoded)))


def replay(prefix: str, records: Sequence[LogRecordData | bytes], **limits: Any) -> LogReplayer:
    """A fresh replayer under ``prefix`` (its description: the prefix, dots as spaces; its
    :class:`~isoplug.logs.ReplayLimits`: ``limits``) that replayed ``records`` in one batch."""
    replayer = LogReplayer(
        prefix, description=prefix.replace(".", " "), limits=ReplayLimits(**limits)
    )
    replayer.replay(batch(records))
    return replayer


def is_report(record: logging.LogRecord) -> bool:
    """Whether ``record`` is a replayer's own report (drops, gaps...), not a sender's record."""
    return bool(getattr(record, "isoplug_report", False))


def reports(records: Iterable[logging.LogRecord]) -> list[logging.LogRecord]:
    """The replayer's own reports among ``records``."""
    return [record for record in records if is_report(record)]


@contextlib.asynccontextmanager
async def receiver(mode: str, **options: Any) -> AsyncIterator[LogReceiver]:
    """A LogReceiver in ``mode`` ("async": on this loop; "threads": its own threads), with
    ``options`` (a 1 s drain timeout unless given)."""
    options.setdefault("drain_timeout", 1.0)
    log_receiver = LogReceiver(**options)
    if mode == "async":
        async with log_receiver:
            yield log_receiver
        return
    log_receiver.open()
    try:
        yield log_receiver
    finally:
        await asyncio.to_thread(log_receiver.close)


def otel_attributes(record: logging.LogRecord) -> dict[str, Any]:
    """The attributes the OpenTelemetry SDK's own ``LoggingHandler`` exports for ``record``."""
    from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler, export

    # The current name; older SDKs have only InMemoryLogExporter (which now warns).
    exporter: Any = getattr(export, "InMemoryLogRecordExporter", export.InMemoryLogExporter)()
    provider = LoggerProvider()
    provider.add_log_record_processor(export.SimpleLogRecordProcessor(exporter))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the SDK's handler is deprecated
        handler = LoggingHandler(logger_provider=provider)
    handler.handle(record)
    provider.shutdown()
    (exported,) = exporter.get_finished_logs()
    return dict(exported.log_record.attributes or {})


def host_printed(error: BaseException) -> str:
    """``error``'s traceback as Python prints it (``traceback.format_exception``), as a host
    prints its replayed exception: without carets where this Python's ``ast.parse`` must not
    run in two threads (:data:`~isoplug.logs.tracebacks.AST_PARSE_SHARES_STATE`)."""
    shown = traceback.TracebackException.from_exception(error)
    if AST_PARSE_SHARES_STATE:
        _drop_columns(shown, set())
    return "".join(shown.format())


def _drop_columns(shown: traceback.TracebackException, seen: set[int]) -> None:
    if id(shown) in seen:
        return
    seen.add(id(shown))
    for frame in shown.stack:
        frame.colno = frame.end_colno = None
    for linked in (shown.__cause__, shown.__context__, *(shown.exceptions or ())):
        if linked is not None:
            _drop_columns(linked, seen)


#: A line of carets under a traceback's source line (in an exception group's frame too).
CARET_LINE = re.compile(r"\n(?: *\| )?    [ ~^]*\^[ ~^]*(?=\n)")


def as_host_prints(text: str) -> str:
    """A traceback another process printed, as a host prints its replayed exception: its caret
    lines gone where :data:`~isoplug.logs.tracebacks.AST_PARSE_SHARES_STATE`."""
    return CARET_LINE.sub("", text) if AST_PARSE_SHARES_STATE else text
