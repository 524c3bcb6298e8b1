"""Replayed records carry a genuine exc_info: the plugin's exception, traceback and chain, as
:mod:`isoplug.logs.exceptions` sends them and :mod:`isoplug.logs.tracebacks` rebuilds them (the
source lines of their frames: tests/test_logs_sourcelines.py)."""

from __future__ import annotations

import ast
import builtins
import io
import json
import logging
import threading
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
import structlog

from isoplug.logs import tracebacks
from isoplug.logs.capture import capture_record
from isoplug.logs.exceptions import MAX_DEPTH, MAX_FRAMES, MAX_MEMBERS, ExcInfo, exception_data
from isoplug.logs.tracebacks import ExceptionRebuilder
from isoplug.wire import ExceptionData, FrameData, LogRecordData
from isoplug.wire.sanitize import clean_block
from tests.log_helpers import (
    as_host_prints,
    captured,
    host_printed,
    is_report,
    otel_attributes,
    record_decoder,
    replay,
    reports,
    sending,
)
from tests.plugins_fixtures import running
from tests.record_waiter import RecordWaiter, watching

PREFIX = "plugin.exc"


@pytest.fixture
def collector() -> Iterator[RecordWaiter]:
    """Collects what reaches the replayer's loggers during the test."""
    with watching(PREFIX) as waiter:
        yield waiter


def logged(error: BaseException, message: str = "failed") -> LogRecordData:
    """What a sender sends for ``log.error(message, exc_info=error)``."""
    (encoded,) = captured(lambda logger: logger.error(message, exc_info=error))
    return record_decoder.decode(encoded)


def replayed(collector: RecordWaiter, *records: LogRecordData) -> list[logging.LogRecord]:
    """The records replaying ``records`` (in a fresh replayer) produced, reports left out."""
    before = len(collector.records)
    replay(PREFIX, records)
    return [r for r in collector.records[before:] if not is_report(r)]


def round_trip(collector: RecordWaiter, error: BaseException) -> logging.LogRecord:
    (record,) = replayed(collector, logged(error))
    return record


def printed(error: BaseException) -> str:
    """The traceback as Python prints it, as ``Formatter.formatException`` returns it."""
    text = host_printed(error)
    return text[:-1] if text.endswith("\n") else text


def formatted(record: logging.LogRecord) -> str:
    assert record.exc_info is not None
    return logging.Formatter().formatException(record.exc_info)


def exc_info_of(record: logging.LogRecord) -> ExcInfo:
    """The record's exc_info, with its type and value known not to be None."""
    assert record.exc_info is not None
    kind, value, tb = record.exc_info
    assert kind is not None and value is not None
    return kind, value, tb


def raised(function: Callable[[], object]) -> BaseException:
    try:
        function()
    except BaseException as exc:
        return exc
    raise AssertionError("nothing raised")


# -- what the plugin raises (module level, so that its source lines are in this file) ---------


class PluginError(Exception):
    class Nested(LookupError):
        pass


def fail() -> None:
    raise ValueError("boom")


def parse(text: str) -> int:
    return int(text) + 1


def chained() -> None:
    try:
        parse("eighty")
    except ValueError as exc:
        raise RuntimeError("cannot configure") from exc


def implicit() -> None:
    try:
        _ = {"a": 1}["k"]
    except KeyError:
        _ = 1 / 0


def noted() -> None:
    try:
        fail()
    except ValueError as exc:
        exc.add_note("while loading settings.toml")
        exc.add_note("second note")
        raise


def grouped() -> None:
    raise BaseExceptionGroup("several", [raised(fail), raised(chained), raised(implicit)])


def missing_key() -> None:
    settings: dict[str, str] = {}
    settings["k"]


def plugin_error() -> None:
    raise PluginError.Nested("no such plugin thing")


def multi_line() -> None:
    values = {"a": 1}
    _ = len(values) + values["b"]


# -- round trips --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "function", [fail, chained, implicit, grouped, missing_key, plugin_error, multi_line]
)
def test_format_exception_prints_the_senders_traceback_exactly(
    collector: RecordWaiter, function: Callable[[], None]
) -> None:
    """formatException of the replayed exc_info is what Python printed in the sender."""
    error = raised(function)
    record = round_trip(collector, error)
    assert record.exc_info is not None and record.exc_info[2] is not None
    assert formatted(record) == printed(error)


