"""Closes and waits that overlap, with real runners: two aclose() calls at once are one close,
and a wait_ready() returns only when every plugin is ready (a stop or a close under way makes
it raise, naming why)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from isoplug import PluginState
from isoplug.host import PluginUnavailable, Unavailability
from tests.plugins_fixtures import gated_host, process_alive, running

CLOSED = "the host is closed"


async def test_two_acloses_at_once_are_one_close_and_a_wait_for_stopped_returns(
    tmp_path: Path,
) -> None:
    """The second call waits for the first one's close rather than close the zygote and the
    host under it: each runner's exit is told by the zygote (clean, known), and a wait for
    STOPPED under way sees the plugin stopped rather than "the host is closed"."""
    async with running(tmp_path, "echo", "duo_a") as (host, _):
        pids = [info.pid for info in host.plugins()]
        stopped = asyncio.ensure_future(
            host.wait_for("echo", lambda i: i.state is PluginState.STOPPED)
        )
        await asyncio.sleep(0)  # it waits now
        first = asyncio.ensure_future(host.aclose())
        second = asyncio.ensure_future(host.aclose())
        await asyncio.wait_for(second, 30)
        # The second returned with the close over, not before it.
        assert first.done()
        assert (await asyncio.wait_for(stopped, 5)).state is PluginState.STOPPED
        await first
    for info in host.plugins():
        assert info.state is PluginState.STOPPED, info
        assert info.last_exit is not None, info
        assert info.last_exit.status_known, info.last_exit
        assert info.last_exit.returncode == 0, info.last_exit
    assert not any(pid is not None and process_alive(pid) for pid in pids)


async def test_wait_ready_raises_naming_a_plugin_stopped_while_it_waits(tmp_path: Path) -> None:
    host, _ = await gated_host(tmp_path)
    try:
        waiting = asyncio.ensure_future(host.wait_ready(30))
        await asyncio.sleep(0)  # it waits now
        assert not waiting.done()
        await host.stop("gated")
        with pytest.raises(PluginUnavailable, match=r"plugin 'gated' is stopped") as caught:
            await asyncio.wait_for(waiting, 5)
        assert caught.value.reason is Unavailability.STOPPED
        assert caught.value.plugin_id == "gated"
        assert "host.restart('gated')" in str(caught.value)
        # Asked afterwards, the same; the states instead when asked for them.
        with pytest.raises(PluginUnavailable, match=r"plugin 'gated' is stopped"):
            await host.wait_ready(5)
        infos = await host.wait_ready(5, raise_on_failure=False)
        assert [(i.id, i.state) for i in infos] == [("gated", PluginState.STOPPED)]
    finally:
        await host.aclose()


@pytest.mark.parametrize("raise_on_failure", [True, False])
async def test_wait_ready_raises_once_a_close_stopped_a_plugin_not_ready(
    tmp_path: Path, raise_on_failure: bool
) -> None:
    host, _ = await gated_host(tmp_path)
    waiting = asyncio.ensure_future(host.wait_ready(30, raise_on_failure=raise_on_failure))
    await asyncio.sleep(0)  # it waits now
    await host.aclose()
    closed = f"wait for plugins to be ready: {CLOSED}"
    with pytest.raises(PluginUnavailable, match=closed) as caught:
        await asyncio.wait_for(waiting, 5)
    assert caught.value.reason is Unavailability.HOST_NOT_RUNNING
    assert host.plugin("gated").state is PluginState.STOPPED
