"""Threads a plugin leaves running at stop do not hold its runner until the host's SIGTERM:
a non-daemon thread (started on the loop's thread or in a ``def`` method's worker thread), or
a default-executor thread busy with a cancelled ``asyncio.to_thread`` call, is waited for
until the teardown timeout, then named in a WARNING (the plugin's record), and the runner
exits cleanly without it; a worker thread still running a cancelled ``def`` method does not
hold it either."""

from __future__ import annotations

import asyncio
import logging
import re
import time
from pathlib import Path

import pytest

from isoplug import Host
from isoplug.host import ExitAccount, PluginInfo
from tests.plugins_fixtures import SHORT_TEARDOWN, running
from tests.record_waiter import RecordWaiter

#: The host would wait shutdown_timeout before its kill: far longer than the teardown.
CONFIG = SHORT_TEARDOWN
#: Seconds a stop may take at most here: the teardown timeout plus a slow machine's slack,
#: well below shutdown_timeout.
WITHIN = 15.0
#: The runner's own logger, as the host names it for this plugin.
RUNNER_LOGGER = "plugin.threader.isoplug.runner"
PLUGIN_MODULE = "plugin.threader.threader_plugin"


def assert_clean_stop(account: ExitAccount | None, took: float) -> None:
    assert account is not None
    assert (account.returncode, account.sent_by_host) == (0, None), account.describe()
    assert account.reason == "stopped on request", account.describe()
    assert took < WITHIN, (took, account.describe())


async def stop_while_blocked(
    host: Host, waiter: RecordWaiter, method: str
) -> tuple[PluginInfo, float]:
    """Stop the plugin while ``method`` blocks in a thread: its state then, and how long the
    stop took. The call fails, said stopped on request."""
    call = asyncio.ensure_future(host.call("threader", method))
    await waiter.wait_for(PLUGIN_MODULE, "blocking in a thread")
    start = time.monotonic()
    info = await host.stop("threader")
    took = time.monotonic() - start
    with pytest.raises(Exception, match="stopped on request"):
        await call
    return info, took


def thread_warnings(waiter: RecordWaiter) -> list[logging.LogRecord]:
    return [r for r in waiter.matching(RUNNER_LOGGER, "thread ") if "at shutdown" in r.getMessage()]


@pytest.mark.parametrize(
    ("how", "method", "start"),
    [
        ("stop", "start_forever", "fork"),
        ("host exits", "start_forever", "fork"),
        # Started in a worker thread of the runner, a threading.Thread without daemon= is no
        # daemon either, as in any program: named too.
        ("stop", "start_forever_in_def", "fork"),
        ("stop", "start_forever_in_def", "spawn"),
        ("host exits", "start_forever_in_def", "fork"),
    ],
)
async def test_a_non_daemon_thread_is_named_and_does_not_hold_the_runner(
    tmp_path: Path, how: str, method: str, start: str
) -> None:
    async with running(tmp_path, "threader", config=CONFIG, start=start) as (host, waiter):
        assert not await host.call("threader", method)
        start_time = time.monotonic()
        if how == "stop":
            info = await host.stop("threader")
            took = time.monotonic() - start_time
    if how == "host exits":
        took = time.monotonic() - start_time
        info = host.plugin("threader")
    assert_clean_stop(info.last_exit, took)
    (warning,) = thread_warnings(waiter)
    assert warning.levelno == logging.WARNING
    assert re.search(
        r"thread 'threader-forever' \(threader_plugin\.loop_forever\) is still running at "
        r"shutdown and had not ended by the teardown timeout .* it is at "
        r"\S+threader_plugin\.py:\d+ in loop_forever; the runner exits without it",
        warning.getMessage(),
    ), warning.getMessage()


@pytest.mark.parametrize("method", ["block_in_to_thread", "block_in_executor"])
async def test_a_cancelled_call_blocked_in_an_executor_thread_does_not_hold_the_runner(
    tmp_path: Path, method: str
) -> None:
    async with running(tmp_path, "threader", config=CONFIG) as (host, waiter):
        info, took = await stop_while_blocked(host, waiter, method)
    assert_clean_stop(info.last_exit, took)
    (warning,) = thread_warnings(waiter)
    assert warning.levelno == logging.WARNING
    assert re.search(
        r"thread '\w+_0' of an executor still runs threader_plugin\.sleep_for_good at "
        r"shutdown, after its caller was cancelled .* it is at \S+threader_plugin\.py:\d+ in "
        r"sleep_for_good; the runner exits without it",
        warning.getMessage(),
    ), warning.getMessage()


async def test_a_def_method_blocked_at_the_stop_does_not_hold_the_runner(
    tmp_path: Path,
) -> None:
    """The worker threads of def methods are no daemons (see the test above), yet one still
    running a call at the stop (cancelled: a thread cannot be stopped) is isoplug's: left
    behind at once, unnamed, as when they were daemons; the runner exits cleanly."""
    async with running(tmp_path, "threader", config=CONFIG) as (host, waiter):
        info, took = await stop_while_blocked(host, waiter, "block_in_def")
    assert_clean_stop(info.last_exit, took)
    assert not thread_warnings(waiter), waiter.messages()


@pytest.mark.parametrize(
    "start", [None, "start_polite", "start_polite_in_def", "use_executor", "return_at_once"]
)
async def test_threads_that_end_by_the_teardown_timeout_are_not_named(
    tmp_path: Path, start: str | None
) -> None:
    """Nothing started, a thread that teardown() stops (waited for: what it logs as it ends
    arrives, started in a def method's worker thread too), or an executor's thread or the
    runner's worker left idle: the runner exits as it always did, with no warning."""
    async with running(tmp_path, "threader", config=CONFIG) as (host, waiter):
        if start is not None:
            await host.call("threader", start)
        begin = time.monotonic()
        info = await host.stop("threader")
        took = time.monotonic() - begin
    assert_clean_stop(info.last_exit, took)
    assert not thread_warnings(waiter), waiter.messages()
    ended = waiter.matching(PLUGIN_MODULE, "polite thread ends")
    assert len(ended) == (1 if start and start.startswith("start_polite") else 0), waiter.messages()


async def test_in_a_group_a_thread_left_running_is_named_as_the_member_that_started_it(
    tmp_path: Path,
) -> None:
    """A thread duo_a started, and work it submitted to a pool: each WARNING is duo_a's, not
    the group's, and says where the thread is (not in isoplug's wrapper)."""
    async with running(tmp_path, "duo_a", "duo_b", config=CONFIG, logger=None) as (host, waiter):
        await host.call("duo_a", "leave_threads")
    warnings = [r for r in waiter.records if "at shutdown" in r.getMessage()]
    assert sorted(
        (r.name, r.getMessage().split(" threading.")[0].split(" (")[0]) for r in warnings
    ) == [
        ("plugin.duo_a.isoplug.runner", "thread 'duo_a-forever'"),
        ("plugin.duo_a.isoplug.runner", "thread 'duo_a_0' of an executor still runs"),
    ], "\n".join(f"{r.name}: {r.getMessage()}" for r in warnings)
    for warning in warnings:
        assert "thread_sources" not in warning.getMessage(), warning.getMessage()
        assert "; it is at " in warning.getMessage(), warning.getMessage()
