"""Plugin configuration: ``[config]`` in plugin.toml, overridden by the host, validated by the
schema the plugin declares in its runner, delivered to ``setup()``, changed live through
``on_config`` or by a restart. Real runners throughout."""

from __future__ import annotations

import asyncio
import dataclasses
import math
from pathlib import Path
from typing import Any

import msgspec
import pytest

from isoplug import Host, PluginState, StateChange
from isoplug.errors import ConfigInvalid, PluginFailed, UnencodableValue
from isoplug.host.manifest import merge_config
from isoplug.runner.config import validate_config
from isoplug.testing import eventually, watching
from isoplug.validation import explain_validation_error
from tests.plugins_fixtures import FAST, QUICK_DRAIN, copy_plugins, plugins_dir


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


@pytest.mark.parametrize("timeout", [math.inf, -math.inf, math.nan])
async def test_a_float_json_cannot_say_reaches_setup_as_it_is(
    tmp_path: Path, timeout: float
) -> None:
    """TOML floats may be nan or inf; the runner's start (a JSON line) carries them intact."""
    overrides = {"configured": {"limits": {"timeout": timeout}}}
    async with Host(
        plugins_dir(tmp_path, "configured"), config=FAST, plugin_config=overrides
    ) as host:
        await host.wait_ready(20)
        state = await host.call("configured", "state")
    received = state["config"]["limits"]["timeout"]
    assert repr(received) == repr(timeout)


async def test_host_config_given_a_mapping_is_the_plugins_configuration(tmp_path: Path) -> None:
    """Host(config={"id": {...}}), the form the plugin configuration was first asked in, is
    the plugins' configuration; config= still takes the host's own SupervisorConfig."""
    overrides = {"configured": {"limits": {"retries": 7}}}
    async with Host(plugins_dir(tmp_path, "configured"), config=overrides) as host:
        await host.wait_ready(20)
        state = await host.call("configured", "state")
    assert state["config"]["limits"]["retries"] == 7
    with pytest.raises(TypeError, match="not both"):
        Host(tmp_path, config=overrides, plugin_config=overrides)


async def test_a_bad_config_fails_the_plugin_naming_the_plugin_and_the_field(
    tmp_path: Path,
) -> None:
    overrides = {"configured": {"limits": {"retries": "many"}}}
    changes: list[StateChange] = []
    async with Host(
        plugins_dir(tmp_path, "configured"),
        config=FAST,
        plugin_config=overrides,
        on_change=changes.append,
    ) as host:
        with pytest.raises(PluginFailed) as caught:
            await host.wait_ready(20)
        failed = [change for change in changes if change.state is PluginState.FAILED]
        assert failed and failed[0].config_refused, failed
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
            (failed,) = records.select(text="on_config failed")
        # A readable first line; the plugin's traceback after it, on lines of its own.
        first, _, rest = failed.getMessage().partition("\n")
        assert first == (
            "plugin configured: on_config failed: RuntimeError: on_config refused it; "
            "restarting its runner with the new configuration"
        ), first
        assert "Traceback (most recent call last)" in rest and "in on_config" in rest, rest
        assert rest.rstrip().endswith("RuntimeError: on_config refused it"), rest
        state = await host.call("configured", "state")
        assert state["pid"] != pid and state["config"]["greeting"] == "explode"


async def test_sys_exit_in_on_config_fails_the_change_not_the_runner(tmp_path: Path) -> None:
    """``sys.exit()`` in ``on_config`` is a failed change, as any exception there: the plugin
    restarts with the new configuration on request, not as a crash of its runner."""
    async with Host(plugins_dir(tmp_path, "configured"), config=FAST) as host:
        await host.wait_ready(20)
        pid = host.plugin("configured").pid
        with watching("isoplug.host") as records:
            assert await host.set_config("configured", {"greeting": "exit"}) is False
            failed = records.select(text="on_config failed")
            assert failed and "SystemExit: on_config asked to exit" in failed[0].getMessage()
        state = await host.call("configured", "state")
        assert state["pid"] != pid and state["config"]["greeting"] == "exit"
        info = host.plugin("configured")
        assert info.last_exit is not None and "crash" not in info.last_exit.reason
        assert info.last_exit.returncode == 0, info.last_exit


