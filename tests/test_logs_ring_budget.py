"""The rings a receiver keeps of its senders (isoplug.logs.ring_budget): none larger than a
sender of isoplug's makes, and at most ``max_rings`` at once (one tree's: tests/
test_logs_ring_hoarding.py). A sender past either still
gets its records through; what its crash leaves unsent is counted lost, not recovered, with
a warning naming it and the limit. Real senders (tests/ring_bomb_child.py hog) on real sockets."""

from __future__ import annotations

import asyncio
import dataclasses
import os
from pathlib import Path

import pytest

from isoplug.logs import LogReceiver
from isoplug.logs.metrics import DropReason
from isoplug.logs.receiver import NAME_ENV
from isoplug.logs.ring import MAX_RING_BYTES, RING_BYTES
from isoplug.logs.ring_budget import tree_share
from tests.plugins_fixtures import FAST, running
from tests.record_waiter import RecordWaiter
from tests.test_logs_forwarding import (
    BOTH_MODES,
    PREFIX,
    combined_metrics,
    finish,
    receiving,
    run_script,
)

pytestmark = pytest.mark.skipif(not hasattr(os, "memfd_create"), reason="needs memfd")

#: tests/ring_bomb_child.py's ``hog``: a sender proposing the ring it is given.
HOG = [str(Path(__file__).with_name("ring_bomb_child.py")), "hog"]
#: Records each hog leaves in its ring alone when it ends.
UNSENT = 5


async def start_hog(
    receiver: LogReceiver, name: str, ring_bytes: int, go_file: Path | None = None
) -> asyncio.subprocess.Process:
    """A hog under ``name``, once its ledger is the receiver's."""
    args = [*HOG, str(ring_bytes), str(UNSENT)]
    if go_file is not None:
        args.append(str(go_file))
    child = await run_script(receiver, "", *args, env={NAME_ENV: name})
    assert child.stdout is not None
    line = await asyncio.wait_for(child.stdout.readline(), 60)
    assert line == b"ready\n", (line, await finish(child))
    return child


async def hello_of(collector: RecordWaiter, ring_bytes: int) -> None:
    """Wait for a hog's first record: its batch announced its ledger, its ring is settled."""
    await collector.wait_for(f"{PREFIX}.hog", f"hello from a ring of {ring_bytes} bytes")


def refusals(collector: RecordWaiter) -> list[str]:
    return [m for m in collector.messages() if m.startswith("not keeping the log ring of")]


def unsent_lost() -> str:
    """How a hog's crash is reported when its ring is not kept."""
    return f"{UNSENT} records it had accepted (#2 to #{UNSENT + 1}) are lost"


def test_a_trees_share_of_rings_is_its_places_and_waiting_room_at_most_half() -> None:
    """A tree keeps rings for every connection it may have at once (a child waiting for a
    place logged into its ring alone), but leaves the other trees at least half; never fewer
    than its places."""
    assert tree_share(4, 20, 256) == 24
    assert tree_share(64, 256, 256) == 128
    assert tree_share(64, 0, 100) == 64
    assert tree_share(4, 256, 8) == 4


def test_a_senders_default_ring_is_within_what_a_receiver_keeps() -> None:
    assert RING_BYTES <= MAX_RING_BYTES == 4 * 1024 * 1024


@BOTH_MODES
@pytest.mark.parametrize("oversize", [2 * RING_BYTES, 32 * RING_BYTES], ids=["8 MiB", "128 MiB"])
async def test_a_ring_larger_than_a_receiver_reads_is_refused_and_its_loss_counted(
    mode: str, oversize: int
) -> None:
    """A sender proposes a ring larger than its own can be: its ledger is kept, its ring is
    not, with a warning naming the sender and the limit; its records arrive, and the ones
    its crash left in the ring are counted lost from its ledger, not recovered. A receiver
    took rings of up to 64 MiB, reading them back whole at the sender's end (8 MiB: the 5
    records recovered), and refused the ledger in front of a larger one (128 MiB: the crash
    said without a count)."""
    async with receiving(mode) as (receiver, collector):
        child = await start_hog(receiver, "big", oversize)
        code, stderr = await finish(child)
        assert code == 0, stderr
        await hello_of(collector, oversize)
        await collector.wait_until(lambda: any("are lost" in m for m in collector.messages()))
        metrics = combined_metrics(receiver)
    (refusal,) = refusals(collector)
    assert refusal.startswith(
        f"not keeping the log ring of log sender big: its {oversize:,} bytes are more than "
        f"the {MAX_RING_BYTES:,} a receiver reads"
    )
    assert "counted lost, not recovered" in refusal
    (lost,) = [m for m in collector.messages() if "are lost" in m]
    assert lost.endswith(unsent_lost())
    assert not [m for m in collector.messages() if m.startswith("unsent ")]
    assert metrics.rings_refused == 1
    assert metrics.recovered == 0
    assert metrics.dropped == {DropReason.SENDER_ENDED: UNSENT}


