"""A plugin's log level, as the host sets it: on its ctx.logger, its module loggers and the
libraries it uses, filtered in the runner, and kept across restarts."""

from __future__ import annotations

import dataclasses
import logging
import shutil
from pathlib import Path
from typing import Any

import pytest

from isoplug import Host, PluginInfo, PluginState
from isoplug.control import SET_LOG_LEVEL
from isoplug.rpc import Peer
from tests.plugins_fixtures import FAST, FIXTURES, running
from tests.record_waiter import RecordWaiter, watching

DEBUG, INFO, WARNING = "DEBUG", "INFO", "WARNING"
#: The three loggers the fixture logs on: its ctx.logger, its module's, a library's.
KINDS = ("ctx", "module", "vendor")


async def emitted(host: Host, waiter: RecordWaiter, tag: str, plugin: str = "leveled") -> set[str]:
    """Have the plugin log ``tag`` at DEBUG, INFO and WARNING on each kind of logger; return
    what reached the host, as ``"<kind> <level>"``."""
    await host.call(plugin, "emit", tag=tag)
    # Its last record, at ERROR, comes after the others on the same connection.
    await waiter.wait_for(f"plugin.{plugin}", f"done {tag}")
    seen = set()
    for record in waiter.records:
        words = record.getMessage().split()
        if len(words) == 3 and words[1] == tag and words[0] in KINDS:
            assert record.levelname == words[2]  # replayed at the level it was logged at
            seen.add(f"{words[0]} {words[2]}")
    return seen


def at_or_above(level: str) -> set[str]:
    levels = [DEBUG, INFO, WARNING][[DEBUG, INFO, WARNING].index(level) :]
    return {f"{kind} {name}" for kind in KINDS for name in levels}


def restarted(times: int) -> object:
    def check(info: PluginInfo) -> bool:
        return info.state is PluginState.READY and info.restarts >= times

    return check


async def test_set_log_level_reaches_every_logger_of_the_plugin_and_survives_restarts(
    tmp_path: Path,
) -> None:
    """DEBUG shows ctx.logger.debug, module and library debug; WARNING hides their INFO; a
    restart keeps the level, from the plugin's import on."""
    async with running(tmp_path, "leveled") as (host, waiter):
        assert await emitted(host, waiter, "a") == at_or_above(INFO)  # the manifest's default
        await host.set_log_level("leveled", "DEBUG")
        assert await emitted(host, waiter, "b") == at_or_above(DEBUG)
        await host.set_log_level("leveled", "WARNING")
        assert await emitted(host, waiter, "c") == at_or_above(WARNING)

        await host.restart("leveled")
        assert await emitted(host, waiter, "d") == at_or_above(WARNING)

        await host.set_log_level("leveled", logging.DEBUG)
        waiter.records.clear()
        await host.restart("leveled")
        # The level holds from the plugin's import on: its import and setup logged at DEBUG.
        await waiter.wait_for("plugin.leveled.leveled_plugin", "module imported")
        await waiter.wait_for("plugin.leveled", "setup ran")
        assert await emitted(host, waiter, "e") == at_or_above(DEBUG)


async def test_the_hosts_level_beats_levels_the_plugin_set_itself(tmp_path: Path) -> None:
    """A plugin that pinned its own loggers still obeys set_log_level (the host's word)."""
    async with running(tmp_path, "leveled") as (host, waiter):
        await host.call("leveled", "pin_own_loggers", level="ERROR")
        await host.set_log_level("leveled", "DEBUG")
        assert await emitted(host, waiter, "a") == at_or_above(DEBUG)


