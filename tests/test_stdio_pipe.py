"""``stdio = "pipe"``: a plugin's ``print()`` writes to its runner's pipes through the C text
streams, and the host makes the records, as it does of a C extension's output.

Each test runs a real runner of the ``piper`` fixture plugin, which chose the pipe.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from isoplug.errors import ConnectionBroken
from isoplug.logs import DropReason
from tests.plugins_fixtures import assert_printed_traceback, flood_under_a_slow_handler, running

PLUGIN = "piper"
STDOUT = f"plugin.{PLUGIN}.stdout"
STDERR = f"plugin.{PLUGIN}.stderr"


async def test_printed_lines_come_from_the_pipe_as_sanitized_counted_records_of_the_runner(
    tmp_path: Path,
) -> None:
    """In the runner, sys.stdout and sys.stderr are line-buffered C streams onto fds 1 and 2;
    each printed line arrives as a record of the plugin's stdout/stderr logger, at INFO or
    WARNING, with the runner's pid, escapes made visible, counted per stream."""
    async with running(tmp_path, PLUGIN) as (host, waiter):
        assert await host.call(PLUGIN, "streams") == [
            ["TextIOWrapper", True, 1],
            ["TextIOWrapper", True, 2],
        ]
        pid = host.plugin(PLUGIN).pid
        before = host.log_metrics(PLUGIN)
        await host.call(PLUGIN, "say", text="clear \x1b[2J and \u202eevil\u202c end")
        await host.call(PLUGIN, "say", text="to stderr", stream="stderr")
        out = await waiter.wait_for(STDOUT, "clear")
        err = await waiter.wait_for(STDERR, "to stderr")
        after = host.log_metrics(PLUGIN)
    assert out.getMessage() == "clear \\x1b[2J and \\u202eevil\\u202c end"
    assert (out.levelno, err.levelno) == (logging.INFO, logging.WARNING)
    for record, stream in ((out, "stdout"), (err, "stderr")):
        assert record.process == pid
        assert record.__dict__["stream"] == stream and record.__dict__["plugin_id"] == PLUGIN
        assert record.pathname == f"<{stream}>"  # made by the host from the pipe's text
        assert record.threadName is None and record.__dict__["taskName"] is None
        assert after.streams.get(stream, 0) - before.streams.get(stream, 0) == 1


async def test_printed_json_levels_and_tracebacks_are_classified_like_fd_output(
    tmp_path: Path,
) -> None:
    """A JSON line with a level, a ``LEVEL:`` prefix and a printed traceback: structure from
    text, as for any of the runner's fd-level output."""
    async with running(tmp_path, PLUGIN) as (host, waiter):
        json_line = '{"level": "error", "msg": "json line", "order": 7}'
        await host.call(PLUGIN, "say", text=json_line, stream="stderr")
        await host.call(PLUGIN, "say", text="CRITICAL: prefixed line")
        await host.call(PLUGIN, "print_traceback")
        structured = await waiter.wait_for(STDERR, "json line")
        prefixed = await waiter.wait_for(STDOUT, "prefixed line")
        await waiter.wait_for(STDERR, "after the traceback")
    assert structured.levelno == logging.ERROR and structured.__dict__["order"] == 7
    assert prefixed.levelno == logging.CRITICAL
    [block] = waiter.matching(STDERR, "printed boom")
    assert block.levelno == logging.ERROR
    assert_printed_traceback(block, "ValueError", "printed boom")
    assert block.exc_info is not None
    assert "piper_plugin.py" in logging.Formatter().formatException(block.exc_info)


async def test_lines_printed_by_8_threads_at_once_arrive_whole(tmp_path: Path) -> None:
    """8 threads printing 300 lines each, every line from several print() arguments: each line
    arrives whole and once (a print() is one write of one line, never split around another
    thread's)."""
    threads, lines = 8, 300
    async with running(tmp_path, PLUGIN) as (host, waiter):
        await host.call(PLUGIN, "from_threads", threads=threads, lines=lines)
        await waiter.wait_until(
            lambda: len(waiter.matching(STDOUT)) >= threads * lines or None, timeout=60
        )
        metrics = host.log_metrics(PLUGIN)
    assert not metrics.dropped
    messages = [r.getMessage() for r in waiter.matching(STDOUT)]
    expected = {f"thread {t} line {n} end" for t in range(threads) for n in range(lines)}
    assert sorted(messages) == sorted(expected)


