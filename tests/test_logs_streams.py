"""LogStream in-process: lines, truncation, held tracebacks, no recursion, loguru left alone."""

from __future__ import annotations

import asyncio
import io
import logging
import re
import subprocess
import sys
import traceback
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from isoplug.logs import ForwardingHandler, output_records
from isoplug.logs.output_records import sole_forwarder
from isoplug.logs.sources import attributed_to
from isoplug.logs.streams import MAX_LINE_CHARS, LogStream, is_plain_line
from isoplug.logs.textlines import LineClassifier, TextRecord
from isoplug.logs.tracebacks import ExceptionRebuilder
from isoplug.wire import ExceptionData
from isoplug.wire.sanitize import IN_EMITTING_PROCESS, cut_mark
from tests.record_waiter import RecordWaiter, watching


@pytest.fixture
def waiter() -> Iterator[RecordWaiter]:
    """Collects what reaches the 'stdout', 'stderr' and 'plugin.p.stdout' loggers (and nothing
    else)."""
    collector = RecordWaiter()
    loggers = [logging.getLogger(name) for name in ("stdout", "stderr", "plugin.p.stdout")]
    for logger in loggers:
        logger.addHandler(collector)
        logger.propagate = False
        logger.setLevel(logging.DEBUG)
    yield collector
    for logger in loggers:
        logger.removeHandler(collector)
        logger.propagate = True
        logger.setLevel(logging.NOTSET)


def test_plain_lines_are_what_the_classifier_returns_unchanged() -> None:
    """Every line the fast path takes as plain, the classifier returns as is, at the default
    (a LogStream's classifier: it starts no crash dump)."""
    lines = [
        "some line",
        "",
        "x: y",
        "a much longer line: with a colon",
        "Some line",
        "ERROR: disk full",
        "error: disk full",
        "[warn] slow",
        "<crit> on fire",
        '{"level": "error", "message": "m"}',
        "Traceback (most recent call last):",
        "Exception in thread x:",
        "  + Exception Group Traceback (most recent call last):",
        "Fatal Python error: Segmentation fault",
        "Unhandled exception in thread started by f",
        "INFO something",
        "WARNING:root:text",
        "12:30 meeting",
    ]
    for line in lines:
        if is_plain_line(line):
            classifier = LineClassifier(logging.INFO, fatal_blocks=False)
            assert classifier.feed(line) == [TextRecord(logging.INFO, line)]


def test_lines_become_records_at_the_streams_level_with_the_writers_location(
    waiter: RecordWaiter,
) -> None:
    """print() to a LogStream: one record per line, located at the print."""
    stream = LogStream("stdout", io.StringIO(), logging.INFO)
    print("first", file=stream)
    line = sys._getframe().f_lineno - 1
    stream.write("two\nthree\npart")
    stream.write("ial\n")
    assert waiter.messages() == ["first", "two", "three", "partial"]
    first = waiter.records[0]
    assert first.levelno == logging.INFO and first.name == "stdout"
    assert first.lineno == line and first.funcName.startswith("test_lines_become")
    # Exactly a plain record's attributes: it takes the encoder's fast path (the receiver
    # stamps the stream from the logger's name).
    plain = logging.LogRecord("", logging.INFO, "", 0, "", None, None)
    added_by_formatters = {"message", "asctime"}
    assert type(first) is logging.LogRecord
    assert first.__dict__.keys() - added_by_formatters == plain.__dict__.keys()


def test_a_printed_fatal_error_line_is_a_line_like_any_other(waiter: RecordWaiter) -> None:
    """No real crash dump is written through Python: a printed ``Fatal Python error:`` line
    is a quotation, at the stream's level, and the lines after it are records at once, each
    its own (none held for a quiet moment, none made CRITICAL)."""
    stream = LogStream("stdout", io.StringIO(), logging.INFO)
    print("Fatal Python error: quoted", file=stream)
    for number in range(1, 6):
        print(f"line {number}", file=stream)
    assert [(r.levelno, r.getMessage()) for r in waiter.records] == [
        (logging.INFO, "Fatal Python error: quoted")
    ] + [(logging.INFO, f"line {number}") for number in range(1, 6)]


def test_a_source_puts_lines_under_its_logger(waiter: RecordWaiter) -> None:
    """With current_source set, lines land on <source>.stdout."""
    stream = LogStream("stdout", io.StringIO(), logging.INFO)
    with attributed_to("plugin.p"):
        print("mine", file=stream)
    print("nobody's", file=stream)
    assert [(r.name, r.getMessage()) for r in waiter.records] == [
        ("plugin.p.stdout", "mine"),
        ("stdout", "nobody's"),
    ]


