"""A runner's fd-level stdout/stderr: read by host threads, replayed as sanitized, counted records.

The runner tests write with ``os.write`` to fd 1 and fd 2 on the plugin's event loop, as C code
or a child process would: Python-level output travels the log connection instead.
"""

from __future__ import annotations

import asyncio
import fcntl
import gc
import logging
import os
import re
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from isoplug import Host, PluginState, SupervisorConfig
from isoplug.errors import ConnectionBroken
from isoplug.host.pipe_size import GROWN_PIPE_BYTES
from isoplug.host.stdio import StdioCapture
from isoplug.host.stdio_backlog import Backlog, record_entry
from isoplug.host.stdio_lines import MAX_LINE_BYTES, CapturedLine, LineSplitter
from isoplug.host.stdio_replay import StdioDestination
from isoplug.logs import DropReason, LogReplayer
from isoplug.logs.textlines import LineClassifier
from isoplug.wire import LogRecordData
from isoplug.wire.logframes import log_batch
from isoplug.wire.sanitize import cut_mark
from tests.plugins_fixtures import (
    FAST,
    FIXTURES,
    assert_printed_traceback,
    flood_under_a_slow_handler,
    plugins_dir,
    process_alive,
)
from tests.record_waiter import RecordWaiter, watching

PLUGIN = "scribbler"
STDOUT = f"plugin.{PLUGIN}.stdout"
STDERR = f"plugin.{PLUGIN}.stderr"


# -- lines ------------------------------------------------------------------------------------


def _expected_lines(blob: bytes, limit: int) -> list[CapturedLine]:
    """What the splitter must make of ``blob``, written plainly: each line (ended by LF, CRLF or
    a CR alone; the last one partial) as text, except the empty ones a CR alone ends; a line
    over ``limit`` bytes cut there (or before the UTF-8 character the cut would split, unless
    that is the line's first), saying how many bytes were cut; a line after a CR alone marked
    redrawn, one a CR alone ends (at the very end too) a frame."""
    parts = re.split(rb"(\r\n|\n|\r)", blob)
    expected = []
    before = b""
    for line, end in zip(parts[::2], [*parts[1::2], b""], strict=True):
        redrawn, before = before == b"\r", end
        if not line and end in (b"\r", b""):
            continue
        keep = limit
        if len(line) > limit and line[limit : limit + 1] == b"\xa9" and limit > 1:
            keep = limit - 1  # "é" is the only character of two bytes, b"\xc3\xa9"
        cut = max(0, len(line) - keep)
        text = line[:keep].decode("utf-8", errors="replace")
        expected.append(
            CapturedLine(
                text + cut_mark(cut, "bytes") if cut else text, cut > 0, redrawn, end == b"\r"
            )
        )
    return expected


@settings(max_examples=300)
@given(
    pieces=st.lists(st.sampled_from([b"a", b"bc", b"\n", b"\r", b"\r\n", b"\xff", "é".encode()])),
    chunk_ends=st.lists(st.integers(0, 40)),
    limit=st.integers(1, 8),
)
def test_the_splitter_cuts_and_counts_lines_the_same_however_the_bytes_arrive(
    pieces: list[bytes], chunk_ends: list[int], limit: int
) -> None:
    blob = b"".join(pieces)
    splitter = LineSplitter(limit)
    raw: list[bytes] = []
    start = 0
    for end in [*sorted({min(end, len(blob)) for end in chunk_ends}), len(blob)]:
        raw += splitter.split(blob[start:end])
        start = end
    raw += splitter.split_end()
    assert [LineSplitter.decode(line) for line in raw] == _expected_lines(blob, limit)
    # The reader finds a redraw or a frame by a CR at either end: no other is left in a line.
    assert not any(b"\r" in line.strip(b"\r") for line in raw)


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
    """Past the limit, the line is emitted once, when it ends, flagged and saying how many bytes
    were cut; the rest of it is only counted, never held."""
    splitter = LineSplitter(max_line_bytes=10)
    assert splitter.feed(b"a" * 25) == []
    for _ in range(100):
        assert splitter.feed(b"b" * 65536) == []
    assert len(splitter._buffer) == 10
    lines = splitter.feed(b"aaaa\r\nnext\n")
    assert lines == [
        CapturedLine("a" * 10 + f"... [truncated {15 + 6_553_600 + 4} bytes]", True),
        CapturedLine("next"),
    ]
    assert MAX_LINE_BYTES >= 4096


