"""Hot reload of a ``[config]`` whose ``on_config`` hangs or ends its runner: the change is
that plugin's, its failure is told naming it, and the reloader goes on watching; the other
plugins' changes are not held meanwhile, and the plugin restarts with the new
configuration (its schema took it before ``on_config`` saw it)."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from isoplug import Host
from isoplug.host import SupervisorConfig
from isoplug.testing import eventually, watching
from tests.plugins_fixtures import FAST, copy_plugins
from tests.test_host_reload import Console, replace_in, restarted_by, touch_code

pytest.importorskip("watchfiles")


@asynccontextmanager
async def reloading(directory: Path, config: SupervisorConfig) -> AsyncIterator[Host]:
    async with Host(directory, config=config, reload=True) as host:
        await host.wait_ready(20)
        assert host.reloader is not None
        await eventually(host.reloader.watching.is_set)
        yield host


async def greeting(host: Host) -> str:
    state = await host.call("configured", "state")
    return str(state["config"]["greeting"])


async def test_an_on_config_that_ends_its_runner_restarts_it_with_the_new_config(
    tmp_path: Path,
) -> None:
    directory = copy_plugins(tmp_path, "configured", "echo")
    manifest = directory / "configured" / "plugin.toml"
    async with reloading(directory, FAST) as host:
        with watching("isoplug.host") as records:
            pid = host.plugin("configured").pid
            replace_in(manifest, 'greeting = "Hello"', 'greeting = "die"')
            await records.wait_for_record(text="its runner ended during on_config")
            await eventually(lambda: host.plugin("configured").pid not in (None, pid))
            await host.wait_ready(20)
            assert await greeting(host) == "die"
            # The reloader lives on: the next change is applied.
            await restarted_by(
                host, "echo", lambda: touch_code(directory / "echo" / "echo_plugin.py")
            )
            assert not records.select(text="watching the plugins folder stopped")
            assert host.kept == {}


@pytest.mark.slow
async def test_a_hung_on_config_holds_no_other_change_and_times_out(tmp_path: Path) -> None:
    """``call_timeout`` bounds ``on_config``; meanwhile another plugin's edit is applied."""
    # The edit's restart of echo takes under 0.1 s: 3 s leaves it ample room within the hang.
    config = dataclasses.replace(FAST, call_timeout=3.0)
    directory = copy_plugins(tmp_path, "configured", "echo")
    manifest = directory / "configured" / "plugin.toml"
    async with reloading(directory, config) as host:
        with watching("isoplug.host") as records, watching("plugin.configured") as plugin:
            pid = host.plugin("configured").pid
            replace_in(manifest, 'greeting = "Hello"', 'greeting = "hang"')
            await plugin.wait_for_record(text="on_config hangs")
            # The edit reaches echo while configured's on_config still hangs.
            await restarted_by(
                host, "echo", lambda: touch_code(directory / "echo" / "echo_plugin.py")
            )
            assert not records.select(text="gave no answer")
            await records.wait_for_record(text="plugin configured: on_config gave no answer")
            await eventually(lambda: host.plugin("configured").pid not in (None, pid))
            await host.wait_ready(20)
            assert await greeting(host) == "hang"
            # And the watch goes on.
            await restarted_by(
                host, "echo", lambda: touch_code(directory / "echo" / "echo_plugin.py")
            )
            assert not records.select(text="watching the plugins folder stopped")


def test_isoplug_run_reload_a_runner_lost_in_on_config_ends_with_0(tmp_path: Path) -> None:
    """The plugin runs as its folder says at the end: the exit code is 0."""
    directory = copy_plugins(tmp_path, "configured", "echo")
    manifest = directory / "configured" / "plugin.toml"
    console = Console(directory)
    try:
        console.read_until("ready: runner configured", "ready: runner echo", "reload: watching")
        replace_in(manifest, 'greeting = "Hello"', 'greeting = "die"')
        console.read_until("its runner ended during on_config", "ready: runner configured")
        touch_code(directory / "echo" / "echo_plugin.py")
        console.read_until("restarting runner echo")
    finally:
        returncode = console.stop()
    assert returncode == 0, console.text
    assert "watching the plugins folder stopped" not in console.text


def write(path: Path) -> None:
    path.write_text("X = 1\n")


async def test_reload_records_quote_paths_through_the_sanitizer(tmp_path: Path) -> None:
    """A plugin names the files in its folder, an operator the plugins folder: ESC and
    newlines in either reach no record raw."""
    directory = copy_plugins(tmp_path / "pl\x1b[31mdir", "echo")
    with watching("isoplug.host") as records:
        async with reloading(directory, FAST) as host:
            evil = directory / "echo" / "x\n09:00:00 isoplug critical FORGED\x1b[31m.py"
            await restarted_by(host, "echo", functools.partial(write, evil))
        texts = [record.getMessage() for record in records.select(text="reload:")]
    changed = [text for text in texts if "restarting runner echo" in text]
    watching_line = [text for text in texts if "reload: watching" in text]
    assert changed and watching_line, texts
    for text in [*changed, *watching_line]:
        assert "\x1b" not in text and "\\x1b[31m" in text, text
    assert "\nFORGED" not in changed[0] and "\n09:00" not in changed[0], changed[0]
