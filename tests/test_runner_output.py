"""Inside a runner, every Python-level way out of a plugin arrives at the host as a log record."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from pathlib import Path

import pytest

from isoplug import PluginState
from isoplug.errors import ConnectionBroken
from isoplug.logs import DropReason
from isoplug.logs.streams import MAX_LINE_CHARS
from tests.plugins_fixtures import FAST, assert_printed_traceback, running

FORMATTER = logging.Formatter("%(levelname)s %(name)s: %(message)s")


def attribute(record: logging.LogRecord, name: str) -> object:
    return record.__dict__.get(name)


async def test_prints_and_writes_arrive_as_records_from_the_plugins_own_line(
    tmp_path: Path,
) -> None:
    """print, sys.stdout/stderr.write and sys.stdout.buffer.write arrive under
    plugin.<id>.stdout|stderr, located at the plugin's call, with the runner's pid."""
    async with running(tmp_path, "printer") as (host, waiter):
        pid = await host.call("printer", "pid")
        lines = await host.call("printer", "say_all")
        printed = await waiter.wait_for("plugin.printer.stdout", "printed line")
        written = await waiter.wait_for("plugin.printer.stdout", "written to stdout")
        error = await waiter.wait_for("plugin.printer.stderr", "written to stderr")
        encoded = await waiter.wait_for("plugin.printer.stdout", "bytes to stdout")
        bad = await waiter.wait_for("plugin.printer.stdout", "bad ")
    for record, call in ((printed, "print"), (written, "stdout"), (error, "stderr")):
        assert record.filename == "printer_plugin.py" and record.funcName == "say_all"
        assert record.lineno == lines[call]
        assert record.process == pid and attribute(record, "runner_pid") == pid
    assert attribute(printed, "stream") == "stdout" and printed.levelno == logging.INFO
    assert attribute(error, "stream") == "stderr" and error.levelno == logging.WARNING
    assert encoded.getMessage() == "bytes to stdout \xe9" and encoded.lineno == lines["buffer"]
    assert bad.getMessage() == "bad \ufffd"


async def test_printed_lines_follow_thread_renames_and_logger_filters(tmp_path: Path) -> None:
    """A printed line reaches exactly what its record would: a filter the plugin puts on its
    stdout logger applies, and a renamed thread's lines carry the new name."""
    async with running(tmp_path, "printer") as (host, waiter):
        await host.call("printer", "filtered_and_renamed")
        first = await waiter.wait_for("plugin.printer.stdout", "printed by first-name")
        second = await waiter.wait_for("plugin.printer.stdout", "printed by second-name")
        await waiter.wait_for("plugin.printer.stdout", "shown while filtered")
        await waiter.wait_for("plugin.printer.stdout", "hidden no more")
        messages = [record.getMessage() for record in waiter.records]
    assert (first.threadName, second.threadName) == ("first-name", "second-name")
    assert first.lineno == second.lineno
    assert "hidden line" not in messages


async def test_the_stream_api_keeps_working(tmp_path: Path) -> None:
    """write() returns the length, writelines and flush work, fileno() is the real fd, and
    the stream says it is no terminal, in UTF-8."""
    async with running(tmp_path, "printer") as (host, waiter):
        answers = await host.call("printer", "stream_api")
        await waiter.wait_for("plugin.printer.stdout", "lines 2")
    assert answers == {
        "written": len("api line\n"),
        "fileno": 1,
        "err_fileno": 2,
        "isatty": False,
        "encoding": "utf-8",
        "errors": "replace",
    }
    assert [m for m in waiter.messages() if m in ("api line", "lines 1", "lines 2")] == [
        "api line",
        "lines 1",
        "lines 2",
    ]


async def test_json_prefixed_and_traceback_lines_on_stderr_get_their_level(
    tmp_path: Path,
) -> None:
    """A JSON line and an 'ERROR:' line on stderr arrive at ERROR (the JSON's fields as
    extras); traceback.print_exc() arrives as one ERROR record."""
    async with running(tmp_path, "printer") as (host, waiter):
        await host.call("printer", "structured_stderr")
        structured = await waiter.wait_for("plugin.printer.stderr", "disk full")
        prefixed = await waiter.wait_for("plugin.printer.stderr", "ERROR: prefixed trouble")
        # Held until the classifier knows no chained traceback follows: a quiet moment.
        block = await waiter.wait_for("plugin.printer.stderr", "KeyError: 'missing'")
    assert structured.levelno == logging.ERROR and structured.getMessage() == "disk full"
    assert attribute(structured, "disk") == "sda"
    assert prefixed.levelno == logging.ERROR
    assert block.levelno == logging.ERROR
    assert_printed_traceback(block, "KeyError", "'missing'")
    assert len(waiter.matching("plugin.printer.stderr", "KeyError: 'missing'")) == 1


