"""An application's log handler or filter that raises on the host's own records (a network
handler during an outage, a filter reading a ContextVar with no default) costs those records
only: supervision, restarts, calls, stop and close go on, and the failure is said once on
stderr, never through the handlers (isoplug.log_guard)."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
from pathlib import Path

import pytest

from isoplug import Host, PluginState, log_guard
from isoplug.errors import ConnectionBroken
from isoplug.host import PluginInfo, StateChange
from isoplug.log_guard import OwnRecordFailures, guarded_logger
from isoplug.testing import Records
from tests.plugins_fixtures import FAST, plugins_dir, process_alive, running
from tests.record_waiter import attached

#: The first line of the report of a failure on isoplug's own records.
REPORTED = "isoplug: a log handler, filter or record factory raised "
#: Bounds a step that hung before the fix (a restart that never returned): a failure, not
#: a hung test run.
HANG = 20.0


@pytest.fixture
def failures(monkeypatch: pytest.MonkeyPatch) -> OwnRecordFailures:
    """A fresh account of this process's failures on isoplug's own records, so that what the
    test causes is said as the first failure; no summary within the test, however slow the
    machine (a summary is tested on its own below)."""
    fresh = OwnRecordFailures(interval=float("inf"))
    monkeypatch.setattr(log_guard, "failures", fresh)
    return fresh


class FailsOnStateChanges(logging.Handler):
    """Raises on the next ``fail`` records of a plugin's state changes (``plugin <id>: ...``),
    as a network handler does while its collector is unreachable."""

    def __init__(self, plugin_id: str) -> None:
        super().__init__()
        self.prefix = f"plugin {plugin_id}: "
        self.fail = 0
        self.failed_on: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if self.fail > 0 and message.startswith(self.prefix):
            self.fail -= 1
            self.failed_on.append(message)
            raise ConnectionError("log collector unreachable")


class RaisesOnEvery(logging.Handler):
    """Raises on every record it gets, in ``emit`` or, as a web application's request-id
    filter does outside a request, in a filter (``where``)."""

    request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id")

    def __init__(self, where: str) -> None:
        super().__init__()
        self.where = where
        if where == "filter":
            self.addFilter(self.stamp)

    def stamp(self, record: logging.LogRecord) -> bool:
        record.request_id = self.request_id.get()  # LookupError: no request, no default
        return True

    def emit(self, record: logging.LogRecord) -> None:
        if self.where == "emit":
            raise RuntimeError("log handler broke")


async def crash_and_wait_restarted(host: Host, pid: int) -> PluginInfo:
    """Crash the echo plugin's runner ``pid``; its next runner, once ready."""
    with contextlib.suppress(ConnectionBroken):  # the runner dies during the call
        await host.call("echo", "crash")
    info = await host.wait_for(
        "echo",
        lambda i: (
            i.state is PluginState.FAILED
            or (i.state is PluginState.READY and i.pid not in (None, pid))
        ),
        HANG,
    )
    assert info.state is PluginState.READY, info.summary()
    return info


async def test_a_handler_failing_on_the_crash_reports_leaves_the_plugin_restarted(
    tmp_path: Path, failures: OwnRecordFailures, capsys: pytest.CaptureFixture[str]
) -> None:
    """The application's handler raises on the state changes the supervisor logs as a plugin
    crashes ("crashed: ...; restarting", "restart #1"): the plugin is restarted and serves
    all the same (it ended FAILED, "the supervisor itself failed", or stayed RESTARTING)."""
    handler = FailsOnStateChanges("echo")
    with attached(handler, "isoplug.host"):
        async with running(tmp_path, "echo") as (host, _):
            pid = await host.call("echo", "pid")
            handler.fail = 2
            info = await crash_and_wait_restarted(host, pid)
            assert info.restarts == 1 and info.error is None
            assert await host.call("echo", "echo", "after") == "after"
    assert [m.split(": ")[1] for m in handler.failed_on] == ["crashed", "restart #1"]
    assert failures.count == 2
    said = capsys.readouterr().err
    assert said.count(REPORTED) == 1, said
    assert (
        f"{REPORTED}ConnectionError: log collector unreachable on a record of isoplug.host "
        "(WARNING: plugin echo: crashed: runner echo (pid " in said
    )
    assert "Traceback (most recent call last):" in said and ", in emit\n" in said


