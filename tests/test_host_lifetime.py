"""Nothing outlives its host: runners die with a host killed by SIGKILL, whatever they are doing;
what their plugins started dies with them, in the process group or out of it; a dead host's
socket directories go at the next start."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from isoplug import Host, PluginState
from isoplug.testing import eventually
from isoplug.transport.socket_dirs import owner_prefix, remove_stale_socket_dirs
from tests import plugins_fixtures
from tests.plugins_fixtures import FAST, FIXTURES, QUICK_DRAIN, process_alive
from tests.processes import child_env

HOST_CHILD = Path(__file__).parent / "host_child.py"

pytestmark = pytest.mark.skipif(
    not os.path.isdir("/proc/self/task"), reason="counts processes in /proc (Linux)"
)


def escapers(tmp_path: Path, *ids: str) -> Path:
    """A plugins directory with one copy of the ``escaper`` fixture per id."""
    directory = tmp_path / "plugins"
    for plugin_id in ids:
        (directory / plugin_id).mkdir(parents=True)
        (directory / plugin_id / "plugin.toml").write_text(
            f'id = "{plugin_id}"\nversion = "0.1"\nentry = "escaper_plugin:Escaper"\n'
        )
        os.symlink(
            FIXTURES / "escaper" / "escaper_plugin.py", directory / plugin_id / "escaper_plugin.py"
        )
    return directory


async def start_host(*arguments: str, **environment: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        str(HOST_CHILD),
        *arguments,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env=child_env(**environment),
    )


async def read_until(host: asyncio.subprocess.Process, lines: list[str], *patterns: str) -> None:
    """Read the host's output into ``lines`` until every pattern has matched a line."""
    assert host.stdout is not None
    while not all(any(re.search(p, line) for line in lines) for p in patterns):
        line = await host.stdout.readline()
        if not line:
            raise AssertionError(f"the host ended before {patterns!r}:\n{''.join(lines)}")
        lines.append(line.decode())


async def wait_gone(pids: list[int], within: float) -> list[int]:
    """Wait up to ``within`` seconds for every pid to be gone; those still alive then."""
    deadline = time.monotonic() + within
    while True:
        alive = [pid for pid in pids if process_alive(pid)]
        if not alive or time.monotonic() >= deadline:
            return alive
        await asyncio.sleep(0.02)


async def end_host_and_app_child(host: asyncio.subprocess.Process, app_child: int | None) -> None:
    """Kill the host (once a test is done with it) and the child it forked or spawned for the
    application (``app-child``), which outlives it."""
    if host.returncode is None:
        host.kill()
        await host.communicate()
    if app_child is not None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(app_child, signal.SIGKILL)
        await wait_gone([app_child], within=5.0)  # reaped by init: its parent is gone


