"""One sender tree holding rings through pending ends (isoplug.logs.ring_budget,
isoplug.logs.pending_ends): a process that drops its log connections without a goodbye while it
lives keeps each one's ring, and the connection limits count only open connections. An outside
check's plugin so held all 256 of the host's rings, and the next plugin's ring was refused. A
tree's rings and pending ends are bounded by its connection places now: the hoarder is refused
its own rings, the warning names it, and an honest sender keeps its ring and recovers what its
crash left unsent. Real processes on real sockets (tests/ring_bomb_child.py ``hoard`` and
``hog``)."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from isoplug.logs import LogReceiver
from isoplug.logs.metrics import DropReason
from isoplug.logs.pending_ends import PendingEnds
from isoplug.logs.receiver import NAME_ENV
from isoplug.logs.ring import RING_BYTES
from isoplug.testing import eventually
from tests.plugins_fixtures import FAST, running
from tests.test_logs_forwarding import (
    BOTH_MODES,
    PREFIX,
    combined_metrics,
    finish,
    receiving,
    run_script,
)
from tests.test_logs_ring_budget import HOG, UNSENT, refusals, start_hog

pytestmark = pytest.mark.skipif(not hasattr(os, "memfd_create"), reason="needs memfd")

#: A tree's log connection places, which bound its rings and pending ends too.
PLACES = 4
#: Rings the receiver keeps in all: the hoarder could take them all without its tree's bound.
MAX_RINGS = 2 * PLACES
#: Connections the hoarder drops while it lives, each with a ring: far past both bounds.
HOARDED = 3 * PLACES
WAIT = 60.0


def hoarder_served(receiver: LogReceiver) -> bool:
    """Whether every connection of the hoarder was served and ended: each one's end is
    pending or accounted for, so each ring it announced was taken or refused."""
    labels = [label for label in receiver.metrics() if label.startswith("hoarder #")]
    still_open = [
        label
        for label, replayer in list(receiver._replayers.values())
        if label.startswith("hoarder #") and not replayer.metrics.pending_ends
    ]
    return len(labels) == HOARDED and not still_open


def hoarder_pending_ends(receiver: LogReceiver) -> int:
    return sum(m.pending_ends for label, m in receiver.metrics().items() if "hoarder #" in label)


def unsent_settled(metrics: Callable[[], tuple[int, int]]) -> Callable[[], bool]:
    """Whether the honest sender's crash was accounted for: what it left unsent recovered,
    or counted lost (``metrics``: recovered, lost)."""
    return lambda: sum(metrics()) >= UNSENT


@BOTH_MODES
async def test_a_tree_hoarding_rings_through_pending_ends_is_refused_only_its_own(
    mode: str,
) -> None:
    """A LogReceiver with ``max_senders_per_tree=4`` and ``max_rings=8``: a child drops 12
    connections with rings while it lives. Its tree keeps 4 rings and 4 pending ends (its
    oldest accounted for as it drops more), the refusals name its tree and
    max_senders_per_tree; another child's ring is kept, and its crash's unsent records come
    back. Before, the hoarder held all 8 rings and 12 pending ends, and the honest child's
    ring was refused ("holds 8 senders' rings already"), its unsent records lost."""
    async with receiving(mode, max_senders_per_tree=PLACES, max_rings=MAX_RINGS) as (
        receiver,
        collector,
    ):
        hoarder = await run_script(
            receiver, "", HOG[0], "hoard", str(HOARDED), env={NAME_ENV: "hoarder"}
        )
        try:
            assert hoarder.stdout is not None
            line = await asyncio.wait_for(hoarder.stdout.readline(), WAIT)
            assert line == b"hoarding\n", (line, await finish(hoarder))
            await eventually(lambda: hoarder_served(receiver), WAIT)
            # The oldest end past the bound is accounted for by the thread that ended the
            # newest: moments after the last one was served, in threads.
            await eventually(lambda: hoarder_pending_ends(receiver) == PLACES, WAIT)
            honest = await start_hog(receiver, "honest", RING_BYTES)
            code, stderr = await finish(honest)
            assert code == 0, stderr

            def honest_counts() -> tuple[int, int]:
                found = receiver.metrics()
                ends = [m for label, m in found.items() if label.startswith("honest #")]
                return (
                    sum(m.recovered for m in ends),
                    sum(m.dropped.get(DropReason.SENDER_ENDED, 0) for m in ends),
                )

            await eventually(unsent_settled(honest_counts), WAIT)
            assert honest_counts() == (UNSENT, 0)
        finally:
            hoarder.kill()
            await finish(hoarder)
        metrics = combined_metrics(receiver)
    assert len(collector.select(logger=f"{PREFIX}.hog", text="unsent ")) == UNSENT
    refused = refusals(collector)
    assert refused
    for refusal in refused:
        assert refusal.startswith(
            f"not keeping the log ring of log sender hoarder: sender process tree of pid "
            f"{hoarder.pid} is at its limit of {PLACES} log rings, open connections, waiting "
            "ones and ends pending together (its places and waiting room, max_senders_per_tree "
            "+ max_waiting_per_tree, at most half of max_rings)"
        ), refusal
    assert metrics.rings_refused == len(refused)


async def test_a_plugin_hoarding_rings_through_pending_ends_denies_only_itself(
    tmp_path: Path,
) -> None:
    """The host with ``max_log_connections=4`` and ``max_log_rings=8``: plugin hoarder's
    child drops 12 connections with rings while it lives. Its runner's tree keeps 4 rings
    (its runner's own connection's one of them) and 4 pending ends; the WARNINGs name plugin
    hoarder and max_log_connections, never spawner; spawner's child keeps its ring, and its
    crash's unsent records come back. Before, hoarder held the 6 rings left, and spawner's
    child's ring was refused, its unsent records lost."""
    config = dataclasses.replace(FAST, max_log_connections=PLACES, max_log_rings=MAX_RINGS)
    async with running(tmp_path, "hoarder", "spawner", config=config, logger=None) as (
        host,
        waiter,
    ):
        bridge = host._log_bridge
        pid = await host.call("hoarder", "hoard", HOG[0], HOARDED)
        try:
            # Every dropped connection was served and ended: only the runner's own is open.
            await eventually(lambda: bridge.open_connections("hoarder") == 1, WAIT)
            assert host.log_metrics("hoarder").pending_ends == PLACES
            code, stdout, stderr = await host.call_with(
                "spawner", "python_script", args=[HOG[0], [HOG[1], str(RING_BYTES), str(UNSENT)]]
            )
            assert (code, stdout) == (0, "ready\n"), stderr

            def honest_counts() -> tuple[int, int]:
                metrics = host.log_metrics("spawner")
                return metrics.recovered, metrics.dropped.get(DropReason.SENDER_ENDED, 0)

            await eventually(unsent_settled(honest_counts), WAIT)
            assert honest_counts() == (UNSENT, 0)
        finally:
            os.kill(pid, 9)
    assert len(waiter.select(logger="plugin.spawner.hog", text="unsent ")) == UNSENT
    refused = [r for r in waiter.records if r.getMessage().startswith("not keeping the log ring")]
    assert refused
    assert {(r.name, r.levelname) for r in refused} == {("plugin.hoarder", "WARNING")}
    assert (
        refused[0]
        .getMessage()
        .startswith(
            "not keeping the log ring of plugin hoarder: runner hoarder's process tree is at its "
            f"limit of {PLACES} log rings, open connections, waiting ones and ends pending "
            "together (its places and waiting room, max_log_connections + "
            "max_waiting_log_connections, at most half of max_log_rings)"
        )
    )


