"""The log pipeline inside the plugin runtime: a plugin's records in the host's own logging."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import shutil
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from isoplug import Host
from isoplug.errors import ConnectionBroken
from isoplug.logs import DropReason, ReplayLimits
from isoplug.logs.handler import WRITE_THROUGH_RATE
from isoplug.rpc import BlockingChannel
from isoplug.testing import eventually
from tests.plugins_fixtures import FAST, FIXTURES, running
from tests.record_waiter import RecordWaiter, attached


def numbered(waiter: RecordWaiter) -> list[int]:
    return [r.n for r in waiter.records if hasattr(r, "n")]


async def test_plugin_records_arrive_with_their_fields_and_the_hosts_identity(
    tmp_path: Path,
) -> None:
    """A plugin's record lands under plugin.<id>.<logger> with its fields, extras and the
    plugin id and runner pid stamped by the host."""
    async with running(tmp_path, "chronicler") as (host, waiter):
        pid = await host.call("chronicler", "pid")
        await host.call("chronicler", "log_numbered", count=3)
        await waiter.wait_until(lambda: waiter.records[2] if len(numbered(waiter)) >= 3 else None)
        metrics = host.log_metrics("chronicler")
    record = next(r for r in waiter.records if getattr(r, "n", None) == 0)
    assert record.name == "plugin.chronicler.chronicler.work"
    assert record.getMessage() == "record 0"
    assert record.user == "ann"  # type: ignore[attr-defined]
    assert record.plugin_id == "chronicler" and record.runner_pid == pid  # type: ignore[attr-defined]
    assert record.process == pid and record.funcName == "log_numbered"
    assert record.filename == "chronicler_plugin.py"
    assert metrics.received >= 3 and metrics.replayed >= 3 and metrics.bytes > 0


async def test_exceptions_arrive_with_their_traceback_once(tmp_path: Path) -> None:
    """log.exception() in a plugin arrives with the traceback text and the exception type."""
    async with running(tmp_path, "chronicler") as (host, waiter):
        await host.call("chronicler", "log_exception")
        record = await waiter.wait_for("plugin.chronicler.chronicler.work", "lookup failed")
    assert record.exc_text is not None and "KeyError: 'missing'" in record.exc_text
    assert record.exc_type == "builtins.KeyError"  # type: ignore[attr-defined]
    formatted = logging.Formatter("%(message)s").format(record)
    assert formatted.count("Traceback (most recent call last)") == 1


async def test_a_plugin_cannot_log_as_the_host(tmp_path: Path) -> None:
    """A plugin logging as 'isoplug.host' lands under its own prefix, forged line indented."""
    async with running(tmp_path, "chronicler") as (host, waiter):
        await host.call("chronicler", "forge")
        record = await waiter.wait_for("plugin.chronicler.isoplug.host", "I am the host")
    assert record.getMessage() == "I am the host\n  INFO isoplug.host: all good"


async def test_records_logged_right_before_the_runner_dies_arrive(tmp_path: Path) -> None:
    """Records a plugin logs immediately before os._exit reach the host, all of them."""
    async with running(tmp_path, "chronicler") as (host, waiter):
        with contextlib.suppress(ConnectionBroken):  # the runner dies during the call
            await host.call("chronicler", "log_and_die", count=200)
        await waiter.wait_until(
            lambda: waiter.records[-1] if len(numbered(waiter)) >= 200 else None
        )
        # Restarted: by then the dead runner's log connection has long been closed.
        await host.wait_for("chronicler", lambda info: info.restarts >= 1, timeout=20)
    assert numbered(waiter) == list(range(200))
    # The supervisor reports the death; the log bridge does not repeat it.
    assert not waiter.matching("plugin.chronicler", "without a goodbye")


@pytest.mark.parametrize("how", ["exit", "sigkill", "segfault"])
async def test_a_runner_dying_at_full_speed_loses_nothing(tmp_path: Path, how: str) -> None:
    """At full speed a runner's last records wait in its queue, and in its shared-memory ring:
    when it dies with them (os._exit, SIGKILL, a segfault), the host recovers them from the
    ring and replays them in order; nothing is lost, nor reported lost."""
    count = 10_000
    async with running(tmp_path, "chronicler") as (host, waiter):
        with contextlib.suppress(ConnectionBroken):  # the runner dies during the call
            await host.call("chronicler", "log_and_die", count=count, how=how)
        await waiter.wait_until(lambda: len(numbered(waiter)) >= count)
        metrics = host.log_metrics("chronicler")
    assert numbered(waiter) == list(range(count))
    assert not metrics.dropped
    assert not waiter.matching("plugin.chronicler", "log records it had accepted")


async def test_logs_flow_while_the_plugin_blocks_its_event_loop(tmp_path: Path) -> None:
    """A record logged before the plugin blocks its loop arrives while it is still blocked."""
    patient = dataclasses.replace(FAST, health_timeout=30.0)
    release = tmp_path / "release"
    async with running(tmp_path, "chronicler", config=patient) as (host, waiter):
        call = asyncio.create_task(host.call("chronicler", "log_then_block", until=str(release)))
        await waiter.wait_for("plugin.chronicler", "blocking the event loop now", timeout=20)
        # Still blocked: it blocks until released.
        assert not call.done()
        release.touch()
        await call


async def test_a_process_the_plugin_forks_logs_under_the_plugin_with_its_own_pid(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A forked child's records arrive under the plugin, stamped with its runner's pid as
    ``runner_pid`` and its own as ``process`` (the kernel's word, not the payload's); the
    plugin's metrics count both processes' records."""
    caplog.set_level(logging.INFO, logger="isoplug.host")
    async with running(tmp_path, "chronicler") as (host, waiter):
        runner_pid = await host.call("chronicler", "pid")
        await host.call("chronicler", "log_numbered", count=20)
        child_pid = await host.call("chronicler", "fork_and_log", count=20)
        await waiter.wait_until(lambda: len(numbered(waiter)) >= 40 or None)
        metrics = host.log_metrics("chronicler")
    assert sorted(numbered(waiter)) == list(range(40))
    by_number = {r.n: r for r in waiter.records if hasattr(r, "n")}
    assert {by_number[n].runner_pid for n in range(40)} == {runner_pid}  # type: ignore[attr-defined]
    assert {by_number[n].process for n in range(20)} == {runner_pid}
    assert {by_number[n].process for n in range(20, 40)} == {child_pid}
    assert all(by_number[n].plugin_id == "chronicler" for n in range(40))  # type: ignore[attr-defined]
    assert f"log connection from pid {child_pid}, a descendant of runner pid {runner_pid}" in (
        caplog.text
    )
    assert metrics.received >= 40 and metrics.replayed >= 40


