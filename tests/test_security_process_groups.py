"""docs/security.md, the part about process groups: runners share the host's session, so a
plugin's process may join another runner's process group (``setpgid``). That must neither let
it log as that runner with a token it took (from a worker's ``/proc/<pid>/environ``: the test
hands it over) nor give it that runner's log connection places; the runner's own workers,
orphans among them, still log.

Real hosts and runners: ``intruder`` starts the helpers, in the group of ``spawner``, whose
workers log the documented way (``ctx.log_child_env()``)."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from isoplug import Host
from tests.plugins_fixtures import FAST, FIXTURES, running
from tests.record_waiter import RecordWaiter, eventually, watching
from tests.test_security_model import FORMATTER

WAIT = 20.0
HELPER = FIXTURES / "intruder" / "intruder_helper.py"


def refusals(waiter: RecordWaiter, pid: int) -> list[str]:
    """What the log listener said about the connections of ``pid`` it refused."""
    return [
        r.getMessage()
        for r in list(waiter.records)
        if r.name == "isoplug.rpc"
        and r.getMessage().startswith(f"refused a connection from pid {pid} ")
    ]


def carrying(waiter: RecordWaiter, text: str) -> list[logging.LogRecord]:
    return [r for r in list(waiter.records) if text in FORMATTER.format(r)]


async def aimed_at_spawner(host: Host, method: str, text: str) -> Any:
    """intruder's ``method`` (a helper's forwarding of ``text``), aimed at spawner: its
    process group, the log listener, its log token and name."""
    spawner = host._supervisor("spawner")
    return await host.call(
        "intruder",
        method,
        group=spawner.pid,
        address=host._log_bridge.address,
        token=spawner.expected_log_token(),
        runner="spawner",
        text=text,
    )


async def workers_log(host: Host, waiter: RecordWaiter) -> None:
    """spawner's worker, and its double-forked worker (an orphan in its group), still log."""
    pid = await host.call("spawner", "python_child")
    record = await waiter.wait_for("plugin.spawner.spawner.child", f"from a python child {pid}")
    assert record.process == pid
    pid = await host.call("spawner", "orphan_child")
    record = await waiter.wait_for("plugin.spawner.spawner.orphan", f"from an orphan worker {pid}")
    assert record.process == pid and record.plugin_id == "spawner"  # type: ignore[attr-defined]


async def test_a_helper_in_another_runners_group_cannot_log_as_it(tmp_path: Path) -> None:
    """intruder's helper, in spawner's process group, with spawner's log token and name: the
    handshake refuses it (its parents lead to intruder's runner), the warning says whose tree
    it is in, nothing it sent is logged; spawner's workers log as before."""
    marker = "FORGED by intruder"
    async with running(tmp_path, "intruder", "spawner", logger=None) as (host, waiter):
        spawner_pid = host._supervisor("spawner").pid
        attempt = await aimed_at_spawner(host, "forward_from_group", marker)
        assert "refused by the listener" in attempt["outcome"], attempt
        await workers_log(host, waiter)
    (refusal,) = refusals(waiter, attempt["pid"])
    assert refusal.endswith(
        f"runner spawner: pid {attempt['pid']} is neither the runner (pid {spawner_pid}) nor a "
        "process it started: it is in runner intruder's tree (by its parents)"
    ), refusal
    assert not carrying(waiter, marker)


async def test_a_helper_in_another_runners_group_takes_none_of_its_places(tmp_path: Path) -> None:
    """intruder's helper, in spawner's process group, holds silent log connections (no token):
    they take intruder's places, and its refusals are intruder's (said once, then summed up);
    spawner's places stay free, and its workers log."""
    config = dataclasses.replace(FAST, max_log_connections=4, max_waiting_log_connections=0)
    with watching("isoplug.host") as host_log:
        async with running(tmp_path, "intruder", "spawner", config=config) as (host, waiter):
            bridge = host._log_bridge
            spawner = host._supervisor("spawner")
            await eventually(lambda: bridge.open_connections("spawner") == 1, WAIT)
            squatter = await host.call(
                "intruder", "squat", group=spawner.pid, address=bridge.address, count=8
            )
            refused = f"refused a log connection from pid {squatter}:"
            first = await host_log.wait_for("isoplug.host", refused, WAIT)
            try:
                assert bridge.open_connections("spawner") == 1
                await workers_log(host, waiter)
            finally:
                await host.call("intruder", "stop_squatting")
    assert first.getMessage() == (
        f"runner intruder: {refused} at its limit of 4 open log connections (shared by the "
        "runner and the processes it started), and none may wait for one "
        "(max_waiting_log_connections=0); it tries again, and what it logs meanwhile is lost, "
        "uncounted, if it ends before it is let in"
    )
    assert not [r for r in host_log.records if "runner spawner: refused" in r.getMessage()]


