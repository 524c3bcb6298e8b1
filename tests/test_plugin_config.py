"""Plugin configuration: ``[config]`` in plugin.toml, overridden by the host, validated by the
schema the plugin declares in its runner, delivered to ``setup()``, changed live through
``on_config`` or by a restart. Real runners throughout."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path
from typing import Any

import pytest

from isoplug import Host
from isoplug.errors import ConfigInvalid, PluginFailed
from isoplug.host.manifest import merge_config
from isoplug.testing import eventually, watching
from tests.plugins_fixtures import FAST, copy_plugins, plugins_dir


def test_merge_config_merges_nested_tables() -> None:
    base = {"greeting": "Hello", "limits": {"retries": 3, "timeout": 1.5}, "tags": ["a"]}
    override = {"limits": {"retries": 5}, "tags": ["b"], "new": 1}
    assert merge_config(base, override) == {
        "greeting": "Hello",
        "limits": {"retries": 5, "timeout": 1.5},
        "tags": ["b"],
        "new": 1,
    }
    assert base["limits"] == {"retries": 3, "timeout": 1.5}  # not changed in place


async def test_setup_gets_the_manifest_config_as_the_plugins_schema(tmp_path: Path) -> None:
    async with Host(plugins_dir(tmp_path, "configured"), config=FAST) as host:
        await host.wait_ready(20)
        state = await host.call("configured", "state")
    assert state["type"] == "Settings"
    assert state["config"] == {"greeting": "Hello", "limits": {"retries": 3, "timeout": 1.5}}


async def test_host_overrides_merge_over_the_manifest(tmp_path: Path) -> None:
    overrides = {"configured": {"limits": {"retries": 9}}}
    async with Host(
        plugins_dir(tmp_path, "configured"), config=FAST, plugin_config=overrides
    ) as host:
        await host.wait_ready(20)
        state = await host.call("configured", "state")
    assert state["config"] == {"greeting": "Hello", "limits": {"retries": 9, "timeout": 1.5}}


async def test_a_bad_config_fails_the_plugin_naming_the_plugin_and_the_field(
    tmp_path: Path,
) -> None:
    overrides = {"configured": {"limits": {"retries": "many"}}}
    async with Host(
        plugins_dir(tmp_path, "configured"), config=FAST, plugin_config=overrides
    ) as host:
        with pytest.raises(PluginFailed) as caught:
            await host.wait_ready(20)
        info = host.plugin("configured")
        assert info.state.value == "failed"
        assert info.error is not None
        assert (
            "plugin 'configured': config field 'limits.retries': must be an integer, "
            "got string 'many'" in info.error
        )
        assert "limits.retries" in str(caught.value)
        # A fixed configuration brings it back.
        assert await host.set_config("configured", {"limits": {"retries": 2}}) is False
        await host.wait_ready(20)
        state = await host.call("configured", "state")
        assert state["config"]["limits"] == {"retries": 2, "timeout": 1.5}


async def test_unknown_config_field_is_named(tmp_path: Path) -> None:
    overrides = {"configured_static": {"shuot": True}}
    async with Host(
        plugins_dir(tmp_path, "configured_static"), config=FAST, plugin_config=overrides
    ) as host:
        await host.wait_ready(20, raise_on_failure=False)
        error = host.plugin("configured_static").error or ""
        assert "config field 'shuot': is not a known field" in error


async def test_set_config_is_taken_live_by_on_config(tmp_path: Path) -> None:
    async with Host(plugins_dir(tmp_path, "configured"), config=FAST) as host:
        await host.wait_ready(20)
        pid = host.plugin("configured").pid
        assert await host.set_config("configured", {"greeting": "Hey"}) is True
        state = await host.call("configured", "state")
        assert state["pid"] == pid
        assert state["config"]["greeting"] == "Hey"
        assert state["seen"][-1]["greeting"] == "Hey"
        # It holds for later restarts too.
        await host.restart("configured")
        state = await host.call("configured", "state")
        assert state["config"]["greeting"] == "Hey" and state["pid"] != pid


async def test_set_config_restarts_a_plugin_without_on_config(tmp_path: Path) -> None:
    async with Host(plugins_dir(tmp_path, "configured_static"), config=FAST) as host:
        await host.wait_ready(20)
        pid = host.plugin("configured_static").pid
        assert await host.set_config("configured_static", {"shout": True}) is False
        state = await host.call("configured_static", "state")
        assert state["pid"] != pid
        assert state["config"] == {"greeting": "Hi", "shout": True}


async def test_an_invalid_set_config_raises_and_keeps_the_old_config(tmp_path: Path) -> None:
    async with Host(plugins_dir(tmp_path, "configured"), config=FAST) as host:
        await host.wait_ready(20)
        pid = host.plugin("configured").pid
        with pytest.raises(ConfigInvalid, match=r"config field 'limits\.timeout': must be a num"):
            await host.set_config("configured", {"limits": {"timeout": "soon"}})
        state = await host.call("configured", "state")
        assert state["pid"] == pid and state["config"]["limits"]["timeout"] == 1.5
        await host.restart("configured")
        state = await host.call("configured", "state")
        assert state["config"]["limits"]["timeout"] == 1.5


async def test_a_failing_on_config_restarts_the_plugin_with_the_new_config(
    tmp_path: Path,
) -> None:
    async with Host(plugins_dir(tmp_path, "configured"), config=FAST) as host:
        await host.wait_ready(20)
        pid = host.plugin("configured").pid
        with watching("isoplug.host") as records:
            assert await host.set_config("configured", {"greeting": "explode"}) is False
            assert records.select(text="on_config failed")
        state = await host.call("configured", "state")
        assert state["pid"] != pid and state["config"]["greeting"] == "explode"


async def test_editing_the_config_table_under_reload_is_taken_live(tmp_path: Path) -> None:
    pytest.importorskip("watchfiles")
    directory = copy_plugins(tmp_path, "configured", "configured_static")
    async with Host(directory, config=FAST, reload=True) as host:
        await host.wait_ready(20)
        assert host.reloader is not None
        await eventually(host.reloader.watching.is_set)
        live_pid = host.plugin("configured").pid
        static_pid = host.plugin("configured_static").pid
        for name, old, new in (
            ("configured", 'greeting = "Hello"', 'greeting = "Bonjour"'),
            ("configured_static", 'greeting = "Hi"', 'greeting = "Salut"'),
        ):
            manifest = directory / name / "plugin.toml"
            manifest.write_text(manifest.read_text().replace(old, new))

        async def greeting(plugin: str) -> Any:
            return (await host.call(plugin, "state"))["config"]["greeting"]

        # Without on_config: a restart with the new table.
        await eventually(
            lambda: (
                host.plugin("configured_static").pid not in (None, static_pid)
                and host.plugin("configured_static").state.value == "ready"
            )
        )
        assert await greeting("configured_static") == "Salut"
        # With on_config: taken live, by the same process.
        async with asyncio.timeout(20):
            while await greeting("configured") != "Bonjour":
                await asyncio.sleep(0.01)
        assert host.plugin("configured").pid == live_pid


def test_config_fields_survive_dataclass_replace() -> None:
    """The manifest keeps its config when other fields are replaced (reload compares them)."""
    from isoplug.host.manifest import Manifest

    manifest = Manifest("p", "1", "m:P", Path("."), Path("plugin.toml"))
    assert dataclasses.replace(manifest, version="2").config == {}