async def test_a_plugin_cannot_multiply_its_rate_limit_by_forking(tmp_path: Path) -> None:
    """The runner and the processes it forks draw on one rate limit: 40 + 40 records against
    a burst of 50 (and 1 more a second) lose about 30, counted and reported."""
    limits = ReplayLimits(rate=1.0, burst=50)
    async with running(tmp_path, "chronicler", log_limits=limits) as (host, waiter):
        await host.call("chronicler", "log_numbered", count=40)
        await host.call("chronicler", "fork_and_log", count=40)

        def accounted() -> bool:
            limited = host.log_metrics("chronicler").dropped.get(DropReason.RATE_LIMITED, 0)
            return len(numbered(waiter)) + limited == 80

        # Polled: the last records may be dropped, and a drop wakes no record waiter.
        async with asyncio.timeout(20):
            while not accounted():
                await asyncio.sleep(0.01)
        await waiter.wait_for("plugin.chronicler", "rate limit")
    assert 50 <= len(numbered(waiter)) <= 60  # the burst, and what a few seconds refilled


class StuckOnFirstRecord(logging.Handler):
    """A host-side handler that hangs on record 0 (a network logger whose server stalls)
    until released, and notes whether it had to give up waiting."""

    def __init__(self) -> None:
        super().__init__()
        self.stuck = threading.Event()
        self.let_go = threading.Event()
        self.gave_up = False

    def emit(self, record: logging.LogRecord) -> None:
        if getattr(record, "n", None) == 0:
            self.stuck.set()
            self.gave_up = not self.let_go.wait(10)


