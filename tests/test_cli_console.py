"""`isoplug run`'s console on a stdout that does not take its lines: a reader that stopped
reading (the host goes on, stop signals work, the exit is bounded, dropped lines are counted),
a pipe another program left non-blocking (no line lost), and a terminal that shows no colour
(``TERM=dumb``)."""

from __future__ import annotations

import asyncio
import fcntl
import os
import pty
import re
import select
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from isoplug.testing import eventually
from tests.plugins_fixtures import process_alive
from tests.processes import child_env
from tests.test_cli_exits import cli, write_plugin

#: Logs COUNT numbered lines at LEVEL (10,000 a second at most: under the host's rate limit,
#: so that the console alone drops any), then leaves a file beside its code.
BURST = """
    import asyncio

    import isoplug

    COUNT = {count}
    LEVEL = {level}


    class P(isoplug.Plugin):
        async def setup(self, ctx: isoplug.PluginContext) -> None:
            self.task = asyncio.create_task(self.burst(ctx))

        async def burst(self, ctx: isoplug.PluginContext) -> None:
            for n in range(1, COUNT + 1):
                ctx.logger.log(LEVEL, "line %d of the burst", n)
                if n % 100 == 0:
                    await asyncio.sleep(0.01)
            with open(__file__ + ".done", "w") as done:
                done.write("done")

        async def teardown(self) -> None:
            with open(__file__ + ".teardown", "w") as done:
                done.write("ran")
"""

#: Notes its pid in a file beside its code, then crashes: the host restarts it at once.
CRASHY = """
    import asyncio
    import os

    import isoplug


    class P(isoplug.Plugin):
        async def setup(self, ctx: isoplug.PluginContext) -> None:
            with open(__file__ + ".starts", "a") as starts:
                starts.write(f"{os.getpid()}\\n")
            asyncio.get_running_loop().call_later(0.2, os._exit, 3)
"""
CRASHY_MANIFEST = "[restart]\nbackoff_initial = 0.1\nbackoff_max = 0.1\nmax_restarts = 1000\n"

#: The pipe's size: one page, filled by the first few dozen lines.
PIPE_SIZE = 4096


def burst_plugin(plugins: Path, count: int, level: int) -> Path:
    """The plugin ``burst`` in ``plugins``; its folder."""
    write_plugin(plugins, "burst", BURST.format(count=count, level=level))
    return plugins / "burst"


class SmallPipe:
    """A pipe of :data:`PIPE_SIZE` bytes, for a child's stdout. ``non_blocking``: its
    writing end is ``O_NONBLOCK``, as a program sharing it may leave it (the flag belongs to
    the open file, which the child shares). The test keeps the writing end too, to ask the
    kernel whether the pipe takes more (:meth:`full`), until :meth:`close_write_end`."""

    def __init__(self, *, non_blocking: bool = False) -> None:
        self.read_end, self.write_end = os.pipe()
        self._write_end_open = True
        fcntl.fcntl(self.write_end, fcntl.F_SETPIPE_SZ, PIPE_SIZE)
        if non_blocking:
            flags = fcntl.fcntl(self.write_end, fcntl.F_GETFL)
            fcntl.fcntl(self.write_end, fcntl.F_SETFL, flags | os.O_NONBLOCK)

    def full(self) -> bool:
        """Whether the pipe takes no more now (no free buffer: how many bytes wait depends on
        how they were written)."""
        poller = select.poll()
        poller.register(self.write_end, select.POLLOUT)
        return not poller.poll(0)

    def close_write_end(self) -> None:
        """Ours closes, so that the child's exit ends the pipe (and a read to its end)."""
        if self._write_end_open:
            self._write_end_open = False
            os.close(self.write_end)


@contextmanager
def small_pipe(*, non_blocking: bool = False) -> Iterator[SmallPipe]:
    pipe = SmallPipe(non_blocking=non_blocking)
    try:
        yield pipe
    finally:
        pipe.close_write_end()
        os.close(pipe.read_end)


def read_all(read_end: int) -> bytes:
    """Everything written to the pipe until its last writer closes it."""
    seen = b""
    while chunk := os.read(read_end, 65536):
        seen += chunk
    return seen


async def stderr_line(process: asyncio.subprocess.Process, pattern: str) -> str:
    """The first line on the command's stderr that matches ``pattern``."""
    assert process.stderr is not None
    while True:
        line = (await asyncio.wait_for(process.stderr.readline(), 60)).decode()
        assert line, f"stderr ended before {pattern!r}"
        if re.search(pattern, line):
            return line


def starts(crashy: Path) -> list[int]:
    path = crashy / "crashy_plugin.py.starts"
    return [int(pid) for pid in path.read_text().split()] if path.exists() else []