async def test_an_orphan_seen_in_another_runners_tree_cannot_log_as_it(tmp_path: Path) -> None:
    """A process of intruder's, once the host recorded it in intruder's tree, is orphaned
    (its parent exits), joins spawner's process group and logs as spawner with its token and
    without intruder's tag: refused, the warning naming intruder's tree and the record."""
    marker = "FORGED by an orphan of intruder"
    async with running(tmp_path, "intruder", "spawner", logger=None) as (host, waiter):
        spawner_pid, intruder = host._supervisor("spawner").pid, host._supervisor("intruder")
        orphan = await aimed_at_spawner(host, "start_orphan", marker)

        def recorded() -> bool:
            marks = intruder.tree_marks()
            return marks is not None and orphan in marks.seen

        await eventually(recorded, WAIT)
        outcome = await host.call("intruder", "release_orphan")
        assert "refused by the listener" in outcome, outcome
        await workers_log(host, waiter)
    (refusal,) = refusals(waiter, orphan)
    assert refusal.endswith(
        f"runner spawner: pid {orphan} is neither the runner (pid {spawner_pid}) nor a process "
        "it started: it is in runner intruder's tree (an orphan seen in that runner's process "
        "tree)"
    ), refusal
    assert not carrying(waiter, marker)


@contextlib.contextmanager
def orphan_squatter(group: int, address: str, count: int) -> Iterator[int]:
    """An orphan of this process's (its parent exits), never in a runner's tree and without a
    runner's tag, that joins process group ``group`` and holds ``count`` silent connections to
    ``address``; its pid. It ends with the block."""
    arguments = {"group": group, "then": "squat", "address": address, "count": count}
    middle = subprocess.Popen(
        [sys.executable, str(HELPER), "middle", json.dumps(arguments)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert middle.stdin is not None and middle.stdout is not None
    try:
        squatter = int(middle.stdout.readline())
        middle.stdin.write("\n")
        middle.stdin.flush()
        middle.wait()
        yield squatter
    finally:
        middle.stdin.close()  # the squatter shares it: it ends
        middle.stdout.close()
        middle.wait()


async def test_orphans_counted_by_their_group_alone_hold_places_apart(tmp_path: Path) -> None:
    """An orphan that only its process group places in spawner's tree (one of this process's,
    which no runner recorded or tagged, as a plugin's orphan that left its tree between two
    records and dropped its tag would be) holds silent log connections: they take places apart
    from spawner's own processes', its refusals say so, and spawner's worker still logs."""
    config = dataclasses.replace(FAST, max_log_connections=4, max_waiting_log_connections=0)
    with watching("isoplug.host") as host_log:
        async with running(tmp_path, "spawner", config=config) as (host, waiter):
            bridge = host._log_bridge
            assert bridge._server is not None
            spawner_pid = host._supervisor("spawner").pid
            assert spawner_pid is not None
            await eventually(lambda: bridge.open_connections("spawner") == 1, WAIT)
            with orphan_squatter(spawner_pid, bridge.address, count=8) as squatter:
                refused = f"refused a log connection from pid {squatter}:"
                first = await host_log.wait_for("isoplug.host", refused, WAIT)
                assert bridge._server.client_connections("spawner") == 1
                pid = await host.call("spawner", "python_child")
                await waiter.wait_for("plugin.spawner.spawner.child", f"from a python child {pid}")
    assert first.getMessage() == (
        f"runner spawner: {refused} its orphans counted by their process group are at their "
        "limit of 4 open log connections (places apart from its own processes': orphans in its "
        "process group that nothing else places in its tree), and none may wait for one "
        "(max_waiting_log_connections=0); it tries again, and what it logs meanwhile is lost, "
        "uncounted, if it ends before it is let in"
    )
