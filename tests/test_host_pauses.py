"""A host that itself did not run for a while (SIGSTOP/SIGCONT: ``docker pause``, ``systemctl
freeze``, Ctrl-Z, a starved machine) blames none of its runners for that time: an answer that
came while it was stopped wins over the timeout handled when it runs again, and its runners'
health windows get the time back. The host runs in a process of its own
(tests/paused_host_child.py), which the tests stop and continue with real signals."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

from isoplug import PluginState
from isoplug.testing import eventually
from tests import plugins_fixtures
from tests.paused_host_child import CALL_TIMEOUT, CONFIG
from tests.plugins_fixtures import plugins_dir
from tests.processes import ROOT, child_env

#: A host stopped until this long after its deadline started is past it.
PAST_THE_LIMIT = CONFIG.health_timeout + CONFIG.health_grace + 0.5


class HostChild:
    """tests/paused_host_child.py running: its lines as they come, and its runners' pids."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.lines: list[str] = []
        self.runners: dict[str, int] = {}
        self._reader = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        assert self.process.stdout is not None
        async for raw in self.process.stdout:
            line = raw.decode().rstrip("\n")
            if line.startswith("runner "):
                _, name, pid = line.split()
                self.runners[name] = int(pid)
            self.lines.append(line)

    async def line(self, wanted: Callable[[str], bool], timeout: float = 30) -> str:
        await eventually(lambda: any(map(wanted, self.lines)), timeout)
        return next(filter(wanted, self.lines))

    async def query_after(self, runner: str, moment: float) -> None:
        """Until the host started a health check of ``runner`` after ``moment``."""

        def later(line: str) -> bool:
            parts = line.split()
            return parts[:2] == ["query", runner] and float(parts[2]) > moment

        await self.line(later)

    def stop(self) -> float:
        os.kill(self.process.pid, signal.SIGSTOP)
        return time.monotonic()

    def cont(self) -> float:
        os.kill(self.process.pid, signal.SIGCONT)
        return time.monotonic()

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


@asynccontextmanager
async def host_child(directory: Path, *arguments: str) -> AsyncIterator[HostChild]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.paused_host_child",
        str(directory),
        *arguments,
        stdout=asyncio.subprocess.PIPE,
        cwd=ROOT,
        env=child_env(),
    )
    child = HostChild(process)
    try:
        await child.line(lambda line: line == "ready")
        yield child
    finally:
        # Continued first: a stopped process does not act on SIGTERM, nor do its runners
        # notice its end.
        if process.returncode is None:
            os.kill(process.pid, signal.SIGCONT)
            process.terminate()
        await process.wait()
        await child._reader


async def until_past(moment: float) -> None:
    """Until the clock reads past ``moment``: a deadline that must have passed meanwhile."""
    await eventually(lambda: time.monotonic() > moment, moment - time.monotonic() + 30)


async def test_a_call_answered_while_the_host_was_stopped_returns_its_answer(
    tmp_path: Path,
) -> None:
    """The method ends while the host is stopped, before the call's timeout; the host runs
    again past the timeout, and handles the timeout and the answer waiting in its socket in the
    same round: the answer wins (no false RequestTimeout saying the method had not ended, which
    a caller would retry)."""
    started, gate, answered = (tmp_path / name for name in ("started", "gate", "answered"))
    directory = plugins_dir(tmp_path, "latch")
    async with host_child(directory, "held", str(started), str(gate), str(answered)) as host:
        await eventually(started.exists)
        stopped = host.stop()
        gate.touch()
        await eventually(answered.exists)
        await until_past(stopped + CALL_TIMEOUT + 0.5)
        host.cont()
        said = await host.line(lambda line: line.startswith("call "))
    assert said == "call result through", host.text


async def test_a_health_answer_sent_while_the_host_was_stopped_is_taken(tmp_path: Path) -> None:
    """A health query is in flight (its runner stopped a moment); the host is stopped, the
    runner continued (its health thread answers at once), and the host continued past
    health_timeout + health_grace: the answer in its socket counts, and nobody is killed."""
    async with host_child(plugins_dir(tmp_path, "latch")) as host:
        runner = host.runners["latch"]
        os.kill(runner, signal.SIGSTOP)
        await host.query_after("latch", time.monotonic())
        stopped = host.stop()
        os.kill(runner, signal.SIGCONT)
        await until_past(stopped + PAST_THE_LIMIT)
        resumed = host.cont()
        await host.query_after("latch", resumed)
    assert "killing it" not in host.text, host.text
    assert "crashed" not in host.text, host.text


async def test_a_frozen_tree_blames_no_runner(tmp_path: Path) -> None:
    """Host and runners stopped together (a cgroup freeze) past health_timeout + health_grace:
    the host finds its own loop did not run for that long, says so once, and counts none of it
    against its runners: none is killed as hung, none is said to have held the GIL."""
    async with host_child(plugins_dir(tmp_path, "latch", "echo")) as host:
        runners = list(host.runners.values())
        for runner in runners:
            os.kill(runner, signal.SIGSTOP)
        stopped = host.stop()
        await until_past(stopped + PAST_THE_LIMIT)
        resumed = host.cont()
        for runner in runners:
            os.kill(runner, signal.SIGCONT)
        for name in host.runners:
            await host.query_after(name, resumed)
        # The check after the first ones: a verdict of theirs would have been said by then.
        for name in host.runners:
            await host.query_after(name, time.monotonic())
    assert "INFO the host did not run for" in host.text, host.text
    assert "killing it" not in host.text, host.text
    assert "no thread could run Python" not in host.text, host.text


async def test_a_runner_stopped_past_its_health_limit_is_said_to_have_been_stopped(
    tmp_path: Path,
) -> None:
    """A runner alone stopped (SIGSTOP) past health_timeout + health_grace is killed, as
    documented; its account says it was stopped, not that it hung."""
    async with plugins_fixtures.running(tmp_path, "echo", config=CONFIG) as (host, _):
        pid = host.plugin("echo").pid
        assert pid is not None
        os.kill(pid, signal.SIGSTOP)
        info = await host.wait_for(
            "echo", lambda info: info.state is PluginState.READY and info.restarts >= 1, 30
        )
    assert info.last_exit is not None and info.last_exit.pid == pid
    text = info.last_exit.describe()
    # Late on a loaded machine, the check also says how long of that the runner waited for a
    # CPU (a flake matched one exact string).
    assert re.search(
        r"was killed by SIGKILL from the host: no answer to a health check within [\d.]+ s"
        r"(, [\d.]+ s of it waiting for a CPU)? \(the process was stopped: SIGSTOP, or a "
        r"debugger\)",
        text,
    ), text
    assert "hung" not in text, text
