"""What a sender can make the host say about it: few, short reports whose totals still add up,
and no per-name state that grows with what it makes up.

Floods come over real sockets: crafted frames on a blocking channel to a real replaying server,
and, end to end, the ``flooder`` fixture plugin, which opens a log connection of its own with
its runner's token and sends sequence gaps, drop totals over made-up levels and second ledgers,
and events with made-up names on its runner's control connection.
"""

from __future__ import annotations

import contextlib
import logging
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from isoplug.logs import DropReason, LogReplayer, ReplayLimits
from isoplug.logs.replay_reports import MAX_REPORT_CHARS
from isoplug.logs.report_throttle import MAX_LEVELS, OTHER_LEVELS, ReportThrottle, Tally
from isoplug.logs.routing import LoggerBudget
from isoplug.logs.session import replay_until_closed
from isoplug.rpc import Peer
from isoplug.rpc.blocking import BlockingChannel, serve_blocking
from isoplug.rpc.dispatch import MAX_UNHANDLED_WARNINGS
from isoplug.testing import eventually
from isoplug.wire import LogRecordData
from isoplug.wire.logframes import log_batch
from tests.log_helpers import is_report
from tests.plugins_fixtures import running
from tests.record_waiter import RecordWaiter, watching

TOKEN = "report-floods-token"
GAP = re.compile(r"^([\d,]+) (?:more )?log records from .* never arrived")
QUEUE_FULL = re.compile(r"dropped ([\d,]+) (?:more )?log records because its log queue was full")
LOST = re.compile(r" lost ([\d,]+) (?:more )?log records in (?:a )?connection failure")


def total(messages: list[str], pattern: re.Pattern[str]) -> tuple[int, int]:
    """How many of ``messages`` match ``pattern``, and the sum of the counts they report."""
    counts = [int(m.group(1).replace(",", "")) for m in map(pattern.search, messages) if m]
    return len(counts), sum(counts)


def report_texts(waiter: RecordWaiter, logger: str) -> list[str]:
    return [r.getMessage() for r in list(waiter.records) if is_report(r) and r.name == logger]


def record(seq: int, name: str = "worker", message: str = "") -> LogRecordData:
    return LogRecordData(
        name=name, levelno=logging.INFO, levelname="INFO", created=time.time(), seq=seq,
        message=message or f"record {seq}",
    )  # fmt: skip


@contextlib.contextmanager
def replaying_server(replayer: LogReplayer) -> Iterator[BlockingChannel]:
    """A channel to a real server (unix socket, thread per connection) that replays what
    arrives with ``replayer``, as the host and the receiver do; on leaving, the channel says
    goodbye and the server has replayed everything and called ``finish()``."""

    def serve(channel: BlockingChannel) -> None:
        clean = False
        try:
            clean = replay_until_closed(channel, replayer, "flood test")
        finally:
            replayer.finish(clean=clean)

    server = serve_blocking("unix:", TOKEN, serve, name="report-floods")
    try:
        channel = BlockingChannel.connect(server.address, TOKEN, name="flood", role="logs")
        yield channel
        channel.close()
        assert server.wait_idle(5.0) == 0
    finally:
        server.close()


# -- the throttle -----------------------------------------------------------------------------


def test_a_kind_goes_out_at_once_then_summed_up_once_per_interval() -> None:
    """The first report of a kind goes out as it is; later ones within the interval are folded
    into one summary (occurrences, records and levels summed, the latest detail), sent once
    the interval is over or when flushed; kinds are limited apart."""
    now = [100.0]
    said: list[str] = []
    throttle = ReportThrottle(1.0, clock=lambda: now[0])

    def summary(tally: Tally) -> str:
        return f"{tally.events} {tally.records} {sorted(tally.levels.items())} {tally.detail}"

    def gap(records: int, detail: str, **levels: int) -> None:
        by_level = {int(level[1:]): count for level, count in levels.items()}
        throttle.report(
            "gap", f"first {records}", summary=summary, emit=said.append,
            records=records, levels=by_level, detail=detail,
        )  # fmt: skip

    gap(2, "a", l10=2)
    for n in range(500):
        gap(3, f"d{n}", l10=1, l20=2)
    throttle.report("other", "other kind", summary=summary, emit=said.append)
    assert said == ["first 2", "other kind"]
    assert throttle.waiting and set(throttle.pending()) == {"gap"}
    now[0] += 0.5
    throttle.flush()
    assert len(said) == 2  # not due yet
    now[0] += 0.5
    gap(3, "last", l10=1, l20=2)  # due: folded into the summary that goes out now
    assert said[2:] == ["501 1503 [(10, 501), (20, 1002)] last"]
    assert not throttle.waiting
    gap(1, "x", l30=1)
    throttle.flush(force=True)
    assert said[3:] == ["1 1 [(30, 1)] x"]
    assert throttle.pending() == {}