async def test_stdin_is_the_end_of_input(tmp_path: Path) -> None:
    """A plugin that reads stdin (input(), a library's prompt) gets EOF, as a process without a
    terminal does, not an error about a closed file; the prompt arrives as a line."""
    async with running(tmp_path, "printer") as (host, waiter):
        answers = await host.call("printer", "read_stdin")
        await waiter.wait_for("plugin.printer.stdout", "a prompt>")
    assert answers == {
        "read": "",
        "input": "EOFError: EOF when reading a line",
        "isatty": False,
        "original_isatty": False,
    }


async def test_a_progress_bar_arrives_one_record_per_update(tmp_path: Path) -> None:
    """Updates after carriage returns (tqdm's, print(..., end="\\r"), a C library's meter on
    fd 2) are records of their own, without the CR and without empty lines, instead of one
    line that grows until it is cut; on stderr at INFO (progress is no warning), a status
    frame a CR ends too, unless they say a level of their own (WARNING too). What a bar draws
    around its frames (a cursor-up it flushes, blanks clearing its line) is no record."""
    async with running(tmp_path, "printer") as (host, waiter):
        await host.call("printer", "progress")
        await waiter.wait_for("plugin.printer.stdout", "steps done")
        await waiter.wait_for("plugin.printer.stderr", "plain fd line")
        await waiter.wait_for("plugin.printer.stderr", "plain stderr line")
    messages = waiter.messages()
    assert [m for m in messages if m.startswith("bar")] == ["bar 0%", "bar 50%", "bar 100%"]
    assert [m for m in messages if m.startswith("step")] == [
        "step 1",
        "step 2",
        "step 3",
        "steps done",
    ]
    fd_bars = ["fd 1", "fd 2", "fd 3", "fd 4", "fd 5"]
    assert [m for m in messages if m.startswith("fd ")] == fd_bars
    assert "" not in messages and not any("\\x0d" in m or "\r" in m for m in messages)
    assert all(m.strip() and "\\x1b" not in m for m in messages), messages
    levels = {r.getMessage(): (r.name, r.levelno) for r in waiter.records}
    stderr = "plugin.printer.stderr"
    for bar in ("bar 0%", "bar 50%", "bar 100%", "status 20%", "inner 50%", *fd_bars):
        assert levels[bar] == (stderr, logging.INFO), (bar, levels[bar])
    assert levels["WARNING: disk almost full"] == (stderr, logging.WARNING)
    assert levels["WARNING:root:fd warning"] == (stderr, logging.WARNING)
    assert levels["ERROR: the bar broke"] == (stderr, logging.ERROR)
    assert levels["ERROR: the fd meter broke"] == (stderr, logging.ERROR)
    assert levels["plain stderr line"] == (stderr, logging.WARNING)
    assert levels["plain fd line"] == (stderr, logging.WARNING)


async def test_in_pipe_mode_a_progress_bar_arrives_one_record_per_update(tmp_path: Path) -> None:
    """With stdio = "pipe" the host splits the pipe's bytes at carriage returns the same way:
    a status frame a CR ends is INFO like the updates after it, a WARNING said after a CR
    stays one."""
    async with running(tmp_path, "piped") as (host, waiter):
        await host.call("piped", "progress", "piped bar")
        warning = await waiter.wait_for("plugin.piped.stderr", "WARNING: piped bar disk full")
    bars = [r for r in waiter.records if r.getMessage().startswith("piped bar")]
    assert [r.getMessage() for r in bars] == [
        "piped bar 0",
        "piped bar 1",
        "piped bar 2",
        "piped bar 3",
        "piped bar waiting",
    ]
    assert {r.levelno for r in bars} == {logging.INFO}
    assert warning.levelno == logging.WARNING
    assert "" not in waiter.messages()


async def test_lines_printed_by_eight_threads_at_once_arrive_whole(tmp_path: Path) -> None:
    """8 threads print 200 lines each, every line in three writes: all 1,600 arrive whole."""
    async with running(tmp_path, "printer") as (host, waiter):
        await host.call("printer", "threads", threads=8, lines=200)

        def lines() -> list[str]:
            return [r.getMessage() for r in waiter.records if r.name == "plugin.printer.stdout"]

        await waiter.wait_until(lambda: len(lines()) >= 1600)
    expected = {
        f"thread {index} line {number} " + "." * (number % 50) + "end"
        for index in range(8)
        for number in range(200)
    }
    assert sorted(lines()) == sorted(expected)