@pytest.mark.parametrize("how", ["die", "die quietly"])
async def test_a_runner_that_ends_in_on_config_restarts_once_with_the_new_config(
    tmp_path: Path, how: str
) -> None:
    """Its crash and the change's failure are one restart, whichever the host hears of first
    ("die quietly": a child of the runner holds its connection, so the exit comes first)."""
    async with Host(plugins_dir(tmp_path, "configured"), config=QUICK_DRAIN) as host:
        await host.wait_ready(20)
        with watching("isoplug.host") as records:
            assert await host.set_config("configured", {"greeting": how}) is False
            await host.wait_ready(20)
            state = await host.call("configured", "state")
            info = host.plugin("configured")
            said = [r.getMessage() for r in records.select() if "restart" in r.getMessage()]
        assert info.restarts == 1, info.summary()
        # The warning naming on_config, and one state change: one restart.
        assert len(said) == 2 and "ended during on_config" in said[0], said
        # Its setup got the new configuration, and no on_config came after.
        assert state["config"]["greeting"] == how and state["seen"] == [state["config"]]


def assert_the_plugins_traceback(text: str, hook: str) -> None:
    """``text`` holds the traceback of the fixture's ``_chained``, called by ``hook``: from the
    plugin's first frame on (none of isoplug's before it), its cause whole."""
    _, _, text = text.partition("Traceback (most recent call last):")
    cause, _, raised = text.partition(
        "The above exception was the direct cause of the following exception:"
    )
    frames = [line.strip() for line in text.splitlines() if line.strip().startswith("File ")]
    assert all('configured/configured_plugin.py", line ' in frame for frame in frames), text
    assert [frame.rpartition(", ")[2] for frame in frames] == [
        "in _chained",  # the cause: where it was raised
        f"in {hook}",
        "in _chained",
    ], text
    assert "KeyError: 'missing'" in cause, text
    assert raised.rstrip().endswith(f"RuntimeError: {hook} refused it"), text


async def test_a_failed_setup_or_on_config_reaches_the_host_from_the_plugins_frames(
    tmp_path: Path,
) -> None:
    """As a method's: isoplug's frames that called the hook are not the plugin's story."""
    directory = copy_plugins(tmp_path, "configured")
    with (directory / "configured" / "plugin.toml").open("a") as manifest:
        manifest.write('\n[restart]\npolicy = "never"\n')  # its failed setup: no crash loop
    async with Host(directory, config=FAST) as host:
        await host.wait_ready(20)
        with watching("isoplug.host") as records:
            assert await host.set_config("configured", {"greeting": "chained"}) is False
            (failed,) = records.select(text="on_config failed")
            assert_the_plugins_traceback(failed.getMessage(), "on_config")
            # Its restart runs setup with it, which raises the same way.
            setup = await records.wait_for_record(text="setup() raised")
        assert_the_plugins_traceback(setup.getMessage(), "setup")


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


# -- a new configuration is checked before anything changes, in every state ------------------


async def _state(host: Host) -> Any:
    return await host.call("config_gate", "state")


async def test_set_config_checks_a_starting_plugin_and_restarts_it_with_a_valid_one(
    tmp_path: Path,
) -> None:
    gate, second_gate = tmp_path / "gate", tmp_path / "gate2"
    overrides = {"config_gate": {"hold": str(gate)}}
    async with Host(
        plugins_dir(tmp_path, "config_gate"), config=FAST, plugin_config=overrides
    ) as host:
        await eventually(lambda: host.plugin("config_gate").pid is not None)
        pid = host.plugin("config_gate").pid
        with pytest.raises(ConfigInvalid, match=r"plugin 'config_gate': config field 'n'"):
            await host.set_config("config_gate", {"n": "zzz", "hold": str(gate)})
        assert host.plugin("config_gate").state is PluginState.STARTING
        assert host.plugin("config_gate").pid == pid
        # A valid one restarts the starting runner, which has the old one.
        change = asyncio.create_task(
            host.set_config("config_gate", {"n": 5, "hold": str(second_gate)})
        )
        await eventually(lambda: host.plugin("config_gate").pid not in (None, pid))
        second_gate.touch()
        assert await change is False
        assert (await _state(host))["n"] == 5


