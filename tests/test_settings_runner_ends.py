"""A plugin's settings changed as its runner ends (a stop, a restart, a crash): the host keeps
them, so the call raises none of the connection's errors, and the next runner has them
(docs/host.md, "Log levels"; ``set_config``).

The race is made certain: the runner's event loop is blocked (it reads nothing), the request
is sent, then the runner ends without reading it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

from isoplug import Host, PluginState
from isoplug.errors import IsoplugError
from isoplug.testing import eventually
from tests.plugins_fixtures import running
from tests.record_waiter import RecordWaiter

PLUGIN = "tally"


@contextlib.asynccontextmanager
async def runner_ending(host: Host, tmp_path: Path) -> AsyncIterator[None]:
    """Freeze the runner's loop; what the body sends goes to a runner that reads nothing and
    ends right after the body's first step (the host's loop cannot see it end before)."""
    frozen, go = tmp_path / "frozen", tmp_path / "go"
    call = asyncio.create_task(
        host.call(PLUGIN, "freeze_then_exit", frozen=str(frozen), go=str(go))
    )
    await eventually(frozen.exists)
    go.touch()
    yield
    with contextlib.suppress(IsoplugError):  # how the call ends is not what is tested here
        await call


async def restarted(host: Host) -> None:
    await host.wait_for(
        PLUGIN, lambda i: i.state is PluginState.READY and i.restarts == 1, timeout=20
    )


async def debug_reaches_the_host(host: Host, waiter: RecordWaiter, tag: str) -> bool:
    """Whether a DEBUG record the plugin logs reaches the host: the ERROR after it, which
    every level lets through, says when all of it has."""
    await host.call(PLUGIN, "say_debug", tag)
    await waiter.wait_for_record(plugin=PLUGIN, text=f"done {tag}")
    return bool(waiter.select(plugin=PLUGIN, text=f"debug {tag}"))


async def test_set_log_level_as_the_runner_ends_is_kept_for_the_next_one(tmp_path: Path) -> None:
    async with running(tmp_path, PLUGIN) as (host, waiter):
        assert not await debug_reaches_the_host(host, waiter, "before")
        async with runner_ending(host, tmp_path):
            await host.set_log_level(PLUGIN, "DEBUG")
        await restarted(host)
        assert host.log_level(PLUGIN) == 10
        assert await debug_reaches_the_host(host, waiter, "after")


async def test_set_config_as_the_runner_ends_restarts_the_plugin_with_it(tmp_path: Path) -> None:
    """``tally`` has no ``on_config``: the runner would answer False; ended, it is restarted
    with the configuration all the same, as documented."""
    async with running(tmp_path, PLUGIN) as (host, _):
        async with runner_ending(host, tmp_path):
            assert await host.set_config(PLUGIN, {"file": "elsewhere"}) is False
        await restarted(host)