def test_lines_cut_within_one_chunk_or_at_end_of_stream_say_how_much_was_cut() -> None:
    """An over-long line with its newline in the same chunk, one whose tail spans chunks, and
    one still unended at end of stream: each says its own count."""
    splitter = LineSplitter(max_line_bytes=4)
    assert splitter.feed(b"ok\n123456789\r\nyes\nabcdefg") == [
        CapturedLine("ok"),
        CapturedLine("1234... [truncated 5 bytes]", True),
        CapturedLine("yes"),
    ]
    assert splitter.feed(b"hij\nwxyz12") == [CapturedLine("abcd... [truncated 6 bytes]", True)]
    assert splitter.feed(b"345") == []
    assert splitter.flush() == [CapturedLine("wxyz... [truncated 5 bytes]", True)]
    assert splitter.flush() == []
    assert splitter.feed(b"again\n") == [CapturedLine("agai... [truncated 1 bytes]", True)]


# -- the capture, over a pipe of the test's own -----------------------------------------------


async def test_over_a_pipe_a_status_frame_a_cr_ends_is_info_and_drawing_alone_no_record() -> None:
    """On stderr, a line a CR alone ends (a status frame, cut or not) is INFO like the redraw
    after it, unless it says its level; text next to a CR that is only terminal drawing makes
    no record; a line a newline ends stays at the stream's level."""
    read_end, write_end = os.pipe()
    os.write(
        write_end,
        b"status 3 of 9\rstatus 4 of 9\r\n"
        b"progress\rWARNING: disk full\n"
        b"WARNING: said itself\r\x1b[K\rafter drawing\n"
        b"\x1b[A\x1b[2K   \r" + b"f" * (MAX_LINE_BYTES + 5) + b"\rplain\n",
    )
    os.close(write_end)
    replayer = LogReplayer("test.frames", identity={"plugin_id": "t", "runner_pid": 4321})
    capture = StdioCapture(
        4321, {"stderr": read_end}, StdioDestination(replayer), loop=asyncio.get_running_loop()
    )
    with watching("test.frames", propagate=False) as collected:
        capture.start()
        capture.seal()
        assert await capture.wait_read(20) and await capture.wait_replayed(20)
    got = [
        (r.levelname, r.getMessage()[:20])
        for r in collected.records
        if r.name == "test.frames.stderr"
    ]
    assert got == [
        ("INFO", "status 3 of 9"),
        ("INFO", "status 4 of 9"),
        ("INFO", "progress"),
        ("WARNING", "WARNING: disk full"),
        ("WARNING", "WARNING: said itself"),
        ("INFO", "after drawing"),
        ("INFO", "f" * 20),
        ("INFO", "plain"),
    ]
    cut = [r.getMessage() for r in collected.records if r.getMessage().startswith("ff")]
    assert cut == ["f" * MAX_LINE_BYTES + cut_mark(5, "bytes")]


