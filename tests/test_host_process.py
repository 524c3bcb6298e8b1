"""Starting a runner process: who learns of it when, and what a failed start leaves behind."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys

import pytest

from isoplug.host.process import RunnerProcess
from isoplug.host.stdio_replay import StdioDestination
from isoplug.logs import LogReplayer

#: Echoes the line it reads on stdin, as a runner reads its bootstrap.
ECHO_STDIN = "import sys; print('got', sys.stdin.readline().strip())"


async def test_spawned_learns_of_the_process_that_start_returns_before_start_returns() -> None:
    """The callback gets the very process start() returns, pid and all, while start() is still
    handing the child its line: what the child connects to can already know who it is."""
    told: list[RunnerProcess] = []
    lines: list[str] = []
    pids: list[int] = []

    class Lines(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(record.getMessage())

    def open_stdio(pid: int) -> StdioDestination:
        pids.append(pid)
        return StdioDestination(LogReplayer("test.process"))

    logger = logging.getLogger("test.process")
    handler = Lines()
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        process = await RunnerProcess.start(
            [sys.executable, "-c", ECHO_STDIN],
            env={},
            stdin_line=b"bootstrap\n",
            open_stdio=open_stdio,
            spawned=told.append,
        )
        assert told == [process] and process.pid > 0 and pids == [process.pid]
        assert await asyncio.wait_for(process.exited, 30) == 0
        await process.close(2.0)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(logging.NOTSET)
    # close() returns once what the process wrote has been replayed.
    assert lines == ["got bootstrap"]


async def test_a_start_that_fails_after_spawning_kills_the_process_it_told_of() -> None:
    """If start() fails once the process exists (here: in the callback itself), the process
    is killed before the error propagates, so no one is left holding a live, unmanaged child."""
    told: list[RunnerProcess] = []

    def refuse(process: RunnerProcess) -> None:
        told.append(process)
        raise RuntimeError("not now")

    with pytest.raises(RuntimeError, match="not now"):
        await RunnerProcess.start(
            [sys.executable, "-c", ECHO_STDIN],
            env={},
            stdin_line=b"bootstrap\n",
            open_stdio=lambda _pid: StdioDestination(LogReplayer("test.process")),
            spawned=refuse,
        )
    (process,) = told
    assert await asyncio.wait_for(process.exited, 30) == -signal.SIGKILL
