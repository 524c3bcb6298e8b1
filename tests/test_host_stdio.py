"""Turning a runner's raw stdout/stderr bytes into log records: lines, limits, tracebacks."""

from __future__ import annotations

import logging

from isoplug.host.stdio import (
    MAX_LINE_BYTES,
    CapturedLine,
    LineSplitter,
    StdioPump,
    TracebackGrouper,
)


def test_lines_split_across_chunks_are_joined() -> None:
    """A line arriving in several chunks comes out once, whole, without its newline."""
    splitter = LineSplitter()
    assert splitter.feed(b"hel") == []
    assert splitter.feed(b"lo\nwor") == [CapturedLine("hello")]
    assert splitter.feed(b"ld\r\n\n") == [CapturedLine("world"), CapturedLine("")]
    assert splitter.flush() == []


def test_the_partial_last_line_is_returned_at_end_of_stream() -> None:
    """flush() returns text that never got its newline."""
    splitter = LineSplitter()
    splitter.feed(b"done\nno newline")
    assert splitter.flush() == [CapturedLine("no newline")]
    assert splitter.flush() == []


def test_invalid_utf8_is_replaced_not_raised() -> None:
    """Binary garbage becomes replacement characters."""
    [line] = LineSplitter().feed(b"\xff\xfeok\x80\n")
    assert line.text == "\ufffd\ufffdok\ufffd"


def test_an_over_long_line_is_cut_marked_and_its_tail_skipped() -> None:
    """Past the limit, the line is emitted once, marked truncated; the rest of it is dropped."""
    splitter = LineSplitter(max_line_bytes=10)
    lines = splitter.feed(b"a" * 25)
    assert len(lines) == 1 and lines[0].truncated
    assert lines[0].text.startswith("a" * 10) and "truncated" in lines[0].text
    assert splitter.feed(b"aaaa\nnext\n") == [CapturedLine("next")]
    assert MAX_LINE_BYTES >= 4096


def test_a_traceback_block_is_one_record_ending_at_the_exception_line() -> None:
    """From 'Traceback' through the indented frames to the exception line: one record."""
    grouper = TracebackGrouper()
    lines = [
        "before",
        "Traceback (most recent call last):",
        '  File "x.py", line 1, in <module>',
        "    1 / 0",
        "    ~~^~~",
        "ZeroDivisionError: division by zero",
        "after",
    ]
    records = [record for line in lines for record in grouper.feed(line)]
    assert records == [
        ("before", False),
        ("\n".join(lines[1:6]), True),
        ("after", False),
    ]


def test_an_unfinished_traceback_is_flushed_at_end_of_stream() -> None:
    """A process that dies mid-traceback still delivers what it printed."""
    grouper = TracebackGrouper()
    assert grouper.feed("Traceback (most recent call last):") == []
    assert grouper.feed('  File "x.py", line 1') == []
    assert grouper.flush() == [('Traceback (most recent call last):\n  File "x.py", line 1', True)]


def test_a_huge_traceback_is_emitted_in_bounded_parts() -> None:
    """Deep recursion does not build one enormous record."""
    grouper = TracebackGrouper(max_lines=5)
    records = [r for _ in range(1) for r in grouper.feed("Traceback (most recent call last):")]
    for index in range(12):
        records += grouper.feed(f"  frame {index}")
    assert records and all(text.count("\n") < 5 for text, _ in records)


def test_the_pump_emits_stdout_at_info_and_stderr_tracebacks_at_error() -> None:
    """StdioPump levels: stdout INFO, stderr WARNING, a stderr traceback ERROR."""
    emitted: list[tuple[int, str, bool]] = []

    def emit(level: int, text: str, truncated: bool) -> None:
        emitted.append((level, text, truncated))

    out = StdioPump("stdout", emit)
    out.data_received(b"hello\npartial")
    out.eof_received()
    err = StdioPump("stderr", emit)
    err.data_received(b"warn\nTraceback (most recent call last):\n  frame\nKeyError: 1\n")
    err.connection_lost(None)
    assert emitted == [
        (logging.INFO, "hello", False),
        (logging.INFO, "partial", False),
        (logging.WARNING, "warn", False),
        (logging.ERROR, "Traceback (most recent call last):\n  frame\nKeyError: 1", False),
    ]
    assert out.closed.is_set() and err.closed.is_set()