async def test_runners_die_within_2_s_of_a_kill_9_of_their_host_whatever_they_do(
    tmp_path: Path, private_temp: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Idle, busy in a sync method, blocking the event loop, holding the GIL in native code:
    2 s after the host's SIGKILL, none of the four runners is left. The next host to start
    removes the dead one's socket directories."""
    directory = escapers(tmp_path, "idle", "busy", "blocked", "gil")
    host = await start_host(
        str(directory), "busy:spin", "blocked:block", "gil:hold_gil", TMPDIR=private_temp
    )
    lines: list[str] = []
    try:
        async with asyncio.timeout(40):
            await read_until(host, lines, "^ready")
            await read_until(
                host,
                lines,
                "plugin.busy.stdout: escaper: spinning",
                "plugin.blocked.stdout: escaper: blocking",
                "plugin.gil.stdout: escaper: holding the GIL",
            )
    except BaseException:
        host.kill()
        await host.communicate()
        raise
    output = "".join(lines)
    runners = {m[0]: int(m[1]) for m in re.findall(r"^runner (\w+) (\d+)$", output, re.M)}
    socket_dirs = re.findall(r"^socket-dir (.+)$", output, re.M)
    assert sorted(runners) == ["blocked", "busy", "gil", "idle"]
    assert all(process_alive(pid) for pid in runners.values())
    assert len(socket_dirs) == 2 and all(os.path.isdir(d) for d in socket_dirs)
    assert all(d.startswith(private_temp + os.sep) for d in socket_dirs)

    # Their parent: the host's zygote (isoplug.host.zygote), or the host where it spawns.
    parents = set()
    for pid in runners.values():
        with open(f"/proc/{pid}/stat") as stat:
            parents.add(int(stat.read().rpartition(")")[2].split()[1]))
    zygotes = parents - {host.pid}

    host.kill()
    await host.communicate()
    left = await wait_gone([*runners.values(), *zygotes], within=2.0)
    assert not left, f"runners or zygote alive 2 s after their host's SIGKILL: {left}\n{output}"

    assert all(os.path.isdir(d) for d in socket_dirs)  # nobody removed them: SIGKILL
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", private_temp)
    async with Host(empty, config=FAST):
        assert not [d for d in socket_dirs if os.path.exists(d)]


async def test_a_runner_whose_host_lets_go_of_it_ends_even_when_busy(tmp_path: Path) -> None:
    """The lifeline alone (the host lives, its end of the runner's stdin closes): the runner,
    busy in a sync method, ends within 2 s."""
    async with plugins_fixtures.running(tmp_path, "escaper") as (host, waiter):
        call = asyncio.ensure_future(host.call_with("escaper", "spin", timeout=None))
        try:
            await waiter.wait_for("plugin.escaper.stdout", "escaper: spinning")
            pid = host.plugin("escaper").pid
            assert pid is not None
            process = host._supervisors["escaper"]._process
            assert process is not None
            process._let_go()
            assert not await wait_gone([pid], within=2.0)
        finally:
            call.cancel()
            await asyncio.gather(call, return_exceptions=True)


@pytest.mark.parametrize("start", ["--fork-child", "--spawn-child"])
async def test_a_child_of_the_application_does_not_keep_a_dead_hosts_runner_alive(
    tmp_path: Path, start: str
) -> None:
    """The application forks (or spawns) a process that outlives its host: it holds no copy
    of the runner's lifeline, so the runner still ends at the host's SIGKILL. The lifeline
    alone: the runner cleared its parent-death signal, and its blocked event loop never sees
    its connections end."""
    directory = escapers(tmp_path, "orphan")
    host = await start_host(start, str(directory), "orphan:orphan_and_block")
    lines: list[str] = []
    app_child = None
    try:
        async with asyncio.timeout(40):
            await read_until(host, lines, r"^app-child \d+$", "^ready")
            app_child = int(re.findall(r"^app-child (\d+)$", "".join(lines), re.M)[0])
            await read_until(host, lines, "plugin.orphan.stdout: escaper: orphaned, blocking")
        output = "".join(lines)
        runner = int(re.findall(r"^runner orphan (\d+)$", output, re.M)[0])
        host.kill()
        await host.communicate()
        left = await wait_gone([runner], within=5.0)
        assert not left, f"the runner is alive 5 s after its host's SIGKILL\n{output}"
        assert process_alive(app_child), "the application's child must outlive the host"
    finally:
        await end_host_and_app_child(host, app_child)


async def test_what_a_plugin_started_dies_with_its_runner_in_its_group_or_out_of_it(
    tmp_path: Path,
) -> None:
    """A restart ends the runner's child in its process group, one in a session of its own, a
    double-forked daemon and a child that also dropped its environment; the application's own
    child lives on."""
    app_child = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(3600)"], start_new_session=True
    )
    try:
        async with plugins_fixtures.running(tmp_path, "escaper", logger=None) as (host, waiter):
            pids = {
                name: await host.call("escaper", name)
                for name in ("fork_child", "setsid_child", "daemon", "hidden_child")
            }
            assert all(process_alive(pid) for pid in pids.values())
            process = host._supervisors["escaper"]._process
            assert process is not None
            # The hidden child can be found only once the runner's tree has been recorded.
            await eventually(lambda: pids["hidden_child"] in process._exit_watch.recorded, 10)
            info = await host.restart("escaper")
            assert info.state is PluginState.READY
            assert not await wait_gone(list(pids.values()), within=2.0)
            record = await waiter.wait_for("isoplug.host", "outlived it; killed them")
            message = record.getMessage()
            assert "4 processes" in message, message
            assert "3 of them had left its process group" in message, message
            for pid in pids.values():
                assert str(pid) in message
        assert app_child.poll() is None, "the application's own child was killed"
    finally:
        app_child.kill()
        app_child.wait()