def in_runner(count: int) -> str:
    """The mark of a line cut ``count`` characters short in the emitting process."""
    return f"... [truncated {count} characters in the emitting process]"


def test_an_over_long_line_is_cut_marked_and_its_tail_skipped(waiter: RecordWaiter) -> None:
    """A line past MAX_LINE_CHARS arrives, once it ends, cut, flagged and saying how many
    characters were cut; only a count of the skipped tail is kept; the next line is whole."""
    stream = LogStream("stdout", io.StringIO(), logging.INFO)
    stream.write("x" * (MAX_LINE_CHARS + 10))
    for _ in range(50):
        stream.write("y" * 100_000)
    assert not waiter.records
    [state] = stream._states
    assert len(state.cut_head) == MAX_LINE_CHARS and not state.partial
    stream.write("y" * 100 + "\r\nnext\n")
    cut, following = waiter.records
    assert cut.getMessage() == "x" * MAX_LINE_CHARS + in_runner(10 + 5_000_000 + 100)
    assert cut.__dict__["truncated"] is True
    assert following.getMessage() == "next"


def test_a_line_cut_within_one_write_says_how_much_was_cut(waiter: RecordWaiter) -> None:
    """print() of a huge text (its newline in the next write), and an over-long line ended in
    the same write, say their counts; the lines around them are untouched."""
    stream = LogStream("stdout", io.StringIO(), logging.INFO)
    print("A" * 3_000_000, file=stream)
    stream.write("before\n" + "B" * (MAX_LINE_CHARS + 7) + "\r\nafter\n")
    assert waiter.messages() == [
        "A" * MAX_LINE_CHARS + in_runner(3_000_000 - MAX_LINE_CHARS),
        "before",
        "B" * MAX_LINE_CHARS + in_runner(7),
        "after",
    ]


def test_a_cut_line_is_emitted_at_flush_and_at_exit_with_its_count_so_far(
    waiter: RecordWaiter,
) -> None:
    """flush() ends the line being cut (saying how much was cut until then); what follows is a
    new line. A cut line still pending at exit arrives through flush_all, as bytes written to
    the binary buffer do."""
    stream = LogStream("stdout", io.StringIO(), logging.INFO)
    stream.write("f" * (MAX_LINE_CHARS + 3))
    stream.flush()
    stream.write("tail\n")
    stream.buffer.write(b"\xc3\xa9" * (MAX_LINE_CHARS + 5))
    stream.flush_all()
    assert waiter.messages() == [
        "f" * MAX_LINE_CHARS + in_runner(3),
        "tail",
        "\xe9" * MAX_LINE_CHARS + in_runner(5),
    ]
    assert all(record.__dict__["truncated"] for record in waiter.records[::2])


def test_reconfigure_takes_what_scripts_pass_and_refuses_what_python_refuses(
    waiter: RecordWaiter,
) -> None:
    """sys.stdout.reconfigure(...) as scripts call it works; an encoding applies to bytes
    written to the buffer; unknown encodings and newlines raise as the standard streams do."""
    stream = LogStream("stdout", io.StringIO(), logging.INFO)
    stream.reconfigure(line_buffering=True, write_through=True, errors="strict", newline="\n")
    stream.reconfigure(encoding="latin-1")
    stream.buffer.write("caf\xe9\n".encode("latin-1"))
    stream.write("still lines\n")
    assert waiter.messages() == ["caf\xe9", "still lines"]
    with pytest.raises(LookupError):
        stream.reconfigure(encoding="no-such-encoding")
    with pytest.raises(LookupError):
        stream.reconfigure(errors="no-such-handler")
    with pytest.raises(ValueError, match="illegal newline"):
        stream.reconfigure(newline="x")
    assert stream.encoding == "latin-1"


def test_flush_emits_the_partial_line(waiter: RecordWaiter) -> None:
    """flush() turns this thread's partial line into a record."""
    stream = LogStream("stdout", io.StringIO(), logging.INFO)
    stream.write("progress...")
    assert not waiter.records
    stream.flush()
    assert waiter.messages() == ["progress..."]