async def test_a_full_backlog_drops_info_lines_first_and_counts_and_reports_them() -> None:
    """Past the backlog's bound, INFO lines are dropped and each WARNING evicts the newest of
    them; every drop is counted under HOST_BACKLOG and reported, and nothing is lost unsaid."""
    read_end, write_end = os.pipe()
    lines = [f"info {n}" for n in range(30)] + [f"WARNING: warn {n}" for n in range(5)]
    # One write under PIPE_BUF: the reader finds every line at once, so the outcome is exact.
    os.write(write_end, ("\n".join(lines) + "\n").encode())
    os.close(write_end)
    replayer = LogReplayer(
        "test.stdio", identity={"plugin_id": "t", "runner_pid": 4321}, description="plugin t"
    )
    capture = StdioCapture(
        4321,
        {"stdout": read_end},
        StdioDestination(replayer),
        loop=asyncio.get_running_loop(),
        max_records=10,
    )
    with watching("test.stdio", propagate=False) as collected:
        capture.start()
        capture.seal()
        assert await capture.wait_read(20) and await capture.wait_replayed(20)
    replayed = [r.getMessage() for r in collected.records if r.name == "test.stdio.stdout"]
    assert replayed == [*lines[:5], *lines[30:]]
    metrics = replayer.metrics
    assert metrics.received == 35 and metrics.replayed == 10
    assert metrics.dropped == {DropReason.HOST_BACKLOG: 25}
    assert metrics.streams == {"stdout": 35}
    [report] = [r.getMessage() for r in collected.records if r.name == "test.stdio"]
    assert "dropped 25 records of the stdout/stderr output of plugin t" in report
    assert "stdout INFO: 25" in report and "did not keep up" in report


def test_the_backlog_of_a_flood_is_not_tracked_by_the_garbage_collector() -> None:
    """A flood fills the backlog with tens of thousands of entries: those of plain lines must
    not be GC-tracked, or every full collection walks them all holding the GIL (the host's
    event loop waited 5-10 ms for each, several times per flood)."""
    backlog = Backlog(1000, 1 << 20)
    classifier = LineClassifier(logging.INFO)
    lines = [f"line {n}" for n in range(100)] + ['{"message": "json", "user": "x"}']
    backlog.put(
        [
            record_entry("gc-test-stream", record, time.time())
            for line in lines
            for record in classifier.feed(line, False)
        ]
    )
    gc.collect()
    tracked = [
        obj
        for obj in gc.get_objects()
        if type(obj) is tuple and len(obj) == 8 and obj[0] == "gc-test-stream"
    ]
    # Only the JSON line's entry, whose extras are a dict, stays tracked.
    assert [entry[2] for entry in tracked] == ["json"]
    items, dropped, _ = backlog.take(1000, 0)
    assert [entry[2] for entry in items] == [*lines[:100], "json"] and not dropped
    assert items[0][3] is None and items[-1][3] == {"user": "x"}


def test_captured_stdout_records_from_the_log_connection_are_counted_per_stream() -> None:
    """Records on a ``stdout``/``stderr`` logger count in ``metrics.streams`` and get
    ``record.stream`` from the host, whatever extra the sender set; a ``stream`` extra on
    another logger does not count, and is renamed ``extra_stream``."""
    replayer = LogReplayer("plugin.demo", strip_prefixes=("plugin.demo",))
    handled = RecordWaiter()

    def record(seq: int, name: str, **extra: str) -> LogRecordData:
        return LogRecordData(
            name=name, levelno=logging.INFO, levelname="INFO", created=1.0, seq=seq, extra=extra
        )

    logger = logging.getLogger("plugin.demo")
    logger.addHandler(handled)
    logger.setLevel(logging.DEBUG)
    try:
        replayer.replay(
            log_batch(
                [
                    record(1, "plugin.demo.stdout"),
                    record(2, "stderr"),
                    record(3, "plugin.member.stdout"),
                    record(4, "plugin.demo.worker", stream="stdout"),
                    record(5, "plugin.demo.worker", user="x"),
                    record(6, "plugin.demo.stderr", stream="stdout"),
                ]
            )
        )
    finally:
        logger.removeHandler(handled)
        logger.setLevel(logging.NOTSET)
    assert replayer.metrics.streams == {"stdout": 2, "stderr": 2}
    assert replayer.metrics.received == 6
    assert [(r.name, getattr(r, "stream", None)) for r in handled.records] == [
        ("plugin.demo.stdout", "stdout"),
        ("plugin.demo.stderr", "stderr"),
        ("plugin.demo.plugin.member.stdout", "stdout"),
        ("plugin.demo.worker", None),
        ("plugin.demo.worker", None),
        ("plugin.demo.stderr", "stderr"),
    ]
    assert handled.records[3].extra_stream == "stdout"  # type: ignore[attr-defined]
    assert handled.records[5].extra_stream == "stdout"  # type: ignore[attr-defined]


