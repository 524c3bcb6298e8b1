"""Runners run below their host on the CPU (isoplug.runner.priority), and many of them at once
deliver every record: real hosts, real runner processes, read back from /proc."""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import json
import logging
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from isoplug import Host, SupervisorConfig
from isoplug.runner import priority
from isoplug.testing import FAST, eventually

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="reads scheduling from /proc"
)

PLUGIN_CODE = """\
import asyncio
import logging

import isoplug

log = logging.getLogger("flood")


def flood(count: int) -> None:
    for index in range(count):
        log.info("record %s", index)


class Flood(isoplug.Plugin):
    @isoplug.method
    async def flood(self, count: int) -> None:
        await asyncio.to_thread(flood, count)
"""

SCHED_BATCH = 3
SCHED_OTHER = 0


def write_plugins(root: Path, count: int) -> list[str]:
    root.mkdir(exist_ok=True)
    ids = [f"p{number:02d}" for number in range(count)]
    for plugin_id in ids:
        directory = root / plugin_id
        directory.mkdir()
        (directory / "plugin.toml").write_text(
            f'id = "{plugin_id}"\nversion = "0.1"\nentry = "flood_plugin:Flood"\n'
            'log_level = "INFO"\n'
        )
        (directory / "flood_plugin.py").write_text(PLUGIN_CODE)
    return ids


def thread_scheduling(pid: int) -> dict[int, tuple[int, int]]:
    """Every thread of ``pid``: (nice, policy), from /proc/<pid>/task/<tid>/stat."""
    found: dict[int, tuple[int, int]] = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as stat:
                fields = stat.read().rpartition(")")[2].split()
        except FileNotFoundError:
            continue  # the thread ended meanwhile
        # Fields counted from 1 in proc(5), the first two (pid, comm) cut off here.
        found[int(tid)] = (int(fields[19 - 3]), int(fields[41 - 3]))
    return found


def own_scheduling() -> tuple[int, int, str]:
    """This process's nice value, policy and autogroup line."""
    autogroup = Path("/proc/self/autogroup")
    return (
        os.getpriority(os.PRIO_PROCESS, 0),
        os.sched_getscheduler(0),
        autogroup.read_text() if autogroup.exists() else "",
    )


async def runner_scheduling(tmp_path: Path, config: SupervisorConfig) -> dict[int, tuple[int, int]]:
    write_plugins(tmp_path / "plugins", 1)
    async with Host(tmp_path / "plugins", config=config) as host:
        await host.wait_ready(20)
        pid = host.plugin("p00").pid
        assert pid is not None
        # A call first: the runner's worker threads exist then too.
        await host.call("p00", "flood", count=1)
        return thread_scheduling(pid)


async def test_runners_run_below_the_host_and_the_host_keeps_its_own_priority(
    tmp_path: Path,
) -> None:
    host_before = own_scheduling()
    threads = await runner_scheduling(tmp_path, FAST)
    assert own_scheduling() == host_before
    expected_nice = min(19, host_before[0] + FAST.runner_nice)
    assert FAST.runner_nice == SupervisorConfig().runner_nice > 0
    assert len(threads) > 1  # the lifeline, the log sender... started before the change
    assert set(threads.values()) == {(expected_nice, SCHED_BATCH)}, threads


async def test_runner_nice_zero_keeps_runners_at_the_hosts_priority(tmp_path: Path) -> None:
    host_before = own_scheduling()
    threads = await runner_scheduling(tmp_path, dataclasses.replace(FAST, runner_nice=0))
    assert own_scheduling() == host_before
    assert set(threads.values()) == {(host_before[0], host_before[1])}, threads


def test_runner_nice_outside_0_to_19_is_refused() -> None:
    with pytest.raises(ValueError, match="runner_nice must be 0 to 19"):
        SupervisorConfig(runner_nice=20)
    with pytest.raises(ValueError, match="runner_nice must be 0 to 19"):
        SupervisorConfig(runner_nice=-1)


LOWER_AND_SHOW = (
    "import json, os, sys; from isoplug.runner.priority import lower_priority; "
    "import threading; problems = lower_priority(int(sys.argv[1])); "
    # A write refused by the kernel's rate limit is retried from a thread: wait for it.
    "[t.join() for t in threading.enumerate() if t.name == 'isoplug-autogroup-nice']; "
    "print(json.dumps({'problems': problems, 'leads_session': os.getsid(0) == os.getpid(), "
    "'autogroup': open('/proc/self/autogroup').read(), "
    "'nice': os.getpriority(os.PRIO_PROCESS, 0)}))"
)


