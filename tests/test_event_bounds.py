"""Events are bounded by bytes as well as by count, on both sides of a runner's connection, and
a failing handler does not flood the log (docs/host.md, "Settings"; docs/plugins.md, "Events").

With real runners: the ``backlogged`` plugin's ``tick`` handler never ends (the events after
the first wait, or are dropped), its ``fault`` handler fails on every event.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import signal
from pathlib import Path

import pytest

from isoplug.testing import eventually
from tests import plugins_fixtures
from tests.plugins_fixtures import FAST

PLUGIN = "backlogged"
#: A small byte bound, far below max_queued_events' count.
BOUND = 2**20
#: Events of this payload: three fit in BOUND once encoded, a fourth does not.
PAYLOAD = b"x" * (300 * 1024)


async def test_a_plugins_queue_drops_events_past_its_bytes_not_only_past_its_count(
    tmp_path: Path,
) -> None:
    """10 events of 300 KiB, 1 MiB allowed: one is handled (and never ends), three wait, six
    are dropped, counted and said naming max_queued_event_bytes; at the stop the three still
    waiting count too: delivered + dropped = published."""
    config = dataclasses.replace(FAST, max_queued_event_bytes=BOUND)
    async with plugins_fixtures.running(tmp_path, PLUGIN, config=config) as (host, waiter):
        for _ in range(10):
            assert await host.publish("tick", PAYLOAD) == 1
            # Answered once the runner read the event before it: nothing waits unsent in the
            # host, so every drop here is the runner's.
            await host.call_with(PLUGIN, "counts", timeout=10)
        record = await waiter.wait_for_record(
            plugin=PLUGIN, text=f"plugin '{PLUGIN}' dropped 1 'tick' event"
        )
        assert record.levelname == "WARNING"
        assert f"{BOUND:,} bytes of events behind (max_queued_event_bytes)" in (record.getMessage())
        assert (await host.call_with(PLUGIN, "counts", timeout=10))["handled"] == 1
        await eventually(lambda: host.plugin(PLUGIN).events_dropped == 6, 10)
        info = await host.stop(PLUGIN)
        assert info.events_dropped == 10 - 1
        await waiter.wait_for_record(
            plugin=PLUGIN, text="3 event(s) were not delivered: the runner is shutting"
        )


async def test_publish_sends_nothing_to_a_runner_whose_connection_is_too_far_behind(
    tmp_path: Path,
) -> None:
    """A runner that reads nothing (stopped with SIGSTOP): once its connection holds more than
    max_queued_event_bytes unsent, publish() sends it no more (returns 0), each such event
    counted as dropped at once and said; the host holds a bounded amount. Once it runs again,
    every event is delivered or counted: delivered + dropped = published."""
    # No health report or hang verdict while it is stopped: only the host's own count.
    config = dataclasses.replace(
        FAST, max_queued_event_bytes=BOUND, health_interval=3600, health_timeout=3600
    )
    async with plugins_fixtures.running(tmp_path, PLUGIN, config=config, logger=None) as (
        host,
        waiter,
    ):
        pid = host.plugin(PLUGIN).pid
        assert pid is not None
        os.kill(pid, signal.SIGSTOP)
        try:
            sent = [await host.publish("tick", PAYLOAD) for _ in range(60)]
            held_back = sent.count(0)
            # 18 MiB published: the kernel's socket buffers take some, the host past 1 MiB none.
            assert held_back > 0, sent
            assert sent[-held_back:] == [0] * held_back, sent
            assert host.plugin(PLUGIN).events_dropped == held_back
        finally:
            os.kill(pid, signal.SIGCONT)
        said = await waiter.wait_for_record(
            level=logging.WARNING, text=f"plugin '{PLUGIN}' dropped 1 'tick' event, not sent"
        )
        assert re.search(
            rf"its runner {PLUGIN} has [\d,]+ bytes unsent on its connection, more than "
            rf"{BOUND:,} \(max_queued_event_bytes\)",
            said.getMessage(),
        ), said.getMessage()
        assert (await host.call_with(PLUGIN, "counts", timeout=10))["handled"] == 1
        info = await host.stop(PLUGIN)
        assert info.events_dropped == 60 - 1
        await waiter.wait_for_record(
            level=logging.WARNING, text=f"dropped {held_back - 1:,} more 'tick' event(s) in"
        )


async def test_a_handler_failing_on_every_event_logs_one_traceback_then_summaries(
    tmp_path: Path,
) -> None:
    """50 events to a handler that always raises: one ERROR with the traceback, then the other
    49 counted in summaries (at most one a second) naming the latest error, in one line."""
    async with plugins_fixtures.running(tmp_path, PLUGIN) as (host, waiter):
        for n in range(50):
            await host.publish("fault", n)
        first = await waiter.wait_for_record(
            plugin=PLUGIN, text="handler on_fault for event 'fault' failed (further"
        )
        assert first.levelname == "ERROR"
        # Its exception as a replayed record carries it: exc_info (exc_text only once some
        # formatter has rendered it, which may come after the waiter saw the record).
        assert first.exc_info is not None
        assert "ValueError: no good: 0" in logging.Formatter().formatException(first.exc_info)

        def summarized() -> int:
            return sum(
                int(m[1].replace(",", ""))
                for r in waiter.records
                if (m := re.search(r"for event 'fault' failed ([\d,]+) more time", r.getMessage()))
            )

        await eventually(lambda: summarized() == 49, 20)
        failures = [r for r in waiter.records if "for event 'fault' failed" in r.getMessage()]
        assert [r for r in failures if r.exc_info or r.exc_text] == [first]
        assert "(the latest: ValueError: no good: 49)" in failures[-1].getMessage()


async def test_publishing_a_name_no_plugin_could_subscribe_to_is_refused(tmp_path: Path) -> None:
    """An empty name, or one over 200 characters (what a plugin may declare), reached nobody
    and returned 0 quietly; now a ValueError names the rule. 200 characters still publish."""
    async with plugins_fixtures.running(tmp_path, PLUGIN) as (host, _):
        with pytest.raises(ValueError, match=r"1 to 200 characters .*got an empty name$"):
            await host.publish("")
        with pytest.raises(ValueError, match=r"got 201 characters \('LLL"):
            await host.publish("L" * 201)
        assert await host.publish("L" * 200) == 0
