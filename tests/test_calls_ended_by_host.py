"""Calls the host itself ends, with real runners: its close ends a call under way, one waiting
for a starting plugin, and refuses one made after it began, each saying the host is closing
(``HOST_NOT_RUNNING``, not the plugin's ``STOPPED``); a hot reload that replaces a runner (new
code, a new ``plugin.toml``) ends the call under way as transient (``RESTARTED``), naming the
reload: the plugin runs on, the call may be sent again."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from isoplug import Host
from isoplug.host import PluginUnavailable, Unavailability
from isoplug.testing import eventually, watching
from tests.plugins_fixtures import FAST, copy_plugins, gated_host, plugins_dir

CLOSING = "the host is closing"


@asynccontextmanager
async def held_call(host: Host) -> AsyncIterator[asyncio.Future[object]]:
    """A call of echo's under way in its runner: the plugin waits for a host capability that
    never answers. Yielded once the runner is in it."""
    entered = asyncio.Event()

    async def never(a: int, b: int) -> int:
        entered.set()
        await asyncio.Event().wait()
        return a + b

    host.register_capability("test.add", never)
    call = asyncio.ensure_future(
        host.call("echo", "call_host", name="test.add", kwargs={"a": 1, "b": 2})
    )
    try:
        await asyncio.wait_for(entered.wait(), 30)
        yield call
    finally:
        call.cancel()


async def test_a_call_under_way_and_one_made_after_aclose_began_say_the_host_is_closing(
    tmp_path: Path,
) -> None:
    async with Host(plugins_dir(tmp_path, "echo"), config=FAST) as host:
        await host.wait_ready(20)
        async with held_call(host) as call:
            closing = asyncio.ensure_future(host.aclose())
            await asyncio.sleep(0)  # the close has begun
            with pytest.raises(PluginUnavailable, match=CLOSING) as after:
                await host.call("echo", "echo", value=1)
            assert after.value.reason is Unavailability.HOST_NOT_RUNNING
            with pytest.raises(PluginUnavailable) as under_way:
                await asyncio.wait_for(call, 30)
            await closing
    assert under_way.value.reason is Unavailability.HOST_NOT_RUNNING
    assert not under_way.value.reason.transient
    assert str(under_way.value) == (
        "plugin 'echo' was stopped during 'call_host': the host is closing (a host runs "
        "once: make a new one)"
    )
    assert under_way.value.plugin_id == "echo"


async def test_a_call_waiting_for_a_starting_plugin_says_the_host_is_closing(
    tmp_path: Path,
) -> None:
    host, _ = await gated_host(tmp_path)  # its setup waits: STARTING for good
    try:
        waiting = asyncio.ensure_future(host.call("gated", "ping"))
        await asyncio.sleep(0)  # it waits for the plugin to be ready now
        assert not waiting.done()
    finally:
        await host.aclose()
    with pytest.raises(PluginUnavailable, match=CLOSING) as caught:
        await asyncio.wait_for(waiting, 5)
    assert caught.value.reason is Unavailability.HOST_NOT_RUNNING
    assert str(caught.value).startswith("cannot call gated.ping: the host is closing")


@pytest.mark.parametrize("change", ["code", "manifest"])
async def test_a_call_under_way_when_hot_reload_replaces_the_runner_may_be_sent_again(
    tmp_path: Path, change: str
) -> None:
    pytest.importorskip("watchfiles")
    directory = copy_plugins(tmp_path, "echo")
    with watching("isoplug.host") as log:
        await _reload_replaces_a_call_under_way(directory, change)
    # Nobody asked for it: the restart (of a code change; a new plugin.toml replaces the
    # runner) is not said to be on request.
    restarts = [r.getMessage() for r in log.records if "restarting" in r.getMessage()]
    assert restarts or change == "manifest", [r.getMessage() for r in log.records]
    assert not [line for line in restarts if "on request" in line], restarts


async def _reload_replaces_a_call_under_way(directory: Path, change: str) -> None:
    async with Host(directory, config=FAST, reload=True) as host:
        await host.wait_ready(20)
        assert host.reloader is not None
        await eventually(host.reloader.watching.is_set)
        old_pid = host.plugin("echo").pid
        async with held_call(host) as call:
            if change == "code":
                with (directory / "echo" / "echo_plugin.py").open("a") as source:
                    source.write("\n# edited\n")
                why = "echo_plugin.py changed)"
            else:
                manifest = directory / "echo" / "plugin.toml"
                manifest.write_text(
                    manifest.read_text().replace('version = "0.1"', 'version = "9"')
                )
                why = "(a plugin.toml changed)"
            with pytest.raises(PluginUnavailable) as caught:
                await asyncio.wait_for(call, 30)
        assert caught.value.reason is Unavailability.RESTARTED
        assert caught.value.reason.transient
        said = str(caught.value)
        assert said.startswith("plugin 'echo' was replaced by hot reload ("), said
        assert f"{why} during 'call_host': the call may be sent again" in said, said
        # Sent again, the new runner takes it.
        await host.wait_for("echo", lambda i: i.state.value == "ready" and i.pid != old_pid, 30)
        assert await host.call("echo", "echo", value=2) == 2
