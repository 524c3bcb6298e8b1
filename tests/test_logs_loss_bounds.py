"""What a sender's sequence numbers and drop totals can make the receiver count lost is bounded
in all, not per occurrence: the gaps of all the connections of a standalone ``LogReceiver``
(or of one runner in a ``Host``: every process it forks) count at most one connection's
in-flight window as ``lost_in_transit``; past it, every gap is a protocol violation
(``LogMetrics.sequence_violations``), as are sequence numbers going back on one connection and
queue-full totals larger than a process can drop in its life. A record the receiver rejects
as malformed arrived: it is counted malformed, not also lost. Real senders: ``forward_logs`` in
child processes against a standalone ``LogReceiver``, and a plugin in a real ``Host``."""

from __future__ import annotations

import logging
import textwrap
from pathlib import Path

from isoplug import Host
from isoplug.logs import DropReason
from isoplug.logs.limits import most_in_flight
from isoplug.testing import FAST, eventually, watching
from tests.log_helpers import reports
from tests.record_waiter import RecordWaiter
from tests.test_logs_forwarding import BOTH_MODES, receiving
from tests.test_logs_sequence_claims import combined, run_script

#: What a sender with the default queue (8 MiB) can have in flight: 349,525 records.
WINDOW = most_in_flight(8 * 1024 * 1024)

_SEND_BAD_MALFORMED = """
def send_bad_malformed():
    import isoplug.logs.handler as handler_module
    import msgspec
    real = handler_module.capture_record
    def capture(record, seq):
        if record.getMessage() != "bad":
            return real(record, seq)
        fields = [record.name, record.levelno, "INFO", record.created, "", "", "", 0, ""]
        fields += [None, None, None, None, seq, "bad", None, None, None, None, None, "not a map"]
        return msgspec.msgpack.encode(fields)
    handler_module.capture_record = capture
"""

SENDER = (
    """
import logging, sys
from isoplug.logs import ForwardingHandler, forward_logs
"""
    + _SEND_BAD_MALFORMED
    + """
forward_logs(level=logging.INFO)
handler = next(h for h in logging.getLogger().handlers if isinstance(h, ForwardingHandler))
log = logging.getLogger("child")
mode, count, step = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
if mode == "gaps":
    for i in range(count):
        log.info("r%d", i)
        handler._seq += step
    log.info("last")
elif mode == "back":
    for i in range(count):
        log.info("a%d", i)
    handler._seq -= step
    for i in range(count):
        log.info("b%d", i)
    log.info("last")
elif mode == "claim":
    log.info("one")
    handler._dropped[logging.CRITICAL] = count
    handler._dropped[logging.INFO] = -step
    log.info("last")
elif mode == "malformed":
    # A sender's bug making a record the receiver rejects (its extra not a map; a wrong-typed
    # standard field no longer does: it is sent as an extra): it arrived, so no gap.
    send_bad_malformed()
    for i in range(count):
        log.info("good %d", i)
    log.info("bad")
    for i in range(count, 2 * count):
        log.info("good %d", i)
    if step:
        log.info("bad")   # the connection's last record too
    else:
        log.info("last")
"""
)


def _saw(collector: RecordWaiter, message: str) -> bool:
    return any(r.getMessage() == message for r in collector.records)


def _texts(collector: RecordWaiter) -> list[str]:
    return [r.getMessage() for r in reports(collector.records)]


@BOTH_MODES
async def test_many_gaps_each_under_the_window_count_one_window_in_all(mode: str) -> None:
    """The checker's attack: 100 gaps of 349,000 (each just under the window) made the host
    count 34,900,000 records lost with 101 sent. Now the first is counted, the rest are
    violations."""
    async with receiving(mode) as (receiver, collector):
        await run_script(receiver, SENDER, "gaps", "20", "349000")
        await collector.wait_until(lambda: _saw(collector, "last"))
    metrics = combined(receiver)
    assert metrics.dropped == {DropReason.LOST_IN_TRANSIT: 349_000}, metrics.dropped
    assert metrics.sequence_violations == 19
    assert metrics.received == 21
    texts = _texts(collector)
    assert any("349,000 log records from" in t and "never arrived" in t for t in texts), texts
    assert any(
        f"skipped #349,003 to #698,002, past the {WINDOW:,} records in all its log connections" in t
        and "protocol violation" in t
        for t in texts
    ), texts


