"""Starts that end before the plugin is ready count toward a crash loop in a row, however long
each took: a setup() that hangs until ``ready_timeout`` kills it fails the plugin after
``max_restarts`` restarts, where the window of crashes never could (each start outlasts it);
a start that reached ready ends the run. The ``starter`` fixture's window of 0 s leaves the
count in a row the only rule that can fail it."""

from __future__ import annotations

import dataclasses
import os
import re
import signal
from pathlib import Path

import pytest

from isoplug import Host, PluginState
from isoplug.errors import PluginFailed
from tests.plugins_fixtures import FAST, plugins_dir

#: Its runner killed soon when its setup() hangs, so that three such starts take seconds.
QUICK_READY = dataclasses.replace(FAST, ready_timeout=1.0)


async def test_a_setup_that_always_hangs_fails_the_plugin_after_its_restarts(
    tmp_path: Path,
) -> None:
    """It was restarted forever (each start killed at ready_timeout, never two in one
    window), so a wait_ready() without a timeout never returned."""
    async with Host(plugins_dir(tmp_path, "starter"), config=QUICK_READY) as host:
        host.register_capability("start.outcome", lambda: "hang")
        # Generous: three starts of 1 s each, on a busy machine. Before the fix, TimeoutError.
        with pytest.raises(PluginFailed) as raised:
            await host.wait_ready(60)
        info = host.plugin("starter")
    assert info.state is PluginState.FAILED and info.restarts == 2  # max_restarts = 2
    assert list(raised.value.failures) == ["starter"]
    pattern = (
        r"runner starter \(pid \d+\) was killed by SIGKILL from the host: not ready within 1 "
        r"s \(plugin 'starter': setup\(\) waits at \S+starter_plugin\.py:18 in setup\); "
        r"uptime [\d.]+ s; crash loop: never became ready in 3 starts in a row \(limit 2\), "
        r"giving up"
    )
    assert re.search(pattern, str(raised.value)), raised.value
    assert info.error is not None and re.search(pattern, info.error), info.error


async def test_a_start_that_became_ready_ends_the_run_of_failed_starts(tmp_path: Path) -> None:
    """Two failed starts (its limit), a ready one killed from outside, two failed starts
    again: never more than two in a row, so it is not failed, and its sixth start serves."""
    # What its successive starts are told to do; once told all, they hang.
    told = ["fail", "fail", "ready", "fail", "fail", "ready"]
    async with Host(plugins_dir(tmp_path, "starter"), config=FAST) as host:
        host.register_capability("start.outcome", lambda: told.pop(0) if told else "hang")
        first_ready = await host.wait_for(
            "starter", lambda i: i.state in (PluginState.READY, PluginState.FAILED), 60
        )
        assert first_ready.state is PluginState.READY and first_ready.restarts == 2
        assert first_ready.pid is not None
        os.kill(first_ready.pid, signal.SIGKILL)
        settled = await host.wait_for(
            "starter",
            lambda i: i.restarts > 2 and i.state in (PluginState.READY, PluginState.FAILED),
            60,
        )
        assert settled.state is PluginState.READY, settled.error
        assert settled.restarts == 5 and not told
        assert await host.call("starter", "ping") == "pong"