def test_the_class_is_the_senders_by_name_and_a_builtin_stays_one(collector: RecordWaiter) -> None:
    """Type name, qualname, module and str() are the sender's; a KeyError is still a KeyError."""
    kind, value, _ = exc_info_of(round_trip(collector, raised(missing_key)))
    assert isinstance(value, KeyError) and kind is type(value)
    assert (kind.__name__, kind.__qualname__, kind.__module__) == (
        "KeyError",
        "KeyError",
        "builtins",
    )
    assert str(value) == "'k'"
    kind, value, _ = exc_info_of(round_trip(collector, raised(plugin_error)))
    assert (kind.__name__, kind.__qualname__, kind.__module__) == (
        "Nested",
        "PluginError.Nested",
        __name__,
    )
    assert kind is not PluginError.Nested and isinstance(value, Exception)
    assert str(value) == "no such plugin thing"


def test_chains_notes_and_group_members_survive(collector: RecordWaiter) -> None:
    """__cause__, __context__, __suppress_context__, notes and group members are rebuilt."""
    value = exc_info_of(round_trip(collector, raised(chained)))[1]
    assert isinstance(value.__cause__, ValueError) and value.__suppress_context__
    assert value.__cause__.__traceback__ is not None
    value = exc_info_of(round_trip(collector, raised(implicit)))[1]
    assert isinstance(value.__context__, KeyError) and not value.__suppress_context__
    group = exc_info_of(round_trip(collector, raised(grouped)))[1]
    assert isinstance(group, ExceptionGroup) and group.message == "several"
    assert [type(e).__name__ for e in group.exceptions] == [
        "ValueError",
        "RuntimeError",
        "ZeroDivisionError",
    ]


def test_a_notes_lines_are_indented_and_nothing_else_changes(collector: RecordWaiter) -> None:
    """Notes survive; their lines are indented so that no plugin text starts at column 0."""
    error = raised(noted)
    record = round_trip(collector, error)
    assert exc_info_of(record)[1].__notes__ == ["  while loading settings.toml", "  second note"]
    expected = printed(error).replace("\nwhile loading", "\n  while loading")
    assert formatted(record) == expected.replace("\nsecond note", "\n  second note")


def test_formatters_render_the_exception_object_once(collector: RecordWaiter) -> None:
    """exc_text is None, so Formatter.format renders exc_info: the message, then the traceback."""
    error = raised(chained)
    record = round_trip(collector, error)
    # None as replayed; a formatter that ran first (pytest's) caches its rendering there.
    assert record.exc_text in (None, printed(error))
    text = logging.Formatter("%(message)s").format(record)
    assert text == "failed\n" + printed(error)
    assert text.count("Traceback (most recent call last)") == 2  # the cause's and its own


def test_a_blank_exc_text_still_says_render_no_traceback(collector: RecordWaiter) -> None:
    """loguru's exc_text "\\n" (its message holds the traceback) keeps formatters from adding
    one, while exc_info is there for those that read it."""
    error = raised(fail)
    record = logging.LogRecord(
        "worker", logging.ERROR, __file__, 1, "message with its own traceback", (), None
    )
    record.exc_info, record.exc_text = (type(error), error, error.__traceback__), "\n"
    (replayed_record,) = replayed(collector, record_decoder.decode(capture_record(record, 1)))
    assert exc_info_of(replayed_record)[1].__traceback__ is not None
    text = logging.Formatter("%(message)s").format(replayed_record)
    assert "Traceback" not in text


def test_an_exception_without_its_frames_keeps_the_text_that_has_them(
    collector: RecordWaiter,
) -> None:
    """An exception that lost its traceback on the sender's side (loguru's enqueue=True pickles
    it away) arrives as exc_info, and the traceback the sender printed stays the text that
    formatters show (cleaned as any text of the sender's: its lines after the first indented,
    as the host cannot vouch for them)."""
    error = raised(fail)
    printed_text = printed(error)
    record = logging.LogRecord("worker", logging.ERROR, __file__, 1, "queued", (), None)
    record.exc_info, record.exc_text = (type(error), error, None), printed_text
    (replayed_record,) = replayed(collector, record_decoder.decode(capture_record(record, 1)))
    assert exc_info_of(replayed_record)[0].__name__ == "ValueError"
    assert replayed_record.exc_text == clean_block(printed_text, 10_000)
    text = logging.Formatter("%(message)s").format(replayed_record)
    assert text == "queued\n" + clean_block(printed_text, 10_000)
    assert 'in fail\n    raise ValueError("boom")' in text