def test_levels_past_the_cap_are_summed_as_other_levels() -> None:
    """A tally keeps at most MAX_LEVELS levels apart, whatever a sender makes up."""
    now = [0.0]
    throttle = ReportThrottle(1.0, clock=lambda: now[0])
    for _ in range(3):
        throttle.report(
            "drops", "first", summary=str, emit=lambda _: None,
            records=1000, levels={1000 + level: 1 for level in range(1000)},
        )  # fmt: skip
    (tally,) = throttle.pending().values()
    assert len(tally.levels) <= MAX_LEVELS + 1
    assert sum(tally.levels.values()) == 2 * 1000 and tally.levels[OTHER_LEVELS] > 0


def test_a_pending_summary_goes_out_when_its_interval_ends() -> None:
    """With a timer (the host's), a summary is sent when its interval ends, even if the sender
    says nothing more; once closed, no timer runs."""
    said: list[str] = []
    arrived = threading.Event()

    def emit(text: str) -> None:
        said.append(text)
        if len(said) == 2:
            arrived.set()

    throttle = ReportThrottle(0.05, timer=True)
    throttle.report("k", "first", summary=lambda t: f"{t.events} more", emit=emit)
    throttle.report("k", "second", summary=lambda t: f"{t.events} more", emit=emit)
    assert arrived.wait(5.0)
    assert said == ["first", "1 more"]
    throttle.report("k", "third", summary=lambda t: f"{t.events} more", emit=emit)
    throttle.close()
    assert said[2:] in (["third"], ["1 more"])  # at once, or folded and flushed by close()
    assert throttle._timer is None


# -- crafted frames over a socket -------------------------------------------------------------


def test_gaps_and_made_up_drop_levels_make_few_short_reports_with_exact_totals() -> None:
    """500 batches, each past a sequence gap and with drop totals grown at 1,000 made-up levels
    and at each of the 100 levels a record can have: two reports of each kind (the first, then
    one summary at the end), each short; their totals are the metrics'; the drop totals kept
    are a few levels, not 1,100."""
    count, levels = 500, 1000
    prefix = "floods.gaps"
    replayer = LogReplayer(
        prefix, description="sender flood", limits=ReplayLimits(report_interval=60.0)
    )
    with watching(prefix) as waiter, replaying_server(replayer) as channel:
        for n in range(1, count + 1):
            totals = {level: n for level in range(logging.NOTSET, 101)}
            totals.update({1000 + level: n for level in range(levels)})
            channel.send(log_batch([record(3 * n)], dropped=totals))
    texts = report_texts(waiter, prefix)
    metrics = replayer.metrics
    assert len(texts) == 6, texts
    assert all(len(text) <= 600 for text in texts), max(map(len, texts))
    assert total(texts, GAP) == (2, 2 * count)
    assert metrics.dropped[DropReason.LOST_IN_TRANSIT] == 2 * count
    assert total(texts, QUEUE_FULL) == (2, count * (levels + 100))
    assert metrics.dropped[DropReason.SENDER_QUEUE_FULL] == count * (levels + 100)
    assert total(texts, LOST) == (2, count)
    assert metrics.dropped[DropReason.SENDER_CONNECTION_LOST] == count
    first_drops = next(text for text in texts if QUEUE_FULL.search(text))
    shown = first_drops[first_drops.index("(") + 1 : first_drops.index(")")].split(", ")
    assert len(shown) == MAX_LEVELS + 1 and shown[-1] == "other levels: 1,084"
    assert metrics.received == count
    assert len(replayer._reports._sender_drops) <= MAX_LEVELS + 2  # NOTSET, other levels


