"""What isoplug.testing promises, where it once did otherwise: a refused capability is a
refusal, an invalid manifest fails the start, crash() of a plugin that is not restarted fails
at once, an argument named ``plugin`` reaches the method; and a runner stopped mid-call still
forwards what the cancelled method logs. Real runners under a real host throughout."""

from __future__ import annotations

import asyncio
import inspect
import logging
import re
import textwrap
from pathlib import Path
from typing import Any

import pytest

from isoplug import Host, PluginFailed, PluginState
from isoplug.host import PluginUnavailable, Unavailability
from isoplug.testing import (
    FAST,
    BlockingHarness,
    IsoplugHost,
    PluginHarness,
    Records,
    attached,
)

PLUGIN = """
import asyncio
import logging

import isoplug


class Traps(isoplug.Plugin):
    async def setup(self, ctx: isoplug.PluginContext) -> None:
        self.ctx = ctx
        self.background = asyncio.ensure_future(self.linger())

    async def linger(self) -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            logging.getLogger("plugin.traps").warning("lingering task cancelled")
            raise

    @isoplug.method
    async def now_or_fallback(self) -> str:
        try:
            return str(await self.ctx.call_host("clock.now"))
        except isoplug.CapabilityDenied as exc:
            return f"denied: {exc}"

    @isoplug.method
    async def named(self, plugin: str, text: str = "") -> str:
        return f"{plugin}/{text}"

    @isoplug.method
    async def asleep(self) -> str:
        self.ctx.logger.info("asleep now")
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            self.ctx.logger.warning("asleep cancelled")
            raise
        return "slept"

    async def teardown(self) -> None:
        self.ctx.logger.warning("teardown ran")
"""


def write_plugin(
    root: Path, manifest_extra: str = "", name: str = "traps", root_name: str | None = None
) -> Path:
    """A plugin ``name`` in ``root``, in a folder named ``root_name`` (``name``)."""
    folder = root / (root_name or name)
    folder.mkdir(parents=True)
    (folder / "plugin.toml").write_text(
        f'id = "{name}"\nversion = "1.0"\nentry = "{name}:Traps"\n'
        'capabilities = ["clock.now"]\n' + textwrap.dedent(manifest_extra)
    )
    (folder / f"{name}.py").write_text(PLUGIN)
    return folder


async def test_a_denied_capability_raises_capability_denied_in_the_plugin(tmp_path: Path) -> None:
    async with PluginHarness(write_plugin(tmp_path), deny=["clock.now"]) as plugin:
        answer = await plugin.call("now_or_fallback")
        assert answer == "denied: capability 'clock.now' is denied by the test"
        assert [call.name for call in plugin.capability_calls] == ["clock.now"]
        # A refusal, not a failure of the host's code: nothing to warn about.
        assert not plugin.records.select(logger="isoplug.host", level=logging.WARNING)


async def test_a_host_capability_raising_capability_denied_refuses_the_call(
    tmp_path: Path,
) -> None:
    """Outside the harness too: the host's own function may refuse a plugin."""
    import isoplug

    def clock_now() -> float:
        raise isoplug.CapabilityDenied("not during maintenance")

    write_plugin(tmp_path / "plugins")
    records = Records()
    with attached(records, "isoplug"):
        async with Host(tmp_path / "plugins", config=FAST) as host:
            host.register_capability("clock.now", clock_now)
            await host.wait_ready(30)
            assert await host.call("traps", "now_or_fallback") == "denied: not during maintenance"
    assert not records.select(logger="isoplug.host", text="clock.now")


def test_an_invalid_manifest_fails_the_start_naming_the_folder_and_the_key(
    tmp_path: Path, isoplug_host: object
) -> None:
    folder = write_plugin(tmp_path, "captabilities = []\n")
    with pytest.raises(PluginFailed, match="captabilities") as raised:
        isoplug_host(folder)  # type: ignore[operator]
    assert raised.value.failures.keys() == {"traps"}
    assert f"{folder}{'/'}plugin.toml" in str(raised.value)
    assert "isoplug-plugin-" not in str(raised.value)  # the harness's scratch folder


@pytest.mark.parametrize("relative", [False, True])
async def test_a_folder_of_plugins_with_one_invalid_manifest_fails_the_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, relative: bool
) -> None:
    """By the folder's name, also given as a relative path (which the host takes as an
    absolute one, and names so in its problems)."""
    write_plugin(tmp_path, name="good")
    write_plugin(tmp_path, "captabilities = []\n", name="bad")
    if relative:
        monkeypatch.chdir(tmp_path.parent)
    with pytest.raises(PluginFailed) as raised:
        async with PluginHarness(Path(tmp_path.name) if relative else tmp_path):
            pass
    assert list(raised.value.failures) == ["bad"]
    assert "captabilities" in raised.value.failures["bad"]


async def test_badly_named_plugin_folders_fail_the_start_each_by_its_name(
    tmp_path: Path,
) -> None:
    """Each by its own folder's name (escaped), not all under the folder of plugins."""
    write_plugin(tmp_path, name="good")
    for name in ("dir\x1b[31mred", "dir\nnewline"):
        write_plugin(tmp_path, name="good", root_name=name)
    with pytest.raises(PluginFailed) as raised:
        async with PluginHarness(tmp_path):
            pass
    # A path is one line: its line break escaped, as its escape is.
    assert raised.value.failures.keys() == {"dir\\x1b[31mred", "dir\\nnewline"}
    assert str(raised.value).startswith("2 plugins failed: ")
    assert "\x1b" not in str(raised.value)