@pytest.mark.parametrize(
    ("writes", "lines"),
    [
        (["x", "FLUSH", "\n"], ["x"]),
        (["x\r", "FLUSH", "\n"], ["x"]),
        (["x", "FLUSH", "\r\n"], ["x"]),
        (["x", "FLUSH", "\n\n"], ["x", ""]),
        (["x", "FLUSH", " done\n"], ["x", " done"]),
        (["x", "FLUSH", "b", "\n", "\n"], ["x", "b", ""]),
        (["x", "FLUSH", "FLUSH", "\n"], ["x"]),
    ],
)
def test_the_newline_of_a_line_a_flush_emitted_makes_no_empty_line(
    waiter: RecordWaiter, writes: list[str], lines: list[str]
) -> None:
    stream = LogStream("stdout", io.StringIO(), logging.INFO)
    for text in writes:
        if text == "FLUSH":
            stream.flush()
        else:
            stream.write(text)
    assert waiter.messages() == lines


def _lines_of(text: str) -> list[str]:
    """What a stream must make of ``text``, written plainly: each line (ended by LF, CRLF or a
    CR alone; the last one partial, flushed) except, where a CR is next to it or it is the
    flushed last one, those that are only blanks and cursor-ups (terminal drawing)."""
    return [line for line, _ in _lines_and_redraws(text)]


def _lines_and_redraws(text: str) -> list[tuple[str, bool]]:
    """:func:`_lines_of`, each line with whether it follows or is ended by a CR alone (a
    redraw, a status frame)."""
    parts = re.split(r"(\r\n|\n|\r)", text)
    lines = []
    before = ""
    for line, end in zip(parts[::2], [*parts[1::2], ""], strict=True):
        redraw, before = "\r" in (before, end), end
        if line.replace("\x1b[A", "").strip() or not (redraw or end == ""):
            lines.append((line, redraw))
    return lines


@settings(max_examples=300, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    pieces=st.lists(st.sampled_from(["a", "bc", "\n", "\r", "\r\n", "é", " ", "\x1b[A"])),
    chunk_ends=st.lists(st.integers(0, 40)),
)
def test_carriage_returns_end_lines_however_the_text_is_written(
    waiter: RecordWaiter, pieces: list[str], chunk_ends: list[int]
) -> None:
    """A progress bar's ``\\r 40%`` updates are lines of their own, the same whether written
    in one call, print() by print(), or a character at a time; on stderr those next to a CR
    (a redraw, a status frame) at INFO, the others at WARNING."""
    waiter.records.clear()
    text = "".join(pieces)
    stream = LogStream("stderr", io.StringIO(), logging.WARNING)
    start = 0
    for end in [*sorted({min(end, len(text)) for end in chunk_ends}), len(text)]:
        stream.write(text[start:end])
        start = end
    stream.flush()
    assert [(r.getMessage(), r.levelno) for r in waiter.records] == [
        (line, logging.INFO if redraw else logging.WARNING)
        for line, redraw in _lines_and_redraws(text)
    ]


def test_a_progress_bar_gives_one_record_per_update(waiter: RecordWaiter) -> None:
    """tqdm writes each update after a CR and flushes; print(..., end="\\r") flushes nothing."""
    stream = LogStream("stdout", io.StringIO(), logging.INFO)
    for percent in (0, 50, 100):
        stream.write(f"\r{percent}%|{'#' * (percent // 10)}|")
        stream.flush()
    stream.write("\n")
    for step in range(3):
        print(f"step {step}", end="\r", file=stream)
    print("done", file=stream)
    bars = ["0%||", "50%|#####|", "100%|##########|"]
    assert waiter.messages() == [*bars, "step 0", "step 1", "step 2", "done"]


def test_on_stderr_a_progress_bar_is_info_unless_it_says_otherwise(
    waiter: RecordWaiter,
) -> None:
    """A line after a CR redraws the one before, a line a CR ends is a status frame: progress,
    at INFO on stderr (WARNING for its other lines), unless it says a level of its own, at
    WARNING as at any other (a prefix, JSON, a time then the level)."""
    stream = LogStream("stderr", io.StringIO(), logging.WARNING)
    for percent in (0, 100):
        stream.write(f"\r{percent}%")
        stream.flush()
    stream.write("\n")
    stream.write("plain\r[ERROR] broke\rlast\n")
    print("step", end="\r", file=stream)
    print("a message", file=stream)
    stream.write("20%\r")
    stream.write("WARNING: disk almost full\n")
    stream.write('40%\r{"level": "warning", "msg": "json"}\n')
    stream.write("\r60%\r2026-01-01 10:00:00,123 WARNING app: stamped\rWARNING: said\r")
    stream.flush()
    assert [(r.getMessage(), r.levelno) for r in waiter.records] == [
        ("0%", logging.INFO),
        ("100%", logging.INFO),
        ("plain", logging.INFO),
        ("[ERROR] broke", logging.ERROR),
        ("last", logging.INFO),
        ("step", logging.INFO),
        ("a message", logging.INFO),
        ("20%", logging.INFO),
        ("WARNING: disk almost full", logging.WARNING),
        ("40%", logging.INFO),
        ("json", logging.WARNING),
        ("60%", logging.INFO),
        ("2026-01-01 10:00:00,123 WARNING app: stamped", logging.WARNING),
        ("WARNING: said", logging.WARNING),
    ]