def lower_and_show(**popen_options: Any) -> dict[str, Any]:
    """What ``lower_priority(7)`` did in a child started with ``popen_options``."""
    child = subprocess.run(
        [sys.executable, "-c", LOWER_AND_SHOW, "7"],
        capture_output=True,
        text=True,
        check=False,
        **popen_options,
    )
    # The child's stderr is in the message: a sandbox's refusal must be readable from CI's log.
    assert child.returncode == 0, f"exit {child.returncode}; stderr: {child.stderr}"
    shown: dict[str, Any] = json.loads(child.stdout)
    return shown


def autogroup_nice(shown: str) -> str | None:
    """The nice value in ``/proc/<pid>/autogroup``'s text ("/autogroup-123 nice 0"), if any."""
    words = shown.split()
    return words[-1] if words else None


def autogroups_shown() -> bool:
    """Autogroups are on, and this kernel shows this process its own (some sandboxes do not)."""
    try:
        enabled = Path("/proc/sys/kernel/sched_autogroup_enabled").read_text().strip() == "1"
        return enabled and autogroup_nice(Path("/proc/self/autogroup").read_text()) is not None
    except OSError:
        return False


@pytest.mark.skipif(not autogroups_shown(), reason="this kernel shows no autogroups")
def test_a_session_leader_lowers_its_autogroup_and_a_group_member_leaves_the_hosts_alone() -> None:
    before = Path("/proc/self/autogroup").read_text()
    expected_nice = min(19, os.getpriority(os.PRIO_PROCESS, 0) + 7)
    leader = lower_and_show(start_new_session=True)
    if autogroup_nice(leader["autogroup"]) is None:
        pytest.skip("this kernel shows a new session no autogroup")
    # Its own autogroup starts at nice 0.
    assert {**leader, "autogroup": autogroup_nice(leader["autogroup"])} == {
        "problems": [],
        "leads_session": True,
        "autogroup": "7",
        "nice": expected_nice,
    }
    member = lower_and_show(process_group=0)
    # It shares this process's autogroup, which it must not lower.
    assert member == {
        "problems": [],
        "leads_session": False,
        "autogroup": before,
        "nice": expected_nice,
    }
    assert Path("/proc/self/autogroup").read_text() == before


@pytest.mark.parametrize(
    ("shown", "problem"),
    [
        # A sandbox that says autogroups are on may show a process none: nothing to lower.
        ("", None),
        ("\n", None),
        ("/autogroup-9 nice zero\n", "not a nice value"),
    ],
)
def test_an_autogroup_the_kernel_does_not_show_is_left_alone_and_nonsense_is_a_problem(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, shown: str, problem: str | None
) -> None:
    autogroup = tmp_path / "autogroup"
    autogroup.write_text(shown)
    monkeypatch.setattr(priority, "_AUTOGROUP", str(autogroup))
    problems: list[str] = []
    priority._lower_autogroup(7, problems)
    assert autogroup.read_text() == shown  # nothing written
    if problem is None:
        assert problems == []
    else:
        assert len(problems) == 1 and problem in problems[0], problems


def test_an_autogroup_the_kernel_shows_is_lowered_by_the_runners_nice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    autogroup = tmp_path / "autogroup"
    autogroup.write_text("/autogroup-9 nice 3\n")
    monkeypatch.setattr(priority, "_AUTOGROUP", str(autogroup))
    problems: list[str] = []
    priority._lower_autogroup(7, problems)
    assert (problems, autogroup.read_text()) == ([], "10")


class PerPlugin(logging.Handler):
    """Counts the records that reached the host's logging, by plugin."""

    def __init__(self) -> None:
        super().__init__()
        self.counts: collections.Counter[str] = collections.Counter()
        self._count_lock = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        if not getattr(record, "isoplug_report", False):
            with self._count_lock:  # replay threads of several runners call this at once
                self.counts[record.__dict__["plugin_id"]] += 1


@pytest.mark.slow
async def test_sixteen_runners_flooding_at_once_deliver_or_report_every_record(
    tmp_path: Path,
) -> None:
    count = 5_000
    ids = write_plugins(tmp_path / "plugins", 16)
    handler = PerPlugin()
    logger = logging.getLogger("plugin")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        async with Host(tmp_path / "plugins", config=FAST) as host:
            await host.wait_ready(60)
            await asyncio.gather(
                *(host.call_with(i, "flood", kwargs={"count": count}, timeout=120) for i in ids)
            )

            def accounted(plugin_id: str) -> int:
                metrics = host.log_metrics(plugin_id)
                return metrics.replayed + sum(metrics.dropped.values())

            await eventually(lambda: all(accounted(i) >= count for i in ids), timeout=60)
            for plugin_id in ids:
                metrics = host.log_metrics(plugin_id)
                assert accounted(plugin_id) == count, (plugin_id, metrics)
                assert handler.counts[plugin_id] == metrics.replayed, plugin_id
                assert metrics.filtered == 0
    finally:
        logger.removeHandler(handler)
        logger.setLevel(logging.NOTSET)