async def test_a_partial_last_line_arrives_when_the_runner_stops(tmp_path: Path) -> None:
    """Text written without a newline arrives as a line when the runner shuts down."""
    async with running(tmp_path, "printer") as (host, waiter):
        await host.call("printer", "partial_line", text="no newline before the stop")
        await host.stop("printer")
        record = await waiter.wait_for("plugin.printer.stdout", "no newline before the stop")
    assert record.getMessage() == "no newline before the stop"


async def test_an_over_long_line_unended_at_the_stop_arrives_saying_how_much_was_cut(
    tmp_path: Path,
) -> None:
    """A line past MAX_LINE_CHARS with no newline yet, pending when the runner stops, arrives
    at the exit: cut, flagged, with the count of characters cut."""
    async with running(tmp_path, "printer") as (host, waiter):
        await host.call("printer", "partial_line", text="Q" * (3 * MAX_LINE_CHARS + 11))
        await host.stop("printer")
        record = await waiter.wait_for("plugin.printer.stdout", "QQQ")
    cut = f"... [truncated {2 * MAX_LINE_CHARS + 11} characters in the emitting process]"
    assert record.getMessage() == "Q" * MAX_LINE_CHARS + cut
    assert attribute(record, "truncated") is True


async def test_warnings_and_uncaught_exceptions_arrive_as_structured_records(
    tmp_path: Path,
) -> None:
    """warnings.warn, an exception in a thread, one in __del__ and a task exception nobody
    retrieved each arrive as one record: the warning with its category and location, the
    exceptions at ERROR with exc_info."""
    async with running(tmp_path, "printer") as (host, waiter):
        line = await host.call("printer", "warn")
        warning = await waiter.wait_for("plugin.printer.py.warnings", "this is deprecated")
        await host.call("printer", "thread_raises")
        thread = await waiter.wait_for("plugin.printer", "Exception in thread doomed")
        await host.call("printer", "unraisable")
        unraisable = await waiter.wait_for("plugin.printer", "Exception ignored in")
        await host.call("printer", "task_exception")
        task = await waiter.wait_for("plugin.printer", "Task exception was never retrieved")
    assert warning.levelno == logging.WARNING
    assert warning.getMessage() == "FutureWarning: this is deprecated"
    assert attribute(warning, "category") == "builtins.FutureWarning"
    assert warning.filename == "printer_plugin.py" and warning.lineno == line
    assert warning.funcName == "warn"
    for record, kind, text in (
        (thread, "builtins.RuntimeError", "thread failed"),
        (unraisable, "builtins.ValueError", "del failed"),
        (task, "builtins.LookupError", "nobody awaited me"),
    ):
        assert record.levelno == logging.ERROR
        assert attribute(record, "exc_type") == kind
        assert record.exc_info is not None and text in FORMATTER.formatException(record.exc_info)
        assert record.filename == "printer_plugin.py"
    assert not waiter.matching("plugin.printer.stderr")


async def test_a_failed_task_the_plugin_keeps_is_reported_at_the_stop_as_a_record(
    tmp_path: Path,
) -> None:
    """asyncio reports a task's unretrieved exception only when the task is collected, which
    for a task the plugin keeps is the runner's exit, after log forwarding ended: the runner
    reports it before, as the same ERROR record with exc_info, not stderr text."""
    async with running(tmp_path, "printer") as (host, waiter):
        await host.call("printer", "kept_task_fails")
        await host.stop("printer")
        task = await waiter.wait_for("plugin.printer", "Task exception was never retrieved")
    assert task.levelno == logging.ERROR and attribute(task, "exc_type") == "builtins.LookupError"
    assert task.exc_info is not None
    assert "kept, never awaited" in FORMATTER.formatException(task.exc_info)
    assert not waiter.matching("plugin.printer.stderr")
    assert len(waiter.matching("plugin.printer", "never retrieved")) == 1