@BOTH_MODES
async def test_small_gaps_within_the_window_are_all_counted(mode: str) -> None:
    async with receiving(mode) as (receiver, collector):
        await run_script(receiver, SENDER, "gaps", "10", "7")
        await collector.wait_until(lambda: _saw(collector, "last"))
    metrics = combined(receiver)
    assert metrics.dropped == {DropReason.LOST_IN_TRANSIT: 70}, metrics.dropped
    assert metrics.sequence_violations == 0


async def test_connecting_again_gives_no_fresh_window() -> None:
    """Two sender processes (two connections) each skipping 300,000: only one window in all."""
    async with receiving("loop") as (receiver, collector):
        await run_script(receiver, SENDER, "gaps", "1", "300000")
        await run_script(receiver, SENDER, "gaps", "1", "300000")
        await collector.wait_until(
            lambda: sum(r.getMessage() == "last" for r in collector.records) == 2
        )
    metrics = combined(receiver)
    assert metrics.dropped == {DropReason.LOST_IN_TRANSIT: 300_000}, metrics.dropped
    assert metrics.sequence_violations == 1


@BOTH_MODES
async def test_sequence_numbers_going_back_are_violations(mode: str) -> None:
    async with receiving(mode) as (receiver, collector):
        await run_script(receiver, SENDER, "back", "5", "3")
        await collector.wait_until(lambda: _saw(collector, "last"))
    metrics = combined(receiver)
    # b0..b2 are numbered 3, 4 and 5 again; b3 on follow #5.
    assert metrics.sequence_violations == 3
    assert metrics.dropped == {}, metrics.dropped
    assert metrics.replayed == 11
    texts = _texts(collector)
    assert any("went back from #5 to #3 on one connection" in t for t in texts), texts


async def test_a_queue_full_claim_past_what_a_process_can_drop_is_no_count() -> None:
    async with receiving("loop") as (receiver, collector):
        await run_script(receiver, SENDER, "claim", str(10**15), str(10**6))
        await collector.wait_until(lambda: _saw(collector, "last"))
    metrics = combined(receiver)
    assert metrics.dropped == {}, metrics.dropped
    assert metrics.dropped_levels == {}, metrics.dropped_levels
    assert metrics.sequence_violations == 1
    texts = _texts(collector)
    assert any(
        "says it dropped 1,000,000,000,000,000 log records in all, more than the" in t
        and "a process can drop in the" in t
        for t in texts
    ), texts


async def test_a_queue_full_claim_a_process_can_make_is_counted() -> None:
    async with receiving("loop") as (receiver, collector):
        await run_script(receiver, SENDER, "claim", "5000", "0")
        await collector.wait_until(lambda: _saw(collector, "last"))
    metrics = combined(receiver)
    assert metrics.dropped == {DropReason.SENDER_QUEUE_FULL: 5000}, metrics.dropped
    assert metrics.sequence_violations == 0


@BOTH_MODES
async def test_a_rejected_record_arrived_and_is_not_also_lost(mode: str) -> None:
    async with receiving(mode) as (receiver, collector):
        await run_script(receiver, SENDER, "malformed", "50", "0")
        await collector.wait_until(lambda: _saw(collector, "last"))
    metrics = combined(receiver)
    assert metrics.dropped == {DropReason.MALFORMED: 1}, metrics.dropped
    assert metrics.sequence_violations == 0
    assert [r.getMessage() for r in collector.records if r.name.endswith("child")] == [
        *(f"good {i}" for i in range(100)),
        "last",
    ]
    assert not [t for t in _texts(collector) if "never arrived" in t]