async def test_a_stdout_nobody_reads_never_freezes_the_host(tmp_path: Path) -> None:
    """stdout a pipe whose reader stopped reading: the host goes on restarting a crashing
    plugin, says on stderr that console lines are dropped, stops on SIGINT (teardown runs,
    nothing left behind), and its exit gives up on the stuck stdout, saying how many lines
    it could not write."""
    plugins = tmp_path / "plugins"
    burst = burst_plugin(plugins, 12_000, 20)
    write_plugin(plugins, "crashy", CRASHY, CRASHY_MANIFEST)
    temporary = tmp_path / "tmp"
    temporary.mkdir()
    env = child_env(NO_COLOR="1", TMPDIR=str(temporary))
    with small_pipe() as pipe:
        async with cli("run", str(plugins), stdout=pipe.write_end, env=env) as run:
            await eventually(pipe.full, 30)
            # The host went on after stdout filled: it restarts the crashing plugin.
            await eventually((burst / "burst_plugin.py.done").exists, 60)
            restarted = len(starts(plugins / "crashy")) + 2
            await eventually(lambda: len(starts(plugins / "crashy")) >= restarted, 30)
            await stderr_line(run.process, r"stdout has taken no console line for .* s")
            run.process.send_signal(signal.SIGINT)
            code = await asyncio.wait_for(run.process.wait(), 60)
            assert run.process.stderr is not None
            errors = (await run.process.stderr.read()).decode()
    assert code == 0, errors
    assert re.search(
        r"isoplug: [\d,]+ console line\(s\) not written: stdout took nothing for [\d.]+ s; "
        r"exiting without them",
        errors,
    ), errors
    assert (burst / "burst_plugin.py.teardown").read_text() == "ran"
    assert not any(process_alive(pid) for pid in starts(plugins / "crashy"))
    assert not [path.name for path in temporary.iterdir() if path.name.startswith("isoplug-")]


async def test_the_console_counts_the_lines_it_dropped_once_stdout_moves(tmp_path: Path) -> None:
    """A reader that comes back: the console says how many lines it dropped, by level, and
    the count is exact (the burst's ERROR lines shown plus those counted dropped are all)."""
    count = 12_000
    burst = burst_plugin(tmp_path / "plugins", count, 40)
    with small_pipe() as pipe:
        async with cli("run", str(tmp_path / "plugins"), stdout=pipe.write_end) as run:
            await stderr_line(run.process, r"stdout has taken no console line for .* s")
            await eventually((burst / "burst_plugin.py.done").exists, 60)
            pipe.close_write_end()
            reading = asyncio.create_task(asyncio.to_thread(read_all, pipe.read_end))
            run.process.send_signal(signal.SIGINT)
            code = await asyncio.wait_for(run.process.wait(), 60)
            output = (await asyncio.wait_for(reading, 60)).decode()
    assert code == 0, output
    shown = len(re.findall(r"burst +error +line \d+ of the burst", output))
    counts = re.findall(
        r"isoplug +warning +[\d,]+ console line\(s\) dropped \(([^)]*)\): stdout did not take "
        r"them for [\d.]+ s",
        output,
    )
    assert counts, output[-3000:]
    dropped = sum(
        int(number.replace(",", ""))
        for said in counts
        for number in re.findall(r"ERROR: ([\d,]+)", said)
    )
    assert dropped and shown + dropped == count, (shown, dropped, counts)


async def test_a_non_blocking_stdout_loses_no_line(tmp_path: Path) -> None:
    """stdout a pipe left O_NONBLOCK, read late: every line arrives, in order, once the
    reader reads (the writer waits for the pipe rather than dropping what it refused)."""
    count = 3_000
    burst = burst_plugin(tmp_path / "plugins", count, 20)
    with small_pipe(non_blocking=True) as pipe:
        async with cli("run", str(tmp_path / "plugins"), stdout=pipe.write_end) as run:
            await eventually(pipe.full, 30)
            await eventually((burst / "burst_plugin.py.done").exists, 60)
            pipe.close_write_end()
            reading = asyncio.create_task(asyncio.to_thread(read_all, pipe.read_end))
            run.process.send_signal(signal.SIGINT)
            code = await asyncio.wait_for(run.process.wait(), 60)
            assert run.process.stderr is not None
            errors = (await run.process.stderr.read()).decode()
            output = (await asyncio.wait_for(reading, 60)).decode()
    assert code == 0, errors
    numbers = [int(n) for n in re.findall(r"burst +info +line (\d+) of the burst", output)]
    assert numbers == list(range(1, count + 1)), errors
    assert errors == ""


def read_terminal(master: int) -> bytes:
    """What the command wrote to the terminal, until its last writer closed it."""
    seen = b""
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: the terminal's other side is closed
            return seen
        if not chunk:
            return seen
        seen += chunk


#: Leaves a file beside its code once its setup ran.
MARKED = """
    import isoplug


    class P(isoplug.Plugin):
        async def setup(self, ctx: isoplug.PluginContext) -> None:
            with open(__file__ + ".ready", "w") as ready:
                ready.write("ready")
"""


@pytest.mark.parametrize(
    ("term", "coloured"), [("dumb", False), (None, False), ("xterm-256color", True)]
)
async def test_colour_only_on_a_terminal_that_shows_it(
    tmp_path: Path, term: str | None, coloured: bool
) -> None:
    """On a terminal (a pty), TERM=dumb or no TERM gets no escape sequences; a TERM that
    shows colour gets them (so the test sees colour where there is some)."""
    write_plugin(tmp_path / "plugins", "marked", MARKED)
    env = child_env()
    env.pop("NO_COLOR", None)
    env.pop("TERM", None)
    if term is not None:
        env["TERM"] = term
    master, terminal = pty.openpty()
    try:
        async with cli("run", str(tmp_path / "plugins"), stdout=terminal, env=env) as run:
            # The child has it: the terminal's end comes with the child's exit.
            os.close(terminal)
            terminal = -1
            reading = asyncio.create_task(asyncio.to_thread(read_terminal, master))
            await eventually((tmp_path / "plugins" / "marked" / "marked_plugin.py.ready").exists)
            run.process.send_signal(signal.SIGINT)
            code = await asyncio.wait_for(run.process.wait(), 60)
            output = await asyncio.wait_for(reading, 60)
    finally:
        if terminal >= 0:
            os.close(terminal)
        os.close(master)
    assert code == 0, output
    assert b"starting runner marked" in output, output
    assert (b"\033[" in output) is coloured, output[:500]
