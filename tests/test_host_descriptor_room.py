"""A host short of file descriptors at any step of a runner's start: the runner either starts
whole (its control connection accepted, its pipes read) or did not start, said as the host
out of file descriptors and retried; never a connection closed unseen (the runner exiting
with code 5, nothing naming the limit) nor a runner left running with its output unread."""

from __future__ import annotations

import errno
import json
import re
from pathlib import Path

import pytest

from isoplug.host.shortage import DESCRIPTORS_PER_RUNNER
from tests.plugins_fixtures import plugins_dir
from tests.processes import run_python

#: For each number of free descriptors from none to twice what a runner takes: the plugin
#: stopped, the limit set that many above what the host holds then, the plugin restarted;
#: once it started (or did not), the limit back, the plugin ready, and a line written straight
#: on its fd 1, which only the reader of its pipes can bring to the host. One JSON line a step:
#: what the host said at WARNING and above meanwhile, and whether that line arrived.
_SWEEP = """
import asyncio, json, logging, os, resource, sys
import isoplug, isoplug.testing
from isoplug.runner import eventloop

def held() -> int:
    return len(os.listdir("/proc/self/fd")) - 1  # less the listing's own

if sys.argv[4:] == ["ungated"]:
    from isoplug.host import descriptor_room, supervisor
    supervisor.claim_room_to_start = lambda: descriptor_room.DescriptorClaim(0)

async def main() -> None:
    with isoplug.testing.watching(None) as records:
        logging.getLogger().setLevel(logging.INFO)
        async with isoplug.Host(sys.argv[1], config=isoplug.testing.FAST) as host:
            await host.wait_ready(20)
            soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
            for free in range(int(sys.argv[3])):
                await host.stop("echo")
                records.clear()
                resource.setrlimit(resource.RLIMIT_NOFILE, (held() + free, hard))
                restarting = asyncio.ensure_future(host.restart("echo"))
                await host.wait_for(
                    "echo",
                    lambda i: i.state is not isoplug.PluginState.STOPPED
                    and i.state is not isoplug.PluginState.STARTING,
                    30,
                )
                resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
                await asyncio.wait_for(restarting, 30)
                await host.wait_for("echo", lambda i: i.state is isoplug.PluginState.READY, 30)
                line = f"raw line {free}"
                await host.call("echo", "write_raw", (line + "\\n").encode())
                try:
                    await records.wait_for_record(stream="stdout", text=line, timeout=10)
                    read = True
                except TimeoutError:
                    read = False
                # A runner the loaded machine did not schedule in time is said too: not this
                # test's concern.
                said = [
                    r.getMessage()
                    for r in records.records
                    if r.levelno >= logging.WARNING
                    and "its health checks allow that" not in r.getMessage()
                ]
                print(json.dumps({"free": free, "read": read, "said": said}), flush=True)

eventloop.run(main(), sys.argv[2])
"""

#: The documented words (docs/operations.md, "What a host holds"), the limit as the host had it.
_SAID_SO = re.compile(
    r"plugin echo: crashed: runner echo did not start; the host \(ulimit -n \d+\) is out of "
    r"file descriptors \(Too many open files\): each running plugin takes about 15 of the "
    r"host's, and the host about 25 of its own; raise the limit"
)


@pytest.mark.parametrize("loop", ["uvloop", "asyncio"])
def test_a_start_the_host_lacks_descriptors_for_is_said_so_or_whole(
    tmp_path: Path, loop: str
) -> None:
    directory = str(plugins_dir(tmp_path, "echo"))
    result = run_python(_SWEEP, directory, loop, str(2 * DESCRIPTORS_PER_RUNNER), timeout=300)
    assert result.returncode == 0, result.stderr
    steps = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(steps) == 2 * DESCRIPTORS_PER_RUNNER, result.stdout
    for step in steps:
        assert step["read"], step  # the reader of its pipes ran, whatever the step
        for said in step["said"]:
            assert _SAID_SO.search(said), step
    # The sweep crossed the threshold: some steps had too few descriptors, some enough.
    assert any(step["said"] for step in steps), steps
    assert any(not step["said"] for step in steps), steps


