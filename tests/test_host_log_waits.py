"""A runner at its limit of log connections (``max_log_connections``): the further
connections of its processes wait for a place, unread, and what a plugin's fork burst logs is
delivered, never lost uncounted; past the waiting room's bounds they are refused as before.

Real hosts, real runners forking real children, real sockets.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from pathlib import Path

import pytest

from isoplug.host import SupervisorConfig
from tests.plugins_fixtures import FAST, running
from tests.record_waiter import RecordWaiter, eventually, watching

#: Children forked at once, and the records each logs before it ends.
BURST, RECORDS = 40, 3
#: Long enough for a burst on a loaded machine.
WAIT = 60.0
#: A handshake deadline no test reaches: silent connections hold their places.
LONG = 120.0


def warnings(said: RecordWaiter) -> list[str]:
    return [r.getMessage() for r in said.records if r.levelno >= logging.WARNING]


async def test_a_plugins_fork_burst_past_its_runners_limit_loses_nothing(tmp_path: Path) -> None:
    """A runner of four log places, all held (the runner's own and three children's) until
    the test lets go: forty children forked at once each log three records and end at once.
    Each was refused, tried again and ended before it was let in: every record lost, none
    counted. Now each connection waits for a place, unread, and is served as soon as its
    process ended, the places still held: every record arrives, none counted lost."""
    release = tmp_path / "release"
    config = dataclasses.replace(FAST, max_log_connections=4)
    with watching("isoplug.host") as said:
        async with running(tmp_path, "burster", config=config) as (host, records):
            burst = asyncio.create_task(
                host.call_with(
                    "burster",
                    "burst",
                    kwargs={
                        "holders": 3,
                        "count": BURST,
                        "records": RECORDS,
                        "release_file": str(release),
                    },
                    timeout=None,
                )
            )
            try:
                await records.wait_until(
                    lambda: len(records.numbers()) >= BURST * RECORDS or None, WAIT
                )
            finally:
                release.touch()
                assert await burst == BURST
            metrics = host.log_metrics("burster")
    assert sorted(records.numbers()) == list(range(BURST * RECORDS))
    assert not metrics.dropped, metrics.dropped
    assert not [w for w in warnings(said) if "refused" in w], warnings(said)
    assert any(
        w.startswith("runner burster: a log connection from pid ") and "waits for a place" in w
        for w in warnings(said)
    ), warnings(said)


def squatting(max_waiting: int) -> SupervisorConfig:
    """Four places per runner, ``max_waiting`` connections waiting past them, and a
    handshake deadline no silent connection reaches."""
    return dataclasses.replace(
        FAST,
        max_log_connections=4,
        max_waiting_log_connections=max_waiting,
        handshake_timeout=LONG,
    )


def refusals(said: RecordWaiter) -> list[str]:
    return [w for w in warnings(said) if w.startswith("runner burster: refused")]


def refused_in_all(lines: list[str]) -> int:
    """The refusals ``lines`` tell of: the first said alone, the rest summed up."""
    return 1 + sum(int(line.split("refused ")[1].split()[0]) for line in lines[1:])


@pytest.mark.parametrize(
    ("max_waiting", "full"),
    [
        (2, "2 more waiting for one (max_waiting_log_connections)"),
        (0, "none may wait for one (max_waiting_log_connections=0)"),
    ],
    ids=["room-of-two", "no-room"],
)
async def test_past_its_waiting_room_a_runners_connection_is_refused_and_counted(
    tmp_path: Path, max_waiting: int, full: str
) -> None:
    """The runner holds one place; its plugin opens eight silent log connections: three take
    the places left, ``max_waiting`` wait (unread: they hold no place), and the rest are
    refused at once, the first said with the bound that refused it, the others summed up."""
    config = squatting(max_waiting)
    with watching("isoplug.host") as said:
        async with running(tmp_path, "burster", config=config) as (host, _):
            bridge = host._log_bridge
            await eventually(lambda: bridge.open_connections("burster") == 1, WAIT)
            pid = await host.call("burster", "squat", count=8)
            refused = 8 - 3 - max_waiting
            await eventually(lambda: len(refusals(said)) >= 1, WAIT)
            # Every refusal made before the host stops, which sums them up: the listener
            # accepts the squatter's connections one by one, behind the call's answer.
            async with asyncio.timeout(WAIT):
                while await host.call("burster", "squatters_closed") < refused:
                    await asyncio.sleep(0.01)
            assert bridge.open_connections("burster") == 4
            first = refusals(said)[0]
    assert first == (
        f"runner burster: refused a log connection from pid {pid}: at its limit of 4 open log "
        f"connections (shared by the runner and the processes it started), and {full}; it "
        "tries again, and what it logs meanwhile is lost, uncounted, if it ends before it is "
        "let in"
    ), first
    # The others are summed up once the host stops (at most once per report interval).
    assert refused_in_all(refusals(said)) == refused, refusals(said)
    waits = [w for w in warnings(said) if "waits for a place" in w]
    assert len(waits) == (1 if max_waiting else 0), warnings(said)


async def test_a_closing_log_listener_is_not_held_by_connections_still_waiting(
    tmp_path: Path,
) -> None:
    """Three silent connections hold the runner's places left and two wait for one when the
    log listener closes with a short drain: the drain ends with the three still open, the two
    waiting are closed unread at once (they hold the close no longer than the drain), and
    each is said."""
    with watching("isoplug.host") as said:
        async with running(tmp_path, "burster", config=squatting(2)) as (host, _):
            bridge = host._log_bridge
            await eventually(lambda: bridge.open_connections("burster") == 1, WAIT)
            await host.call("burster", "squat", count=5)
            await eventually(lambda: any("waits for a place" in w for w in warnings(said)), WAIT)
            await eventually(
                lambda: (
                    bridge._places is not None and bridge._places.room.waiting_for("burster") == 2
                ),
                WAIT,
            )
            await asyncio.to_thread(bridge.close, 0.2)
    lines = warnings(said)
    assert (
        "4 log connection(s) still open 0.2 s after their runners stopped; closing them" in lines
    ), lines
    assert (
        "closed 2 log connection(s) that still waited for a place of their runner "
        "(max_log_connections): the host's log listener closed before one freed, and read "
        "nothing of them; their processes, alive then, count what they lose"
    ) in lines, lines