async def test_a_logger_the_host_named_keeps_its_level_through_the_plugins_changes(
    tmp_path: Path,
) -> None:
    """A level set on a named logger holds when the plugin's level changes later, as it does
    across a restart (the loggers' levels are sent after the plugin's)."""
    async with running(tmp_path, "leveled") as (host, waiter):
        await host.set_log_level("leveled", "WARNING", logger="leveled_plugin")
        await host.set_log_level("leveled", "DEBUG")
        seen = await emitted(host, waiter, "a")
        await host.restart("leveled")
        after_restart = await emitted(host, waiter, "b")
    expected = at_or_above(DEBUG) - {"module DEBUG", "module INFO"}
    assert seen == after_restart == expected


async def test_the_config_level_beats_the_manifest_and_set_log_level_beats_both(
    tmp_path: Path,
) -> None:
    """Manifest log_level < SupervisorConfig.log_level < Host.set_log_level."""
    plugin = tmp_path / "plugins" / "leveled"
    shutil.copytree(FIXTURES / "leveled", plugin)
    manifest = plugin / "plugin.toml"
    manifest.write_text(manifest.read_text().replace("[restart]", 'log_level = "DEBUG"\n[restart]'))
    config = dataclasses.replace(FAST, log_level="WARNING")
    with watching("plugin") as waiter:
        async with Host(tmp_path / "plugins", config=config) as host:
            await host.wait_ready(20)
            assert await emitted(host, waiter, "a") == at_or_above(WARNING)
            await host.set_log_level("leveled", "INFO")
            assert await emitted(host, waiter, "b") == at_or_above(INFO)
    with watching("plugin") as waiter:
        async with Host(tmp_path / "plugins", config=FAST) as host:
            await host.wait_ready(20)
            assert await emitted(host, waiter, "c") == at_or_above(DEBUG)


async def test_in_a_group_each_plugin_keeps_its_own_level(tmp_path: Path) -> None:
    """Two plugins sharing a runner: one at DEBUG, one at WARNING; the library they share
    follows the more verbose."""
    for name in ("quiet", "loud"):
        plugin = tmp_path / "plugins" / name
        shutil.copytree(FIXTURES / "leveled", plugin)
        (plugin / "leveled_plugin.py").rename(plugin / f"{name}_plugin.py")
        manifest = plugin / "plugin.toml"
        manifest.write_text(
            manifest.read_text()
            .replace('id = "leveled"', f'id = "{name}"\ngroup = "pair"')
            .replace("leveled_plugin:", f"{name}_plugin:")
        )
    with watching("plugin") as waiter:
        async with Host(tmp_path / "plugins", config=FAST) as host:
            await host.wait_ready(20)
            await host.set_log_level("loud", "DEBUG")
            await host.set_log_level("quiet", "WARNING")
            loud = await emitted(host, waiter, "a", plugin="loud")
            assert loud == at_or_above(DEBUG)
            quiet = await emitted(host, waiter, "b", plugin="quiet")
            assert quiet == at_or_above(WARNING) | {"vendor DEBUG", "vendor INFO"}


async def test_a_level_set_while_a_starting_runner_is_sent_its_levels_reaches_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A starting runner is sent the levels set so far, then said READY; set_log_level()
    only records a level for a runner not READY yet. A level set between the two (here right
    after the runner answered the first level sent, where the host awaits and another task
    runs) reaches the runner all the same, not only at its next restart."""
    request = Peer.request
    hooked: list[PluginState] = []

    async def then_set_a_level(peer: Peer, method: str, *args: Any, **kwargs: Any) -> Any:
        answer = await request(peer, method, *args, **kwargs)
        state = host.plugin("leveled").state
        if method == SET_LOG_LEVEL and state is PluginState.STARTING and not hooked:
            hooked.append(state)
            await host.set_log_level("leveled", "DEBUG")
        return answer

    async with running(tmp_path, "leveled") as (host, waiter):
        await host.set_log_level("leveled", "WARNING")
        monkeypatch.setattr(Peer, "request", then_set_a_level)
        await host.restart("leveled")
        assert hooked == [PluginState.STARTING]
        assert host.log_level("leveled") == logging.DEBUG
        assert await emitted(host, waiter, "f") == at_or_above(DEBUG)
