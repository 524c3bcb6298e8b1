"""`isoplug run` as a container's PID 1 (no ``--init``) and as a systemd service (every
process of its control group signalled at once)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.process_memory import children_of
from tests.processes import child_env
from tests.test_cli_all_failed import HEALTHY
from tests.test_cli_exits import cli, write_plugin

#: Makes an orphan as a shell's ``cmd &`` does (the shell exits, its job goes on: the kernel
#: re-parents it to PID 1), and says once it was reaped: until then its corpse stays in
#: ``/proc``.
ORPHANS = """
    import asyncio
    import os
    import subprocess

    import isoplug


    class P(isoplug.Plugin):
        async def setup(self, ctx: isoplug.PluginContext) -> None:
            self.task = asyncio.create_task(self.orphan(ctx))

        async def orphan(self, ctx: isoplug.PluginContext) -> None:
            shell = await asyncio.create_subprocess_exec(
                "sh", "-c", "sleep 0 & echo $!", stdout=subprocess.PIPE
            )
            out, _ = await shell.communicate()
            orphan = int(out)
            ctx.logger.info("orphan %d started", orphan)
            while os.path.exists(f"/proc/{orphan}"):
                await asyncio.sleep(0.02)
            ctx.logger.info("orphan %d reaped", orphan)
"""


def pid_namespace_refused() -> str | None:
    """Why this test cannot make a PID namespace here (None: it can)."""
    if shutil.which("unshare") is None:
        return "unshare (util-linux) is not installed"
    probe = subprocess.run(
        ["unshare", "--pid", "--fork", "--mount-proc", "true"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    if probe.returncode != 0:
        return f"unshare --pid --fork --mount-proc is not permitted here: {probe.stderr.strip()}"
    return None


#: Runs the rest of its arguments as PID 1 of a new PID namespace; killed (by the test), it
#: ends that process and the namespace with it.
AS_PID1 = ("unshare", "--pid", "--fork", "--mount-proc", "--kill-child")


async def test_as_pid1_it_reaps_orphans_and_passes_signals_on(tmp_path: Path) -> None:
    """PID 1 of a container without --init: an orphan a plugin's shell left is reaped (it
    stayed a zombie for as long as the host ran); SIGTERM sent to PID 1 from outside stops
    the command cleanly, and PID 1 exits with the command's code. PID 1 forked before the
    command's imports, and the host does not warn of a PID 1 that does not reap."""
    if (why := pid_namespace_refused()) is not None:
        pytest.skip(why)
    write_plugin(tmp_path / "plugins", "orphans", ORPHANS)
    async with cli("run", str(tmp_path / "plugins"), launcher=AS_PID1) as run:
        async with asyncio.timeout(30):
            await run.until(r"orphans +info +orphan \d+ reaped")
        (pid1,) = children_of(run.process.pid)
        # Forked before the command imported the host's stack: the reaper, alive as long as
        # the container, carries none of its modules (asyncio's C part is one).
        with open(f"/proc/{pid1}/maps") as maps:
            mapped = maps.read()
        assert "_asyncio" not in mapped and "msgspec" not in mapped, mapped
        os.kill(pid1, signal.SIGTERM)
        code, output, errors = await run.finish()
    assert code == 0, output + errors
    assert "isoplug was started as PID 1 (a container without --init): PID 1 now only" in output
    # The host runs in the reaper's child: no warning that nothing reaps.
    assert "this process is PID 1" not in output + errors
    assert "SIGTERM: stopping every plugin" in output and "all plugins stopped" in output


#: Says that its teardown ran.
TORN_DOWN = """
    import asyncio

    import isoplug


    class P(isoplug.Plugin):
        async def teardown(self) -> None:
            # Long enough for a signal sent once the host began stopping the runner to come
            # during its teardown.
            await asyncio.sleep(0.5)
            print("teardown ran", flush=True)
"""


def process_tree(pid: int) -> list[int]:
    """``pid`` and every process below it."""
    return [pid, *(below for child in children_of(pid) for below in process_tree(child))]


@pytest.mark.parametrize("order", ["at once", "host first"])
async def test_every_process_signalled_at_once_as_systemd_does(tmp_path: Path, order: str) -> None:
    """systemd's default KillMode=control-group sends SIGTERM to every process of the service
    at once: the host, its zygote, each runner (here, every process of the command's tree).
    The zygote outlives it until the host ends it, and each runner stops gracefully: every
    plugin's teardown runs, forked or spawned; no runner is said to be restarted, nor to have
    ended with an unknown status, nor is anything an ERROR; the code is 0. "host first": the
    others' signals come once the host began stopping them (a loaded machine: the host's
    notice was read first, and the runner's SIGTERM ended it at once, teardown lost)."""
    plugins = tmp_path / "plugins"
    write_plugin(plugins, "forked", TORN_DOWN)
    write_plugin(plugins, "spawned", TORN_DOWN, 'start = "spawn"\n')
    async with cli("run", str(plugins)) as run:
        await run.until(r"plugin forked: ready")
        await run.until(r"plugin spawned: ready")
        everyone = process_tree(run.process.pid)
        assert len(everyone) >= 4, everyone  # the host, the zygote, two runners
        if order == "host first":
            host, *everyone = everyone
            os.kill(host, signal.SIGTERM)
            await run.until(r"SIGTERM: stopping every plugin")
        for pid in everyone:
            with contextlib.suppress(ProcessLookupError):  # host first: may have ended already
                os.kill(pid, signal.SIGTERM)
        code, output, errors = await run.finish()
    assert code == 0, output + errors
    for plugin in ("forked", "spawned"):
        assert re.search(rf"{plugin} +stdout +teardown ran", output), output
        stopped = re.search(rf"plugin {plugin}: stopped: (.*)", output)
        assert stopped is not None, output
        # As the host's stop and the runner's own one crossed: either way, said as it was.
        assert (
            "exited with code 0; stopped on request" in stopped[1]
            or "while the host was stopping it" in stopped[1]
        ), stopped[1]
    assert not re.search(r"^\S+ +\S+ +error ", output, re.MULTILINE), output
    for untrue in ("restarted at once", "exit status unknown", "crashed"):
        assert untrue not in output, output


#: An application embedding a Host, its log on stderr: started, ready, stopped.
EMBEDDED = """
import asyncio
import logging
import sys

import isoplug

logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")


async def main() -> None:
    for _ in range(2):  # two hosts, one after the other: said once
        async with isoplug.Host(sys.argv[1]) as host:
            await host.wait_ready(60)


asyncio.run(main())
"""


def test_an_embedded_host_as_pid1_warns_once_that_nothing_reaps(tmp_path: Path) -> None:
    """An application embedding a Host, run as PID 1 without an init: the orphans of its
    plugins' children would stay zombies, so the host says so once, with the fix."""
    if (why := pid_namespace_refused()) is not None:
        pytest.skip(why)
    write_plugin(tmp_path / "plugins", "calm", HEALTHY)
    result = subprocess.run(
        [*AS_PID1, sys.executable, "-c", EMBEDDED, str(tmp_path / "plugins")],
        capture_output=True,
        text=True,
        env=child_env(),
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    warnings = re.findall(r"^WARNING isoplug.host: this process is PID 1 .*$", result.stderr, re.M)
    assert len(warnings) == 1, result.stderr
    for fix in ("docker run --init", "tini", "isoplug run"):
        assert fix in warnings[0], warnings[0]