def test_a_tree_past_its_pending_ends_gives_up_its_own_oldest_not_anothers() -> None:
    """Ends of two live processes, trees "honest" and "hoarder": at most 2 of a tree, 3 in all.
    The hoarder's third end has its own oldest accounted for, the honest tree's end stays
    pending; without the tree's bound the oldest of all, the honest one, went."""
    sleepers = [
        subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"]) for _ in range(2)
    ]
    honest, hoarder = (sleeper.pid for sleeper in sleepers)
    accounted: list[str] = []

    def finish_of(name: str) -> Callable[[int | None], None]:
        return lambda _resumed_after: accounted.append(name)

    pending = PendingEnds(max_pending=3, max_per_tree=2)
    try:
        assert pending.defer(honest, 1, finish_of("honest"), tree="honest")
        for chain in (1, 2, 3):
            assert pending.defer(hoarder, chain, finish_of(f"hoarder {chain}"), tree="hoarder")
        assert accounted == ["hoarder 1"]
        assert len(pending) == 3
    finally:
        pending.close()
        for sleeper in sleepers:
            sleeper.kill()
            sleeper.wait()
    assert sorted(accounted) == ["hoarder 1", "hoarder 2", "hoarder 3", "honest"]
    assert pending.wait_closed(WAIT)
