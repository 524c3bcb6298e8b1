"""Every event the host sends a plugin reaches a handler or counts in ``events_dropped``, said
in a WARNING: those queued in its runner at a stop, those sent to a runner already stopping,
those lost with a runner that ended without a word (docs/plugins.md, "Events").

The ``tally`` plugin notes each event its handler takes in a file, before any await: that
file is what was delivered, across its runners.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import re
from collections.abc import AsyncIterator
from pathlib import Path

from isoplug import Host, PluginState
from isoplug.errors import IsoplugError
from isoplug.host import SupervisorConfig
from isoplug.testing import eventually
from tests.plugins_fixtures import FAST, copy_plugins
from tests.record_waiter import RecordWaiter, watching

PLUGIN = "tally"
#: Events published while a restart or a stop is under way, at most (the queue's limit is
#: 1,024: none is dropped for a full queue, so every drop here is one the stop made).
DURING = 400
#: The runner's WARNING for the events still queued at its stop, and the host's for the
#: others it sent that no handler took.
RUNNER_SAID = re.compile(r"plugin 'tally': (\d+) event\(s\) were not delivered: the runner is")
HOST_SAID = re.compile(r"plugin 'tally': (\d+) event\(s\) sent to runner tally were not delivered")


@contextlib.asynccontextmanager
async def tally_host(
    tmp_path: Path, config: SupervisorConfig = FAST
) -> AsyncIterator[tuple[Host, Path, RecordWaiter]]:
    """A host running ``tally``, the file its handlers note events in, and a waiter on every
    record (the host's and the plugin's)."""
    handled = tmp_path / "handled"
    handled.touch()
    directory = copy_plugins(tmp_path, PLUGIN)
    with (directory / PLUGIN / "plugin.toml").open("a") as manifest:
        manifest.write(f"\n[config]\nfile = '{handled}'\n")
    with watching(None) as waiter:
        async with Host(directory, config=config) as host:
            await host.wait_ready(20)
            yield host, handled, waiter


def delivered(handled: Path) -> int:
    return len(handled.read_text().splitlines())


async def publish_until(done: asyncio.Task[object], host: Host, first: int) -> int:
    """Publish ``tick`` events while ``done`` runs (at most :data:`DURING`); how many were
    sent. Each waits for the loop to run once: the restart or stop goes on meanwhile."""
    sent = 0
    for n in range(first, first + DURING):
        if done.done():
            break
        sent += await host.publish("tick", n)
        await asyncio.sleep(0)
    await done
    return sent


def said(waiter: RecordWaiter, pattern: re.Pattern[str]) -> int:
    """The counts the WARNINGs matching ``pattern`` gave, added."""
    return sum(
        int(m[1])
        for r in waiter.records
        if r.levelno == logging.WARNING and (m := pattern.search(r.getMessage()))
    )


async def test_events_sent_across_a_restart_and_a_stop_are_delivered_or_counted(
    tmp_path: Path,
) -> None:
    async with tally_host(tmp_path) as (host, handled, waiter):
        # The first event holds the queue: the next ten wait in the runner when it stops.
        sent = sum([await host.publish("tick", n) for n in (-1, *range(10))])
        sent += await publish_until(asyncio.create_task(host.restart(PLUGIN)), host, 100)
        assert host.plugin(PLUGIN).state is PluginState.READY
        # The new runner: five handled, one holding its queue, five waiting at the stop.
        sent += sum([await host.publish("tick", n) for n in (*range(1000, 1005), -2)])
        sent += sum([await host.publish("tick", n) for n in range(2000, 2005)])
        await eventually(lambda: delivered(handled) >= 1 + 6)
        sent += await publish_until(asyncio.create_task(host.stop(PLUGIN)), host, 3000)
        info = host.plugin(PLUGIN)
        assert info.state is PluginState.STOPPED
        # Final once stop() returned: the runner's last word gave its count.
        assert delivered(handled) + info.events_dropped == sent, (delivered(handled), info, sent)
        assert info.events_dropped >= 10 + 5
        # Every one not delivered was said: by the runner (queued at its stop; the first
        # runner's records may still be on their way) or by the host (the others).
        await eventually(
            lambda: said(waiter, RUNNER_SAID) + said(waiter, HOST_SAID) == info.events_dropped
        )


async def test_events_lost_with_a_runner_that_ended_without_a_word_are_counted(
    tmp_path: Path,
) -> None:
    """No health report comes (its interval is an hour), and the runner ends with its loop
    blocked: the host counts every event it sent as not delivered, the one whose handler
    ran included, and says that it could not know which were handled."""
    config = dataclasses.replace(FAST, health_interval=3600)
    async with tally_host(tmp_path, config) as (host, handled, waiter):
        sent = sum([await host.publish("tick", n) for n in (-1, *range(10))])
        await eventually(lambda: delivered(handled) == 1)
        frozen, go = tmp_path / "frozen", tmp_path / "go"
        call = asyncio.create_task(
            host.call(PLUGIN, "freeze_then_exit", frozen=str(frozen), go=str(go))
        )
        await eventually(frozen.exists)
        # Sent to a runner that reads nothing more.
        sent += sum([await host.publish("tick", n) for n in range(100, 105)])
        go.touch()
        with contextlib.suppress(IsoplugError):  # how the call ends is not what is tested here
            await call
        info = await host.wait_for(
            PLUGIN, lambda i: i.state is PluginState.READY and i.restarts == 1, timeout=20
        )
        assert delivered(handled) == 1
        assert info.events_dropped == sent == 16
        (record,) = [r for r in waiter.records if HOST_SAID.search(r.getMessage())]
        assert record.getMessage().endswith(
            "its runner ended without saying which it handled (counted from its last health "
            "report: some may have been handled after it)"
        )