async def test_set_config_checks_a_failed_plugin_and_changes_nothing(tmp_path: Path) -> None:
    overrides = {"config_gate": {"n": "bad"}}
    async with Host(
        plugins_dir(tmp_path, "config_gate"), config=FAST, plugin_config=overrides
    ) as host:
        await host.wait_ready(20, raise_on_failure=False)
        before = host.plugin("config_gate")
        assert before.state is PluginState.FAILED and "'bad'" in (before.error or "")
        with pytest.raises(ConfigInvalid, match=r"config field 'n': must be an integer"):
            await host.set_config("config_gate", {"n": "still bad"})
        with pytest.raises(ConfigInvalid, match=r"RuntimeError: 13 is unlucky"):
            await host.set_config("config_gate", {"n": 13})
        # Unencodable: refused before anything is sent or stored (the supervisor lives on).
        with pytest.raises(UnencodableValue, match=r"plugin 'config_gate'.*config\['n'\]"):
            await host.set_config("config_gate", {"n": object()})
        after = host.plugin("config_gate")
        assert (after.state, after.error, after.restarts) == (
            before.state,
            before.error,
            before.restarts,
        )
        assert await host.set_config("config_gate", {"n": 4}) is False
        assert host.plugin("config_gate").state is PluginState.READY
        assert (await _state(host))["n"] == 4


async def test_a_stopped_plugin_stays_stopped_and_checks_its_new_config(tmp_path: Path) -> None:
    overrides = {"config_gate": {"n": "bad"}}
    async with Host(
        plugins_dir(tmp_path, "config_gate"), config=FAST, plugin_config=overrides
    ) as host:
        await host.wait_ready(20, raise_on_failure=False)
        assert host.plugin("config_gate").state is PluginState.FAILED
        # Stopping a failed plugin stops it: a new configuration does not start it again.
        assert (await host.stop("config_gate")).state is PluginState.STOPPED
        with pytest.raises(ConfigInvalid, match=r"config field 'n'"):
            await host.set_config("config_gate", {"n": "x"})
        assert await host.set_config("config_gate", {"n": 7}) is False
        info = host.plugin("config_gate")
        assert info.state is PluginState.STOPPED and info.pid is None
        await host.restart("config_gate")
        assert (await _state(host))["n"] == 7
        await host.stop("config_gate")
        with pytest.raises(ConfigInvalid, match=r"RuntimeError: 13 is unlucky"):
            await host.set_config("config_gate", {"n": 13})
        assert await host.set_config("config_gate", {"n": 8}) is False
        assert host.plugin("config_gate").state is PluginState.STOPPED


async def test_a_ready_plugin_refuses_a_config_its_schema_raises_on_or_cannot_get(
    tmp_path: Path,
) -> None:
    async with Host(plugins_dir(tmp_path, "config_gate"), config=FAST) as host:
        await host.wait_ready(20)
        pid = host.plugin("config_gate").pid
        with pytest.raises(
            ConfigInvalid, match=r"plugin 'config_gate': .*RuntimeError: 13 is unlucky"
        ):
            await host.set_config("config_gate", {"n": 13})
        with pytest.raises(ConfigInvalid, match=r"plugin 'config_gate': .*not a string: int 1"):
            await host.set_config("config_gate", {1: 2})  # type: ignore[dict-item]
        with pytest.raises(ConfigInvalid, match=r"plugin 'config_gate': .*must be a table"):
            await host.set_config("config_gate", 5)  # type: ignore[arg-type]
        with pytest.raises(UnencodableValue, match=r"plugin 'config_gate': .*config\['n'\]"):
            await host.set_config("config_gate", {"n": 2**70})
        info = host.plugin("config_gate")
        assert (info.state, info.pid, info.restarts) == (PluginState.READY, pid, 0)
        assert (await _state(host))["n"] == 1


def test_host_refuses_plugin_config_that_is_not_a_table() -> None:
    with pytest.raises(ConfigInvalid, match=r"plugin 'weather': .*must be a table.*int 5"):
        Host("plugins", plugin_config={"weather": 5})  # type: ignore[dict-item]


async def test_config_without_a_schema_is_read_only_all_the_way_down(tmp_path: Path) -> None:
    async with Host(plugins_dir(tmp_path, "config_untyped"), config=FAST) as host:
        await host.wait_ready(20)
        outcomes = await host.call("config_untyped", "mutate")
        # Read-only, yet a plugin may return it (or part of it) as it would a dict.
        config = await host.call("config_untyped", "config")
    assert outcomes == {"top": "TypeError", "nested": "TypeError", "list": "AttributeError"}
    assert config == {"tags": ["a"], "db": {"port": 1}}, config