async def test_a_stuck_host_handler_holds_back_only_that_plugins_logs(tmp_path: Path) -> None:
    """Plugin records are replayed off the host's event loop: while a host handler hangs on
    one, the host still answers calls; the plugin's later records wait, then all arrive."""
    handler = StuckOnFirstRecord()
    logging.getLogger("plugin.chronicler").addHandler(handler)
    try:
        async with running(tmp_path, "chronicler") as (host, waiter):
            await host.call("chronicler", "log_numbered", count=50)
            assert await asyncio.to_thread(handler.stuck.wait, 10)
            # The loop is free: a call goes round trip while the handler still hangs.
            pid = await host.call("chronicler", "pid")
            handler.let_go.set()
            await waiter.wait_until(lambda: len(numbered(waiter)) >= 50 or None)
    finally:
        logging.getLogger("plugin.chronicler").removeHandler(handler)
    assert not handler.gave_up, "the call could not run while a log handler hung"
    assert numbered(waiter) == list(range(50))
    assert all(r.runner_pid == pid for r in waiter.records)  # type: ignore[attr-defined]


async def test_the_host_sets_a_plugins_level_at_the_source(tmp_path: Path) -> None:
    """After set_log_level(WARNING) INFO records are not even sent; lowering it again works."""
    async with running(tmp_path, "chronicler") as (host, waiter):
        await host.set_log_level("chronicler", "WARNING")
        await host.call("chronicler", "log_numbered", count=5)
        await host.call("chronicler", "log_numbered", count=1, level=logging.ERROR)
        await waiter.wait_until(
            lambda: next((r for r in waiter.records if r.levelno == logging.ERROR), None)
        )
        received = host.log_metrics("chronicler").received
        assert [r.levelno for r in waiter.records if hasattr(r, "n")] == [logging.ERROR]
        await host.set_log_level("chronicler", logging.DEBUG)
        await host.call("chronicler", "log_numbered", count=2, level=logging.DEBUG)
        await waiter.wait_until(lambda: waiter.records[-1] if len(numbered(waiter)) >= 3 else None)
        assert host.log_metrics("chronicler").received == received + 2


@pytest.mark.parametrize(
    ("setting", "rate"), [("", WRITE_THROUGH_RATE), ("0", 0.0), ("500", 500.0)]
)
async def test_the_manifest_sets_the_runners_write_through_rate(
    tmp_path: Path, setting: str, rate: float
) -> None:
    """log_write_through_rate in plugin.toml reaches the runner's forwarding handler."""
    plugin = tmp_path / "plugins" / "chronicler"
    shutil.copytree(FIXTURES / "chronicler", plugin)
    manifest = plugin / "plugin.toml"
    if setting:
        manifest.write_text(
            manifest.read_text().replace(
                'log_level = "DEBUG"\n',
                f'log_level = "DEBUG"\nlog_write_through_rate = {setting}\n',
            )
        )
    async with Host(tmp_path / "plugins", config=FAST) as host:
        await host.wait_ready(20)
        assert await host.call("chronicler", "write_through_rate") == rate


class RaisesOnce(logging.Handler):
    """A host handler that raises once, on the first record ``fails_on`` picks: in its
    ``emit``, in its ``handle`` itself, or in a filter of its own (``where``)."""

    def __init__(self, where: str, fails_on: Callable[[logging.LogRecord], bool]) -> None:
        super().__init__()
        self.where = where
        self.fails_on = fails_on
        self.raised = False
        if where == "filter":
            self.addFilter(self.check)

    def check(self, record: logging.LogRecord) -> bool:
        if not self.raised and self.fails_on(record):
            self.raised = True
            raise RuntimeError(f"cannot ship {record.getMessage()!r}")
        return True

    def handle(self, record: logging.LogRecord) -> bool | logging.LogRecord:  # type: ignore[override]
        if self.where == "handle":
            self.check(record)
        return super().handle(record)

    def emit(self, record: logging.LogRecord) -> None:
        if self.where == "emit":
            self.check(record)


def handler_reports(waiter: RecordWaiter) -> list[logging.LogRecord]:
    return [r for r in waiter.records if r.name == "isoplug.host" and "handler" in r.getMessage()]


