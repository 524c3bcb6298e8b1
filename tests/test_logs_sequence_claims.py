"""What a sender claims about its own losses is bounded by what an honest sender could lose:
a sequence gap wider than its queue could have held, or a ledger claiming more unsent records
than its queue and the kernel could hold, is a protocol violation (counted in
``LogMetrics.sequence_violations``, reported as such), never records lost. Real senders:
``forward_logs`` in a child process against a standalone ``LogReceiver``, and a plugin in a
real ``Host``."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import textwrap
from pathlib import Path

import pytest

from isoplug import Host
from isoplug.logs import DropReason, ForwardingHandler, LogMetrics, LogReceiver
from isoplug.logs.capture import capture_record
from isoplug.logs.limits import MAX_QUEUE_BYTES, MIN_RECORD_BYTES, most_in_flight
from isoplug.testing import FAST, eventually, watching
from tests.log_helpers import reports
from tests.record_waiter import RecordWaiter
from tests.test_logs_forwarding import BOTH_MODES, finish, receiving

BUMPING_SENDER = """
import logging, os, sys
from isoplug.logs import ForwardingHandler, forward_logs
forward_logs(level=logging.INFO)
handler = next(h for h in logging.getLogger().handlers if isinstance(h, ForwardingHandler))
log = logging.getLogger("child")
log.info("one")
handler._seq += int(sys.argv[1])
log.info("two")
"""

LYING_LEDGER = """
import logging, os
from isoplug.logs import ForwardingHandler, forward_logs
forward_logs(level=logging.INFO)
handler = next(h for h in logging.getLogger().handlers if isinstance(h, ForwardingHandler))
logging.getLogger("child").info("one")
handler.flush()
with handler._queue_lock:
    handler._ledger[0] = 10**15   # "accepted" a quadrillion records, then dies unsent
os._exit(0)
"""


async def run_script(receiver: LogReceiver, script: str, *args: str) -> None:
    # The child's isoplug is this checkout's (PYTHONPATH), so it is an up-to-date sender.
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        script,
        *args,
        env={**os.environ, **receiver.child_env()},
        stderr=asyncio.subprocess.PIPE,
    )
    code, stderr = await finish(child)
    assert code == 0, stderr


def combined(receiver: LogReceiver) -> LogMetrics:
    return LogMetrics.combined(receiver.metrics().values())


def test_no_record_the_sender_encodes_is_shorter_than_the_bound_assumes() -> None:
    record = logging.LogRecord("", 1, "", 0, "", (), None, func="")
    record.levelname = record.threadName = record.processName = ""
    assert len(capture_record(record, 1)) >= MIN_RECORD_BYTES


def test_a_queue_past_the_receivers_bound_is_refused() -> None:
    with pytest.raises(ValueError, match="queue_bytes must be at most"):
        ForwardingHandler("unix:/nonexistent", "token", queue_bytes=MAX_QUEUE_BYTES + 1)


@BOTH_MODES
async def test_sequence_numbers_that_jump_past_the_queue_are_no_loss(mode: str) -> None:
    """The checker's attack: a sender adding 10**15 to its own sequence number between two
    records made the receiver count 10**15 records lost in transit."""
    async with receiving(mode) as (receiver, collector):
        await run_script(receiver, BUMPING_SENDER, str(10**15))
        await collector.wait_until(lambda: _both(collector))
    metrics = combined(receiver)
    assert DropReason.LOST_IN_TRANSIT not in metrics.dropped, metrics.dropped
    assert metrics.sequence_violations == 1
    texts = [r.getMessage() for r in reports(collector.records)]
    [text] = [t for t in texts if "jumped" in t]
    assert "jumped from #1 to #1,000,000,000,000,002" in text, text
    assert "protocol violation" in text and "not counted as log records lost" in text
    # The bound is the announced queue's (the default), not the largest any sender may have.
    assert f"past the {most_in_flight(8 * 1024 * 1024):,} records" in text, text
    assert not [t for t in texts if "never arrived" in t], texts


@BOTH_MODES
async def test_a_gap_an_honest_sender_could_cause_is_still_counted_lost(mode: str) -> None:
    async with receiving(mode) as (receiver, collector):
        await run_script(receiver, BUMPING_SENDER, "5")
        await collector.wait_until(lambda: _both(collector))
    metrics = combined(receiver)
    assert metrics.dropped[DropReason.LOST_IN_TRANSIT] == 5
    assert metrics.sequence_violations == 0
    texts = [r.getMessage() for r in reports(collector.records)]
    assert any(
        "5 log records from" in t and "never arrived (sequence numbers 2 to 6)" in t for t in texts
    )


async def test_a_ledger_claiming_more_unsent_than_a_sender_can_hold_is_no_loss() -> None:
    async with receiving("loop") as (receiver, collector):
        await run_script(receiver, LYING_LEDGER)
        await collector.wait_until(
            lambda: any("ledger" in r.getMessage() for r in reports(collector.records))
        )
    metrics = combined(receiver)
    assert DropReason.SENDER_ENDED not in metrics.dropped, metrics.dropped
    assert metrics.sequence_violations == 1
    texts = [r.getMessage() for r in reports(collector.records)]
    assert any(
        "says it accepted records up to #1,000,000,000,000,000" in t and "protocol violation" in t
        for t in texts
    ), texts


def _both(collector: RecordWaiter) -> bool:
    messages = [r.getMessage() for r in collector.records]
    return "one" in messages and "two" in messages


GAP_PLUGIN = """
import gc, logging
import isoplug
from isoplug.logs import ForwardingHandler


class Plugin(isoplug.Plugin):
    @isoplug.method
    async def go(self) -> None:
        handlers = [o for o in gc.get_objects() if isinstance(o, ForwardingHandler)]
        logging.getLogger("x").warning("before")
        for handler in handlers:
            handler._seq += 10**15
        logging.getLogger("x").warning("after")
"""


async def test_a_plugin_cannot_make_the_host_count_records_lost(tmp_path: Path) -> None:
    folder = tmp_path / "plugins" / "gap"
    folder.mkdir(parents=True)
    (folder / "gap_plugin.py").write_text(textwrap.dedent(GAP_PLUGIN))
    (folder / "plugin.toml").write_text('id = "gap"\nversion = "1"\nentry = "gap_plugin:Plugin"\n')
    with watching("plugin.gap") as seen:
        async with Host(tmp_path / "plugins", config=FAST) as host:
            await host.wait_ready(60)
            await host.call("gap", "go")
            await eventually(lambda: host.log_metrics("gap").sequence_violations == 1)
            await eventually(lambda: any("jumped" in r.getMessage() for r in seen.records))
            metrics = host.log_metrics("gap")
    assert DropReason.LOST_IN_TRANSIT not in metrics.dropped, metrics.dropped
    assert [r.getMessage() for r in seen.records if r.name == "plugin.gap.x"] == [
        "before",
        "after",
    ]
    [report] = [r.getMessage() for r in seen.records if "jumped" in r.getMessage()]
    assert "the log sequence numbers of plugin gap jumped from #1" in report, report