def test_a_field_name_holding_msgspecs_location_marker_is_one_field() -> None:
    class Settings(msgspec.Struct, forbid_unknown_fields=True):
        odd: int = msgspec.field(name="a` - at `$.b", default=0)
        b: int = 0

    for document in ({"a` - at `$.b": "x"}, {"a` - at `$.b": "x", "b": 0}):
        with pytest.raises(ConfigInvalid) as caught:
            validate_config("confuse", type("P", (), {"config_schema": Settings}), document)
        assert str(caught.value) == (
            "plugin 'confuse': config field 'a` - at `$.b': must be an integer, got string 'x'"
        )
    with pytest.raises(ConfigInvalid) as caught:
        validate_config("confuse", type("P", (), {"config_schema": Settings}), {"y - at `$.b`": 1})
    assert str(caught.value) == (
        "plugin 'confuse': config field 'y - at `$.b`': is not a known field of its "
        "config_schema test_a_field_name_holding_msgspecs_location_marker_is_one_field."
        "<locals>.Settings (known there: a` - at `$.b, b)"
    )
    dotted = explain_validation_error(
        "Expected `int`, got `str` - at `$.x.y.z`", {"x.y": {"z": "q"}}
    )
    assert (dotted.field, dotted.problem) == ("x.y.z", "must be an integer, got string 'q'")


def test_a_typo_in_the_config_is_refused_whether_or_not_the_schema_forbids_unknown_fields() -> None:
    """msgspec drops unknown fields unless the schema forbids them: a typo (top level, in a
    nested table, in a list of tables) would then be ignored, the field keeping its default."""
    plugin = type("P", (), {"config_schema": Settings})
    for document, path, known in (
        ({"stepp": 2}, "stepp", "step-size, inner, hosts"),
        ({"step-size": 2, "inner": {"retires": 1}}, "inner.retires", "retries"),
        ({"hosts": [{"retries": 1}, {"retires": 1}]}, "hosts[1].retires", "retries"),
    ):
        with pytest.raises(ConfigInvalid) as caught:
            validate_config("typo", plugin, document)
        assert f"config field {path!r}: is not a known field" in str(caught.value)
        assert str(caught.value).endswith(f"(known there: {known})")
    assert validate_config("typo", plugin, {"step-size": 2, "hosts": [{}]}) == Settings(
        step_size=2, hosts=[Inner()]
    )


class Inner(msgspec.Struct):
    retries: int = 3


class Settings(msgspec.Struct, rename="kebab"):
    step_size: int = 1
    inner: Inner | None = None
    hosts: list[Inner] = []


CRASHY_CODE = """\
import msgspec

import isoplug


class Settings(msgspec.Struct):
    port: int


class Crashy(isoplug.Plugin):
    config_schema = Settings

    async def setup(self, ctx):
        self.ctx = ctx
        if ctx.config.port < 1024:
            raise RuntimeError(f"cannot bind port {ctx.config.port}")

    @isoplug.method
    async def port(self):
        return self.ctx.config.port
"""


def write_crashy(directory: Path) -> Path:
    folder = directory / "crashy"
    folder.mkdir(parents=True)
    (folder / "plugin.toml").write_text(
        'id = "crashy"\nversion = "1"\nentry = "crashy:Crashy"\n'
        '[restart]\npolicy = "never"\n[config]\nport = 80\n'
    )
    (folder / "crashy.py").write_text(CRASHY_CODE)
    return directory


async def test_a_plugin_failed_for_its_config_restarts_with_a_new_one(tmp_path: Path) -> None:
    """setup() fails for the configuration it got (a port it cannot bind): FAILED. A new
    configuration is how the user fixes that: set_config starts it again with it."""
    async with Host(write_crashy(tmp_path / "plugins"), config=FAST) as host:
        with pytest.raises(PluginFailed):
            await host.wait_ready(20)
        assert host.plugin("crashy").state is PluginState.FAILED
        assert await host.set_config("crashy", {"port": 8080}) is False
        info = await host.wait_for("crashy", lambda i: i.state is PluginState.READY, 20)
        assert info.state is PluginState.READY
        assert await host.call("crashy", "port") == 8080


async def test_a_config_edit_under_reload_restarts_a_failed_plugin(tmp_path: Path) -> None:
    pytest.importorskip("watchfiles")
    directory = write_crashy(tmp_path / "plugins")
    with watching("isoplug.host") as waiter:
        async with Host(directory, config=FAST, reload=True) as host:
            with pytest.raises(PluginFailed):
                await host.wait_ready(20)
            assert host.reloader is not None
            await eventually(host.reloader.watching.is_set)
            manifest = directory / "crashy" / "plugin.toml"
            manifest.write_text(manifest.read_text().replace("port = 80", "port = 8080"))
            await host.wait_for("crashy", lambda i: i.state is PluginState.READY, 20)
            assert await host.call("crashy", "port") == 8080
            await waiter.wait_for("isoplug.host", "has a new configuration (its runner restarted")
