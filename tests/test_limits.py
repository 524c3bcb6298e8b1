"""``[limits]`` of plugin.toml, with real runners: each limit is enforced, and the exit account
says which one was hit; without limits, nothing changes."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import re
import resource
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from isoplug import Host, PluginState, PluginUnavailable, SupervisorConfig
from isoplug.control import ResourceLimits
from isoplug.cpu_wait import ThreadCpuWait
from isoplug.errors import IsoplugError, RemoteError
from isoplug.host import PluginInfo
from isoplug.host.limits import LimitWatch, read_usage
from isoplug.host.manifest import ManifestError, load_manifest
from isoplug.host.registry import plan_runners
from isoplug.host.status import ExitAccount
from isoplug.runner import health
from isoplug.runner.workers import WorkerPool
from isoplug.sizes import parse_size
from tests.plugins_fixtures import FAST, copy_plugins
from tests.record_waiter import watching

MiB = 1024 * 1024


def hog(tmp_path: Path, limits: str, more: str = "") -> Path:
    """A plugins directory with a copy of the ``hog`` plugin whose manifest has ``more`` at
    its top level and ``limits`` as its ``[limits]`` table."""
    directory = copy_plugins(tmp_path, "hog")
    manifest = directory / "hog" / "plugin.toml"
    text = manifest.read_text() + more + "\n"
    if limits:
        text += "[limits]\n" + textwrap.dedent(limits)
    manifest.write_text(text)
    return directory


@asynccontextmanager
async def hosting(directory: Path, config: SupervisorConfig = FAST) -> AsyncIterator[Host]:
    async with Host(directory, config=config) as host:
        await host.wait_ready(20)
        yield host


def ended_by(limit: str) -> Callable[[PluginInfo], bool]:
    def check(info: PluginInfo) -> bool:
        return info.last_exit is not None and info.last_exit.limit == limit

    return check


# -- memory ---------------------------------------------------------------------------------


async def test_a_memory_hog_is_killed_at_its_limit_and_the_account_says_memory(
    tmp_path: Path,
) -> None:
    with watching("isoplug.host") as records:
        async with hosting(hog(tmp_path, 'memory = "150MiB"\n')) as host:
            pid = host.plugin("hog").pid
            with pytest.raises(IsoplugError) as broken:
                await host.call_with("hog", "grow", args=(600,), timeout=60)
            # The caller learns why the call broke, not only that a signal ended the runner.
            assert "from the host: its memory (RSS " in str(broken.value), broken.value
            info = await host.wait_for("hog", ended_by("memory"), timeout=30)
    account = info.last_exit
    assert account is not None and account.pid == pid
    # Its reason says it too, in the words of the host's log line when it killed it.
    killing = [r.getMessage() for r in records.select(text="; killing it")]
    assert killing == [f"runner hog (pid {pid}): {account.sent_by_host}; killing it"], killing
    assert account.reason == f"killed by the host: {account.sent_by_host}", account
    assert account.reason.startswith("killed by the host: its memory (RSS "), account
    text = account.describe()
    assert "was killed by SIGKILL from the host: its memory (RSS " in text, text
    assert "passed its limit memory = 150.0 MiB" in text, text
    # Killed near the limit, not after the hog took all it asked for.
    rss = float(text.split("(RSS ")[1].split(" MiB")[0])
    assert 150 < rss < 500, text


@pytest.mark.parametrize("start", ["fork", "spawn"])
async def test_a_runner_that_left_its_process_group_is_still_killed_at_its_memory_limit(
    tmp_path: Path, start: str
) -> None:
    """Leaving its group (setpgid into the host's) must not take a runner out of the host's
    reach: a kill of its group alone would find no group, and the hog would grow on. Also the
    forked runner's case where it is over the limit before it has joined its group."""
    directory = hog(tmp_path, 'memory = "150MiB"\n', more=f'start = "{start}"')
    with watching("isoplug.host") as records:
        async with hosting(directory) as host:
            pid = host.plugin("hog").pid
            assert pid is not None
            assert await host.call("hog", "leave_group", os.getpgid(0)) == os.getpgid(0)
            with pytest.raises(IsoplugError) as broken:
                await host.call_with("hog", "grow", args=(600,), timeout=60)
            assert "from the host: its memory (RSS " in str(broken.value), broken.value
            info = await host.wait_for("hog", ended_by("memory"), timeout=30)
            assert info.last_exit is not None and info.last_exit.pid == pid
            assert read_usage(pid) is None  # gone, not only disowned
    messages = [r.getMessage() for r in records.records]
    assert any(f"runner pid {pid} is not in its own process group" in m for m in messages)


async def test_a_hung_runner_that_left_its_process_group_is_still_killed(
    tmp_path: Path,
) -> None:
    async with hosting(hog(tmp_path, "", more='\n[restart]\npolicy = "never"')) as host:
        pid = host.plugin("hog").pid
        assert pid is not None
        await host.call("hog", "leave_group", os.getpgid(0))
        with pytest.raises(IsoplugError) as broken:
            # Far longer than health_timeout: only the host's kill ends the call sooner.
            await host.call_with("hog", "block", args=(20,), timeout=60)
        assert "hung" in str(broken.value), broken.value
        info = await host.wait_for("hog", lambda i: i.state is PluginState.FAILED, timeout=30)
        assert info.last_exit is not None and info.last_exit.pid == pid
        assert read_usage(pid) is None


async def test_one_huge_allocation_fails_with_memory_error_at_the_backstop_and_is_logged(
    tmp_path: Path,
) -> None:
    """RLIMIT_AS is set well above memory: an allocation past it raises MemoryError in the
    plugin at once, the host's log says why, and the runner goes on."""
    with watching("plugin.hog") as records:
        async with hosting(hog(tmp_path, 'memory = "100MB"\n')) as host:
            limits = await host.call("hog", "rlimits")
            backstop = limits["RLIMIT_AS"][0]
            assert backstop != resource.RLIM_INFINITY
            assert backstop > 100_000_000 * 2
            answer = await host.call("hog", "allocate", backstop)
            assert answer.startswith("MemoryError"), answer
            assert await host.call("hog", "allocate", 10 * MiB) == "ok"
            with pytest.raises(RemoteError) as failed:
                await host.call("hog", "allocate", backstop, catch=False)
            assert failed.value.remote_type == "builtins.MemoryError"
            await records.wait_for("plugin.hog.isoplug.runner", "raised MemoryError", timeout=10)
            assert host.plugin("hog").restarts == 0
    record = next(r for r in records.records if "raised MemoryError" in r.getMessage())
    assert "address-space cap" in record.getMessage()
    assert "memory = 95.4 MiB" in record.getMessage()


# -- recycle_rss ----------------------------------------------------------------------------


async def test_a_runner_whose_rss_stays_high_is_recycled_and_that_is_not_a_crash(
    tmp_path: Path,
) -> None:
    """restart policy 'never': a crash would fail the plugin; a recycle restarts it."""
    directory = hog(tmp_path, 'recycle_rss = "150MiB"\n', more='\n[restart]\npolicy = "never"')
    with watching("isoplug.host") as records:
        async with hosting(directory) as host:
            first = host.plugin("hog").pid
            assert await host.call("hog", "grow", 200) >= 200

            def recycled(info: PluginInfo) -> bool:
                return info.state is PluginState.READY and info.restarts == 1

            info = await host.wait_for("hog", recycled, timeout=30)
            assert info.pid != first
            account = info.last_exit
            assert account is not None and account.pid == first
            assert account.limit == "recycle_rss"
            assert account.returncode == 0, account.describe()
            assert account.reason.startswith("recycled: RSS "), account
            assert "recycled: RSS " in account.describe()
            assert "above recycle_rss 150.0 MiB" in account.describe()
            # The fresh runner is below the threshold: it stays.
            assert await host.call("hog", "ping") == info.pid
            assert host.plugin("hog").state is PluginState.READY
    messages = [r.getMessage() for r in records.records]
    assert any("restarting: " in m and "recycled: RSS" in m for m in messages), messages
    assert not any("crashed" in m for m in messages), messages


@pytest.mark.slow
async def test_a_recycle_for_rss_lets_the_call_in_flight_finish_first(tmp_path: Path) -> None:
    """The call that holds the memory is answered; the runner is recycled after it."""
    directory = hog(tmp_path, 'recycle_rss = "150MiB"\n', more='\n[restart]\npolicy = "never"')
    with watching("isoplug.host") as records:
        async with hosting(directory) as host:
            first = host.plugin("hog").pid
            # Held far longer than the RECYCLE_CHECKS checks (0.3 s) that decide a recycle.
            assert await host.call("hog", "hold", 200, 3.0) == first
            await records.wait_for("isoplug.host", "waiting for 1 call in flight", timeout=10)
            info = await host.wait_for(
                "hog", lambda i: i.state is PluginState.READY and i.restarts == 1, timeout=30
            )
            assert info.last_exit is not None and info.last_exit.pid == first
            assert info.last_exit.limit == "recycle_rss"


async def test_the_memory_limit_hit_while_a_recycle_waits_is_a_crash(tmp_path: Path) -> None:
    """A recycle waits for a call in flight; meanwhile the plugin passes memory: it is killed
    as at any time, a crash (policy 'never': FAILED), and the calls are told the limit, not
    a recycle."""
    directory = hog(
        tmp_path,
        'recycle_rss = "150MiB"\nmemory = "300MiB"\n',
        more='\n[restart]\npolicy = "never"',
    )
    with watching("isoplug.host") as records:
        async with hosting(directory) as host:
            first = host.plugin("hog").pid
            held = asyncio.ensure_future(
                host.call_with("hog", "hold", args=(200, 20.0), timeout=60)
            )
            await records.wait_for("isoplug.host", "waiting for 1 call in flight", timeout=10)
            with pytest.raises(IsoplugError) as grown:
                await host.call_with("hog", "grow", args=(200,), timeout=60)
            with pytest.raises(IsoplugError) as holding:
                await held
            info = await host.wait_for("hog", lambda i: i.state is PluginState.FAILED, 30)
    for caught in (grown, holding):
        assert not isinstance(caught.value, PluginUnavailable), caught.value
        assert "recycled" not in str(caught.value), caught.value
        assert "memory" in str(caught.value), caught.value
    account = info.last_exit
    assert account is not None and account.pid == first and account.limit == "memory"
    assert account.signal_name == "SIGKILL"
    assert "recycled" not in account.describe(), account.describe()
    messages = [r.getMessage() for r in records.records]
    assert not any("restarting: " in m for m in messages), messages


# -- cpu_seconds ----------------------------------------------------------------------------


async def test_a_spinning_plugin_is_ended_at_its_cpu_limit_and_the_account_names_it(
    tmp_path: Path,
) -> None:
    # The limit is CPU time, so the wait for it is as long as the runner's share of a CPU
    # makes it: at nice 19 (the default runner_nice) beside a busy process that share is
    # about 1.5 %, and its 1 s took over a minute. At the host's priority it gets its fair
    # share; the limit and its account do not depend on the priority.
    config = dataclasses.replace(FAST, runner_nice=0)
    async with hosting(hog(tmp_path, "cpu_seconds = 1\n"), config) as host:
        pid = host.plugin("hog").pid
        with pytest.raises(IsoplugError) as broken:
            await host.call_with("hog", "spin", timeout=60)
        # The caller learns which limit, as for memory.
        assert "killed by SIGXCPU at its limit cpu_seconds: its CPU time (" in str(broken.value)
        info = await host.wait_for("hog", ended_by("cpu_seconds"), timeout=30)
    account = info.last_exit
    assert account is not None and account.pid == pid
    assert account.signal_name == "SIGXCPU"
    text = account.describe()
    assert re.search(
        r"its CPU time \(\d+\.\d s at its exit\) reached its limit cpu_seconds = 1 ", text
    )
    assert "from the kernel at its CPU time limit" in text, text
    assert account.reason.startswith("its CPU time ("), account


@pytest.mark.parametrize("limits", ["", "cpu_seconds = 600\n"])
async def test_a_sigxcpu_from_someone_else_is_not_blamed_on_a_cpu_limit(
    tmp_path: Path, limits: str
) -> None:
    """Without cpu_seconds, or far below it, a SIGXCPU is anyone's: the account says so."""
    async with hosting(hog(tmp_path, limits, more='\n[restart]\npolicy = "never"')) as host:
        pid = host.plugin("hog").pid
        assert pid is not None
        os.kill(pid, signal.SIGXCPU)
        info = await host.wait_for("hog", lambda i: i.state is PluginState.FAILED, timeout=30)
    account = info.last_exit
    assert account is not None and account.pid == pid and account.signal_name == "SIGXCPU"
    assert account.limit is None
    text = account.describe()
    assert "killed by SIGXCPU, not sent by the host (sender unknown)" in text, text
    assert "limit" not in text, text


def test_a_sigkill_at_the_hard_cpu_limit_is_accounted_with_the_cpu_time_seen() -> None:
    """A plugin that handles SIGXCPU gets the kernel's SIGKILL later, which the host did not
    send: the account says the kernel sent it at the limit, and what the CPU time was, not
    "sender unknown"."""

    async def account() -> tuple[str | None, str]:
        watch = LimitWatch("spinner", ResourceLimits(cpu_seconds=2))
        usage = read_usage(os.getpid())
        assert usage is not None
        watch.last = type(usage)(usage.rss, 7.5)
        return watch.account(-9, None, True)

    limit, note = asyncio.run(account())
    assert limit == "cpu_seconds"
    assert "its CPU time was 7.5 s when last seen, past its limit cpu_seconds = 2" in note
    described = ExitAccount(
        "spinner", 42, -9, 9.0, 0, note, status_known=True, limit=limit
    ).describe()
    assert described.startswith(
        "runner spinner (pid 42) was killed by SIGKILL from the kernel at its CPU time limit; "
        "its CPU time was 7.5 s"
    ), described
    assert "sender unknown" not in described


# -- open_files -----------------------------------------------------------------------------


async def test_open_files_refuses_the_next_open_in_the_plugin_and_the_runner_works_on(
    tmp_path: Path,
) -> None:
    async with hosting(hog(tmp_path, "open_files = 20\n")) as host:
        result = await host.call("hog", "open_until_refused", os.devnull)
        assert result == {"opened": 20, "error": "EMFILE"}
        # Its own connections were open before: calls still work, and again.
        pid = await host.call("hog", "ping")
        assert await host.call("hog", "open_until_refused", os.devnull) == result
        assert host.plugin("hog").pid == pid and host.plugin("hog").restarts == 0


async def test_the_health_threads_files_are_open_before_the_limits_count(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The runner applies open_files after its health monitor starts: start() returns only
    once the health thread has opened its files, so a thread the scheduler starts late does
    not take descriptors from the plugin's allowance."""

    class SlowToOpen(ThreadCpuWait):
        def __init__(self) -> None:
            if threading.current_thread().name == "isoplug-health":
                time.sleep(0.2)  # the scheduler runs the new thread late (a loaded machine)
            super().__init__()

    monkeypatch.setattr(health, "ThreadCpuWait", SlowToOpen)
    ours, theirs = socket.socketpair()
    monitor = health.HealthMonitor(theirs, asyncio.get_running_loop(), WorkerPool(1), 0.05)
    try:
        monitor.start()
        assert monitor._health_cpu_wait is not None
    finally:
        ours.close()  # the host's end: the health thread ends


@pytest.mark.parametrize("high", [False, True])
def test_open_files_is_exactly_how_many_more_the_process_may_open(high: bool) -> None:
    """RLIMIT_NOFILE limits descriptor numbers: a descriptor held at or above the limit (a
    forked runner inherits one from its zygote, numbered after the zygote's other runners)
    takes no room below it, and counting it let the plugin open one more."""
    script = textwrap.dedent(
        f"""
        import os
        from isoplug.control import ResourceLimits
        from isoplug.runner.limits import apply_limits
        if {high}:
            os.dup2(0, 200)
        assert apply_limits(ResourceLimits(open_files=8)) == []
        files, error = [], ""
        try:
            while len(files) < 100:
                files.append(open(os.devnull))
        except OSError as exc:
            error = exc.strerror
        print(len(files), error)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split(maxsplit=1) == ["8", "Too many open files\n"], done.stdout


# -- processes ------------------------------------------------------------------------------


async def test_processes_as_root_is_not_enforced_and_says_so(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("the root case: RLIMIT_NPROC is ignored for root")
    with watching("plugin.hog") as records:
        async with hosting(hog(tmp_path, "processes = 4\n")) as host:
            await records.wait_for(
                "plugin.hog.isoplug.runner", "processes = 4 is not enforced", timeout=10
            )
            assert await host.call("hog", "ping") == host.plugin("hog").pid


def test_processes_refuses_the_next_fork_for_a_user_who_is_not_root() -> None:
    """The rlimit as the runner sets it, in a process that runs as an unprivileged user (the
    test drops to one when it runs as root)."""
    script = textwrap.dedent(
        """
        import os, time
        from isoplug.control import ResourceLimits
        from isoplug.runner.limits import apply_limits
        if os.geteuid() == 0:
            os.setgid(65534); os.setuid(65534)
        assert apply_limits(ResourceLimits(processes=3), thread_room=0) == []
        children, error = [], ""
        try:
            for _ in range(10):
                pid = os.fork()
                if pid == 0:
                    time.sleep(30)
                    os._exit(0)
                children.append(pid)
        except OSError as exc:
            error = type(exc).__name__
        for pid in children:
            os.kill(pid, 9); os.waitpid(pid, 0)
        print(len(children), error)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["3", "BlockingIOError"], done.stdout


# -- no limits ------------------------------------------------------------------------------


async def test_without_limits_no_watch_runs_and_no_rlimit_changes(tmp_path: Path) -> None:
    mine = {
        name: list(resource.getrlimit(getattr(resource, name)))
        for name in ("RLIMIT_AS", "RLIMIT_CPU", "RLIMIT_NOFILE", "RLIMIT_NPROC")
    }
    async with hosting(hog(tmp_path, "")) as host:
        assert await host.call("hog", "rlimits") == mine
        names = {task.get_name() for task in asyncio.all_tasks()}
        assert not any(name.startswith("isoplug-limits:") for name in names), names


# -- the manifest ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("table", "field", "words"),
    [
        ('memory = "12 parsecs"', "limits.memory", "'12 parsecs' is not a size"),
        ("memory = -5", "limits.memory", "must be an integer of at least 1"),
        ('recycle_rss = "0MB"', "limits.recycle_rss", "no memory at all"),
        ('cpu_seconds = "ten"', "limits.cpu_seconds", "must be an integer"),
        ("open_files = 0", "limits.open_files", "of at least 1"),
        ("processes = 2.5", "limits.processes", "must be an integer"),
        ('memory = "1GB"\nrecycle_rss = "2GB"', "limits.recycle_rss", "must be below"),
        # Values the runner's rlimits cannot hold: refused, naming the largest allowed.
        ("cpu_seconds = 9223372036854775807", "limits.cpu_seconds", "of at most 1000000000"),
        ('memory = "9000000000GB"', "limits.memory", "at most 1125899906842624 bytes"),
        ("memory = 9223372036854775807", "limits.memory", "at most 1125899906842624 bytes"),
        ("open_files = 2000000000", "limits.open_files", "of at most 1073741824"),
        ("processes = 100000000", "limits.processes", "of at most 4194304"),
        # Below what a runner holds to start: it would be killed as it starts.
        ("memory = 1024", "limits.memory", "below the least allowed, 32 MiB"),
        ('recycle_rss = "10MB"', "limits.recycle_rss", "below the least allowed, 32 MiB"),
        ('address_space = "100MB"', "limits.address_space", "below the least allowed"),
        # Measured: at 256 MiB a runner could not start the thread of a sync method.
        ('address_space = "256MiB"', "limits.address_space", "below the least allowed, 1024"),
        # The cap would stop the plugin before its memory limit could.
        ('memory = "2GB"\naddress_space = "1.5GB"', "limits.address_space", "must be above"),
    ],
)
def test_bad_limits_name_the_field(tmp_path: Path, table: str, field: str, words: str) -> None:
    directory = hog(tmp_path, table + "\n") / "hog"
    with pytest.raises(ManifestError) as caught:
        load_manifest(directory)
    assert caught.value.field == field, str(caught.value)
    assert words in str(caught.value)


@pytest.mark.parametrize(
    ("table", "expected"),
    [
        ('memory = "100MB"\naddress_space = false\n', [resource.RLIM_INFINITY] * 2),
        ('address_space = "8GiB"\n', [8 * 1024**3] * 2),
        ('memory = "100MB"\naddress_space = "8GiB"\n', [8 * 1024**3] * 2),
        # The least allowed: a runner there still starts its worker thread (rlimits is sync).
        ('address_space = "1GiB"\n', [1024**3] * 2),
    ],
)
async def test_the_address_space_cap_can_be_turned_off_or_set(
    tmp_path: Path, table: str, expected: list[int]
) -> None:
    if resource.getrlimit(resource.RLIMIT_AS)[1] != resource.RLIM_INFINITY:
        pytest.skip("this process has an address-space limit already")
    async with hosting(hog(tmp_path, table)) as host:
        assert (await host.call("hog", "rlimits"))["RLIMIT_AS"] == expected


async def test_open_files_above_the_inherited_hard_limit_is_capped_and_says_so(
    tmp_path: Path,
) -> None:
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard == resource.RLIM_INFINITY or hard + 1000 > 2**30:
        pytest.skip("no finite hard limit on descriptors here")
    with watching("plugin.hog") as records:
        async with hosting(hog(tmp_path, f"open_files = {hard + 1000}\n")) as host:
            record = await records.wait_for(
                "plugin.hog.isoplug.runner", "above the hard limit the runner inherited", timeout=10
            )
            assert f"({hard}): limited to that" in record.getMessage()
            assert (await host.call("hog", "rlimits"))["RLIMIT_NOFILE"] == [hard, hard]


def test_an_unknown_limit_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match=r"limits\.memroy"):
        load_manifest(hog(tmp_path, 'memroy = "1GB"\n') / "hog")


def test_sizes_are_read_with_their_units(tmp_path: Path) -> None:
    manifest = load_manifest(
        hog(tmp_path, 'memory = "1.5 GiB"\nrecycle_rss = "400MB"\ncpu_seconds = 600\n') / "hog"
    )
    assert manifest.limits == ResourceLimits(
        memory=1536 * MiB, recycle_rss=400_000_000, cpu_seconds=600
    )


def test_plugins_of_a_group_must_agree_on_their_limits(tmp_path: Path) -> None:
    root = tmp_path / "plugins"
    for name, limits in (("a", 'memory = "1GB"'), ("b", 'memory = "2GB"'), ("c", "")):
        (root / name).mkdir(parents=True)
        (root / name / "plugin.toml").write_text(
            f'id = "{name}"\nversion = "1"\nentry = "m:P"\ngroup = "g"\n[limits]\n{limits}\n'
        )
    manifests = [load_manifest(root / name) for name in "abc"]
    plans, problems = plan_runners(manifests)
    assert [m.id for m in plans[0].manifests] == ["a", "c"]
    assert len(problems) == 1
    assert "field 'limits.memory': 1.86 GiB (2000000000 bytes) here, 953.7 MiB" in problems[0]


def test_size_messages_name_the_bound_and_every_unit() -> None:
    with pytest.raises(ValueError, match=r"too large a size: at most 9223372036854775807 bytes"):
        parse_size("99999999TB")
    with pytest.raises(ValueError, match=r"KB, MB, GB, TB, KiB, MiB, GiB or TiB"):
        parse_size("12 parsecs")
    assert parse_size("1TiB") == 1024**4 and parse_size("1TB") == 1000**4