def test_made_up_logger_names_stop_adding_host_loggers_at_the_budget() -> None:
    """A sender naming a new logger in every record adds at most its budget of loggers to
    logging's registry; the rest land on the prefix's logger, every record delivered, and
    that is reported in a few lines. Huge names are not remembered."""
    prefix = "floods.names"
    count, budget = 300, 40
    registry = logging.Logger.manager.loggerDict
    replayer = LogReplayer(
        prefix,
        description="sender names",
        limits=ReplayLimits(report_interval=60.0),
        logger_budget=LoggerBudget(budget),
    )
    with watching(prefix) as waiter, replaying_server(replayer) as channel:
        channel.send(log_batch([record(n, f"made.up{n}") for n in range(1, count + 1)]))
        channel.send(log_batch([record(count + 1, "x" * 100_000)]))
    delivered = [r for r in waiter.records if not is_report(r)]
    texts = report_texts(waiter, prefix)
    assert len(delivered) == count + 1
    made = [name for name in list(registry) if name.startswith(f"{prefix}.")]
    assert len(made) <= budget
    assert sum(r.name == prefix for r in delivered) >= count - budget
    assert len(texts) == 2 and all("new logger names" in text for text in texts), texts
    assert all(len(name) <= 1024 for name in replayer._names)


# -- a plugin's own log connection, end to end ------------------------------------------------


async def test_a_plugins_own_log_connection_cannot_flood_the_host_with_reports(
    tmp_path: Path,
) -> None:
    """Gaps, drop totals over 1,000 made-up levels and ledgers announced again and again, sent
    by a plugin on a log connection it opened with its runner's token: each kind makes the
    first report at once and then at most one summary per interval, each short, and the
    summaries' totals add up to the runner's metrics."""
    interval = 0.4
    gaps, drops, levels, ledgers = 400, 200, 1000, 200
    logger = "plugin.flooder"
    async with running(tmp_path, "flooder", log_limits=ReplayLimits(report_interval=interval)) as (
        host,
        waiter,
    ):
        started = time.monotonic()
        await host.call("flooder", "gaps", count=gaps, marker="end-of-gaps")
        await host.call("flooder", "drops", count=drops, levels=levels, marker="end-of-drops")
        await host.call("flooder", "ledgers", count=ledgers, marker="end-of-ledgers")
        await waiter.wait_for("plugin.flooder.flooder.own", "end-of-ledgers")

        def settled() -> bool:
            texts = report_texts(waiter, logger)
            return (
                total(texts, GAP)[1] == 2 * gaps
                and total(texts, QUEUE_FULL)[1] == drops * (levels + 1)
                and total(texts, LOST)[1] == drops
                and any("announced a log ledger again" in text for text in texts)
            )

        # The summaries come from the throttle's timer, within an interval.
        await waiter.wait_until(settled, timeout=10)
        elapsed = time.monotonic() - started
        metrics = host.log_metrics("flooder")
    texts = report_texts(waiter, logger)
    bound = 2 + elapsed / interval  # the first report, then one per interval at most
    for pattern in (GAP, QUEUE_FULL, LOST):
        assert total(texts, pattern)[0] <= bound, (pattern.pattern, elapsed, texts)
    assert sum("ledger" in text for text in texts) <= 2 * bound
    assert len(texts) <= 6 * bound
    assert all(len(text) <= MAX_REPORT_CHARS for text in texts)
    assert max(map(len, texts)) < 500
    assert metrics.dropped[DropReason.LOST_IN_TRANSIT] == 2 * gaps
    assert metrics.dropped[DropReason.SENDER_QUEUE_FULL] == drops * (levels + 1)
    assert metrics.dropped[DropReason.SENDER_CONNECTION_LOST] == drops


async def test_made_up_event_names_are_warned_about_up_to_a_cap_and_counted(
    tmp_path: Path,
) -> None:
    """Events with made-up names on a runner's control connection (40 of 100,000 characters,
    then 300 short ones): a few short warnings, a bounded set of short names kept, and every
    event counted."""
    async with running(tmp_path, "flooder", logger="isoplug.rpc") as (host, waiter):
        await host.call("flooder", "events", names=40, size=100_000)
        await host.call("flooder", "events", names=300, size=10)
        peer = host._supervisor("flooder")._peer
        assert isinstance(peer, Peer)
        await eventually(lambda: peer.unhandled >= 340, 10)
        warnings = [r.getMessage() for r in waiter.records if "flooder" in r.getMessage()]
        kept = set(peer._dispatcher.unhandled_warned)
    assert len(warnings) == MAX_UNHANDLED_WARNINGS + 1, warnings
    assert max(map(len, warnings)) < 400
    assert len(kept) == MAX_UNHANDLED_WARNINGS and sum(map(len, kept)) < 16 * 300
    assert "counted, not reported" in warnings[-1]
