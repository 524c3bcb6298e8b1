"""A process the plugin's own code forks inside a runner inherits the runner's event loop (its
epoll instance shared with the runner) and its connection to the host: whatever the child does
with them, the runner keeps working, and the child's log records reach the host as a
descendant's. With a real host, runner and forked child."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.plugins_fixtures import running


@pytest.mark.parametrize("how", ["asyncio-run", "new-loop", "unregister-all"])
async def test_a_forked_child_cannot_disturb_its_runners_loop(tmp_path: Path, how: str) -> None:
    """A child that runs asyncio of its own, or unregisters every descriptor from the epoll
    instance it inherited (as its copy of the runner's loop would, closing), leaves the
    runner answering calls; the child's record arrives."""
    async with running(tmp_path, "loopforker") as (host, waiter):
        assert await host.call("loopforker", "fork", how) == 0
        for value in range(3):
            assert await asyncio.wait_for(host.call("loopforker", "ping", value), 10) == value
        await waiter.wait_for("plugin.loopforker.loopforker", "pong 2")
        if how != "unregister-all":
            child = await waiter.wait_for(
                "plugin.loopforker.loopforker", f"child {how} ran its own loop"
            )
            assert child.process != host.plugin("loopforker").pid


@pytest.mark.parametrize("method", ["fork", "fork_in_thread"])
@pytest.mark.parametrize(("how", "raising"), [("sys-exit", " raising SystemExit"), ("return", "")])
async def test_a_forked_child_back_in_the_runners_dispatch_is_ended(
    tmp_path: Path, method: str, how: str, raising: str
) -> None:
    """A child that returns, or raises SystemExit, out of the plugin's method comes back into
    the runner's call dispatch (an ``async def``'s task, or a plain ``def``'s worker thread):
    it is ended there, saying so, and never answers the host's call in the runner's place
    (the runner's own answer is the call's)."""
    async with running(tmp_path, "loopforker") as (host, waiter):
        runner = host.plugin("loopforker").pid
        assert await host.call_with("loopforker", method, args=[how], timeout=20) == 0
        said = await waiter.wait_for("plugin.loopforker.isoplug.runner", "came back into")
        for value in range(3):
            assert await asyncio.wait_for(host.call("loopforker", "ping", value), 10) == value
    message = said.getMessage()
    assert (
        f"forked by plugin code in loopforker.{method}, came back into its runner (pid {runner})"
        in message
    )
    assert f"{raising}: ended with exit code 0" in message, message
    assert said.process != runner