def test_what_nested_progress_bars_draw_around_their_frames_makes_no_record(
    waiter: RecordWaiter,
) -> None:
    """tqdm's nested bar (leave=False), as it writes to a stream and flushes: a cursor-up
    flushed alone, an empty write before the newline that moves down, blanks after a CR
    clearing the line. Only the frames are records, at INFO on stderr."""
    stream = LogStream("stderr", io.StringIO(), logging.WARNING)
    writes = ["\router 0%", "\n", "\rinner 0%", "\x1b[A", "\n", "\rinner 67%", "\x1b[A", ""]
    writes += ["\n", "\r" + " " * 20, "\x1b[A", "\router 100%", "", "\n"]
    for text in writes:
        stream.write(text)
        if text:
            stream.flush()
    stream.write(" \x1b[2K\x1b[?25l")
    stream.flush()
    stream.write("\n")
    assert [(r.getMessage(), r.levelno) for r in waiter.records] == [
        ("outer 0%", logging.INFO),
        ("inner 0%", logging.INFO),
        ("inner 67%", logging.INFO),
        ("outer 100%", logging.INFO),
    ]


def test_an_empty_write_keeps_a_flushed_lines_newline_from_making_a_line(
    waiter: RecordWaiter,
) -> None:
    stream = LogStream("stdout", io.StringIO(), logging.INFO)
    stream.write("x")
    stream.flush()
    assert stream.write("") == 0
    stream.write("\n")
    assert waiter.messages() == ["x"]


async def test_a_held_traceback_is_flushed_once_its_thread_goes_quiet(
    waiter: RecordWaiter,
) -> None:
    """A printed traceback (which a chained one might continue) arrives as one record at
    ERROR soon after the writing stops."""
    stream = LogStream("stdout", io.StringIO(), logging.INFO)
    stream.write('Traceback (most recent call last):\n  File "x.py", line 1, in f\n')
    stream.write("KeyError: 'k'\n")
    record = await waiter.wait_until(lambda: next(iter(waiter.records), None), timeout=5)
    assert record.levelno == logging.ERROR
    assert record.getMessage().endswith("KeyError: 'k'")
    stream.flush()  # whatever were still held would be a second record now
    assert len(waiter.records) == 1


def test_print_exc_in_process_gives_a_record_with_the_exception(waiter: RecordWaiter) -> None:
    """``traceback.print_exc()`` to a LogStream: one ERROR record whose exc_info is the
    exception, located at the call (not in the traceback module)."""
    stream = LogStream("stdout", io.StringIO(), logging.INFO)
    try:
        {"present": 1}["missing"]
    except KeyError:
        traceback.print_exc(file=stream)
        line = sys._getframe().f_lineno - 1
    stream.flush()
    (record,) = waiter.records
    assert record.levelno == logging.ERROR and record.getMessage() == "KeyError: 'missing'"
    assert record.exc_info is not None and record.exc_info[0] is not None
    assert record.exc_info[0].__name__ == "KeyError"
    assert (record.filename, record.lineno) == ("test_logs_streams.py", line)