def test_records_of_older_senders_keep_the_text(collector: RecordWaiter) -> None:
    """A record without structured exception keeps exc_info None and the cleaned text."""
    data = msgspec.structs.replace(logged(raised(fail)), exception=None)
    (record,) = replayed(collector, data)
    assert record.exc_info is None
    assert record.exc_text is not None and record.exc_text.endswith("ValueError: boom")


def test_the_frames_carry_the_senders_exact_positions(collector: RecordWaiter) -> None:
    """Every frame's (lineno, end_lineno, colno, end_colno) is the sender's, None included."""
    frames = [
        FrameData(__file__, 20, "spans", "", 21, 4, 9),
        FrameData(__file__, 22, "no_columns", "", 22, None, None),
        FrameData(__file__, None, "no_line"),
    ]
    data = logged(raised(fail))
    data = msgspec.structs.replace(
        data, exception=ExceptionData("ValueError", "builtins", "boom", frames)
    )
    (record,) = replayed(collector, data)
    stack = traceback.TracebackException.from_exception(exc_info_of(record)[1]).stack
    # Without columns where two threads' parses would break each other's (see the constant):
    # a line without columns is one line, as Python's own location table says.
    span = (20, None, None) if tracebacks.AST_PARSE_SHARES_STATE else (21, 4, 9)
    assert [(f.name, f.lineno, f.end_lineno, f.colno, f.end_colno) for f in stack] == [
        ("spans", 20, *span),
        ("no_columns", 22, 22, None, None),
        ("no_line", None, None, None, None),
    ]


@pytest.mark.parametrize(
    "name",
    sorted(
        name
        for name, value in vars(builtins).items()
        if isinstance(value, type) and issubclass(value, BaseException)
    ),
)
def test_every_builtin_exception_can_be_rebuilt(name: str) -> None:
    """Each builtin exception type is rebuilt as a subclass of itself, printing its message."""
    builtin = getattr(builtins, name)
    members = (
        [ExceptionData("ValueError", "builtins", "inner")]
        if issubclass(builtin, BaseExceptionGroup)
        else []
    )
    kind, value, tb = ExceptionRebuilder().rebuild(
        ExceptionData(
            name, "builtins", "the message", [FrameData(__file__, 1, "f")], members=members
        )
    )
    assert isinstance(value, builtin) and kind.__name__ == name and tb is not None
    assert str(value) == "the message"
    assert traceback.format_exception_only(value)[-1] == f"{name}: the message\n"


# -- the sender ---------------------------------------------------------------------------------


def recurse(depth: int) -> None:
    if depth:
        recurse(depth - 1)
    raise ValueError("deep")