async def test_a_process_that_leaves_no_trace_is_named_as_holding_the_runners_output(
    tmp_path: Path,
) -> None:
    """The README's exception: a process that leaves the runner's group and session, drops
    its environment and is re-parented away at once can outlive its runner; the host's log
    then says that a process it could not find kept the runner's output open."""
    async with plugins_fixtures.running(tmp_path, "escaper", logger=None, config=QUICK_DRAIN) as (
        host,
        waiter,
    ):
        vanisher = await host.call("escaper", "vanisher")
        try:
            info = await host.restart("escaper")
            assert info.state is PluginState.READY
            if process_alive(vanisher):
                await waiter.wait_for(
                    "isoplug.host",
                    "its stdout/stderr stayed open even so (a process isoplug could not find",
                )
            # Else the runner's tree was recorded in the moment it was still under the runner,
            # and it was killed with the rest: the claim holds either way.
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.kill(vanisher, signal.SIGKILL)


def test_only_socket_directories_of_dead_owners_are_removed(tmp_path: Path) -> None:
    """A directory is removed when its owner is dead or its pid now names another process
    (another start time); kept when its owner lives, when it is of another pid namespace, or
    when its name is not one isoplug makes."""
    ours = owner_prefix()
    pid, start, namespace = (int(part) for part in ours.split("-")[1:4])
    dead = subprocess.Popen([sys.executable, "-c", ""])
    dead.wait()
    names = {
        "live": f"{ours}abc123",
        "dead": f"isoplug-{dead.pid}-{start}-{namespace}-abc123",
        "reused": f"isoplug-{pid}-{start + 1}-{namespace}-abc123",
        "elsewhere": f"isoplug-{dead.pid}-{start}-{namespace + 1}-abc123",
        "unnamed": "isoplug-abc123",
    }
    for name in names.values():
        (tmp_path / name).mkdir()
        (tmp_path / name / "sock").touch()
    removed = remove_stale_socket_dirs((str(tmp_path),))
    assert sorted(removed) == sorted(str(tmp_path / names[k]) for k in ("dead", "reused"))
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        names[k] for k in ("live", "elsewhere", "unnamed")
    )


def test_the_import_folder_of_a_host_killed_is_removed_by_the_next(tmp_path: Path) -> None:
    """The folder a host makes for runners with an interpreter of their own (a link to its
    isoplug) goes at its exit; one a kill left behind goes at the next host's start, as its
    socket folders do."""
    made = subprocess.run(
        [
            sys.executable,
            "-c",
            "import os\nfrom isoplug.host.isoplug_link import isoplug_only_folder\n"
            "print(isoplug_only_folder(), flush=True)\nos._exit(0)",
        ],
        check=True,
        capture_output=True,
        text=True,
        env=child_env(TMPDIR=str(tmp_path)),
        timeout=60,
    ).stdout.strip()
    assert Path(made).parent == tmp_path and (Path(made) / "isoplug").is_symlink()
    assert remove_stale_socket_dirs((str(tmp_path),)) == [made]
    assert not os.path.exists(made)
