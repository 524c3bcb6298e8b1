"""Exit accounts tell the truth: who sent the signal that ended a runner, the time a stop
really took, one count of restarts, and the out-of-memory killer named only on evidence."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import re
import signal
import sys
import time
from pathlib import Path

import pytest

from isoplug import Host, PluginState, SupervisorConfig
from isoplug.cli.signals import REPEAT_WINDOW
from isoplug.errors import IsoplugError
from isoplug.host import PluginInfo
from isoplug.testing import eventually
from tests import plugins_fixtures
from tests.plugins_fixtures import plugins_dir, process_alive
from tests.processes import child_env, run_python
from tests.test_cli import read_until, start_cli
from tests.test_cli_exits import write_plugin
from tests.test_host_lifetime import escapers, start_host
from tests.test_host_lifetime import read_until as read_host_until

#: Health checks that never fire: these plugins block their runner on purpose.
PATIENT = SupervisorConfig(
    health_interval=3600,
    health_timeout=3600,
    shutdown_timeout=1.0,
    teardown_timeout=0.2,
    terminate_timeout=0.5,
)


def restarted(info: PluginInfo) -> bool:
    return info.state is PluginState.READY and info.restarts >= 1


async def test_a_sigkill_the_host_sent_is_reported_as_the_hosts_with_its_reason(
    tmp_path: Path,
) -> None:
    """A runner that ignored SIGTERM was killed by the host: the account says so, and why, and
    suggests no out-of-memory killer."""
    async with plugins_fixtures.running(tmp_path, "stubborn", config=PATIENT) as (host, _):
        info = await host.stop("stubborn")
    assert info.last_exit is not None
    text = info.last_exit.describe()
    assert re.search(
        r"was killed by SIGKILL from the host: it ignored SIGTERM for 0\.\d s; stopped on request",
        text,
    ), text
    assert "out-of-memory" not in text


async def test_a_stopped_runner_killed_at_a_stop_is_said_to_have_been_stopped(
    tmp_path: Path,
) -> None:
    """A runner paused with SIGSTOP (a debugger, a job control stop) cannot act on SIGTERM: the
    account says it was stopped, not that it ignored the signal."""
    async with plugins_fixtures.running(tmp_path, "echo", config=PATIENT) as (host, _):
        pid = host.plugin("echo").pid
        assert pid is not None
        os.kill(pid, signal.SIGSTOP)
        info = await host.stop("echo")
    assert info.last_exit is not None
    text = info.last_exit.describe()
    assert re.search(
        r"was killed by SIGKILL from the host: it was stopped \(SIGSTOP, or a debugger\) and "
        r"did not end 0\.\d s after SIGTERM; stopped on request",
        text,
    ), text
    assert "ignored" not in text


async def test_a_sigkill_from_elsewhere_names_no_sender_without_evidence(tmp_path: Path) -> None:
    """Someone's ``kill -9``: not the host, and no sign of the out-of-memory killer, so the
    account says the sender is unknown."""
    async with plugins_fixtures.running(tmp_path, "echo") as (host, _):
        pid = host.plugin("echo").pid
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        info = await host.wait_for("echo", restarted, timeout=20)
    assert info.last_exit is not None and info.last_exit.pid == pid
    text = info.last_exit.describe()
    assert "was killed by SIGKILL, not sent by the host (sender unknown" in text, text
    assert "out-of-memory killer" not in text


async def test_a_runner_that_ended_on_its_own_has_a_reason_saying_how(tmp_path: Path) -> None:
    """An exit code, a signal no one at the host sent: ``reason`` says how it ended (not ""),
    in the words of the account's line, which says it once."""
    async with plugins_fixtures.running(tmp_path, "echo") as (host, _):
        pid = host.plugin("echo").pid
        assert pid is not None
        with pytest.raises(IsoplugError):  # how the call broke is not what this tests
            await host.call("echo", "crash", code=3)
        info = await host.wait_for("echo", restarted, timeout=20)
        crashed = info.last_exit
        assert crashed is not None and crashed.pid == pid
        pid = host.plugin("echo").pid
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        info = await host.wait_for("echo", lambda i: restarted(i) and i.restarts >= 2, 20)
        killed = info.last_exit
    assert crashed.reason == "exited with code 3", crashed
    assert crashed.describe().endswith(
        f"(pid {crashed.pid}) exited with code 3; uptime {crashed.uptime:.1f} s"
    ), crashed.describe()
    assert killed is not None and killed.pid == pid
    assert killed.reason.startswith("killed by SIGKILL, not sent by the host (sender unknown"), (
        killed
    )
    assert killed.describe().count("not sent by the host") == 1, killed.describe()


