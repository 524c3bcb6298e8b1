"""A runner's stdin carries its environment (forked) and its tokens (every runner) before it
runs anything: no other process of the user may open it through /proc/<pid>/fd/0, to read
them first or to write junk ahead of them. It is a socket, which the kernel refuses to open
there (ENXIO), not a pipe, which it opens for anyone who may ptrace-read the runner."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from isoplug import Host
from isoplug.host.process import RunnerProcess
from isoplug.host.zygote import fork_supported
from tests.plugins_fixtures import FAST, FIXTURES

pytestmark = pytest.mark.skipif(
    not os.path.isdir("/proc/self/fd"), reason="opens descriptors through /proc (Linux)"
)

#: What another process of the user finds at a runner's /proc/<pid>/fd/0: the kind of file
#: (fstat through the link) and what an open() for reading and one for writing give.
_PROBE = """
import errno, json, os, stat, sys
path = f"/proc/{sys.argv[1]}/fd/0"
found = {"socket": stat.S_ISSOCK(os.stat(path).st_mode)}
for how, flags in (("read", os.O_RDONLY), ("write", os.O_WRONLY)):
    try:
        os.close(os.open(path, flags | os.O_NONBLOCK))
        found[how] = "opened"
    except OSError as exc:
        found[how] = errno.errorcode[exc.errno]
print(json.dumps(found))
"""

#: How long a runner may take to have its own stdin on descriptor 0 (a forked one puts it
#: there after the fork): it then waits there for the host's write, held back meanwhile.
_PLACED_WITHIN = 30.0


def _stdin_link(pid: int) -> str:
    return os.readlink(f"/proc/{pid}/fd/0")


def _parent_of(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as stat:
        return int(stat.read().rpartition(")")[2].split()[1])


def _probe_before_the_bootstrap(
    found: list[dict[str, object]],
) -> Callable[[RunnerProcess, bytes], None]:
    """A ``RunnerProcess._write_stdin`` that first has another process probe the runner's
    stdin, while the runner waits there for what the host holds back."""
    write = RunnerProcess._write_stdin

    def probe_then_write(process: RunnerProcess, data: bytes) -> None:
        # A forked runner still has its zygote's descriptor 0 until it placed its own.
        inherited = _stdin_link(_parent_of(process.pid))
        deadline = time.monotonic() + _PLACED_WITHIN
        while _stdin_link(process.pid) == inherited and time.monotonic() < deadline:
            time.sleep(0.01)
        probe = subprocess.run(
            [sys.executable, "-c", _PROBE, str(process.pid)],
            capture_output=True,
            text=True,
            check=False,
        )
        found.append(json.loads(probe.stdout) if probe.returncode == 0 else {"err": probe.stderr})
        write(process, data)

    return probe_then_write


@pytest.mark.parametrize(
    "start",
    [
        pytest.param(
            "fork", marks=pytest.mark.skipif(not fork_supported(), reason="runners spawn here")
        ),
        "spawn",
    ],
)
@pytest.mark.usefixtures("isoplug_own_zygotes")
async def test_no_other_process_can_open_a_starting_runners_stdin(
    tmp_path: Path, start: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Probed from another process while the runner waits for its environment and bootstrap:
    its fd 0 is a socket, and opening it for reading or writing fails with ENXIO. The runner
    then starts and serves as before, started either way."""
    directory = tmp_path / "plugins"
    shutil.copytree(FIXTURES / "echo", directory / "echo")
    manifest = directory / "echo" / "plugin.toml"
    manifest.write_text(f'start = "{start}"\n' + manifest.read_text())
    found: list[dict[str, object]] = []
    monkeypatch.setattr(RunnerProcess, "_write_stdin", _probe_before_the_bootstrap(found))
    async with Host(directory, config=FAST) as host:
        await host.wait_ready(30)
        pid = host.plugin("echo").pid
        assert pid is not None and await host.call("echo", "pid") == pid
        assert await host.call("echo", "echo", {"x": [1]}) == {"x": [1]}
        assert host._supervisors["echo"]._process is not None
        assert host._supervisors["echo"]._process.method == start
    assert found == [{"socket": True, "read": "ENXIO", "write": "ENXIO"}]


@pytest.mark.skipif(not fork_supported(), reason="runners are spawned here")
@pytest.mark.usefixtures("isoplug_own_zygotes")
async def test_no_other_process_can_open_the_zygotes_lifeline(tmp_path: Path) -> None:
    """The zygote's stdin, whose end-of-file tells it its host is gone, is a socket too: no
    process of the user can open it to hold it open or write to it."""
    directory = tmp_path / "plugins"
    shutil.copytree(FIXTURES / "echo", directory / "echo")
    async with Host(directory, config=FAST) as host:
        await host.wait_ready(30)
        pid = host.plugin("echo").pid
        assert pid is not None
        probe = subprocess.run(
            [sys.executable, "-c", _PROBE, str(_parent_of(pid))],
            check=True,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert json.loads(probe.stdout) == {"socket": True, "read": "ENXIO", "write": "ENXIO"}


#: A plugin whose import says on stderr why it cannot go on, then waits for good: as a runner
#: handed a malformed environment or bootstrap would, had it not exited.
_STUCK_AT_IMPORT = """
import sys, threading
print("stuck: waiting for what never comes", file=sys.stderr, flush=True)
threading.Event().wait()
"""


async def test_a_runner_killed_for_not_being_ready_has_its_last_stderr_words_in_its_account(
    tmp_path: Path,
) -> None:
    """Not only "not ready within 2 s": what the runner said on stderr before it stalled."""
    plugin = tmp_path / "plugins" / "stuck"
    plugin.mkdir(parents=True)
    (plugin / "plugin.toml").write_text('id = "stuck"\nversion = "1"\nentry = "stuck_plugin:P"\n')
    (plugin / "stuck_plugin.py").write_text(_STUCK_AT_IMPORT)
    config = dataclasses.replace(FAST, ready_timeout=2.0)
    async with Host(plugin.parent, config=config) as host:
        info = await host.wait_for("stuck", lambda info: info.last_exit is not None, 30)
    assert info.last_exit is not None
    described = info.last_exit.describe()
    assert "not ready within 2 s" in described, described
    assert "its stderr ended with" in described, described
    assert "stuck: waiting for what never comes" in described, described