@pytest.mark.parametrize("where", ["emit", "handle", "filter"])
async def test_a_host_handler_that_raises_costs_that_record_only(
    tmp_path: Path, where: str
) -> None:
    """A host handler that raises on one plugin record (in emit, in handle, or in its filter):
    that record misses the handlers from there on, nothing else does. The connection lives,
    the plugin's later records arrive, the runner is never restarted, and the host's own
    logger reports the error once, with its traceback."""
    handler = RaisesOnce(where, lambda record: getattr(record, "n", None) == 1)
    with attached(handler, "plugin.chronicler"):
        async with running(tmp_path, "chronicler", logger=None) as (host, waiter):
            pid = await host.call("chronicler", "pid")
            await host.call("chronicler", "log_numbered", count=3)
            await host.call("chronicler", "log_numbered", count=3)
            await waiter.wait_until(lambda: len(numbered(waiter)) >= 5 or None)
            metrics = host.log_metrics("chronicler")
            assert await host.call("chronicler", "pid") == pid  # the same runner
    assert numbered(waiter) == [0, 2, 0, 1, 2]
    assert metrics.handler_errors == 1 and metrics.replayed >= 6
    (report,) = handler_reports(waiter)
    formatted = logging.Formatter("%(levelname)s %(name)s: %(message)s").format(report)
    assert formatted.startswith(
        "ERROR isoplug.host: a log handler raised RuntimeError: cannot ship 'record 1' on a "
        "record of plugin chronicler (logger plugin.chronicler.chronicler.work); the handlers "
        "after it missed that record, later records still reach all of them"
    )
    # The traceback shows where the host's handler failed.
    assert "Traceback (most recent call last):" in formatted and ", in check\n" in formatted


async def test_a_host_handler_that_raises_on_a_stdout_line_costs_that_line_only(
    tmp_path: Path,
) -> None:
    """The same for a runner's fd-level output: the line that met the raising handler is the
    only one that misses it; the next lines arrive, and the error is counted and reported."""
    handler = RaisesOnce("emit", lambda record: record.getMessage() == "first")
    with attached(handler, "plugin.scribbler.stdout"):
        async with running(tmp_path, "scribbler", logger=None) as (host, waiter):
            await host.call("scribbler", "write", fd=1, text="first\nsecond\n")
            await host.call("scribbler", "write", fd=1, text="third\n")
            await waiter.wait_for("plugin.scribbler.stdout", "third")
            metrics = host.log_metrics("scribbler")
    lines = [r.getMessage() for r in waiter.records if r.name == "plugin.scribbler.stdout"]
    assert lines == ["second", "third"]
    assert metrics.handler_errors == 1
    (report,) = handler_reports(waiter)
    assert "on a record of plugin scribbler (logger plugin.scribbler.stdout)" in (
        report.getMessage()
    )


async def end_log_connections(host: Host) -> int:
    """End every log connection the host serves, from the host's side, as a broken one ends
    (the host itself never does so while a runner lives, protocol errors aside), and wait
    until the host is through with them: what the runner sends next meets a closed socket.

    The wait keeps apart a race this test is not about: a record the runner accepts while the
    host is still ending the old connection is recovered from that connection's ring and also
    sent again on the new one, and replayed once (tests/test_logs_chains.py)."""
    server = host._log_bridge._server
    assert server is not None
    channels = [c for c in list(server._connections.values()) if isinstance(c, BlockingChannel)]
    for channel in channels:
        channel.interrupt()
    await eventually(lambda: not any(c in channels for c in list(server._connections.values())))
    return len(channels)


async def test_a_runner_whose_log_connection_breaks_reconnects(tmp_path: Path) -> None:
    """When a runner's log connection breaks, its next record finds out: the runner (never
    hung by it) reconnects, the host reports the reconnection, and the records continue on
    the new connection with no gap and nothing lost."""
    async with running(tmp_path, "chronicler") as (host, waiter):
        pid = await host.call("chronicler", "pid")
        await host.call("chronicler", "log_numbered", count=3)
        await waiter.wait_until(lambda: len(numbered(waiter)) >= 3 or None)
        last_seq = max(getattr(r, "seq", 0) for r in waiter.records)
        assert await end_log_connections(host) == 1
        await host.call("chronicler", "log_numbered", count=3)
        report = await waiter.wait_for("plugin.chronicler", "reconnected")
        await waiter.wait_until(lambda: len(numbered(waiter)) >= 6 or None)
        assert await host.call("chronicler", "pid") == pid  # the same runner, never hung
        metrics = host.log_metrics("chronicler")
    assert numbered(waiter) == [0, 1, 2, 0, 1, 2]
    assert report.getMessage() == (
        "plugin chronicler reconnected after its log connection broke; it lost no log record "
        f"meanwhile, and its records continue after #{last_seq}"
    )
    assert not [r for r in waiter.records if "never arrived" in r.getMessage()]
    assert not metrics.dropped
