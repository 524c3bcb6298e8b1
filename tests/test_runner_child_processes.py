"""Processes a plugin starts without forking its runner (a spawn or forkserver pool, a Python
subprocess) forward their records as the plugin's, through PluginContext's settings."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from tests.plugins_fixtures import running


@pytest.mark.parametrize("method", ["spawn", "forkserver"])
async def test_a_pool_of_spawned_workers_forwards_as_the_plugin(
    tmp_path: Path, method: str
) -> None:
    """ctx.log_initializer() makes each worker forward its records at the plugin's level
    (DEBUG here: a spawned worker's logging starts unconfigured, at WARNING)."""
    async with running(tmp_path, "spawner") as (host, waiter):
        runner_pid = await host.call("spawner", "pid")
        pids = await host.call_with("spawner", "pool", args=[method], timeout=60)
        records = [
            await waiter.wait_for("plugin.spawner.spawner.worker", f"from a spawned worker {n}")
            for n in range(4)
        ]
    for number, record in enumerate(records):
        assert record.levelno == logging.DEBUG
        assert record.process == pids[number]
        assert record.plugin_id == "spawner"  # type: ignore[attr-defined]
        assert record.runner_pid == runner_pid  # type: ignore[attr-defined]


async def test_a_python_subprocess_forwards_with_the_plugins_child_env(tmp_path: Path) -> None:
    """forward_logs() with no arguments, in a child given ctx.log_child_env(): its records
    are the plugin's, at the plugin's level (its DEBUG record arrives; the child's logging
    starts unconfigured, at WARNING)."""
    async with running(tmp_path, "spawner") as (host, waiter):
        pid = await host.call("spawner", "python_child")
        record = await waiter.wait_for("plugin.spawner.spawner.child", f"from a python child {pid}")
    assert record.process == pid and record.plugin_id == "spawner"  # type: ignore[attr-defined]
    assert record.levelno == logging.DEBUG
