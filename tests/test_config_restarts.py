"""A restart for a new configuration (the plugin has no ``on_config``) is the host's own: its
log and the old runner's exit account name what changed the configuration, not a request."""

from __future__ import annotations

from pathlib import Path

import pytest

from isoplug import Host
from isoplug.otel.metrics import exit_kind
from isoplug.testing import eventually, watching
from tests.plugins_fixtures import FAST, copy_plugins, plugins_dir


async def test_a_restart_for_set_config_says_so(tmp_path: Path) -> None:
    with watching("isoplug.host") as log:
        async with Host(plugins_dir(tmp_path, "configured_static"), config=FAST) as host:
            await host.wait_ready(20)
            assert await host.set_config("configured_static", {"shout": True}) is False
            await host.wait_ready(20)
            last_exit = host.plugin("configured_static").last_exit
    why = "restarted as its configuration changed (set_config)"
    assert last_exit is not None and last_exit.reason == why
    # Metrics count it as the host's stop, not as a crash.
    assert exit_kind(last_exit) == "stopped"
    said = await log.wait_for_record(text="plugin configured_static: restarting")
    assert said.getMessage().startswith("plugin configured_static: restarting: runner")
    assert why in said.getMessage()
    assert not log.select(text="restarted on request"), log.messages()


async def test_a_restart_for_a_config_table_edit_under_reload_says_so(tmp_path: Path) -> None:
    pytest.importorskip("watchfiles")
    directory = copy_plugins(tmp_path, "configured_static")
    with watching("isoplug.host") as log:
        async with Host(directory, config=FAST, reload=True) as host:
            await host.wait_ready(20)
            assert host.reloader is not None
            await eventually(host.reloader.watching.is_set)
            manifest = directory / "configured_static" / "plugin.toml"
            manifest.write_text(manifest.read_text().replace('greeting = "Hi"', 'greeting = "Yo"'))
            why = "restarted as its configuration changed (plugin.toml [config] edited)"
            said = await log.wait_for_record(text=why)
            await host.wait_ready(20)
            last_exit = host.plugin("configured_static").last_exit
    assert said.getMessage().startswith("plugin configured_static: restarting: runner")
    assert last_exit is not None and last_exit.reason == why
    assert not log.select(text="restarted on request"), log.messages()