def test_a_printed_traceback_that_cannot_be_rebuilt_stays_text_said_once(
    waiter: RecordWaiter, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    """Where this Python's exceptions cannot be rebuilt, printed tracebacks stay text, and
    isoplug says why once, on the real stderr, not for every traceback."""

    def fail(self: ExceptionRebuilder, data: ExceptionData) -> Any:
        raise RuntimeError("not on this Python")

    monkeypatch.setattr(ExceptionRebuilder, "rebuild", fail)
    monkeypatch.setattr(output_records, "_rebuild_failed", [])
    stream = LogStream("stdout", io.StringIO(), logging.INFO)
    text = "Traceback (most recent call last):\n  File \"x.py\", line 1, in f\nKeyError: 'k'\n"
    for _ in range(3):
        stream.write(text)
        stream.flush()
    assert [r.getMessage() for r in waiter.records] == [text.rstrip("\n")] * 3
    assert all(r.exc_info is None for r in waiter.records)
    assert capfd.readouterr().err.count("printed tracebacks stay text") == 1


def test_text_a_handler_writes_while_handling_goes_to_the_original_stream(
    waiter: RecordWaiter,
) -> None:
    """A handler that writes to the stream while handling one of its records (an error report)
    does not loop: its text goes to the original stream."""
    original = io.StringIO()
    stream = LogStream("stderr", original, logging.WARNING)

    class Noisy(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            stream.write(f"handling {record.getMessage()}\n")

    noisy = Noisy()
    logging.getLogger("stdout").addHandler(noisy)
    try:
        shared = LogStream("stdout", io.StringIO(), logging.INFO)
        print("hello", file=shared)
    finally:
        logging.getLogger("stdout").removeHandler(noisy)
    assert original.getvalue() == "handling hello\n"
    assert waiter.messages() == ["hello"]


def test_the_loguru_bridge_does_not_import_loguru() -> None:
    """Installing the bridge leaves loguru unimported; importing it later forwards it."""
    code = (
        "import sys, logging\n"
        "from isoplug.logs.loguru_bridge import install_loguru_bridge\n"
        "install_loguru_bridge()\n"
        "assert 'loguru' not in sys.modules\n"
        "seen = []\n"
        "class H(logging.Handler):\n"
        "    def emit(self, r): seen.append((r.levelname, r.getMessage()))\n"
        "logging.getLogger().addHandler(H())\n"
        "logging.getLogger().setLevel(1)\n"
        "from loguru import logger\n"
        "logger.success('done')\n"
        "assert seen == [('SUCCESS', 'done')], seen\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_a_printed_line_skips_its_record_only_when_one_forwarder_would_get_it_alone() -> None:
    """sole_forwarder (the print() fast path's condition) finds the forwarding handler only
    when it is the one handler a record would reach, unfiltered, at a level it takes."""
    forwarder = ForwardingHandler("unix:/nonexistent/socket", "token")
    root = logging.getLogger("fastpath")
    root.propagate = False
    root.addHandler(forwarder)
    child = logging.getLogger("fastpath.plugin.stdout")
    try:
        assert sole_forwarder(child, logging.INFO) is forwarder
        forwarder.setLevel(logging.WARNING)
        assert sole_forwarder(child, logging.INFO) is None
        assert sole_forwarder(child, logging.WARNING) is forwarder
        forwarder.setLevel(logging.NOTSET)
        middle = logging.getLogger("fastpath.plugin")
        other = logging.NullHandler()
        middle.addHandler(other)
        assert sole_forwarder(child, logging.INFO) is None  # a second handler on the way
        middle.removeHandler(other)
        hide = logging.Filter("nothing")
        child.addFilter(hide)
        assert sole_forwarder(child, logging.INFO) is None  # the logger's own filter
        child.removeFilter(hide)
        forwarder.addFilter(hide)
        assert sole_forwarder(child, logging.INFO) is None  # the handler's filter
        forwarder.removeFilter(hide)
        child.propagate = False
        assert sole_forwarder(child, logging.INFO) is None  # no handler reached at all
        child.propagate = True
        assert sole_forwarder(child, logging.INFO) is forwarder
    finally:
        root.removeHandler(forwarder)
        forwarder.close(timeout=0)
        child.propagate = True


def test_a_lines_task_name_is_its_tasks_and_none_outside_a_loop() -> None:
    """task_name (asked for every printed line) names the running task, and is None in a
    thread with no running loop, where asyncio.current_task() would raise."""

    async def in_a_task() -> tuple[str | None, str | None]:
        return output_records.task_name(), await asyncio.to_thread(output_records.task_name)

    async def main() -> tuple[str | None, str | None]:
        return await asyncio.create_task(in_a_task(), name="the-printer")

    assert asyncio.run(main()) == ("the-printer", None)
    assert output_records.task_name() is None


@pytest.fixture
def members() -> Iterator[RecordWaiter]:
    """Collects what reaches the loggers of plugins 'a' and 'b' (as in a group runner)."""
    with watching("plugin", propagate=False) as collector:
        yield collector


def lines_of(records: RecordWaiter) -> list[tuple[str, str]]:
    return [(r.name, r.getMessage()) for r in records.records]


def test_text_of_another_source_ends_the_partial_line_it_finds(members: RecordWaiter) -> None:
    """One thread, two sources (the plugins of a group on the loop's thread): b's text never
    joins a's partial line, which ends as a's own line; a's partial line continued by a alone
    stays one line, whether print() writes its newline apart or not."""
    stream = LogStream("stdout", io.StringIO(), logging.INFO)
    with attributed_to("plugin.a"):
        stream.write("a unfinished")
    with attributed_to("plugin.b"):
        print("b whole", file=stream)
    with attributed_to("plugin.a"):
        stream.write("a again")
    with attributed_to("plugin.b"):
        print(file=stream)
        stream.write("b in one write\n")
    with attributed_to("plugin.a"):
        stream.write("a starts ")
        print("and ends", file=stream)
        stream.write("a: level prefix")
    with attributed_to("plugin.b"):
        print("ERROR: b", file=stream)
    stream.write("nobody's")
    stream.flush()
    assert lines_of(members) == [
        ("plugin.a.stdout", "a unfinished"),
        ("plugin.b.stdout", "b whole"),
        ("plugin.a.stdout", "a again"),
        ("plugin.b.stdout", ""),
        ("plugin.b.stdout", "b in one write"),
        ("plugin.a.stdout", "a starts and ends"),
        ("plugin.a.stdout", "a: level prefix"),
        ("plugin.b.stdout", "ERROR: b"),
    ]
    assert members.records[-1].levelno == logging.ERROR


def test_another_sources_flush_emits_the_partial_line_as_its_writers(
    members: RecordWaiter,
) -> None:
    """flush() under b (or with no source, as at exit) of a's partial line: a's line."""
    stream = LogStream("stdout", io.StringIO(), logging.INFO)
    with attributed_to("plugin.a"):
        stream.write("a flushed by b")
    with attributed_to("plugin.b"):
        stream.flush()
    with attributed_to("plugin.a"):
        stream.write("a flushed at exit")
    stream.flush_all()
    assert lines_of(members) == [
        ("plugin.a.stdout", "a flushed by b"),
        ("plugin.a.stdout", "a flushed at exit"),
    ]


def test_the_skipped_tail_of_a_cut_line_ends_at_another_sources_text(
    members: RecordWaiter,
) -> None:
    """a's over-long line is cut and its tail skipped up to its newline: b's line that comes
    first is not taken for that tail, and a's line ends there, with how much was cut."""
    stream = LogStream("stdout", io.StringIO(), logging.INFO)
    with attributed_to("plugin.a"):
        stream.write("x" * (MAX_LINE_CHARS + 10))
    with attributed_to("plugin.b"):
        print("b whole", file=stream)
    assert lines_of(members) == [
        ("plugin.a.stdout", "x" * MAX_LINE_CHARS + cut_mark(10, where=IN_EMITTING_PROCESS)),
        ("plugin.b.stdout", "b whole"),
    ]


def test_a_held_traceback_is_never_continued_by_another_sources_text(
    members: RecordWaiter,
) -> None:
    """a's traceback, held for a chained one, then b's traceback at once; a's unfinished
    traceback (its partial last line too), then b's indented line: each block and line is
    its writer's, none continued by the other's text."""
    stream = LogStream("stdout", io.StringIO(), logging.INFO)
    for source in ("plugin.a", "plugin.b"):
        with attributed_to(source):
            stream.write('Traceback (most recent call last):\n  File "x.py", line 1, in f\n')
            stream.write(f"KeyError: {source!r}\n")
    with attributed_to("plugin.a"):
        stream.write('Traceback (most recent call last):\n  File "y.py", line 2, in g')
    with attributed_to("plugin.b"):
        print("  b indented", file=stream)
    stream.flush()
    assert [(name, text.splitlines()[-1]) for name, text in lines_of(members)] == [
        ("plugin.a.stdout", "KeyError: 'plugin.a'"),
        ("plugin.b.stdout", "KeyError: 'plugin.b'"),
        ("plugin.a.stdout", '  File "y.py", line 2, in g'),
        ("plugin.b.stdout", "  b indented"),
    ]
    assert [r.levelno for r in members.records] == [logging.ERROR] * 3 + [logging.INFO]