class Unprintable(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no str")


def test_the_sender_bounds_frames_keeping_both_ends() -> None:
    """A deep traceback keeps its outermost and innermost frames, MAX_FRAMES in all."""
    data = exception_data(raised(lambda: recurse(300)))
    assert data is not None and len(data.frames) == MAX_FRAMES
    assert data.frames[0].name == "raised" and data.frames[1].name == "<lambda>"
    assert data.frames[-1].name == "recurse" and data.frames[-1].line == 'raise ValueError("deep")'


def test_the_sender_bounds_chains_and_groups() -> None:
    """Chains deeper than MAX_DEPTH and groups wider than MAX_MEMBERS are cut."""
    error: BaseException = ValueError("0")
    for number in range(1, 60):
        outer = ValueError(str(number))
        outer.__context__ = error
        error = outer
    data = exception_data(error)
    links = 0
    while data is not None:
        links += 1
        data = data.context
    assert links == MAX_DEPTH + 1
    group = exception_data(ExceptionGroup("wide", [ValueError(str(n)) for n in range(80)]))
    assert group is not None and len(group.members) == MAX_MEMBERS


def test_a_cycle_in_the_chain_prints_as_python_prints_it(collector: RecordWaiter) -> None:
    """A context loop is cut where the traceback module cuts it."""
    first, second = raised(fail), raised(implicit)
    first.__context__ = second
    second.__context__ = first
    record = round_trip(collector, first)
    assert formatted(record) == printed(first)


def test_an_exception_whose_str_raises_prints_as_python_prints_it(collector: RecordWaiter) -> None:
    """str() failing in the sender gives Python's own placeholder, and never a lost record."""
    error = raised(lambda: (_ for _ in ()).throw(Unprintable()))
    record = round_trip(collector, error)
    assert formatted(record) == printed(error)
    assert formatted(record).endswith("Unprintable: <exception str() failed>")


# -- hostile senders ----------------------------------------------------------------------------


def hostile(exception: ExceptionData) -> LogRecordData:
    return LogRecordData(
        name="worker",
        levelno=logging.ERROR,
        levelname="ERROR",
        created=1_700_000_000.0,
        message="failed",
        seq=1,
        exc_text="text",
        exception=exception,
    )


def test_a_forged_line_in_a_message_or_name_cannot_start_a_line(collector: RecordWaiter) -> None:
    """Control characters are escaped; no line of plugin text starts at column 0."""
    forged = "boom\x1b[2J\n2026-01-01 INFO isoplug.host: forged"
    error = ExceptionData(
        "2026-01-01 INFO isoplug.host: forged",
        "2026-01-01 INFO isoplug.host",
        forged,
        [FrameData("/x.py\n2026-01-01 INFO isoplug.host: forged", 1, "f\n2026-01-01 INFO forged")],
        notes=["2026-01-01 INFO isoplug.host: forged", "note\n2026-01-01 INFO forged"],
    )
    (record,) = replayed(collector, hostile(error))
    text = logging.Formatter("%(message)s").format(record)
    assert "\x1b" not in text
    assert not [line for line in text.splitlines() if line.startswith("2026")]


def test_a_rebuild_that_fails_falls_back_to_the_text_and_says_so_once(
    collector: RecordWaiter, monkeypatch: pytest.MonkeyPatch
) -> None:
    """If even a bounded rebuild fails, the record keeps its text and one report says why."""

    def broken(self: ExceptionRebuilder, data: ExceptionData) -> Any:
        raise RuntimeError("broken")

    monkeypatch.setattr(ExceptionRebuilder, "rebuild", broken)
    data = logged(raised(fail))
    replay(PREFIX, [data, msgspec.structs.replace(data, seq=2)])
    (report,) = reports(collector.records)
    records = [r for r in collector.records if not is_report(r)]
    assert "cannot rebuild an exception" in report.getMessage()
    assert all(
        r.exc_info is None and r.exc_text and "ValueError: boom" in r.exc_text for r in records
    )


def test_caches_stay_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    """Code objects and classes are cached within their bounds, whatever a sender invents."""
    monkeypatch.setattr(tracebacks, "MAX_CODES", 8)
    monkeypatch.setattr(tracebacks, "MAX_CLASSES", 8)
    rebuilder = ExceptionRebuilder()
    for number in range(50):
        frames = [FrameData("/nowhere/x.py", number, "f")]
        rebuilder.rebuild(ExceptionData(f"E{number}", "m", "", frames))
    assert len(tracebacks._codes) <= 8 and len(tracebacks._classes) <= 8


# -- consumers ----------------------------------------------------------------------------------


def test_opentelemetry_exports_the_exception_attributes(collector: RecordWaiter) -> None:
    """OpenTelemetry's LoggingHandler writes exception.type, .message and .stacktrace."""
    error = raised(chained)
    record = round_trip(collector, error)
    attributes = otel_attributes(record)
    assert attributes["exception.type"] == "RuntimeError"
    assert attributes["exception.message"] == "cannot configure"
    assert attributes["exception.stacktrace"] == host_printed(error)


def structlog_formatter() -> logging.Formatter:
    return structlog.stdlib.ProcessorFormatter(
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(),
        ]
    )