async def test_a_handler_failing_on_the_restart_reports_lets_restart_return(
    tmp_path: Path, failures: OwnRecordFailures, capsys: pytest.CaptureFixture[str]
) -> None:
    """The same during host.restart(): it returns a ready plugin (it left the plugin FAILED,
    or never returned, the plugin STARTING and its calls refused)."""
    handler = FailsOnStateChanges("echo")
    with attached(handler, "isoplug.host"):
        async with running(tmp_path, "echo") as (host, _):
            for failing in (1, 2):
                pid = await host.call("echo", "pid")
                handler.fail = failing
                info = await asyncio.wait_for(host.restart("echo"), HANG)
                assert info.state is PluginState.READY and info.error is None
                assert await host.call("echo", "pid") != pid
    assert handler.fail == 0 and len(handler.failed_on) == 3
    assert failures.count == 3
    assert capsys.readouterr().err.count(REPORTED) == 1


@pytest.mark.parametrize("where", ["emit", "filter"])
async def test_a_handler_raising_on_every_host_record_costs_those_records_only(
    tmp_path: Path, where: str, failures: OwnRecordFailures, capsys: pytest.CaptureFixture[str]
) -> None:
    """A handler (or its filter) that raises on every record of isoplug's loggers, from
    before the start to the close: the host starts, a crashed plugin is restarted,
    restart() returns, calls are served, stop() stops and the close ends every runner. The
    failures are counted, and said once."""
    with attached(RaisesOnEvery(where), "isoplug"):
        async with running(tmp_path, "echo") as (host, _):
            first = await host.call("echo", "pid")
            second = (await crash_and_wait_restarted(host, first)).pid
            assert second is not None
            restarted = await asyncio.wait_for(host.restart("echo"), HANG)
            assert restarted.state is PluginState.READY and restarted.pid not in (first, second)
            assert await host.call("echo", "echo", "served") == "served"
            last = await host.call("echo", "pid")
            stopped = await asyncio.wait_for(host.stop("echo"), HANG)
            assert stopped.state is PluginState.STOPPED and stopped.error is None
            assert not process_alive(last)
            again = await asyncio.wait_for(host.restart("echo"), HANG)
            assert again.state is PluginState.READY
            running_pid = again.pid
        assert running_pid is not None and not process_alive(running_pid)
    # Every state change failed at least: starting, ready, crashed, restart, ready, restarting,
    # ready, stopped, starting, ready, stopped.
    assert failures.count >= 11
    said = capsys.readouterr().err
    assert said.count(REPORTED) == 1, said
    error = "RuntimeError: log handler broke" if where == "emit" else "LookupError: <ContextVar"
    assert f"{REPORTED}{error}" in said
    for trouble in ("Task exception was never retrieved", "--- Logging error ---"):
        assert trouble not in said


@pytest.mark.parametrize("where", ["emit", "filter"])
async def test_a_handler_raising_on_every_host_record_lets_stop_and_close_end_the_runners(
    tmp_path: Path, where: str, failures: OwnRecordFailures, capsys: pytest.CaptureFixture[str]
) -> None:
    """A handler (or its filter) that starts raising on every record of isoplug's loggers
    while plugins run: stop() stops one, the close ends the other, both runners end, and
    on_change is told both stops (the supervisors' tasks ended in the record's error before
    telling it)."""
    changes: list[StateChange] = []
    directory = plugins_dir(tmp_path, "echo", "quitter")
    async with Host(directory, config=FAST, on_change=changes.append) as host:
        await host.wait_ready(HANG)
        pids = [await host.call(plugin, "pid") for plugin in ("echo", "quitter")]
        with attached(RaisesOnEvery(where), "isoplug"):
            stopped = await asyncio.wait_for(host.stop("echo"), HANG)
            assert stopped.state is PluginState.STOPPED and stopped.error is None
            assert not process_alive(pids[0])
            await asyncio.wait_for(host.aclose(), HANG)
    assert host.plugin("quitter").state is PluginState.STOPPED
    assert not process_alive(pids[1])
    told = {c.plugin_ids for c in changes if c.message.startswith("stopped: ")}
    assert told == {("echo",), ("quitter",)}, [c.message for c in changes]
    assert failures.count >= 2
    said = capsys.readouterr().err
    assert said.count(REPORTED) == 1, said