async def test_long_lines_printed_by_threads_at_once_arrive_whole(tmp_path: Path) -> None:
    """Lines longer than the text stream's usual 8 KiB chunk, up to what the host keeps whole
    (16 KiB), printed by 4 threads at once: still one write each, never split around
    another thread's line."""
    threads, lines, width = 4, 40, 12_000
    async with running(tmp_path, PLUGIN) as (host, waiter):
        await host.call(PLUGIN, "from_threads", threads=threads, lines=lines, width=width)
        await waiter.wait_until(
            lambda: len(waiter.matching(STDOUT)) >= threads * lines or None, timeout=60
        )
        metrics = host.log_metrics(PLUGIN)
    assert not metrics.dropped
    messages = [r.getMessage() for r in waiter.matching(STDOUT)]
    filler = "x" * width
    expected = [f"thread {t} line {n} {filler} end" for t in range(threads) for n in range(lines)]
    assert sorted(messages) == sorted(expected)


async def test_logging_and_warnings_still_travel_as_records_with_their_location(
    tmp_path: Path,
) -> None:
    """Only print() and sys.stdout/sys.stderr take the pipe: a log call and a warning are still
    records made in the runner, located in the plugin's code."""
    async with running(tmp_path, PLUGIN) as (host, waiter):
        await host.call(PLUGIN, "log_and_warn")
        logged = await waiter.wait_for(f"plugin.{PLUGIN}.piper_plugin", "logged, not printed")
        warned = await waiter.wait_until(
            lambda: next(iter(waiter.select(text="a warning, not printed")), None)
        )
    assert logged.pathname.endswith("piper_plugin.py")
    assert warned.levelno == logging.WARNING and warned.pathname.endswith("piper_plugin.py")


@pytest.mark.parametrize("how", ["exit", "abort"])
async def test_a_partial_line_printed_right_before_os_exit_or_abort_arrives(
    tmp_path: Path, how: str
) -> None:
    """A line still without its newline, then ``os._exit()`` or ``os.abort()``, which run no exit
    hooks: the runner flushes the stream first, so the line reaches the host."""
    async with running(tmp_path, PLUGIN) as (host, waiter):
        with pytest.raises(ConnectionBroken):
            await host.call(PLUGIN, "last_words", how=how)
        partial = await waiter.wait_for(STDOUT, "no newline yet")
    assert partial.getMessage() == "no newline yet"


async def test_a_partial_line_is_flushed_when_the_plugin_stops(tmp_path: Path) -> None:
    """Text printed without a newline waits in the stream's buffer; a stop's exit flushes it."""
    async with running(tmp_path, PLUGIN) as (host, waiter):
        await host.call(PLUGIN, "say", text="partial at stop", end="")
        assert not waiter.matching(STDOUT, "partial at stop")
        await host.stop(PLUGIN)
        partial = await waiter.wait_for(STDOUT, "partial at stop")
    assert partial.getMessage() == "partial at stop"


@pytest.mark.slow
async def test_a_print_flood_under_a_slow_handler_never_blocks_the_plugin_and_loses_nothing_unsaid(
    tmp_path: Path,
) -> None:
    """50,000 print()s at full speed while a host handler sleeps 50 ms every 1,000 records: the
    runner is not killed as hung, and every line is delivered or counted and reported
    dropped."""
    lines = 50_000
    flood = await flood_under_a_slow_handler(tmp_path, PLUGIN, lines)
    assert flood.stopped.last_exit is not None
    assert flood.stopped.last_exit.reason == "stopped on request"
    metrics = flood.metrics
    dropped = sum(metrics.dropped.values())
    assert metrics.streams.get("stdout") == lines
    assert flood.delivered + dropped == lines
    assert flood.reported_dropped == metrics.dropped.get(DropReason.HOST_BACKLOG, 0)