def test_structlog_renders_the_plugins_exception_never_the_hosts(collector: RecordWaiter) -> None:
    """stdlib and structlog .exception() records render the plugin's exception through
    ProcessorFormatter while the host's own exception is being handled."""
    sender = logging.getLogger("exc.structured.sender")
    structured = structlog.wrap_logger(
        sender,
        processors=[structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        wrapper_class=structlog.stdlib.BoundLogger,
    )
    with sending(sender.name) as sent:
        try:
            chained()
        except RuntimeError as exc:
            error = exc
            structured.exception("structured failure", attempt=2)
            sender.exception("stdlib failure")
    datas = [record_decoder.decode(raw) for raw in sent]
    assert datas[0].event is not None and datas[0].event["exc_info"] is True
    formatter = structlog_formatter()
    try:
        raise KeyError("the host's own exception")
    except KeyError:
        records = replayed(collector, *datas)
        outputs = [json.loads(formatter.format(record)) for record in records]
    assert [o["event"] for o in outputs] == ["structured failure", "stdlib failure"]
    assert all(o["exception"] == printed(error) for o in outputs)
    event = records[0].msg
    assert isinstance(event, dict) and event["exc_info"] is records[0].exc_info


def test_structlog_without_an_exception_resolves_nothing_in_the_host(
    collector: RecordWaiter,
) -> None:
    """exc_info=True logged outside any except block stays empty on the host too."""
    event = {"event": "no exception", "exc_info": True}
    record = logging.LogRecord("sender", logging.ERROR, __file__, 1, event, (), None)
    record._logger, record._name = None, "error"
    data = record_decoder.decode(capture_record(record, 1))
    assert data.event is not None and data.event["exc_info"] is False and data.exception is None
    try:
        raise KeyError("the host's own exception")
    except KeyError:
        (replayed_record,) = replayed(collector, data)
        output = json.loads(structlog_formatter().format(replayed_record))
    assert "exception" not in output


def test_python_json_logger_includes_the_traceback(collector: RecordWaiter) -> None:
    """python-json-logger's JsonFormatter puts the plugin's traceback in exc_info."""
    from pythonjsonlogger.json import JsonFormatter

    error = raised(implicit)
    record = round_trip(collector, error)
    output = json.loads(JsonFormatter().format(record))
    assert output["message"] == "failed"
    assert output["exc_info"] == printed(error)


# -- end to end ---------------------------------------------------------------------------------


async def test_a_plugins_exception_arrives_in_the_host_as_a_genuine_exc_info(
    tmp_path: Path,
) -> None:
    """log.exception() and structlog's .exception() in a runner reach the host with a real
    exc_info whose formatException is what the plugin printed."""
    async with running(tmp_path, "raiser") as (host, waiter):
        text = await host.call("raiser", "log_exception")
        record = await waiter.wait_for("plugin.raiser.raiser.work", "startup failed")
        structured_text = await host.call("raiser", "log_structlog_exception")
        structured = await waiter.wait_for("plugin.raiser.raiser.structured", "structured failure")
    text, structured_text = as_host_prints(text), as_host_prints(structured_text)
    kind, value, tb = exc_info_of(record)
    assert (kind.__qualname__, kind.__module__) == ("PluginError", "raiser_plugin")
    assert isinstance(value.__cause__, ValueError) and tb is not None
    assert formatted(record) == text.rstrip("\n")
    assert formatted(structured) == structured_text.rstrip("\n")
    output = json.loads(structlog_formatter().format(structured))
    assert output["exception"] == structured_text.rstrip("\n")
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.handle(record)
    assert stream.getvalue() == f"startup failed\n{text}"


class _Finalized:
    """Garbage whose finalizer runs Python code: a collection inside a parse then lets another
    thread in, as any application's garbage (sockets, generators, asyncio objects) does."""

    def __del__(self) -> None:
        sum(range(50))


def test_formatting_replayed_tracebacks_in_a_thread_never_breaks_the_hosts_own_parses(
    collector: RecordWaiter,
) -> None:
    """A host handler formats plugins' exceptions in a log thread while the application parses
    Python in its own: no parse fails. (Python 3.11.0-3.11.7 and 3.12.0-3.12.1 share the ast
    module's recursion count between threads, CPython gh-106905: a traceback printed with
    carets is a parse, and 77 of 90 of the main thread's parses raised ``SystemError: AST
    constructor recursion depth mismatch`` here before replayed frames lost their columns
    there. On other Pythons this shows that nothing else breaks.)"""
    (record,) = replayed(collector, logged(raised(chained)))
    assert record.exc_info is not None
    exc_info = record.exc_info
    source = Path(ast.__file__).read_text()
    stop = threading.Event()
    formatted_count = 0

    def format_in_a_log_thread() -> None:
        nonlocal formatted_count
        while not stop.is_set():
            for _ in range(20):
                garbage = _Finalized()
                garbage.cycle = garbage  # type: ignore[attr-defined]
            logging.Formatter().formatException(exc_info)
            formatted_count += 1

    thread = threading.Thread(target=format_in_a_log_thread)
    thread.start()
    failures: list[SystemError] = []
    try:
        for _ in range(40):
            try:
                ast.parse(source)
            except SystemError as exc:
                failures.append(exc)
    finally:
        stop.set()
        thread.join()
    assert formatted_count > 0
    assert not failures, failures[:3]