async def test_loguru_messages_keep_their_level_extras_and_exception(tmp_path: Path) -> None:
    """loguru's info, success, bound warning and exception arrive at loguru's levels, with the
    bound extra and the exception, from the plugin's line; none as stderr text."""
    async with running(tmp_path, "printer") as (host, waiter):
        await host.call("printer", "loguru")
        info = await waiter.wait_for("plugin.printer.printer_plugin", "loguru info")
        success = await waiter.wait_for("plugin.printer.printer_plugin", "loguru success")
        bound = await waiter.wait_for("plugin.printer.printer_plugin", "loguru bound")
        failed = await waiter.wait_for("plugin.printer.printer_plugin", "loguru exception")
    assert (info.levelno, info.levelname) == (logging.INFO, "INFO")
    assert (success.levelno, success.levelname) == (25, "SUCCESS")
    assert bound.levelno == logging.WARNING and attribute(bound, "user") == 42
    assert failed.levelno == logging.ERROR
    assert attribute(failed, "exc_type") == "builtins.ZeroDivisionError"
    assert failed.exc_info is not None and "1 / 0" in FORMATTER.formatException(failed.exc_info)
    assert info.filename == "printer_plugin.py" and info.funcName == "loguru"
    assert not waiter.matching("plugin.printer.stderr")


async def test_loguru_with_enqueue_keeps_its_level_extras_and_exception(tmp_path: Path) -> None:
    """loguru's enqueue=True (its sink writes in a thread of its own what the logging thread
    queued): records at their levels, with the bound extra and the exception; the traceback
    loguru printed (its queue drops the frames) is the record's text; none as stderr lines."""
    async with running(tmp_path, "printer") as (host, waiter):
        await host.call("printer", "loguru_enqueued")
        warned = await waiter.wait_for("plugin.printer.printer_plugin", "queued warning")
        failed = await waiter.wait_for("plugin.printer.printer_plugin", "queued exception")
    assert warned.levelno == logging.WARNING and attribute(warned, "user") == 7
    assert warned.filename == "printer_plugin.py" and warned.funcName == "loguru_enqueued"
    assert failed.levelno == logging.ERROR and failed.exc_info is not None
    assert failed.exc_info[1].__class__.__name__ == "ZeroDivisionError"
    shown = FORMATTER.format(failed)
    assert "Traceback (most recent call last):" in shown and "1 / 0" in shown
    assert not waiter.matching("plugin.printer.stderr")


async def test_a_segfault_still_reaches_the_host_through_the_real_stderr(
    tmp_path: Path,
) -> None:
    """faulthandler writes to fd 2, not to the replaced sys.stderr: the crash dump arrives
    as one CRITICAL record, the crashing frame in it."""
    async with running(tmp_path, "printer") as (host, waiter):
        with contextlib.suppress(ConnectionBroken):
            await host.call("printer", "segfault")
        dump = await waiter.wait_for("plugin.printer.stderr", "Fatal Python error: Segmentation")
    assert dump.levelno == logging.CRITICAL
    assert "printer_plugin.py" in dump.getMessage()
    assert len(waiter.matching("plugin.printer.stderr", "Fatal Python error")) == 1


async def test_a_printed_fatal_error_line_holds_back_none_of_the_next_lines(
    tmp_path: Path,
) -> None:
    """A plugin that prints a line starting ``Fatal Python error:`` (a quotation: a real dump
    never passes through print) and then ordinary lines: each is its own record at the
    stream's level, delivered while the plugin is still printing (it never pauses)."""
    async with running(tmp_path, "printer") as (host, waiter):
        call = asyncio.create_task(host.call("printer", "quote_fatal"))
        await waiter.wait_for("plugin.printer.stdout", "ordinary 5")
        still_printing = not call.done()
        await host.call("printer", "stop_quoting")
        more = await call
    assert still_printing and more < 60_000
    quoted = waiter.matching("plugin.printer.stdout", "Fatal Python error")
    assert [(r.levelno, r.getMessage()) for r in quoted] == [
        (logging.INFO, "Fatal Python error: quoted")
    ]
    ordinary = waiter.matching("plugin.printer.stdout", "ordinary")
    assert [(r.levelno, r.getMessage()) for r in ordinary] == [
        (logging.INFO, f"ordinary {number}") for number in range(1, 6)
    ]
    assert not waiter.matching("plugin.printer.stderr")


