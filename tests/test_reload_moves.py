"""Hot reload of a plugin moving to another runner (its ``group`` changed): the log and the
old runner's exit account name the move, ``last_exit`` keeps that account, and a plugin
stopped with ``host.stop()`` stays stopped wherever it moves, until ``host.restart()``."""

from __future__ import annotations

from pathlib import Path

import pytest

from isoplug import Host
from isoplug.host.status import PluginState
from isoplug.testing import Records, eventually, watching
from tests.plugins_fixtures import copy_plugins, reloading
from tests.test_host_reload import join_group, replace_in

pytest.importorskip("watchfiles")


def three_with_a_group(tmp_path: Path, group: str, *members: str) -> Path:
    """A plugins folder of ``echo``, ``leveled`` and ``printer``, ``members`` in ``group``."""
    directory = copy_plugins(tmp_path, "echo", "leveled", "printer")
    for member in members:
        join_group(directory, member, group)
    return directory


async def stop_echo_then_move(
    host: Host, folder: Path, group: str, records: Records, said: str
) -> None:
    """Stop ``echo``, then move the plugin of ``folder`` to ``group``; wait until the host
    ``said`` what it did of the move."""
    await host.stop("echo")
    join_group(folder.parent, folder.name, group)
    await records.wait_for_record(text=said)


REPLACED = "replaced by hot reload (plugin leveled moved from group g to its own runner leveled)"


async def test_a_plugin_leaving_its_group_is_said_to_move(tmp_path: Path) -> None:
    directory = copy_plugins(tmp_path, "echo", "leveled")
    join_group(directory, "echo", "g")
    join_group(directory, "leveled", "g")
    async with reloading(directory) as host:
        with watching("isoplug.host") as records:
            replace_in(directory / "leveled" / "plugin.toml", 'group = "g"\n', "")
            await eventually(lambda: host.plugin("leveled").runner_id == "leveled")
            await host.wait_ready(20)
            await records.wait_for_record(
                text="reload: plugin leveled moved from group g to its own runner leveled: "
                "replacing runner g without it"
            )
            await records.wait_for_record(
                text="reload: plugin leveled moved from group g to its own runner leveled; "
                "starting runner leveled"
            )
            await records.wait_for_record(text=f"exited with code 0; {REPLACED}; uptime")
            assert not records.select(text="plugin folder")
            assert not records.select(text="on request")
        # The replaced runner's account is each plugin's last exit until its new runner ends.
        for plugin_id in ("echo", "leveled"):
            account = host.plugin(plugin_id).last_exit
            assert account is not None and account.reason == REPLACED, plugin_id


async def test_a_stopped_plugin_moved_to_a_group_of_its_own_stays_stopped(
    tmp_path: Path,
) -> None:
    directory = copy_plugins(tmp_path, "echo")
    async with reloading(directory) as host:
        await host.stop("echo")
        with watching("isoplug.host") as records:
            join_group(directory, "echo", "z")
            await eventually(lambda: host.plugin("echo").runner_id == "z")
            await records.wait_for_record(text="reload: runner z stays stopped until restarted")
            account = host.plugin("echo").last_exit
            assert account is not None
            assert account.reason == "stopped on request"
        assert (host.plugin("echo").state, host.plugin("echo").pid) == (PluginState.STOPPED, None)
        assert (await host.restart("echo")).state is PluginState.READY
        assert host.plugin("echo").runner_id == "z"


async def test_a_stopped_plugin_moved_into_a_running_group_waits_for_its_restart(
    tmp_path: Path,
) -> None:
    """A runner is one process: the stopped plugin stays out of the running group (stopped,
    where it was), and the group runs on untouched; the plugin's restart moves it in."""
    directory = three_with_a_group(tmp_path, "h", "leveled", "printer")
    async with reloading(directory) as host:
        group_pid = host.plugin("leveled").pid
        with watching("isoplug.host") as records:
            await stop_echo_then_move(
                host,
                directory / "echo",
                "h",
                records,
                "reload: plugin echo moved from its own runner echo to group h, whose runner "
                "runs other plugins, but it was stopped with host.stop(): it stays stopped in "
                "runner echo (on the plugin.toml it ran) until host.restart('echo') moves it",
            )
            echo = host.plugin("echo")
            assert (echo.state, echo.runner_id, echo.pid) == (PluginState.STOPPED, "echo", None)
            assert host.plugin("leveled").state is PluginState.READY
            assert host.plugin("leveled").pid == group_pid
            assert not records.select(text="replacing runner h")
            restarted = await host.restart("echo")
            assert (restarted.state, restarted.runner_id) == (PluginState.READY, "h")
            await host.wait_ready(20)
            assert host.plugin("leveled").pid == restarted.pid != group_pid
            await records.wait_for_record(
                text="reload: plugin echo moved from its own runner echo to group h: "
                "replacing runner h"
            )


async def test_a_running_plugin_moved_into_a_stopped_group_runs_on_until_its_restart(
    tmp_path: Path,
) -> None:
    directory = three_with_a_group(tmp_path, "g", "echo", "leveled")
    async with reloading(directory) as host:
        printer_pid = host.plugin("printer").pid
        with watching("isoplug.host") as records:
            await stop_echo_then_move(
                host,
                directory / "printer",
                "g",
                records,
                "reload: plugin printer moved from its own runner printer to group g, which was "
                "stopped with host.stop(): it keeps running in runner printer",
            )
            printer = host.plugin("printer")
            assert (printer.state, printer.runner_id) == (PluginState.READY, "printer")
            assert printer.pid == printer_pid
            assert host.plugin("leveled").state is PluginState.STOPPED
            assert (await host.restart("leveled")).state is PluginState.READY
            await host.wait_ready(20)
            moved = host.plugin("printer")
            assert (moved.runner_id, moved.pid) == ("g", host.plugin("echo").pid)
