"""A runner that has exited but that its zygote has not reaped yet (a zombie): the host gives a
zygote that runs the time to reap it, and kills only one that does not
(:meth:`isoplug.host.zygote.Zygote.settle_unreaped`)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from isoplug.host.descendants import read_stat
from isoplug.host.zygote import Zygote

#: A stand-in zygote: forks a child that exits at once, says its pid, and reaps it only when a
#: line comes on its stdin (a zygote waiting for the CPU, as on a loaded machine).
_PARENT = """
import os, sys
pid = os.fork()
if pid == 0:
    os._exit(0)
print(pid, flush=True)
sys.stdin.readline()
os.waitpid(pid, 0)
sys.stdin.readline()
"""


class _ZygoteProcess:
    """The stand-in's process as the zygote's owner sees one: its pid, and a kill."""

    def __init__(self, popen: subprocess.Popen[str]) -> None:
        self.popen = popen
        self.pid = popen.pid
        self.ended: str | None = None
        self.killed = False

    def kill(self) -> None:
        self.killed = True
        self.popen.kill()


@asynccontextmanager
async def _zygote_with_a_zombie() -> AsyncIterator[tuple[Zygote, _ZygoteProcess, int]]:
    with subprocess.Popen(
        [sys.executable, "-c", _PARENT], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    ) as popen:
        try:
            assert popen.stdout is not None
            runner = int(await asyncio.to_thread(popen.stdout.readline))
            while (stat := read_stat(runner)) is not None and stat.state != "Z":
                await asyncio.sleep(0.01)
            zygote = Zygote(lambda: dict(os.environ))
            process = _ZygoteProcess(popen)
            zygote._process = process  # type: ignore[assignment]
            yield zygote, process, runner
        finally:
            popen.kill()


def _reaped_within(runner: int) -> object:
    async def wait_exit(timeout: float | None) -> bool:
        async def gone() -> None:
            while read_stat(runner) is not None:
                await asyncio.sleep(0.01)

        try:
            await asyncio.wait_for(gone(), timeout)
        except TimeoutError:
            return False
        return True

    return wait_exit


async def test_a_zygote_that_runs_gets_the_time_to_reap_a_runner_that_just_exited() -> None:
    """A runner stopped alone, caught in the moment between its exit and its zygote's reaping:
    the zygote is not killed (it was, at once, and every other runner it forked with it)."""
    async with _zygote_with_a_zombie() as (zygote, process, runner):
        assert process.popen.stdin is not None
        reap = process.popen.stdin
        asyncio.get_running_loop().call_later(0.05, lambda: (reap.write("\n"), reap.flush()))
        settled = await zygote.settle_unreaped(runner, "echo", _reaped_within(runner), 30)  # type: ignore[arg-type]
        assert settled
        assert not process.killed and process.popen.poll() is None


async def test_a_zygote_that_does_not_reap_in_time_is_killed() -> None:
    async with _zygote_with_a_zombie() as (zygote, process, runner):
        settled = await zygote.settle_unreaped(runner, "echo", _reaped_within(runner), 0.2)  # type: ignore[arg-type]
        assert settled and process.killed
