"""The zygote's death kills every runner it forked: the plugins did nothing wrong, so their
runners are restarted at once and not counted toward their crash loops (their accounts say
what happened); a zygote that keeps dying makes the host spawn runners instead."""

from __future__ import annotations

import logging
import os
import shutil
import signal
from pathlib import Path

import pytest

from isoplug import Host, PluginState
from isoplug.host import PluginInfo
from isoplug.host.zygote import _MAX_DEATHS, fork_supported
from tests.plugins_fixtures import FAST, FIXTURES
from tests.process_memory import parent_of
from tests.record_waiter import watching

pytestmark = [
    pytest.mark.skipif(not fork_supported(), reason="runners are spawned here"),
    # Killed here: a zygote of each host's own, never one the session's other hosts share.
    pytest.mark.usefixtures("isoplug_own_zygotes"),
]


def fragile_echo(tmp_path: Path) -> Path:
    """The echo plugin, failed at its second crash within a minute."""
    directory = tmp_path / "plugins"
    shutil.copytree(FIXTURES / "echo", directory / "echo")
    manifest = directory / "echo" / "plugin.toml"
    text = manifest.read_text()
    assert "max_restarts = 3" in text
    manifest.write_text(text.replace("max_restarts = 3", "max_restarts = 1"))
    return directory


async def test_runners_killed_with_their_zygote_restart_outside_the_crash_count(
    tmp_path: Path,
) -> None:
    """Each SIGKILL of the zygote kills the forked runner; with ``max_restarts = 1`` a second
    crash would fail the plugin, but these are restarted at once, READY again from a new
    zygote, their accounts naming the zygote's death. At the zygote's third death within
    the window the host spawns runners from then on, saying so in an ERROR."""
    with watching(None) as waiter:
        async with Host(fragile_echo(tmp_path), config=FAST) as host:
            await host.wait_ready(20)
            for death in range(1, _MAX_DEATHS + 1):
                runner = host.plugin("echo").pid
                assert runner is not None
                zygote = parent_of(runner)
                assert zygote != os.getpid(), "not forked"
                os.kill(zygote, signal.SIGKILL)

                def replaced(info: PluginInfo, runner: int = runner) -> bool:
                    return info.state is PluginState.FAILED or (
                        info.state is PluginState.READY and info.pid not in (None, runner)
                    )

                info = await host.wait_for("echo", replaced, timeout=30)
                assert info.state is PluginState.READY, info.error
                assert info.restarts == death
                account = info.last_exit
                assert account is not None and account.pid == runner
                assert account.zygote_died, account
                assert f"the runner zygote (pid {zygote}) was killed by SIGKILL" in account.reason
            said = await waiter.wait_for("isoplug.host", "not counted as a crash (its zygote")
            assert said.levelno == logging.WARNING
            record = await waiter.wait_for("isoplug.host", "spawning runners from now on")
            assert record.levelno == logging.ERROR
            assert f"the runner zygote died {_MAX_DEATHS} times within" in record.getMessage()
            spawned = host.plugin("echo").pid
            assert spawned is not None and parent_of(spawned) == os.getpid()
            assert await host.call("echo", "echo", 1) == 1
            # The plugin's own crashes still count: the first backs off, as ever.
            with pytest.raises(Exception, match="exited with code 5"):
                await host.call("echo", "crash", 5)
            info = await host.wait_for(
                "echo", lambda i: i.state is PluginState.READY and i.pid != spawned, timeout=30
            )
            assert info.last_exit is not None and not info.last_exit.zygote_died
