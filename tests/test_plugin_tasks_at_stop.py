"""Tasks a plugin leaves running are ended by its runner at stop while log forwarding still
works: what they log as they are cancelled, and what they raise, arrives as the plugin's
records (never as stderr text); one that ignores cancellation is named in a WARNING and does
not keep the runner alive past the teardown timeout."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest

from isoplug import Host, SupervisorConfig
from tests.plugins_fixtures import FAST, copy_plugins, running
from tests.record_waiter import RecordWaiter, watching

#: The module logger of the lingerer plugin, as the host names it.
MODULE = "plugin.lingerer.lingerer_plugin"


def assert_ended_as_records(
    waiter: RecordWaiter, plugin: str, *, raiser: bool, runners: int = 1
) -> None:
    """The worker ``plugin`` started in setup (in each of its ``runners``) logged its goodbye
    on its loggers, at its levels;
    the task that raised on cancel (if started) is an ERROR with its traceback; nothing of it
    came as stderr text."""
    stopping = waiter.matching(f"plugin.{plugin}.{plugin}_plugin", f"{plugin} worker stopping")
    assert [r.levelno for r in stopping] == [logging.INFO] * runners, waiter.messages()
    final = waiter.matching(f"plugin.{plugin}", f"{plugin} worker finally")
    assert [r.levelno for r in final] == [logging.WARNING] * runners, waiter.messages()
    raised = [
        r
        for r in waiter.matching(f"plugin.{plugin}", "raised as it was ended at shutdown")
        if r.exc_info and isinstance(r.exc_info[1], LookupError)
    ]
    assert len(raised) == (1 if raiser else 0), waiter.messages()
    if raiser:
        assert raised[0].levelno == logging.ERROR
        assert str(raised[0].exc_info[1]) == f"{plugin} raised on cancel"  # type: ignore[index]
    assert not waiter.select(plugin=plugin, stream="stderr"), [
        r.getMessage() for r in waiter.select(plugin=plugin, stream="stderr")
    ]


@pytest.mark.parametrize("how", ["stop", "restart", "host exits"])
async def test_what_a_left_task_logs_or_raises_as_it_is_cancelled_is_the_plugins_record(
    tmp_path: Path, how: str
) -> None:
    with watching("plugin") as waiter:
        async with running(tmp_path, "lingerer") as (host, _):
            await host.call("lingerer", "start_raiser")
            if how == "stop":
                await host.stop("lingerer")
            elif how == "restart":
                await host.restart("lingerer")
            if how != "host exits":
                # The replacement (restart) started a worker of its own: not yet ended.
                await waiter.wait_for(MODULE, "lingerer worker stopping")
                await waiter.wait_for("plugin.lingerer", "raised as it was ended at shutdown")
        # The host has stopped: every record of the runners it ran has arrived.
    # After a restart, the replacement's worker ended when the host exited, as the first did.
    assert_ended_as_records(waiter, "lingerer", raiser=True, runners=2 if how == "restart" else 1)


async def test_a_task_started_from_a_bare_thread_is_ended_as_the_plugins(tmp_path: Path) -> None:
    """No plugin's source on it (a bare thread has none), but not isoplug's code either: the
    plugin's all the same."""
    async with running(tmp_path, "lingerer") as (host, waiter):
        await host.call("lingerer", "start_from_bare_thread")
        await host.stop("lingerer")
        record = await waiter.wait_for(MODULE, "lingerer unattributed task stopping")
    assert record.levelno == logging.INFO
    assert not waiter.select(plugin="lingerer", stream="stderr"), waiter.messages()


async def test_a_task_ignoring_cancellation_is_named_and_does_not_hold_the_runner(
    tmp_path: Path,
) -> None:
    """The host would wait shutdown_timeout (long here) before sending SIGTERM: the runner
    exits by itself, with code 0, once the teardown timeout is up, and says which task it
    left and where that task waits."""
    config = SupervisorConfig(
        health_interval=0.2,
        health_timeout=30.0,
        teardown_timeout=0.5,
        shutdown_timeout=60.0,
        terminate_timeout=1.0,
    )
    async with running(tmp_path, "lingerer", config=config) as (host, waiter):
        await host.call("lingerer", "start_deaf")
        info = await host.stop("lingerer")
    account = info.last_exit
    assert account is not None
    assert (account.returncode, account.sent_by_host) == (0, None), account.describe()
    assert account.reason == "stopped on request"
    # Far below the 60 s the host would have waited; the teardown timeout plus start-up slack.
    assert account.uptime < 30, account.describe()
    (warning,) = waiter.matching("plugin.lingerer.isoplug.runner", "lingerer-deaf")
    assert warning.levelno == logging.WARNING
    assert re.search(
        r"task 'lingerer-deaf' \(Lingerer\.start_deaf\.<locals>\.deaf_forever\) was cancelled "
        r"at shutdown and had not ended by the teardown timeout .* it waits at "
        r"\S+lingerer_plugin\.py:\d+ in deaf_forever, awaiting sleep\(\); the runner exits "
        r"without it",
        warning.getMessage(),
    ), warning.getMessage()
    # The polite worker ended alongside, on its own loggers.
    assert_ended_as_records(waiter, "lingerer", raiser=False)


async def test_in_a_group_each_left_task_is_its_own_plugins(tmp_path: Path) -> None:
    """Two members of one runner: each worker's goodbye and each raising task's exception are
    records of the member that started them."""
    plugins = copy_plugins(tmp_path, "lingerer", "lingerer_b")
    for name in ("lingerer", "lingerer_b"):
        manifest = plugins / name / "plugin.toml"
        manifest.write_text(
            manifest.read_text().replace("[restart]", 'group = "lingering"\n\n[restart]')
        )
    with watching("plugin") as waiter:
        async with Host(plugins, config=FAST) as host:
            await host.wait_ready(20)
            assert host.plugin("lingerer").pid == host.plugin("lingerer_b").pid
            await host.call("lingerer", "start_raiser")
            await host.call("lingerer_b", "start_raiser")
    for name in ("lingerer", "lingerer_b"):
        assert_ended_as_records(waiter, name, raiser=True)
