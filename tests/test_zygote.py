"""Runners forked from the host's zygote (isoplug.host.zygote) behave as spawned ones do, the
zygote's death is survived and reported, no runner's token reaches another runner, and
``start = "spawn"`` in plugin.toml still spawns. Hosts that share a zygote (as in a test
session, isoplug.host.zygote_pool) use one, kept across them, replaced when it dies, gone with
the process."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from isoplug import Host, PluginState
from isoplug.errors import ConnectionBroken
from isoplug.host.environment import runner_environment
from isoplug.host.runner_stdin import runner_stdin
from isoplug.host.zygote import Zygote, fork_supported
from isoplug.host.zygote_pool import MAX_IDLE
from isoplug.testing import BlockingHarness, eventually, share_zygotes
from tests import plugins_fixtures
from tests.plugins_fixtures import FAST, FIXTURES, process_alive
from tests.process_memory import (
    environment_block_holds,
    group_and_session_of,
    memory_holds,
    parent_of,
)
from tests.record_waiter import RecordWaiter, watching

pytestmark = [
    pytest.mark.skipif(not fork_supported(), reason="runners are spawned here"),
    # Each host here has a zygote of its own, as outside a test session (isoplug's pytest
    # plugin has them share one); the tests of sharing turn sharing on themselves.
    pytest.mark.usefixtures("isoplug_own_zygotes"),
]


def echo_dir(tmp_path: Path, start: str | None) -> Path:
    """A plugins directory with a copy of the echo plugin, whose manifest sets ``start``."""
    directory = tmp_path / "plugins"
    shutil.copytree(FIXTURES / "echo", directory / "echo")
    if start is not None:
        manifest = directory / "echo" / "plugin.toml"
        manifest.write_text(f'start = "{start}"\n' + manifest.read_text())
    return directory


@pytest.mark.parametrize("start", ["fork", "spawn"])
async def test_a_forked_runner_and_a_spawned_one_behave_alike(tmp_path: Path, start: str) -> None:
    """Started either way: a process group of its own in the host's session, its prints and
    logs forwarded, its calls served, its exit code and its signal in the exit account,
    restarted after a crash. Only its parent differs: the zygote, or the host. The zygote is
    gone once the host is closed."""
    with watching("plugin") as waiter:
        async with Host(echo_dir(tmp_path, start), config=FAST) as host:
            await host.wait_ready(20)
            pid = host.plugin("echo").pid
            assert pid is not None and await host.call("echo", "pid") == pid
            assert group_and_session_of(pid) == (pid, os.getsid(0))
            parent = parent_of(pid)
            if start == "spawn":
                assert parent == os.getpid()
            else:
                assert parent not in (os.getpid(), 1) and parent == host._zygote.pid  # type: ignore[union-attr]
            await host.call("echo", "say", ["to stdout"], ["to stderr"])
            await waiter.wait_for("plugin.echo.stdout", "to stdout")
            await waiter.wait_for("plugin.echo.stderr", "to stderr")
            assert await host.call("echo", "echo", {"x": [1, 2]}) == {"x": [1, 2]}

            with pytest.raises(Exception, match="exited with code 7"):
                await host.call("echo", "crash", 7)
            await host.wait_for("echo", lambda i: i.state is PluginState.READY and i.restarts == 1)
            account = host.plugin("echo").last_exit
            assert account is not None and account.exit_code == 7 and account.pid == pid

            pid = host.plugin("echo").pid
            assert pid is not None
            with pytest.raises(Exception, match="SIGSEGV"):
                await host.call("echo", "segfault")
            await host.wait_for("echo", lambda i: i.state is PluginState.READY and i.restarts == 2)
            account = host.plugin("echo").last_exit
            assert account is not None and account.signal_name == "SIGSEGV"
            assert account.sent_by_host is None and account.status_known
    if start == "fork":
        assert not process_alive(parent), "the zygote outlived its host's close"


@contextlib.asynccontextmanager
async def echo_with_its_zygote_stopped(
    tmp_path: Path,
) -> AsyncIterator[tuple[Host, RecordWaiter, int, int]]:
    """A host running the echo plugin, whose zygote is stopped (SIGSTOP) for the block: the
    host, a waiter for every record, the runner's pid and the zygote's. The zygote is
    continued at the end whatever the host did about it."""
    with watching(None) as waiter:
        async with plugins_fixtures.running(tmp_path, "echo") as (host, _):
            runner = host.plugin("echo").pid
            assert runner is not None
            zygote = parent_of(runner)
            os.kill(zygote, signal.SIGSTOP)
            try:
                yield host, waiter, runner, zygote
            finally:
                os.kill(zygote, signal.SIGCONT)


async def test_a_stop_under_a_stopped_zygote_continues_it_and_tells_a_clean_exit(
    tmp_path: Path,
) -> None:
    """The runner exits on the shutdown request, but its zygote, stopped, neither reaps it
    nor reports its exit: the host does not SIGTERM and SIGKILL a zombie (saying it "did not
    exit", "ignored SIGTERM", "still runs after SIGKILL" every second, for ever): it continues
    the zygote and tells the exit as it was."""
    async with echo_with_its_zygote_stopped(tmp_path) as (host, waiter, first, _):
        info = await asyncio.wait_for(host.stop("echo"), 30)
        await waiter.wait_for("isoplug.host", "it is stopped; continuing it")
    assert info.last_exit is not None
    assert info.last_exit.describe().startswith(
        f"runner echo (pid {first}) exited with code 0; stopped on request"
    ), info.last_exit.describe()
    said = [r.getMessage() for r in waiter.matching("isoplug.host", "")]
    assert not [m for m in said if "SIGTERM" in m or "after SIGKILL" in m], said


async def test_a_forked_runner_is_in_its_own_group_once_the_host_knows_its_pid() -> None:
    """The host may signal a runner's group the moment it has its pid (a restart, a stop):
    the zygote puts the child in its group before it replies, not only the child once it
    runs. Children that never get their environment (nothing is written to their stdin)
    are caught at the start; killed here."""
    env = runner_environment([], ())
    zygote = Zygote(lambda: dict(env))
    children = []
    try:
        with open(os.devnull, "wb") as devnull:
            for _ in range(20):
                runner_end, host_end = runner_stdin()
                try:
                    child = await zygote.fork(
                        env, (runner_end, host_end), devnull.fileno(), devnull.fileno()
                    )
                finally:
                    os.close(runner_end)
                assert child is not None
                children.append(child)
                assert group_and_session_of(child.pid)[0] == child.pid
    finally:
        for child in children:
            os.killpg(child.pid, signal.SIGKILL)
            child.close_stdin()
        await zygote.aclose()


async def test_a_plugin_setting_a_python_variable_is_spawned(tmp_path: Path) -> None:
    """``PYTHON*`` variables take effect at an interpreter's start, which a forked runner does
    not have: such a plugin is spawned, and the variable applies."""
    directory = echo_dir(tmp_path, None)
    manifest = directory / "echo" / "plugin.toml"
    manifest.write_text(manifest.read_text() + '\n[environment]\nPYTHONDONTWRITEBYTECODE = "1"\n')
    async with Host(directory, config=FAST) as host:
        await host.wait_ready(20)
        pid = host.plugin("echo").pid
        assert pid is not None and parent_of(pid) == os.getpid()


async def test_the_zygote_killed_is_reported_and_replaced(tmp_path: Path) -> None:
    """A SIGKILL of the zygote: the host says so, the runner it forked dies with it (it must
    not outlive the chain to its host) and its account names the zygote's death; the plugin is
    restarted from a new zygote."""
    with watching(None) as waiter:
        async with plugins_fixtures.running(tmp_path, "echo") as (host, _):
            first = host.plugin("echo").pid
            assert first is not None
            zygote = parent_of(first)
            os.kill(zygote, signal.SIGKILL)
            record = await waiter.wait_for("isoplug.host", f"zygote (pid {zygote}) was")
            assert record.levelno == logging.ERROR
            assert f"the runner zygote (pid {zygote}) was killed by SIGKILL" in record.getMessage()
            await host.wait_for(
                "echo", lambda i: i.state is PluginState.READY and i.pid not in (None, first)
            )
            account = host.plugin("echo").last_exit
            assert account is not None and account.pid == first
            assert f"the runner zygote (pid {zygote}) was killed by SIGKILL" in account.reason
            text = account.describe()
            # Either the kernel told its status, or the account says it is unknown: no guess.
            assert (
                account.status_known and "killed by SIGKILL" in text
            ) or "exit status unknown" in text, text
            second = host.plugin("echo").pid
            assert second is not None
            new_zygote = parent_of(second)
            assert new_zygote != zygote and new_zygote != os.getpid()
            assert await host.call("echo", "echo", 1) == 1


async def test_a_stopped_zygote_is_continued_and_the_crash_it_held_back_told(
    tmp_path: Path,
) -> None:
    """A SIGSTOPped zygote cannot reap the runner that crashed meanwhile, nor report how it
    ended: the host says the zygote is stopped and continues it, and the crash is told as it
    happened (its exit code), not as a runner that "did not exit" and was killed."""
    async with echo_with_its_zygote_stopped(tmp_path) as (host, waiter, first, zygote):
        with pytest.raises(ConnectionBroken):
            await host.call("echo", "crash", 3)
        record = await waiter.wait_for("isoplug.host", "it is stopped; continuing it")
        assert f"the runner zygote (pid {zygote}) has not reaped runner echo" in (
            record.getMessage()
        )
        await host.wait_for(
            "echo", lambda i: i.state is PluginState.READY and i.pid not in (None, first)
        )
        account = host.plugin("echo").last_exit
        assert account is not None and account.pid == first
        assert account.describe().startswith(
            f"runner echo (pid {first}) exited with code 3; uptime"
        ), account.describe()
        assert parent_of(host.plugin("echo").pid or 0) == zygote  # the same zygote


async def test_no_runner_holds_another_runners_tokens(tmp_path: Path) -> None:
    """The tokens of one runner are found neither in the zygote nor in the runner forked after
    it, in memory or environment: they reach a runner on its own stdin, never the zygote."""
    async with plugins_fixtures.running(tmp_path, "echo") as (host, _):
        supervisor = host._supervisors["echo"]
        first_tokens = [
            token.encode()
            for token in (supervisor.expected_token(), supervisor.expected_log_token())
            if token is not None
        ]
        assert len(first_tokens) == 2
        first = host.plugin("echo").pid
        assert first is not None
        # The check can fail: the runner that owns the log token keeps it (to reconnect).
        assert first_tokens[1] in memory_holds(first, first_tokens)
        zygote = parent_of(first)
        await host.restart("echo")
        second = host.plugin("echo").pid
        assert second is not None and second != first
        assert parent_of(second) == zygote != os.getpid()
        own = supervisor.expected_log_token()
        assert own is not None
        assert memory_holds(second, [*first_tokens, own.encode()]) == {own.encode()}
        assert memory_holds(zygote, [*first_tokens, own.encode()]) == set()
        for pid in (second, zygote):
            assert environment_block_holds(pid, first_tokens) == set()


async def test_hosts_sharing_a_zygote_use_one_and_it_is_kept_between_them(tmp_path: Path) -> None:
    """With sharing on, a host's runner comes from the zygote the host before it used, which
    outlives that host's close; turned off, the zygote no host uses ends."""
    directory = echo_dir(tmp_path, None)
    share_zygotes()
    zygotes = []
    for _ in range(2):
        async with Host(directory, config=FAST) as host:
            await host.wait_ready(20)
            pid = host.plugin("echo").pid
            assert pid is not None and await host.call("echo", "pid") == pid
            zygotes.append(parent_of(pid))
        assert process_alive(zygotes[-1])
    assert zygotes[0] == zygotes[1] != os.getpid()
    share_zygotes(False)
    await eventually(lambda: not process_alive(zygotes[0]), 5)


async def test_only_the_most_recently_used_idle_shared_zygotes_are_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Hosts whose runners get different environments (a HOME of each test's own) get a zygote
    each; of those no host uses, only the MAX_IDLE most recently used are kept."""
    directory = echo_dir(tmp_path, None)
    share_zygotes()
    zygotes = []
    for number in range(MAX_IDLE + 1):
        monkeypatch.setenv("HOME", str(tmp_path / f"home{number}"))
        async with Host(directory, config=FAST) as host:
            await host.wait_ready(20)
            pid = host.plugin("echo").pid
            assert pid is not None
            zygotes.append(parent_of(pid))
    assert len(set(zygotes)) == MAX_IDLE + 1
    await eventually(lambda: not process_alive(zygotes[0]), 5)
    assert all(process_alive(zygote) for zygote in zygotes[1:])


async def test_a_shared_zygote_that_died_is_replaced_for_the_next_host(tmp_path: Path) -> None:
    directory = echo_dir(tmp_path, None)
    share_zygotes()
    async with Host(directory, config=FAST) as host:
        await host.wait_ready(20)
        first = host.plugin("echo").pid
        assert first is not None
        zygote = parent_of(first)
    os.kill(zygote, signal.SIGKILL)
    await eventually(lambda: not process_alive(zygote), 5)
    async with Host(directory, config=FAST) as host:
        await host.wait_ready(20)
        pid = host.plugin("echo").pid
        assert pid is not None and parent_of(pid) not in (zygote, os.getpid())
        assert await host.call("echo", "echo", 1) == 1


def test_a_shared_zygote_outlives_the_thread_of_the_host_that_started_it(tmp_path: Path) -> None:
    """A BlockingHarness runs its host on a thread of its own, which ends with the harness: a
    zygote started from it would die with it (its parent-death signal is tied to the thread
    that started it). A shared one is started from a thread that lives as long as the process,
    and serves the next harness."""
    directory = echo_dir(tmp_path, None) / "echo"
    share_zygotes()
    zygotes = []
    for _ in range(2):
        with BlockingHarness(directory, config=FAST) as harness:
            pid = harness.host.plugin("echo").pid
            assert pid is not None
            zygotes.append(parent_of(pid))
            assert harness.call("echo", 2) == 2
    assert not any(t.name == "isoplug-test-host" for t in threading.enumerate())
    assert zygotes[0] == zygotes[1] and process_alive(zygotes[0])


def test_shared_zygotes_end_with_the_process(tmp_path: Path) -> None:
    """A process whose hosts shared a zygote ends, and leaves it running no moment longer."""
    directory = echo_dir(tmp_path, None)
    script = textwrap.dedent(
        f"""
        import asyncio
        from isoplug import Host
        from isoplug.testing import share_zygotes

        share_zygotes()

        async def main():
            async with Host({str(directory)!r}) as host:
                await host.wait_ready(20)
                with open(f"/proc/{{host.plugin('echo').pid}}/stat") as stat:
                    print(stat.read().rpartition(")")[2].split()[1], flush=True)

        asyncio.run(main())
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    zygote = int(done.stdout.split()[-1])
    asyncio.run(eventually(lambda: not process_alive(zygote), 5))