#: A process started by the host's own RunnerProcess.start, for each number of free
#: descriptors from none to what a runner takes, the limit kept until its output was read (or
#: not) and it was closed: one JSON line a step, whether the start failed and with which errno,
#: what of its output arrived, and what the host said at ERROR and above.
_STARTS = """
import asyncio, json, logging, os, resource, sys
from isoplug.host.process import RunnerProcess
from isoplug.host.stdio_replay import StdioDestination
from isoplug.logs import LogReplayer
from isoplug.testing import watching

def held() -> int:
    return len(os.listdir("/proc/self/fd")) - 1  # less the listing's own

ECHO = "import sys; print('got', sys.stdin.readline().strip())"

async def main() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    for free in range(int(sys.argv[1])):
        with watching(None) as records:
            logging.getLogger("test.process").setLevel(logging.INFO)
            resource.setrlimit(resource.RLIMIT_NOFILE, (held() + free, hard))
            try:
                process = await RunnerProcess.start(
                    [sys.executable, "-c", ECHO],
                    env={},
                    stdin_line=b"bootstrap\\n",
                    open_stdio=lambda _pid: StdioDestination(LogReplayer("test.process")),
                )
            except OSError as error:
                failed = error.errno
            else:
                failed = None
                await asyncio.wait_for(process.exited, 30)
                await process.close(5.0)
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        lines = [r.getMessage() for r in records.records if r.name == "test.process.stdout"]
        errors = [r.getMessage() for r in records.records if r.levelno >= logging.ERROR]
        print(json.dumps({"free": free, "failed": failed, "lines": lines, "errors": errors}))

asyncio.run(main())
"""


def test_a_started_runner_has_its_output_read_or_its_start_fails() -> None:
    """The reader of a runner's pipes needs nothing it could fail to get once the runner
    runs: short of descriptors, the start fails (EMFILE, said as the host's shortage by its
    supervisor), never a runner left running with its output unread."""
    result = run_python(_STARTS, str(DESCRIPTORS_PER_RUNNER), timeout=120)
    assert result.returncode == 0, result.stderr
    steps = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(steps) == DESCRIPTORS_PER_RUNNER, result.stdout
    for step in steps:
        if step["failed"] is None:
            assert step["lines"] == ["got bootstrap"], step
            assert step["errors"] == [], step
        else:
            assert step["failed"] == errno.EMFILE, step
    assert any(step["failed"] for step in steps), steps
    assert any(step["failed"] is None for step in steps), steps


def test_a_runner_that_could_not_connect_while_the_host_was_short_says_so(
    tmp_path: Path,
) -> None:
    """The look before a start counts on the descriptors it saw staying free; where something
    else in the host takes them meanwhile (here: the look left out, so that the start runs
    short), uvloop closes the control connection it cannot accept, unseen, and the runner exits
    with code 5: its account names the shortage."""
    directory = str(plugins_dir(tmp_path, "echo"))
    steps_wanted = str(2 * DESCRIPTORS_PER_RUNNER)
    result = run_python(_SWEEP, directory, "uvloop", steps_wanted, "ungated", timeout=300)
    assert result.returncode == 0, result.stderr
    steps = [json.loads(line) for line in result.stdout.splitlines()]
    unreached = [s for s in steps if any("cannot reach the host" in m for m in s["said"])]
    assert unreached, steps  # the sweep did run a start short at its connection
    for step in unreached:
        crashes = [m for m in step["said"] if "exited with code 5" in m]
        assert crashes, step
        for crash in crashes:
            assert "; the host (ulimit -n " in crash, step
            assert "is out of file descriptors (Too many open files): each running" in crash