async def test_each_plugin_of_a_group_gets_its_own_output(tmp_path: Path) -> None:
    """Two plugins in one runner: what each prints in a call, a worker thread, a task it
    started, a thread it started (with ``threading`` or ``_thread``) and an event, and a
    task's or a thread's exception it left, lands under its own name."""
    async with running(tmp_path, "duo_a", "duo_b") as (host, waiter):
        assert host.plugin("duo_a").pid == host.plugin("duo_b").pid
        for plugin in ("duo_a", "duo_b"):
            await host.call(plugin, "speak")
            await host.call(plugin, "speak_in_thread")
            await host.call(plugin, "fail_in_task")
            await host.call(plugin, "speak_and_fail_in_own_thread")
            await host.call(plugin, "speak_in_raw_thread")
        await host.publish("chat", "hello")
        for plugin in ("duo_a", "duo_b"):
            for where in (
                "in a call",
                "in a task",
                "in a worker thread",
                "in its own thread",
                "in a raw thread",
            ):
                await waiter.wait_for(f"plugin.{plugin}.stdout", f"{plugin} {where}")
            await waiter.wait_for(f"plugin.{plugin}.stderr", f"{plugin} in an event")
            failure = await waiter.wait_for(f"plugin.{plugin}", "Task exception was never")
            assert failure.exc_info is not None
            assert f"{plugin} task failed" in FORMATTER.formatException(failure.exc_info)
            failure = await waiter.wait_for(f"plugin.{plugin}", "Exception in thread")
            assert failure.exc_info is not None
            assert f"{plugin} thread failed" in FORMATTER.formatException(failure.exc_info)
            failure = await waiter.wait_for(f"plugin.{plugin}", "in thread started by")
            assert failure.exc_info is not None
            assert f"{plugin} raw thread failed" in FORMATTER.formatException(failure.exc_info)
    assert not waiter.matching("plugin.duo")
    assert not waiter.matching("plugin.duo.stdout") and not waiter.matching("plugin.duo.stderr")


async def test_a_members_del_run_during_anothers_call_is_its_own(tmp_path: Path) -> None:
    """A member's object whose ``__del__`` raises, freed by a collection in the other member's
    call: the exception is the member's whose code raised it, by its file."""
    async with running(tmp_path, "duo_a", "duo_b") as (host, waiter):
        await host.call("duo_a", "leave_failing_garbage")
        await host.call("duo_b", "collect_garbage")
        failure = await waiter.wait_for("plugin.duo_a", "Exception ignored in")
    assert failure.exc_info is not None
    assert "duo_a failed when freed" in FORMATTER.formatException(failure.exc_info)
    assert failure.plugin_id == "duo_a"  # type: ignore[attr-defined]
    assert not waiter.matching("plugin.duo_b", "Exception ignored")
    assert not waiter.matching("plugin.duo", "Exception ignored")


class SlowHandler(logging.Handler):
    """A host handler that sleeps 50 ms every 1,000 records (a slow disk or network)."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        # Handler.handle() holds the handler's lock around emit().
        self.count += 1
        if self.count % 1000 == 0:
            time.sleep(0.05)


@pytest.mark.slow
async def test_a_plugin_printing_into_a_slow_host_is_not_hung_and_nothing_is_lost_silently(
    tmp_path: Path,
) -> None:
    """100,000 printed lines against a host handler that sleeps 50 ms per 1,000 records:
    health checks (every 0.2 s, 1 s timeout) keep passing, and every line arrives or is
    counted as dropped."""
    count = 100_000
    slow = SlowHandler()
    stdout_logger = logging.getLogger("plugin.printer.stdout")
    stdout_logger.addHandler(slow)
    config = dataclasses.replace(FAST, call_timeout=120.0)
    try:
        async with running(tmp_path, "printer", config=config) as (host, waiter):
            started = time.monotonic()
            assert await host.call("printer", "flood", count=count) == count

            # Counted as they come: formatting every record again at each look would keep
            # this loop (the host's) busy for most of the test.
            looked = flooded = 0

            def accounted() -> bool:
                nonlocal looked, flooded
                new = waiter.records[looked:]
                looked += len(new)
                flooded += sum(1 for r in new if r.getMessage().startswith("flood "))
                dropped = host.log_metrics("printer").dropped
                return flooded + sum(dropped.values()) >= count

            async with asyncio.timeout(120):
                while not accounted():
                    await asyncio.sleep(0.05)
            info = host.plugin("printer")
            elapsed = time.monotonic() - started
            metrics = host.log_metrics("printer")
    finally:
        stdout_logger.removeHandler(slow)
    assert info.state is PluginState.READY and info.restarts == 0, info
    assert elapsed > 1.0  # several health checks came and went meanwhile
    numbers = [
        int(r.getMessage().split()[1])
        for r in waiter.records
        if r.name == "plugin.printer.stdout" and r.getMessage().startswith("flood ")
    ]
    lost = sum(metrics.dropped.values())
    assert len(numbers) + lost == count, (len(numbers), metrics.dropped)
    assert len(set(numbers)) == len(numbers)
    assert set(metrics.dropped) <= {DropReason.SENDER_QUEUE_FULL, DropReason.RATE_LIMITED}
