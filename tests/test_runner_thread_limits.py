"""A runner the kernel refuses threads (a cgroup's ``pids.max``, as under docker's
``--pids-limit`` or systemd's ``TasksMax=``): its stop still runs the plugin's ``teardown()``
(the threads the stop would start do their work without one), and what it could not start
is said as the runner's, on ``isoplug.runner``, naming the limit, never as an uncaught
exception of the plugin's. Real hosts and runners, in a subprocess; the runner (or the
zygote that forks it) moved into a pids cgroup at a moment the test chooses."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.pids_cgroup import pids_cgroup_or_skip
from tests.plugins_fixtures import plugins_dir
from tests.processes import run_python

#: Keeps every record the host's logging sees, and prints what the test reads as JSON.
_PREAMBLE = """
import asyncio, json, logging, os, signal, sys
from pathlib import Path
import isoplug, isoplug.testing
from tests.pids_cgroup import PidsCgroup
records = []
class Keep(logging.Handler):
    def emit(self, record):
        records.append([record.name, record.levelname, record.getMessage()])
logging.getLogger().addHandler(Keep())
logging.getLogger().setLevel(logging.INFO)
cgroup = PidsCgroup(Path(sys.argv[2]))
"""

#: The runner moved in once ready, with a limit under the tasks it holds: no new thread.
_AT_STOP = (
    _PREAMBLE
    + """
async def main():
    async with isoplug.Host(sys.argv[1], config=isoplug.testing.FAST) as host:
        await host.wait_ready(20)
        cgroup.move_in(host.plugin("echo").pid)
        cgroup.limit(1)
        try:
            call = repr(await host.call("echo", "add", 1, 2))
        except isoplug.IsoplugError as exc:
            call = str(exc)
    said = {"call": call, "exit": host.plugin("echo").last_exit.describe(), "records": records}
    print(json.dumps(said))
asyncio.run(main())
"""
)

#: The zygote moved in once the runner is ready, with room for one more task: the next
#: runner it forks has its main thread and no other.
_AT_START = (
    _PREAMBLE
    + """
def zygote_of(parent):
    for pid in os.listdir("/proc"):
        try:
            with open(f"/proc/{pid}/stat") as stat:
                ppid = int(stat.read().rpartition(")")[2].split()[1])
            with open(f"/proc/{pid}/cmdline", "rb") as line:
                command = line.read()
        except (OSError, ValueError):
            continue
        if ppid == parent and b"isoplug.runner.zygote" in command:
            return int(pid)
    raise LookupError("no zygote")
async def main():
    async with isoplug.Host(sys.argv[1], config=isoplug.testing.FAST) as host:
        await host.wait_ready(20)
        zygote = zygote_of(os.getpid())
        cgroup.move_in(zygote)
        cgroup.limit(cgroup.in_use + 1)
        os.kill(host.plugin("echo").pid, signal.SIGKILL)
        refused = await host.wait_for(
            "echo", lambda info: info.last_exit is not None and info.last_exit.exit_code == 7, 30
        )
        cgroup.move_out(zygote)
        # Once the limit is gone, it comes back: the crash is restarted with backoff.
        await host.wait_for("echo", lambda info: info.state is isoplug.PluginState.READY, 30)
    said = {"exit": refused.last_exit.describe(), "records": records}
    print(json.dumps(said))
asyncio.run(main())
"""
)


def _run(app: str, tmp_path: Path, cgroup_folder: Path) -> dict[str, Any]:
    result = run_python(app, str(plugins_dir(tmp_path, "echo")), str(cgroup_folder))
    assert result.returncode == 0, result.stderr
    said: dict[str, Any] = json.loads(result.stdout.splitlines()[-1])
    return said


def test_a_runner_refused_threads_at_its_stop_still_runs_its_teardown(tmp_path: Path) -> None:
    with pids_cgroup_or_skip() as cgroup:
        said = _run(_AT_STOP, tmp_path, cgroup.folder)
    records = said["records"]
    assert ["plugin.echo.stdout", "INFO", "echo: teardown ran"] in records
    assert "exited with code 0; stopped on request" in said["exit"], said["exit"]
    watch = [r for r in records if "cannot start a thread (the teardown watch)" in r[2]]
    assert len(watch) == 1, records
    assert watch[0][:2] == ["plugin.echo.isoplug.runner", "WARNING"]
    assert "cgroup pids.max 1 (" in watch[0][2] and "the teardowns run without it" in watch[0][2]
    assert not [r for r in records if "Uncaught exception" in r[2]], records
    # A def method's worker thread: the call fails saying why, naming the limit.
    assert "cannot start a thread (a worker thread to run echo.add)" in said["call"], said
    assert "cgroup pids.max 1 (" in said["call"], said


def test_a_runner_refused_a_thread_at_its_start_names_the_limit(tmp_path: Path) -> None:
    with pids_cgroup_or_skip() as cgroup:
        said = _run(_AT_START, tmp_path, cgroup.folder)
    # Its lifeline's thread, before its records reach the host: said on its stderr, which
    # the host quotes in the exit account.
    account = said["exit"]
    assert "exited with code 7; it exited before reporting ready" in account, account
    assert (
        'its stderr ended with: "isoplug runner: the runner cannot go on: cannot start a thread '
        "(the runner's lifeline, which ends it with its host): can't start new thread; threads "
        "and processes are limited here"
    ) in account, account
    assert "cgroup pids.max " in account, account
    assert not [r for r in said["records"] if "Uncaught exception" in r[2]], said["records"]