async def test_a_rejected_last_record_is_not_lost_at_the_end() -> None:
    async with receiving("loop") as (receiver, collector):
        await run_script(receiver, SENDER, "malformed", "3", "1")
        await collector.wait_until(lambda: _saw(collector, "good 5"))
        await eventually(lambda: combined(receiver).dropped.get(DropReason.MALFORMED) == 2)
    metrics = combined(receiver)
    assert metrics.dropped == {DropReason.MALFORMED: 2}, metrics.dropped
    assert metrics.sequence_violations == 0


GAPS_PLUGIN = (
    """
import gc, logging, os
import isoplug
from isoplug.logs import ForwardingHandler

"""
    + _SEND_BAD_MALFORMED
    + """

class Plugin(isoplug.Plugin):
    @isoplug.method
    async def gaps(self, count: int, step: int) -> None:
        handlers = [o for o in gc.get_objects() if isinstance(o, ForwardingHandler)]
        log = logging.getLogger("x")
        for i in range(count):
            log.warning("r%d", i)
            for handler in handlers:
                handler._seq += step
        log.warning("last")

    @isoplug.method
    async def forked_gap(self, step: int) -> int:
        # A child process: a connection of its own, sharing its runner's window.
        pid = os.fork()
        if pid == 0:
            handlers = [o for o in gc.get_objects() if isinstance(o, ForwardingHandler)]
            log = logging.getLogger("x")
            log.warning("child first")
            for handler in handlers:
                handler._seq += step
            log.warning("child last")
            logging.shutdown()
            os._exit(0)
        _, status = os.waitpid(pid, 0)
        return status

    @isoplug.method
    async def malformed(self) -> None:
        log = logging.getLogger("x")
        send_bad_malformed()
        for i in range(50):
            log.warning("good %d", i)
        log.warning("bad")
        for i in range(50, 100):
            log.warning("good %d", i)
"""
)


def _plugin(tmp_path: Path) -> Path:
    folder = tmp_path / "plugins" / "gaps"
    folder.mkdir(parents=True)
    (folder / "gaps_plugin.py").write_text(textwrap.dedent(GAPS_PLUGIN))
    (folder / "plugin.toml").write_text(
        'id = "gaps"\nversion = "1"\nentry = "gaps_plugin:Plugin"\n'
    )
    return tmp_path / "plugins"


async def test_a_plugin_cannot_sum_gaps_past_its_window(tmp_path: Path) -> None:
    with watching("plugin.gaps") as seen:
        async with Host(_plugin(tmp_path), config=FAST) as host:
            await host.wait_ready(60)
            await host.call("gaps", "gaps", 30, 349_000)
            await eventually(lambda: host.log_metrics("gaps").sequence_violations == 29)
            await host.call("gaps", "forked_gap", 300_000)
            await eventually(lambda: host.log_metrics("gaps").sequence_violations == 30)
            await eventually(lambda: sum(r.getMessage() == "child last" for r in seen.records) == 1)
            metrics = host.log_metrics("gaps")
    assert metrics.dropped == {DropReason.LOST_IN_TRANSIT: 349_000}, metrics.dropped
    messages = [r.getMessage() for r in seen.records if r.name == "plugin.gaps.x"]
    assert messages == [*(f"r{i}" for i in range(30)), "last", "child first", "child last"]


async def test_a_plugins_rejected_record_is_counted_once(tmp_path: Path) -> None:
    with watching("plugin.gaps") as seen:
        async with Host(_plugin(tmp_path), config=FAST) as host:
            await host.wait_ready(60)
            await host.call("gaps", "malformed")
            await eventually(
                lambda: (
                    any(r.getMessage() == "good 99" for r in seen.records)
                    and any("malformed" in r.getMessage() for r in seen.records)
                )
            )
            metrics = host.log_metrics("gaps")
    assert metrics.dropped == {DropReason.MALFORMED: 1}, metrics.dropped
    assert metrics.sequence_violations == 0
    texts = [r.getMessage() for r in seen.records if r.levelno >= logging.WARNING]
    assert not [t for t in texts if "never arrived" in t], texts