async def test_a_sigterm_from_elsewhere_says_it_was_not_the_host(tmp_path: Path) -> None:
    async with plugins_fixtures.running(tmp_path, "echo") as (host, _):
        pid = host.plugin("echo").pid
        assert pid is not None
        os.kill(pid, signal.SIGTERM)
        info = await host.wait_for("echo", restarted, timeout=20)
    assert info.last_exit is not None and info.last_exit.pid == pid
    text = info.last_exit.describe()
    assert "was killed by SIGTERM, not sent by the host (sender unknown); uptime" in text, text


async def test_the_shutdown_deadline_runs_from_the_request_and_the_time_printed_is_measured(
    tmp_path: Path,
) -> None:
    """A runner whose loop is blocked never answers the shutdown request: the warning comes
    ``shutdown_timeout`` after the request (not after the answer's timeout plus as much
    again), and the time it prints is the time that passed."""
    async with plugins_fixtures.running(tmp_path, "escaper", config=PATIENT, logger=None) as (
        host,
        waiter,
    ):
        call = asyncio.ensure_future(host.call_with("escaper", "block", timeout=None))
        try:
            await waiter.wait_for("plugin.escaper.stdout", "escaper: blocking")
            requested = time.time()
            await host.stop("escaper")
        finally:
            await asyncio.gather(call, return_exceptions=True)
    (record,) = waiter.matching("isoplug.host", "of the shutdown request; sending SIGTERM")
    elapsed = record.created - requested
    printed = float(re.findall(r"did not exit within ([\d.]+) s", record.getMessage())[0])
    assert 1.0 <= elapsed < 1.6, elapsed
    assert abs(printed - elapsed) < 0.15, (printed, elapsed)


async def test_a_second_ctrl_c_is_reported_as_the_hosts_sigkill(tmp_path: Path) -> None:
    """`isoplug run`, Ctrl-C twice while a runner ignores its stop: the runner's account says
    the host killed it because its shutdown was cancelled by the second SIGINT."""
    cli = await start_cli("run", str(plugins_dir(tmp_path, "stubborn")))
    seen: list[str] = []
    try:
        async with asyncio.timeout(30):
            await read_until(cli, r"plugin stubborn: ready", seen)
            cli.send_signal(signal.SIGINT)
            await read_until(cli, r"SIGINT: stopping every plugin", seen)
            # A repeat within the window is taken for the same Ctrl-C (a signal sent to the
            # whole group): a person's second Ctrl-C comes later.
            await asyncio.sleep(REPEAT_WINDOW * 2)
            cli.send_signal(signal.SIGINT)
            rest, _ = await cli.communicate()
    except BaseException:
        cli.kill()
        await cli.communicate()
        raise
    output = "".join(seen) + rest.decode()
    assert "SIGINT again: killing every runner now" in output
    assert re.search(
        r"plugin stubborn: stopped: runner stubborn \(pid \d+\) was killed by SIGKILL from the "
        r"host: the host's shutdown was cancelled \(SIGINT again\); stopped on request",
        output,
    ), output
    assert "out-of-memory" not in output


#: A host under asyncio.run, as an application runs one; SIGINT as in a terminal (a test run
#: in the background may have it ignored, and so would this child).
_APP_UNDER_ASYNCIO_RUN = """
import asyncio, logging, signal, sys
import isoplug
signal.signal(signal.SIGINT, signal.default_int_handler)
logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
async def main():
    config = isoplug.SupervisorConfig(shutdown_timeout=90, teardown_timeout=60)
    async with isoplug.Host(sys.argv[1], config=config) as host:
        await host.wait_ready()
        print("app ready", flush=True)
        try:
            await asyncio.sleep(3600)
        finally:
            print("app stopping", flush=True)
asyncio.run(main())
"""