def test_later_failures_are_summed_up_at_most_once_an_interval(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """After the first report, failures within the interval are counted and said in one
    summary, made by the first failure past it; the report quotes the record and the
    exception sanitized."""
    now = [0.0]
    failures = OwnRecordFailures(interval=60, clock=lambda: now[0])
    monkeypatch.setattr(log_guard, "failures", failures)
    logger = guarded_logger("isoplug.test_log_guard")
    with attached(RaisesOnEvery("emit"), logger.name, propagate=False):
        logger.info("first \x1b[2J")
        for _ in range(3):
            now[0] += 10
            logger.info("within the interval")
        now[0] = 61
        logger.warning("past it")
        logger.warning("too soon again")
    assert failures.count == 6
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("isoplug")]
    assert lines == [
        f"{REPORTED}RuntimeError: log handler broke on a record of isoplug.test_log_guard "
        "(INFO: first \\x1b[2J); that record missed the handlers after it, and isoplug went "
        "on (later failures on isoplug's own records are counted, "
        "isoplug.log_guard.handler_errors(), and summed up here at most every 60 s)",
        "isoplug: log handlers, filters or record factories raised 4 more time(s) on isoplug's "
        "own records over 61 s (the latest: RuntimeError: log handler broke on a record of "
        "isoplug.test_log_guard); each cost that record only",
    ]


def test_a_guarded_logger_is_the_one_the_application_configures() -> None:
    """The guard keeps the logger object, whatever configured it before, and whatever class
    the application's logging made it with: its handlers, level and class stay."""

    class AppLogger(logging.Logger):
        pass

    previous = logging.getLoggerClass()
    logging.setLoggerClass(AppLogger)
    try:
        configured = logging.getLogger("isoplug.test_log_guard.configured")
    finally:
        logging.setLoggerClass(previous)
    seen = Records()
    configured.addHandler(seen)
    configured.setLevel(logging.ERROR)
    try:
        guarded = guarded_logger(configured.name)
        assert guarded is configured is logging.getLogger(configured.name)
        assert isinstance(guarded, AppLogger) and isinstance(guarded, log_guard.GuardedLogger)
        guarded.warning("below its level")
        guarded.error("kept")
    finally:
        configured.removeHandler(seen)
    assert [r.getMessage() for r in seen.records] == ["kept"]
    assert guarded_logger(configured.name).__class__ is guarded.__class__
    with pytest.raises(ValueError, match=r"for isoplug's own loggers, not 'plugin\.x'"):
        guarded_logger("plugin.x")


async def test_a_record_factory_failing_outside_a_request_costs_its_attributes_only(
    tmp_path: Path, failures: OwnRecordFailures, capsys: pytest.CaptureFixture[str]
) -> None:
    """A web application's factory stamps every record with the request's id, from a
    ContextVar that has no default: isoplug's threads and tasks have none. The host's own
    records are made all the same, without the stamp (the factory ran before the guarded
    handlers: its error ended the log session's thread, or the supervisor, the plugin never
    ready), and plugin records reach the application's handler."""
    request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id")
    made = logging.getLogRecordFactory()

    def stamped(*args: object, **kwargs: object) -> logging.LogRecord:
        record = made(*args, **kwargs)
        record.request_id = request_id.get()  # LookupError outside a request
        return record

    records = Records()
    logging.setLogRecordFactory(stamped)
    try:
        with attached(records, "isoplug.host"), attached(records, "plugin.echo"):
            async with running(tmp_path, "echo") as (host, _):
                pid = await host.call("echo", "pid")
                await crash_and_wait_restarted(host, pid)
                assert await host.call("echo", "echo", "after") == "after"
    finally:
        logging.setLogRecordFactory(made)
    ready = records.select(logger="isoplug.host", text="plugin echo: ready")
    assert len(ready) == 2 and not hasattr(ready[0], "request_id")
    assert failures.count >= 2
    said = capsys.readouterr().err
    assert said.count(REPORTED) == 1, said
    assert f"{REPORTED}LookupError: <ContextVar name='request_id'" in said, said