@BOTH_MODES
async def test_rings_past_max_rings_are_refused_and_their_places_come_back(
    mode: str, tmp_path: Path
) -> None:
    """``max_rings=2``: two senders' rings are kept, a third sender's is not (a warning names
    it and max_rings) though its records arrive; when all three crash, the first two's unsent
    records are recovered, the third's counted lost. Their places free with their ends: a
    fourth sender's ring is kept again."""
    go = tmp_path / "go"
    async with receiving(mode, max_rings=2) as (receiver, collector):
        hogs = []
        for name in ("first", "second", "third"):
            hogs.append(await start_hog(receiver, name, RING_BYTES, go))
            await collector.wait_until(
                lambda: (
                    len(collector.select(text=f"hello from a ring of {RING_BYTES}")) == len(hogs)
                )
            )
        (refusal,) = refusals(collector)
        # The refused sender came last; the warning names who holds the most, too.
        assert refusal.startswith(
            "not keeping the log ring of log sender third: this receiver holds 2 senders' "
            f"rings already (max_rings; the most, 1, held by sender process tree of pid "
            f"{hogs[0].pid})"
        ), refusal
        go.touch()
        for hog in hogs:
            code, stderr = await finish(hog)
            assert code == 0, stderr
        await collector.wait_until(
            lambda: (
                len(collector.select(logger=f"{PREFIX}.hog", text="unsent ")) == 2 * UNSENT
                and any("are lost" in m for m in collector.messages())
            )
        )
        fourth = await start_hog(receiver, "fourth", RING_BYTES)
        code, stderr = await finish(fourth)
        assert code == 0, stderr
        await collector.wait_until(
            lambda: len(collector.select(logger=f"{PREFIX}.hog", text="unsent ")) == 3 * UNSENT
        )
        metrics = combined_metrics(receiver)
    assert len(refusals(collector)) == 1
    (lost,) = [m for m in collector.messages() if "are lost" in m]
    assert "log sender third" in lost and lost.endswith(unsent_lost())
    assert metrics.rings_refused == 1
    assert metrics.recovered == 3 * UNSENT
    assert metrics.dropped == {DropReason.SENDER_ENDED: UNSENT}


async def test_a_plugins_children_past_the_hosts_rings_are_counted_not_recovered(
    tmp_path: Path,
) -> None:
    """The host's log listener with ``max_log_rings=1``, which the runner's own connection
    holds: a plugin's child proposing a ring of 8 MiB, and one proposing the usual 4 MiB, get
    their records through, their rings not kept, each said in a WARNING naming the plugin and
    the limit; what their crashes left unsent is counted lost."""
    config = dataclasses.replace(FAST, max_log_rings=1)
    async with running(tmp_path, "spawner", config=config, logger=None) as (host, waiter):
        for ring_bytes in (2 * RING_BYTES, RING_BYTES):
            code, stdout, stderr = await host.call_with(
                "spawner", "python_script", args=[HOG[0], [HOG[1], str(ring_bytes), str(UNSENT)]]
            )
            assert (code, stdout) == (0, "ready\n"), stderr
            await waiter.wait_for("plugin.spawner.hog", f"hello from a ring of {ring_bytes} bytes")
        # The runner's reports of lost records may be summed up into one: its metrics count.
        await waiter.wait_until(
            lambda: host.log_metrics("spawner").dropped.get(DropReason.SENDER_ENDED) == 2 * UNSENT
        )
        metrics = host.log_metrics("spawner")
    refused = [
        (r.name, r.levelname, r.getMessage())
        for r in waiter.records
        if r.getMessage().startswith("not keeping the log ring of plugin spawner: ")
    ]
    assert [(name, level) for name, level, _ in refused] == [("plugin.spawner", "WARNING")] * 2
    too_large, spent = (message for _, _, message in refused)
    assert f"its {2 * RING_BYTES:,} bytes are more than the {MAX_RING_BYTES:,}" in too_large
    assert (
        "this receiver holds 1 senders' rings already (max_log_rings; the most, 1, held by "
        "runner spawner's process tree)"
    ) in spent
    assert not waiter.select(logger="plugin.spawner.hog", text="unsent ")
    assert metrics.rings_refused == 2
    assert metrics.recovered == 0
    assert metrics.dropped == {DropReason.SENDER_ENDED: 2 * UNSENT}