async def test_a_second_ctrl_c_under_asyncio_run_still_tells_how_each_runner_ended(
    tmp_path: Path,
) -> None:
    """An application under ``asyncio.run``: a first Ctrl-C starts the host's stop, a second
    raises KeyboardInterrupt (in the host's block, or out of the event loop, whose end then
    cancels every task). The runner is killed at once, and its account is said as for any
    stop, naming why."""
    app = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _APP_UNDER_ASYNCIO_RUN,
        str(plugins_dir(tmp_path, "stubborn")),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env=child_env(),
    )
    seen: list[str] = []
    try:
        async with asyncio.timeout(30):
            await read_host_until(app, seen, r"^app ready")
            (pid,) = map(int, re.findall(r"ready: runner stubborn \(pid (\d+)\)", "".join(seen)))
            app.send_signal(signal.SIGINT)
            # The host's stop begins; the runner's teardown blocks, so it waits on.
            await read_host_until(app, seen, r"^app stopping")
            app.send_signal(signal.SIGINT)
            rest, _ = await app.communicate()
    except BaseException:
        app.kill()
        await app.communicate()
        raise
    output = "".join(seen) + rest.decode()
    assert "KeyboardInterrupt" in output, output
    # Which of the host's steps the interrupt cuts short (the host's block, its shutdown, the
    # supervision) depends on where the loop was when the signal came; each says so.
    assert re.search(
        rf"isoplug.host: plugin stubborn: stopped: runner stubborn \(pid {pid}\) was "
        r"killed by SIGKILL from the host: (KeyboardInterrupt \(Ctrl-C again\)|the host's "
        r"shutdown was cancelled|the host was cut short \(its event loop ending)",
        output,
    ), output
    assert not process_alive(pid)


async def test_a_keyboard_interrupt_in_the_hosts_block_kills_the_runners_at_once(
    tmp_path: Path,
) -> None:
    """No graceful stop (up to shutdown_timeout + terminate_timeout for a stubborn plugin)
    after a KeyboardInterrupt: the runners are killed, each account saying why."""
    config = SupervisorConfig(shutdown_timeout=90, teardown_timeout=60, terminate_timeout=60)
    with pytest.raises(KeyboardInterrupt):
        async with plugins_fixtures.running(tmp_path, "stubborn", config=config) as (host, _):
            raise KeyboardInterrupt
    info = host.plugin("stubborn")
    assert info.state is PluginState.STOPPED
    assert info.last_exit is not None
    assert info.last_exit.describe().startswith(
        f"runner stubborn (pid {info.last_exit.pid}) was killed by SIGKILL from the host: "
        "KeyboardInterrupt (Ctrl-C again); stopped on request"
    ), info.last_exit.describe()


_LOOP_ENDS_UNDER_AN_OPEN_HOST = """
import asyncio, logging, sys
import isoplug
logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
async def main():
    host = isoplug.Host(sys.argv[1])
    await host.start()
    await host.wait_ready()
asyncio.run(main())
"""


def test_a_loop_that_ends_under_an_open_host_still_tells_how_each_runner_ended(
    tmp_path: Path,
) -> None:
    result = run_python(_LOOP_ENDS_UNDER_AN_OPEN_HOST, str(plugins_dir(tmp_path, "echo")))
    (pid,) = map(int, re.findall(r"ready: runner echo \(pid (\d+)\)", result.stderr))
    assert re.search(
        rf"WARNING isoplug.host: plugin echo: stopped: runner echo \(pid {pid}\) was killed by "
        r"SIGKILL from the host: the host was cut short \(its event loop ending",
        result.stderr,
    ), result.stderr
    assert not process_alive(pid)


@pytest.mark.slow
async def test_the_demo_summary_counts_restarts_once() -> None:
    """Each summary line's restart count is the number of restarts the demo announced for that
    plugin, and the line carries no other count."""
    cli = await start_cli("demo", "--duration", "5")
    output, _ = await asyncio.wait_for(cli.communicate(), 60)
    text = output.decode()
    assert cli.returncode == 0, text
    summaries = re.findall(r"demo: (\w+) +\w+ +restarts=(\d+)  last exit: (.*)", text)
    assert len(summaries) == 4, text
    for plugin_id, restarts, last_exit in summaries:
        announced = re.findall(rf"plugin {plugin_id}: restart(?:ing on request| #\d+)", text)
        assert int(restarts) == len(announced), (plugin_id, restarts, announced)
        assert "restart" not in last_exit, last_exit
    assert any(int(r) > 0 for _, r, _ in summaries), text