# -- real runners -----------------------------------------------------------------------------


@asynccontextmanager
async def running(
    tmp_path: Path, config: SupervisorConfig = FAST
) -> AsyncIterator[tuple[Host, RecordWaiter]]:
    """A started host over the scribbler plugin, and a handler seeing every record."""
    with watching() as waiter:
        async with Host(plugins_dir(tmp_path, PLUGIN), config=config) as host:
            await host.wait_ready(20)
            yield host, waiter


async def test_a_slow_handler_does_not_delay_the_host_loop(tmp_path: Path) -> None:
    """A handler that takes 2 s on a plugin.<id>.stdout record does not delay a 0.2 s sleep on
    the host's event loop, which never runs that handler itself."""
    loop = asyncio.get_running_loop()
    started: asyncio.Future[None] = loop.create_future()
    release = threading.Event()
    threads: list[threading.Thread] = []

    class Slow(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            threads.append(threading.current_thread())
            if "slow please" in record.getMessage():
                loop.call_soon_threadsafe(started.set_result, None)
                release.wait(2.0)  # a 2 s handler; the test ends it once it has measured

    slow = Slow()
    logging.getLogger(STDOUT).addHandler(slow)
    try:
        async with running(tmp_path) as (host, waiter):
            await host.call(PLUGIN, "write", fd=1, text="slow please\nafter the slow one\n")
            await asyncio.wait_for(started, 20)
            began = time.monotonic()
            await asyncio.sleep(0.2)
            elapsed = time.monotonic() - began
            release.set()
            await waiter.wait_for(STDOUT, "after the slow one")
    finally:
        release.set()
        logging.getLogger(STDOUT).removeHandler(slow)
    assert elapsed < 1.0, f"a 0.2 s sleep took {elapsed:.2f} s"
    assert threads and threading.main_thread() not in threads


async def test_escapes_and_bidi_controls_in_fd_output_arrive_escaped(tmp_path: Path) -> None:
    """Terminal escapes and bidi overrides written to fd 1 reach handlers as visible escapes."""
    async with running(tmp_path) as (host, waiter):
        await host.call(PLUGIN, "write", fd=1, text="clear \x1b[2J and \u202eevil\u202c end\n")
        record = await waiter.wait_for(STDOUT, "clear ")
    assert record.getMessage() == "clear \\x1b[2J and \\u202eevil\\u202c end"


async def test_a_forged_line_in_a_stderr_traceback_does_not_start_at_column_0(
    tmp_path: Path,
) -> None:
    """A log-looking line inside a traceback block on fd 2 is kept, but indented in the
    formatted output, where it cannot pass for a record of the host's."""
    block = (
        "Traceback (most recent call last):\n"
        '  File "plugin.py", line 3, in run\n'
        "    work()\n"
        "INFO isoplug.host: plugin scribbler: everything is fine\n"
        '  File "plugin.py", line 9, in work\n'
        "ValueError: boom\n"
        "after the block\n"
    )
    async with running(tmp_path) as (host, waiter):
        await host.call(PLUGIN, "write", fd=2, text=block)
        await waiter.wait_for(STDERR, "after the block")
    formatter = logging.Formatter("%(levelname)s %(name)s: %(message)s")
    records = [r for r in waiter.records if r.name == STDERR]
    output = "\n".join(formatter.format(r) for r in records)
    assert "INFO isoplug.host: plugin scribbler: everything is fine" in output
    assert not any(line.startswith("INFO isoplug.host") for line in output.splitlines())
    [block_record] = [r for r in records if "everything is fine" in r.getMessage()]
    assert block_record.levelno == logging.ERROR
    assert block_record.getMessage().startswith("Traceback (most recent call last):")


@pytest.mark.skipif(not hasattr(fcntl, "F_GETPIPE_SZ"), reason="pipe sizes are Linux's")
async def test_a_pipe_the_host_finds_full_grows_and_a_quiet_one_does_not(tmp_path: Path) -> None:
    """A flood of fd-level lines fills the runner's stdout pipe: the host grows it to a
    megabyte (or the kernel's cap), so the plugin waits less for it; stderr, quiet, stays."""
    with open("/proc/sys/fs/pipe-max-size") as limit:
        grown = min(GROWN_PIPE_BYTES, int(limit.read()))
    async with running(tmp_path) as (host, _):
        assert await host.call(PLUGIN, "pipe_size", fd=1) == 64 * 1024
        # Written from the plugin's loop: by the time the call returns, the host has read all
        # but the last pipeful (what it could not handle was dropped and counted).
        await host.call(PLUGIN, "flood", count=200_000, per_write=20_000)
        assert await host.call(PLUGIN, "pipe_size", fd=1) == grown
        assert await host.call(PLUGIN, "pipe_size", fd=2) == 64 * 1024


async def test_records_are_counted_per_stream_and_carry_the_runners_pid(tmp_path: Path) -> None:
    """fd-level lines count in metrics.streams, and each record names the runner's process,
    its stream, and where it came from."""
    async with running(tmp_path) as (host, waiter):
        pid = host.plugin(PLUGIN).pid
        before = host.log_metrics(PLUGIN)
        await host.call(PLUGIN, "write", fd=1, text="out 1\nout 2\nout 3\n")
        await host.call(PLUGIN, "write", fd=2, text="err 1\nerr 2\n")
        out = await waiter.wait_for(STDOUT, "out 3")
        err = await waiter.wait_for(STDERR, "err 2")
        after = host.log_metrics(PLUGIN)
    for stream, count in (("stdout", 3), ("stderr", 2)):
        assert after.streams.get(stream, 0) - before.streams.get(stream, 0) == count
    assert out.levelno == logging.INFO and err.levelno == logging.WARNING
    for record, stream in ((out, "stdout"), (err, "stderr")):
        assert record.process == pid and record.process != os.getpid()
        assert record.processName == "isoplug-runner"
        assert record.__dict__["stream"] == stream
        assert record.__dict__["truncated"] is False
        assert record.__dict__["plugin_id"] == PLUGIN
        assert record.__dict__["runner_pid"] == pid
        assert record.pathname == record.filename == f"<{stream}>"
        assert isinstance(record.lineno, int)


async def test_fd_output_of_a_group_runner_is_attributed_to_the_group(tmp_path: Path) -> None:
    """fd-level output cannot be told apart by member: it lands on plugin.<group>.stdout,
    stamped with the group's id."""
    code = (FIXTURES / PLUGIN / "scribbler_plugin.py").read_text()
    plugins = tmp_path / "plugins"
    for member in ("first", "second"):
        directory = plugins / member
        directory.mkdir(parents=True)
        (directory / f"{member}_plugin.py").write_text(code)
        (directory / "plugin.toml").write_text(
            f'id = "{member}"\nversion = "1"\nentry = "{member}_plugin:Scribbler"\ngroup = "pair"\n'
        )
    with watching() as waiter:
        async with Host(plugins, config=FAST) as host:
            await host.wait_ready(20)
            pid = host.plugin("first").pid
            await host.call("second", "write", fd=1, text="from a member\n")
            record = await waiter.wait_for("plugin.pair.stdout", "from a member")
            streams = host.log_metrics("first").streams
    assert record.__dict__["plugin_id"] == "pair" and record.process == pid
    assert streams.get("stdout") == 1


@pytest.mark.slow
async def test_a_flood_under_a_slow_handler_never_blocks_the_plugin_and_loses_nothing_unsaid(
    tmp_path: Path,
) -> None:
    """100,000 fd-level lines while a handler sleeps 50 ms every 1,000 records: the plugin never
    blocks (its health checks pass), and every line is delivered or counted dropped."""
    lines = 100_000
    flood = await flood_under_a_slow_handler(tmp_path, PLUGIN, lines)
    assert flood.returned == lines
    assert flood.stopped.last_exit is not None
    assert flood.stopped.last_exit.reason == "stopped on request"
    assert flood.stopped.restarts == 0
    metrics = flood.metrics
    backlog = metrics.dropped.get(DropReason.HOST_BACKLOG, 0)
    rate_limited = metrics.dropped.get(DropReason.RATE_LIMITED, 0)
    assert metrics.streams.get("stdout") == lines
    assert flood.delivered + backlog + rate_limited == lines
    assert flood.reported_dropped == backlog


@pytest.mark.slow
async def test_100_mb_of_binary_garbage_without_a_newline_is_one_cut_record(
    tmp_path: Path,
) -> None:
    """100 MB with no newline and no valid UTF-8 becomes one truncated record; the line after
    it arrives, and the plugin keeps answering."""
    async with running(tmp_path) as (host, waiter):
        pid = host.plugin(PLUGIN).pid
        await host.call_with(PLUGIN, "garbage", kwargs={"megabytes": 100}, timeout=60)
        await waiter.wait_for(STDOUT, "after the garbage")
        assert await host.call(PLUGIN, "pid") == pid
    records = [r for r in waiter.records if r.name == STDOUT]
    assert len(records) == 2
    cut, after = records
    assert cut.__dict__["truncated"] is True and len(cut.getMessage()) < 40_000
    assert cut.getMessage().endswith(cut_mark(100 * 1024 * 1024 - MAX_LINE_BYTES, "bytes"))
    assert "\ufffd" in cut.getMessage() and "\\x01" in cut.getMessage()
    assert after.getMessage() == "after the garbage"


async def test_binary_noise_whose_carriage_returns_end_lines_arrives_as_lines(
    tmp_path: Path,
) -> None:
    """1 MB of noise with a CR every 255 bytes is 4,000 lines at once: each is delivered or
    counted dropped, none longer than a line of the noise, and the plugin lives on."""
    megabytes = 1
    async with running(tmp_path) as (host, waiter):
        pid = host.plugin(PLUGIN).pid
        await host.call_with(
            PLUGIN, "garbage", kwargs={"megabytes": megabytes, "carriage_returns": True}
        )
        await waiter.wait_for(STDOUT, "after the garbage")
        assert await host.call(PLUGIN, "pid") == pid
        metrics = host.log_metrics(PLUGIN)
    noise = (bytes(b for b in range(256) if b != 0x0A) * 4200)[: 1024 * 1024] * megabytes
    lines = noise.count(b"\r") + 2  # the last piece of noise, ended by LF; "after the garbage"
    delivered = [r for r in waiter.records if r.name == STDOUT]
    assert metrics.streams.get("stdout") == lines
    assert len(delivered) + sum(metrics.dropped.values()) == lines
    assert all(len(r.getMessage()) < 2_000 for r in delivered)


async def test_invalid_utf8_a_10_mb_line_and_a_partial_last_line_are_delivered_safely(
    tmp_path: Path,
) -> None:
    """Invalid UTF-8 is replaced, a 10 MB line is cut and marked, and the partial last line
    arrives once the runner has exited."""
    async with running(tmp_path) as (host, waiter):
        await host.call_with(PLUGIN, "long_line", kwargs={"size": 10 * 1024 * 1024}, timeout=60)
        await waiter.wait_for(STDOUT, "after the long line")
        with pytest.raises(ConnectionBroken):
            await host.call(PLUGIN, "crash")
        partial = await waiter.wait_for(STDOUT, "no newline at the end")
    records = [r for r in waiter.records if r.name == STDOUT]
    bad, long, after = records[:3]
    assert bad.getMessage() == "bad \ufffd\ufffd bytes"
    assert long.__dict__["truncated"] is True
    assert long.getMessage().startswith("xxxx")
    assert long.getMessage() == "x" * MAX_LINE_BYTES + cut_mark(
        10 * 1024 * 1024 - MAX_LINE_BYTES, "bytes"
    )
    assert after.getMessage() == "after the long line"
    assert partial.getMessage() == "no newline at the end"


async def test_a_traceback_that_never_ends_is_delivered_when_the_stream_goes_quiet(
    tmp_path: Path,
) -> None:
    """An unfinished traceback on fd 2 is not held until the runner exits: it arrives, as one
    ERROR record, once the stream has been quiet for a moment."""
    async with running(tmp_path) as (host, waiter):
        pid = host.plugin(PLUGIN).pid
        await host.call(
            PLUGIN,
            "write",
            fd=2,
            text='Traceback (most recent call last):\n  File "x.py", line 1, in <module>\n',
        )
        record = await waiter.wait_for(STDERR, "Traceback (most recent call last):")
        info = host.plugin(PLUGIN)
        assert info.pid == pid and info.state is PluginState.READY
    assert record.levelno == logging.ERROR
    assert record.getMessage() == (
        'Traceback (most recent call last):\n  File "x.py", line 1, in <module>'
    )


async def test_a_plugin_that_closes_fd_1_and_fd_2_keeps_working(tmp_path: Path) -> None:
    """Closing both fds ends the capture; calls, health checks and the log connection go on."""
    async with running(tmp_path) as (host, waiter):
        pid = host.plugin(PLUGIN).pid
        await host.call(PLUGIN, "close_stdio")
        await host.call(PLUGIN, "log", message="still logging")
        await waiter.wait_for(f"plugin.{PLUGIN}.scribbler", "still logging")
        assert await host.call(PLUGIN, "pid") == pid
        info = await host.stop(PLUGIN)
    assert info.restarts == 0
    assert info.last_exit is not None and info.last_exit.reason == "stopped on request"


@pytest.mark.slow
async def test_a_child_writing_after_the_runner_died_is_read_until_the_drain_deadline(
    tmp_path: Path,
) -> None:
    """A child of the plugin that writes to the inherited fd 1 after the runner died is read and
    attributed until the drain deadline; then it is killed, and that end is reported."""
    loop = asyncio.get_running_loop()
    async with running(tmp_path) as (host, waiter):
        pid = host.plugin(PLUGIN).pid
        child = await host.call(PLUGIN, "spawn_orphan")
        child_exited: asyncio.Future[None] = loop.create_future()
        pidfd = os.pidfd_open(child)  # readable once the child has ended

        def ended() -> None:
            if not child_exited.done():
                child_exited.set_result(None)

        loop.add_reader(pidfd, ended)
        try:
            with pytest.raises(ConnectionBroken):
                await host.call(PLUGIN, "crash")
            orphan = await waiter.wait_for(STDOUT, "orphan after exit")
            report = await waiter.wait_for("isoplug.host", "outlived it; killed them")
            await asyncio.wait_for(child_exited, 20)
        finally:
            loop.remove_reader(pidfd)
            os.close(pidfd)
        assert not process_alive(child)
    assert orphan.process == pid and orphan.__dict__["runner_pid"] == pid
    message = report.getMessage()
    assert re.search(
        rf"runner {PLUGIN}: processes forked by its plugins outlived it; killed them: 1 process "
        rf"\(pid {child}\); they held its stdout/stderr open \d+(\.\d+)? s after it exited",
        message,
    ), message
    # Said once: no second account of the same processes on the plugin's logger.
    told = [
        r for r in waiter.records if str(child) in r.getMessage() and "killed" in r.getMessage()
    ]
    assert told == [report], [r.getMessage() for r in told]


@pytest.mark.parametrize("how", ["exit", "abort"])
async def test_last_words_printed_right_before_os_exit_or_abort_arrive(
    tmp_path: Path, how: str
) -> None:
    """``traceback.print_exc()`` and a line without its newline, then ``os._exit()`` or
    ``os.abort()`` at once: neither runs exit hooks, yet the traceback (which the stream holds
    a moment for a chained one) and the partial line arrive, from the stream's records."""
    async with running(tmp_path) as (host, waiter):
        with pytest.raises(ConnectionBroken):
            await host.call(PLUGIN, "die_after_last_words", how=how)
        traceback_record = await waiter.wait_for(STDERR, "ValueError: last words")
        partial = await waiter.wait_for(STDOUT, "no newline yet")
    assert traceback_record.levelno == logging.ERROR
    assert_printed_traceback(traceback_record, "ValueError", "last words")
    assert traceback_record.pathname.endswith("scribbler_plugin.py")  # a record, not fd text
    assert partial.getMessage() == "no newline yet"


async def test_a_crash_dump_after_an_unfinished_line_is_one_critical_record(
    tmp_path: Path,
) -> None:
    """A line left unfinished on fd 2, then ``os.abort()``: faulthandler's dump starts on the
    same line, yet the unfinished text is a record of its own and the dump one CRITICAL
    record, as without it."""
    async with running(tmp_path) as (host, waiter):
        with pytest.raises(ConnectionBroken, match="SIGABRT"):
            await host.call(PLUGIN, "abort_after_writing", "unfinished")
        dump = await waiter.wait_for(STDERR, "Fatal Python error: Aborted")
        await waiter.wait_for(STDERR, "unfinished")
    assert dump.levelno == logging.CRITICAL
    assert dump.getMessage().startswith("Fatal Python error: Aborted\n")
    assert "Current thread" in dump.getMessage()
    stderr = [r for r in waiter.records if r.name == STDERR]
    assert [r.getMessage() for r in stderr] == ["unfinished", dump.getMessage()]


def test_the_splitter_starts_a_crash_dump_on_a_line_of_its_own() -> None:
    """After unfinished text, a dump's first line (in its own write, or in the same chunk and
    unfinished, or followed by a dump's next lines) starts a line; a line that only quotes
    one, written whole, stays whole."""
    splitter = LineSplitter()
    assert splitter.split(b"partial") == []
    assert splitter.split(b"Fatal Python error: ") == [b"partial"]
    assert splitter.split(b"Aborted\n\n") == [b"Fatal Python error: Aborted", b""]
    for chunk in (
        b"partialFatal Python error: Aborted\n\nCurrent thread 0x1:\n",
        b"partialFatal Python error: f: msg\nPython runtime state: initialized\n",
        b"partialFatal Python error: Segm",
    ):
        splitter = LineSplitter()
        lines = splitter.split(chunk) + splitter.split_end()
        assert lines[:2] == [b"partial", chunk[7:].split(b"\n")[0]]
    quoted = b"worker 3 said Fatal Python error: Aborted, and left\nnext\n"
    assert LineSplitter().split(quoted) == quoted.split(b"\n")[:2]


async def test_a_traceback_printed_right_before_a_segfault_arrives(tmp_path: Path) -> None:
    """``traceback.print_exc()`` then a segfault, which runs no Python: the traceback is not
    held for a chained one (print_exc printed the whole chain), so it is a record already."""
    async with running(tmp_path) as (host, waiter):
        with pytest.raises(ConnectionBroken, match="SIGSEGV"):
            await host.call(PLUGIN, "die_after_last_words", how="segfault")
        record = await waiter.wait_for(STDERR, "ValueError: last words")
    assert record.levelno == logging.ERROR
    assert_printed_traceback(record, "ValueError", "last words")