def test_crash_of_a_plugin_not_restarted_raises_plugin_failed_at_once(tmp_path: Path) -> None:
    folder = write_plugin(tmp_path, '[restart]\npolicy = "never"\n')
    with BlockingHarness(folder) as plugin:
        # Waiting out the timeout would raise TimeoutError: the outcome is known at once.
        with pytest.raises(PluginFailed, match=r"traps: .*restart policy is 'never'"):
            plugin.crash(timeout=60)
        assert plugin.info().state is PluginState.FAILED


async def test_a_harness_timeout_names_what_it_waited_for_and_the_state(tmp_path: Path) -> None:
    async with PluginHarness(write_plugin(tmp_path)) as plugin:
        with pytest.raises(TimeoutError, match=r"for traps to stop; it is ready \(restarts 0"):
            await plugin.wait_for(
                "traps", lambda info: info.state is PluginState.STOPPED, 0.2, what="traps to stop"
            )


def test_call_in_passes_an_argument_named_plugin_to_the_method(
    tmp_path: Path, isoplug_host: object
) -> None:
    plugin: BlockingHarness = isoplug_host(write_plugin(tmp_path))  # type: ignore[operator]
    assert plugin.call_in("traps", "named", plugin="p", text="t") == "p/t"
    assert plugin.call_in("traps", "named", "p") == "p/"
    assert plugin.call("named", "p", text="t") == "p/t"


async def test_what_a_method_cancelled_at_stop_logs_arrives_as_its_record(tmp_path: Path) -> None:
    """The runner cancels the calls it serves before its teardown hooks and before its log
    forwarding ends: the record is the plugin's, not a line of stderr; the caller is told the
    plugin was stopped. What is logged after forwarding ended is written to stderr once."""
    write_plugin(tmp_path / "plugins")
    records = Records()
    with attached(records, "plugin"):
        async with Host(tmp_path / "plugins", config=FAST) as host:
            await host.wait_ready(30)
            call = asyncio.ensure_future(host.call("traps", "asleep"))
            await records.wait_for_record(plugin="traps", text="asleep now", timeout=20)
            await host.stop("traps")
            with pytest.raises(
                PluginUnavailable, match="stopped on request during 'asleep'"
            ) as out:
                await call
            assert out.value.reason is Unavailability.STOPPED
            cancelled = await records.wait_for_record(text="asleep cancelled", timeout=20)
            assert (cancelled.name, cancelled.levelname) == ("plugin.traps", "WARNING")
            teardown = await records.wait_for_record(text="teardown ran", timeout=20)
            assert teardown.name == "plugin.traps"
            # A task the plugin left running is cancelled as the loop closes, after forwarding
            # ended: its record comes through stderr, wrapped once.
            late = await records.wait_for_record(text="lingering task cancelled", timeout=20)
    assert late.getMessage().count("(log handler closed)") <= 1, late.getMessage()
    assert late.getMessage().count("[WARNING") <= 1, late.getMessage()
    stderr_lines = records.select(plugin="traps", stream="stderr")
    assert not [r for r in stderr_lines if "asleep cancelled" in r.getMessage()]


@pytest.mark.parametrize("harness", [PluginHarness, BlockingHarness])
@pytest.mark.parametrize(
    ("options", "error", "said"),
    [
        (
            {"deny": "clock.now"},
            TypeError,
            "deny must be a list of capability names, not the single string 'clock.now': "
            "write deny=['clock.now']",
        ),
        ({"deny": [1]}, TypeError, "deny must be a list of capability names (strings)"),
        (
            {"ready_timeout": "30"},
            TypeError,
            "ready_timeout must be a number of seconds, got str '30'",
        ),
        ({"ready_timeout": 0}, ValueError, "ready_timeout must be more than 0 seconds, got 0"),
        (
            {"capabilities": ["clock.now"]},
            TypeError,
            "capabilities must map capability names to functions",
        ),
        ({"retry_start": "yes"}, TypeError, "retry_start must be True or False, got 'yes'"),
    ],
)
def test_a_harness_option_of_the_wrong_kind_is_refused_where_the_harness_is_made(
    harness: type[PluginHarness | BlockingHarness],
    options: dict[str, Any],
    error: type[Exception],
    said: str,
    tmp_path: Path,
) -> None:
    """deny="clock.now" denied its letters ("registered: ., c, k, l, n, o, w"), and
    ready_timeout="30" reached asyncio as a raw TypeError once the host had started."""
    with pytest.raises(error, match=re.escape(said)):
        harness(write_plugin(tmp_path), **options)


def test_the_fixture_takes_the_harness_options_and_checks_them(
    tmp_path: Path, isoplug_host: IsoplugHost
) -> None:
    folder = write_plugin(tmp_path)
    with pytest.raises(TypeError, match=re.escape("write deny=['clock.now']")):
        isoplug_host(folder, deny="clock.now")
    plugin = isoplug_host(folder, deny=["clock.now"], ready_timeout=30)
    assert plugin.call("now_or_fallback") == "denied: capability 'clock.now' is denied by the test"


def test_blocking_harness_and_the_fixture_spell_out_the_harness_options() -> None:
    """They took ``**options: Any``: a misspelt or mistyped option passed mypy and help()
    named none. Now each has PluginHarness's parameters, by name, kind and type."""

    def parameters(function: Any) -> list[tuple[str, Any, Any]]:
        return [
            (p.name, p.kind, p.annotation)
            for p in inspect.signature(function).parameters.values()
            if p.name != "self"
        ]

    expected = parameters(PluginHarness)
    assert parameters(BlockingHarness) == expected
    assert parameters(IsoplugHost.__call__) == expected
