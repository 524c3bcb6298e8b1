"""What hot reload does, and says in order, for an edit of a plugin's ``id``, a folder
removed, and a user's restart that moves a running plugin into a stopped group: a user's
stop is of the plugin in that folder, so a new id stays stopped; every exit account and log
line says what happened, by what, not "on request"."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from isoplug.host.status import PluginState
from isoplug.testing import Records, eventually, watching
from tests.plugins_fixtures import copy_plugins, reloading
from tests.test_host_reload import join_group, set_id

pytest.importorskip("watchfiles")


def said_in_order(records: Records, *texts: str) -> list[str]:
    """The host's messages, after checking that each of ``texts`` is in one of them, in
    that order (each after the one before)."""
    messages = records.messages()
    at = 0
    for text in texts:
        found = next((i for i in range(at, len(messages)) if text in messages[i]), None)
        assert found is not None, (
            f"{text!r} not said after {texts[: texts.index(text)]}: {messages}"
        )
        at = found + 1
    return messages


async def test_a_plugin_renamed_while_stopped_stays_stopped_under_its_new_id(
    tmp_path: Path,
) -> None:
    directory = copy_plugins(tmp_path, "echo", "leveled")
    async with reloading(directory) as host:
        await host.stop("echo")
        with watching("isoplug.host") as records:
            set_id(directory, "echo", "echo2")
            await records.wait_for_record(text="reload: plugin echo was renamed echo2")
            messages = said_in_order(
                records,
                "now names plugin 'echo2'; stopping it",
                "reload: plugin echo was renamed echo2 and stays stopped (it was stopped with "
                "host.stop()): restart it with host.restart('echo2')",
            )
            assert not [m for m in messages if "starting runner echo2" in m], messages
            renamed = host.plugin("echo2")
            assert (renamed.state, renamed.pid) == (PluginState.STOPPED, None)
            assert (await host.restart("echo2")).state is PluginState.READY
            assert await host.call("echo2", "echo", 7) == 7


async def test_a_running_plugin_renamed_is_a_new_plugin_and_its_old_runner_says_why(
    tmp_path: Path,
) -> None:
    directory = copy_plugins(tmp_path, "echo")
    async with reloading(directory) as host:
        with watching("isoplug.host") as records:
            set_id(directory, "echo", "echo2")
            await eventually(lambda: {p.id for p in host.plugins()} == {"echo2"})
            await host.wait_ready(20)
            messages = said_in_order(
                records,
                "now names plugin 'echo2'; stopping it",
                "plugin echo: stopped: runner echo",
                "now names plugin 'echo2' (was 'echo'); starting runner echo2",
                "plugin echo2: ready",
            )
            stopped = next(m for m in messages if "plugin echo: stopped" in m)
            assert "now names plugin 'echo2'); uptime" in stopped
            assert "; replaced by hot reload (" in stopped
            assert not [m for m in messages if "on request" in m], messages
        # A new plugin: nothing of the old id's runner is its.
        renamed = host.plugin("echo2")
        assert (renamed.restarts, renamed.last_exit) == (0, None)


async def test_a_removed_folders_runner_is_said_stopped_by_hot_reload(tmp_path: Path) -> None:
    directory = copy_plugins(tmp_path, "echo", "leveled")
    async with reloading(directory) as host:
        with watching("isoplug.host") as records:
            shutil.move(directory / "echo", tmp_path / "echo-away")
            await eventually(lambda: "echo" not in {p.id for p in host.plugins()})
            shutil.move(tmp_path / "echo-away", directory / "echo")
            await eventually(lambda: "echo" in {p.id for p in host.plugins()})
            await host.wait_ready(20)
            messages = said_in_order(
                records,
                "reload: runner echo: its plugin folder is gone; stopping it",
                "stopped by hot reload (its plugin folder is gone)",
                "reload: new plugin folder; starting runner echo",
                "plugin echo: ready",
            )
            assert not [m for m in messages if "on request" in m], messages


async def test_a_restart_moving_a_running_plugin_into_a_stopped_group_says_it_starts_it(
    tmp_path: Path,
) -> None:
    directory = copy_plugins(tmp_path, "echo", "leveled", "printer")
    join_group(directory, "echo", "g")
    join_group(directory, "leveled", "g")
    async with reloading(directory) as host:
        await host.stop("echo")
        with watching("isoplug.host") as records:
            join_group(directory, "printer", "g")
            await records.wait_for_record(text="it keeps running in runner printer")
            assert (await host.restart("leveled")).state is PluginState.READY
            await host.wait_ready(20)
            messages = said_in_order(
                records,
                "reload: plugin printer moved from its own runner printer to group g: "
                "replacing runner g",
                "reload: runner g was stopped; host.restart('leveled'), under way, starts it",
                "plugin echo, leveled, printer: starting runner g",
                "plugin echo, leveled, printer: ready",
            )
            assert not [m for m in messages if "stays so until restarted" in m], messages
            assert host.plugin("printer").runner_id == "g"