def _memory_cgroup() -> str | None:
    """A fresh memory cgroup (v1 or v2) under this process's own, limited to 300 MiB without
    swap, if this user may make one."""
    with open("/proc/self/cgroup") as cgroups:
        lines = cgroups.read().splitlines()
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if "memory" in controllers.split(","):
            base, limit = f"/sys/fs/cgroup/memory{path}", "memory.limit_in_bytes"
        elif controllers == "":
            base, limit = f"/sys/fs/cgroup{path}", "memory.max"
        else:
            continue
        directory = os.path.join(base, f"isoplug-test-{os.getpid()}")
        try:
            os.mkdir(directory)
        except OSError:
            continue
        try:
            for name, value in ((limit, str(300 << 20)), ("memory.swappiness", "0")):
                if name == limit or os.path.exists(os.path.join(directory, name)):
                    with open(os.path.join(directory, name), "w") as file:
                        file.write(value)
        except OSError:
            os.rmdir(directory)
            continue
        return directory
    return None


async def _remove_cgroup(directory: str) -> None:
    """Remove the cgroup once the killed host's runner has left it (it dies within moments)."""
    async with asyncio.timeout(10):
        while True:
            with open(os.path.join(directory, "cgroup.procs")) as procs:
                if not procs.read().strip():
                    break
            await asyncio.sleep(0.02)
    os.rmdir(directory)


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="cgroups are Linux's")
async def test_an_out_of_memory_kill_is_named_with_its_evidence(tmp_path: Path) -> None:
    """A runner killed by the out-of-memory killer (its cgroup's limit): the account names the
    killer and quotes what shows it."""
    cgroup = _memory_cgroup()
    if cgroup is None:
        pytest.skip("this user cannot make a memory cgroup")
    try:
        host = await start_host(
            "--cgroup", cgroup, str(escapers(tmp_path, "glutton")), "glutton:eat"
        )
        lines: list[str] = []
        try:
            async with asyncio.timeout(40):
                await read_host_until(host, lines, r"plugin glutton: restart #1")
        finally:
            host.kill()
            await host.communicate()
    finally:
        await _remove_cgroup(cgroup)
    output = "".join(lines)
    account = re.findall(r"plugin glutton: crashed: (.*)", output)[0]
    assert "was killed by SIGKILL from the kernel's out-of-memory killer (" in account, output
    assert "of its cgroup: oom_kill 0 -> 1" in account, account
    assert "sender unknown" not in account


#: Leaves a child holding its stdout (a ``sleep``), then, on request, exits at once.
LEAVES_A_CHILD_ON_STDOUT = """
    import asyncio
    import os
    import subprocess

    import isoplug


    class P(isoplug.Plugin):
        async def setup(self, ctx: isoplug.PluginContext) -> None:
            self.holder = subprocess.Popen(["sleep", "3600"])

        @isoplug.method
        async def holder_pid(self) -> int:
            return self.holder.pid

        @isoplug.method
        async def exit_soon(self) -> None:
            asyncio.get_running_loop().call_later(0.05, os._exit, 3)
"""


async def test_uptime_ends_at_the_exit_not_when_the_output_closes(tmp_path: Path) -> None:
    """A runner exits while a child of its plugin holds its stdout: the host waits for that
    output to close before it writes the account, but the runner's uptime ends when its exit
    was seen, not when the holder let go (here once the test killed it, after the exit)."""
    write_plugin(
        tmp_path / "plugins", "leaver", LEAVES_A_CHILD_ON_STDOUT, '[restart]\npolicy = "never"\n'
    )
    # The host does not give up on the holder before the test ends it.
    config = dataclasses.replace(PATIENT, stdio_drain_timeout=600.0)
    async with Host(tmp_path / "plugins", config=config) as host:
        await host.wait_ready(60)
        process = host._supervisor("leaver")._life.process  # type: ignore[union-attr]
        assert process is not None
        holder = await host.call("leaver", "holder_pid")
        await host.call("leaver", "exit_soon")
        await eventually(process.exited.done, 60)
        exit_seen_by = time.monotonic()
        os.kill(holder, signal.SIGKILL)
        await eventually(lambda: host.plugins()[0].state is PluginState.FAILED, 60)
        account = host.plugins()[0].last_exit
    assert account is not None and account.returncode == 3, account
    assert account.uptime <= exit_seen_by - process.started, (account.uptime, account)
    assert f"uptime {account.uptime:.1f} s" in account.describe()
