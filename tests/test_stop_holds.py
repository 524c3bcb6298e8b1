"""A user's ``host.stop(id)`` is the last word over every restart the host decides on its own
(a new configuration's, a hot reload's) until the user's ``restart(id)``, and returns only
once the plugin is STOPPED: real runners, each race made certain by holding one side of it
(a stop under way in a teardown that waits for a gate file, an ``on_config`` that hangs)."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from isoplug import Host, PluginState
from isoplug.testing import eventually, watching
from tests.plugins_fixtures import FAST, copy_plugins, plugins_dir, process_alive, running

#: A held teardown is ended by the test's gate, never by the host's deadlines.
HELD_STOP = dataclasses.replace(FAST, teardown_timeout=60.0, shutdown_timeout=90.0)


@asynccontextmanager
async def holdout_host(tmp_path: Path, gate: Path) -> AsyncIterator[Host]:
    """A started host of ``holdout``, whose teardown waits for ``gate`` to exist."""
    overrides = {"holdout": {"gate": str(gate)}}
    async with Host(
        plugins_dir(tmp_path, "holdout"), config=HELD_STOP, plugin_config=overrides
    ) as host:
        await host.wait_ready(20)
        yield host


async def test_two_stops_asked_together_both_return_once_it_is_stopped(tmp_path: Path) -> None:
    """The second stop joins the first instead of replacing it: neither returns while the
    runner lives, and its teardown ran by then."""
    async with running(tmp_path, "echo") as (host, _):
        pid = host.plugin("echo").pid
        assert pid is not None
        with watching("plugin.echo") as said:
            stops = [asyncio.ensure_future(host.stop("echo")) for _ in range(2)]
            first = await stops[0]
            assert not process_alive(pid)
            assert said.select(text="echo: teardown ran")
        second = await stops[1]
        assert (first.state, second.state) == (PluginState.STOPPED, PluginState.STOPPED)
        assert first.pid is None and first.last_exit is not None


async def test_a_stop_asked_during_a_config_change_is_not_undone_by_its_restart(
    tmp_path: Path,
) -> None:
    """on_config is under way (it hangs) when the stop is asked: the stop ends it, and the
    restart the failed change then asks for is refused; the plugin keeps the configuration
    for its next start."""
    gate = tmp_path / "gate"
    gate.touch()
    async with Host(plugins_dir(tmp_path, "holdout"), config=FAST) as host:
        await host.wait_ready(20)
        with watching("plugin.holdout") as said:
            change = asyncio.create_task(host.set_config("holdout", {"gate": str(gate)}))
            await said.wait_for_record(text="on_config hangs")
        stopped = await host.stop("holdout")
        assert await change is False
        assert stopped.state is PluginState.STOPPED
        assert (host.plugin("holdout").state, host.plugin("holdout").pid) == (
            PluginState.STOPPED,
            None,
        )
        await host.restart("holdout")
        assert (await host.call("holdout", "config"))["gate"] == str(gate)


async def test_a_config_change_during_a_stop_only_keeps_the_configuration(tmp_path: Path) -> None:
    """The stop is under way (its teardown waits) when a new configuration arrives: the
    plugin is offered nothing, and the change returns while the stop still holds; the stop
    then returns STOPPED, and it runs with the change once restarted."""
    gate = tmp_path / "gate"
    async with holdout_host(tmp_path, gate) as host:
        try:
            with watching("plugin.holdout") as said:
                stop = asyncio.create_task(host.stop("holdout"))
                await said.wait_for_record(text="teardown waits for its gate")
            changed = {"gate": str(gate), "mark": "kept"}
            assert await asyncio.wait_for(host.set_config("holdout", changed), 30) is False
            assert not stop.done()
        finally:
            gate.touch()  # a failed check must not leave the host's close held
        assert (await stop).state is PluginState.STOPPED
        assert host.plugin("holdout").state is PluginState.STOPPED
        await host.restart("holdout")
        assert (await host.call("holdout", "config"))["mark"] == "kept"


def touch_code(path: Path) -> None:
    with path.open("a") as source:
        source.write("\n# edited\n")


async def test_code_saved_during_a_stop_does_not_restart_the_plugin(tmp_path: Path) -> None:
    """Hot reload sees a code change while the stop is under way (its teardown waits): the
    plugin stays stopped, and runs the new code once restarted."""
    pytest.importorskip("watchfiles")
    directory = copy_plugins(tmp_path, "holdout")
    gate = tmp_path / "gate"
    overrides = {"holdout": {"gate": str(gate)}}
    async with Host(directory, config=HELD_STOP, reload=True, plugin_config=overrides) as host:
        await host.wait_ready(20)
        assert host.reloader is not None
        await eventually(host.reloader.watching.is_set)
        try:
            with watching("plugin.holdout") as plugin_said, watching("isoplug.host") as said:
                stop = asyncio.create_task(host.stop("holdout"))
                await plugin_said.wait_for_record(text="teardown waits for its gate")
                touch_code(directory / "holdout" / "holdout_plugin.py")
                await said.wait_for_record(text="holdout_plugin.py changed")
                assert said.select(text="runner holdout stays stopped")
                assert not said.select(text="restarting runner holdout")
        finally:
            gate.touch()  # a failed check must not leave the host's close held
        assert (await stop).state is PluginState.STOPPED
        assert host.plugin("holdout").state is PluginState.STOPPED
        await host.restart("holdout")
        assert host.plugin("holdout").state is PluginState.READY


async def test_a_stop_after_a_restart_is_the_one_its_exit_account_names(tmp_path: Path) -> None:
    """A restart is under way (its teardown waits) when a stop is asked: the stop wins, and
    the log and ``last_exit`` say it was stopped, not restarted."""
    gate = tmp_path / "gate"
    async with holdout_host(tmp_path, gate) as host:
        with watching("plugin.holdout") as plugin_said, watching("isoplug.host") as said:
            try:
                restart = asyncio.create_task(host.restart("holdout"))
                await plugin_said.wait_for_record(text="teardown waits for its gate")
                stop = asyncio.create_task(host.stop("holdout"))
                # Not a wait for time: the stop's first step, which sends it, was scheduled
                # first and runs within this one turn of the loop.
                await asyncio.sleep(0)
                assert not stop.done()
            finally:
                gate.touch()  # a failed check must not leave the host's close held
            assert (await stop).state is PluginState.STOPPED
            await restart
        account = host.plugin("holdout").last_exit
        assert account is not None
        assert account.reason == "stopped on request"
        record = said.select(text="plugin holdout: stopped:")
        assert record and "stopped on request" in record[0].getMessage()
        assert not said.select(text="restarted on request")


async def test_its_last_stderr_words_do_not_change_the_command_its_account_names(
    tmp_path: Path,
) -> None:
    """The runner writes the words of the restart being replaced ("restarted on request") on
    its stderr as it stops, and a stop then wins: the account names the stop, built from the
    command that won, whatever the runner wrote."""
    gate = tmp_path / "gate"
    overrides = {"holdout": {"gate": str(gate), "say": "restarted on request (said the plugin)"}}
    async with Host(
        plugins_dir(tmp_path, "holdout"), config=HELD_STOP, plugin_config=overrides
    ) as host:
        await host.wait_ready(20)
        with watching("plugin.holdout") as plugin_said, watching("isoplug.host") as said:
            try:
                restart = asyncio.create_task(host.restart("holdout"))
                await plugin_said.wait_for_record(text="teardown waits for its gate")
                await plugin_said.wait_for_record(text="restarted on request (said the plugin)")
                stop = asyncio.create_task(host.stop("holdout"))
                await asyncio.sleep(0)  # the stop is sent within this turn of the loop
                assert not stop.done()
            finally:
                gate.touch()
            assert (await stop).state is PluginState.STOPPED
            await restart
        account = host.plugin("holdout").last_exit
        assert account is not None
        assert account.reason == "stopped on request"
        assert account.during_stop
        record = said.select(text="plugin holdout: stopped:")
        assert record and record[0].getMessage().endswith(
            f"; stopped on request; uptime {account.uptime:.1f} s"
        )
