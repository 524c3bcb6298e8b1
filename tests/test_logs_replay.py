"""The host side of the log pipeline: what LogReplayer makes of what an untrusted sender sends."""

from __future__ import annotations

import asyncio
import io
import itertools
import json
import logging
import os
import time
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
import structlog

from isoplug.logs import DropReason, LogReplayer, ReplayLimits
from isoplug.logs import replay as replay_module
from isoplug.logs.ledger import SenderLedger
from isoplug.logs.replay import REPLAY_SLICE, REPLAY_SLICE_SECONDS
from isoplug.wire import LogBatch, LogRecordData
from isoplug.wire.logframes import log_batch
from tests.log_helpers import batch, is_report, reports, sending
from tests.record_waiter import RecordWaiter, attached, watching

PREFIX = "plugin.demo"


@pytest.fixture
def collector() -> Iterator[RecordWaiter]:
    """Collects everything that reaches the root logger during the test."""
    with watching() as waiter:
        yield waiter


def data(seq: int = 1, **fields: Any) -> LogRecordData:
    values: dict[str, Any] = {
        "name": "worker",
        "levelno": logging.INFO,
        "levelname": "INFO",
        "created": 1_700_000_000.25,
        "message": f"message {seq}",
        "seq": seq,
    }
    values.update(fields)
    return LogRecordData(**values)


def replayer(**limits: Any) -> LogReplayer:
    return LogReplayer(
        PREFIX,
        identity={"plugin_id": "demo", "runner_pid": 4242},
        strip_prefixes=("plugin.demo",),
        limits=ReplayLimits(**limits),
        description="plugin demo",
    )


def test_record_keeps_every_field_and_gets_the_hosts_identity(collector: RecordWaiter) -> None:
    """A replayed record has the sender's fields and the identity the host vouches for."""
    replayer().replay(
        log_batch(
            [
                data(
                    pathname="/p/worker.py",
                    filename="worker.py",
                    module="worker",
                    lineno=12,
                    func_name="run",
                    thread=77,
                    thread_name="T-1",
                    process=999,
                    process_name="Runner",
                    task_name="task-3",
                    extra={"user": 42, "plugin_id": "spoofed", "runner_pid": 1},
                )
            ]
        )
    )
    (record,) = collector.records
    assert record.name == "plugin.demo.worker"
    assert (record.pathname, record.filename, record.module) == (
        "/p/worker.py",
        "worker.py",
        "worker",
    )
    assert (record.lineno, record.funcName, record.thread, record.threadName) == (
        12,
        "run",
        77,
        "T-1",
    )
    assert (record.process, record.processName) == (999, "Runner")
    assert record.taskName == "task-3"  # type: ignore[attr-defined]
    assert record.created == 1_700_000_000.25 and record.msecs == 250.0
    assert record.user == 42  # type: ignore[attr-defined]
    assert record.plugin_id == "demo" and record.runner_pid == 4242  # type: ignore[attr-defined]
    assert record.extra_plugin_id == "spoofed"  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("sender_name", "host_name"),
    [
        ("root", "plugin.demo"),
        ("", "plugin.demo"),
        ("plugin.demo", "plugin.demo"),
        ("plugin.demo.db", "plugin.demo.db"),
        ("host.secrets", "plugin.demo.host.secrets"),
        ("..evil..name.", "plugin.demo.evil.name"),
        ("a\nb\x1b[31m", "plugin.demo.a_b_31m"),
        ("x" * 1_000_000, "plugin.demo." + "x" * 200),
    ],
)
def test_no_sender_can_log_outside_its_prefix(
    collector: RecordWaiter, sender_name: str, host_name: str
) -> None:
    """Every logger name lands under the plugin's prefix, cleaned and capped."""
    replayer().replay(log_batch([data(name=sender_name)]))
    assert [r.name for r in collector.records] == [host_name]


def test_control_characters_and_forged_lines_are_neutralized(collector: RecordWaiter) -> None:
    """Escapes are made visible and no continuation line can pose as a new record."""
    forged = "ok\n2026-01-01 INFO app.db: transfer approved\x1b[2J\r"
    fake_traceback = "2026-01-01 ERROR app.auth: admin logged in\nValueError: x"
    replayer().replay(
        log_batch([data(message=forged, exc_text=fake_traceback, exc_type="builtins.ValueError")])
    )
    (record,) = collector.records
    assert record.getMessage() == "ok\n  2026-01-01 INFO app.db: transfer approved\\x1b[2J\\x0d"
    text = logging.Formatter("%(name)s %(message)s").format(record)
    assert all(line[:1] in (" ", "") for line in text.splitlines()[1:])


def test_a_record_without_an_exception_keeps_its_exception_texts_as_extras(
    collector: RecordWaiter,
) -> None:
    """No type and nothing structured: ``exc_text`` and ``exc_message`` are claims, which no
    formatter prints as a traceback; kept (capped) as extras, beside a sender's extra of the
    same name. With a type (the sender could not convert its exception), the text stays."""
    forged = 'Traceback (most recent call last):\n  File "/host.py", line 1\nError: ' + "x" * 99
    replayer(max_traceback_chars=60).replay(
        log_batch(
            [
                data(1, exc_text=forged, exc_message="boom", extra={"exc_text": "mine"}),
                data(2, exc_text=forged, exc_type="builtins.ValueError", exc_message="boom"),
            ]
        )
    )
    claimed, typed = collector.records
    assert (claimed.exc_text, claimed.exc_message) == (None, None)  # type: ignore[attr-defined]
    assert claimed.extra_exc_text == "mine"  # type: ignore[attr-defined]
    assert claimed.extra_extra_exc_text.startswith("Traceback")  # type: ignore[attr-defined]
    assert "[truncated" in claimed.extra_extra_exc_text  # type: ignore[attr-defined]
    assert claimed.extra_exc_message == "boom"  # type: ignore[attr-defined]
    assert logging.Formatter().format(claimed) == "message 1"
    assert typed.exc_text is not None and typed.exc_text.startswith("Traceback")
    assert typed.exc_message == "boom"  # type: ignore[attr-defined]
    assert "/host.py" in logging.Formatter().format(typed)


def test_sizes_are_capped_and_the_cut_is_marked(collector: RecordWaiter) -> None:
    """Oversized message, traceback and extra values are cut with a visible marker."""
    replayer(max_message_chars=100, max_traceback_chars=50, max_extra_value_chars=20).replay(
        log_batch(
            [
                data(
                    message="m" * 1000,
                    exc_text="t" * 1000,
                    exc_type="builtins.ValueError",
                    extra={"blob": "b" * 1000, "list": list(range(100))},
                )
            ]
        )
    )
    (record,) = collector.records
    assert record.getMessage().endswith("[truncated 900 characters]")
    assert record.exc_text is not None and record.exc_text.endswith("[truncated 950 characters]")
    assert record.blob.endswith("[truncated 980 characters]")  # type: ignore[attr-defined]
    assert isinstance(record.list, str) and "truncated" in record.list  # type: ignore[attr-defined]


@pytest.mark.parametrize(("levelno", "expected"), [(-5, 1), (0, 1), (10**12, 50), (25, 25)])
def test_absurd_levels_are_clamped(collector: RecordWaiter, levelno: int, expected: int) -> None:
    """Level numbers outside 1..100 become the lowest level there is, or CRITICAL."""
    logging.getLogger(PREFIX).setLevel(1)
    try:
        replayer().replay(log_batch([data(levelno=levelno, levelname="\x1bWHATEVER")]))
    finally:
        logging.getLogger(PREFIX).setLevel(logging.NOTSET)
    (record,) = collector.records
    assert record.levelno == expected
    assert "\x1b" not in record.levelname


def test_level_names_come_from_the_host_for_known_levels(collector: RecordWaiter) -> None:
    """A sender cannot label an INFO record as CRITICAL."""
    replayer().replay(log_batch([data(levelno=logging.INFO, levelname="CRITICAL")]))
    assert collector.records[0].levelname == "INFO"


def test_critical_is_named_critical_and_custom_level_names_cannot_forge_a_prefix(
    collector: RecordWaiter,
) -> None:
    """CRITICAL is never shown as its alias FATAL; a custom level keeps a one-word name
    (loguru's SUCCESS) but not a name that could forge the start of a host line."""
    replayer().replay(
        log_batch(
            [
                data(seq=1, levelno=logging.CRITICAL, levelname="FATAL"),
                data(seq=2, levelno=25, levelname="SUCCESS"),
                data(seq=3, levelno=26, levelname="INFO isoplug.host:"),
            ]
        )
    )
    assert [r.levelname for r in collector.records] == ["CRITICAL", "SUCCESS", "Level 26"]


def test_a_custom_level_cannot_borrow_a_standard_or_host_level_name(
    collector: RecordWaiter,
) -> None:
    """A level number that is not a standard one, named like a standard level (in any case,
    aliases too) or like another level the host named, is shown as Level <n>; one the host
    named itself has the host's name, whatever the sender calls it."""
    logging.addLevelName(27, "AUDIT")
    try:
        replayer().replay(
            log_batch(
                [
                    data(seq=1, levelno=22, levelname="CRITICAL"),
                    data(seq=2, levelno=23, levelname="critical"),
                    data(seq=3, levelno=24, levelname="Warn"),
                    data(seq=4, levelno=26, levelname="AUDIT"),
                    data(seq=5, levelno=27, levelname="ERROR"),
                    data(seq=6, levelno=28, levelname="Notice"),
                ]
            )
        )
    finally:
        del logging._levelToName[27]
        del logging._nameToLevel["AUDIT"]
    assert [r.levelname for r in collector.records] == [
        "Level 22",
        "Level 23",
        "Level 24",
        "Level 26",
        "AUDIT",
        "Notice",
    ]


def test_extras_and_json_fields_cannot_claim_the_records_identity(
    collector: RecordWaiter,
) -> None:
    """A sender's extra named like what formatters read a record's identity under (logger,
    logger_name, plugin_id...) or like a field the host sets (exc_type) arrives renamed, on an
    ordinary record and on a printed line's alike."""
    claims = {
        "logger": "isoplug.host",
        "logger_name": "isoplug.host",
        "plugin_id": "bank",
        "seq": 9,
        "exc_type": "builtins.KeyError",
    }
    replayer().replay(
        log_batch([data(seq=1, extra=claims), data(seq=2, name="stdout", extra=claims)])
    )
    for record in collector.records:
        assert not hasattr(record, "logger") and not hasattr(record, "logger_name")
        assert record.plugin_id == "demo" and record.seq in (1, 2)  # type: ignore[attr-defined]
        assert record.exc_type is None  # type: ignore[attr-defined]
        renamed = {
            k.removeprefix("extra_"): v for k, v in vars(record).items() if k[:6] == "extra_"
        }
        assert renamed == claims


@pytest.mark.parametrize(
    ("created", "lineno"),
    [(float("nan"), 3), (float("inf"), 3), (-float("inf"), 3), (1e20, 3), (-1.0, 3), (1.0, None)],
)
def test_fields_no_formatter_can_print_are_repaired_counted_and_reported(
    collector: RecordWaiter, created: float, lineno: int | None
) -> None:
    """A time that is no time or a line number that is none no longer breaks the connection
    or the host's formatters: the record arrives with the arrival time and line 0, later
    records still arrive, and the repair is counted and reported once."""
    formatter = logging.Formatter("%(asctime)s %(lineno)d %(levelname)s %(name)s: %(message)s")
    bad = data(seq=1, created=created, lineno=lineno, message="bad fields")
    following = [data(seq=n, message=f"after {n}") for n in range(2, 5)]
    sender = replayer()
    sender.replay(log_batch([bad, *following]))
    sender.replay(log_batch([data(seq=5, created=created, lineno=lineno)]))
    records = [r for r in collector.records if not is_report(r)]
    assert [r.getMessage() for r in records][:4] == ["bad fields", "after 2", "after 3", "after 4"]
    for record in records:
        formatter.format(record)  # must not raise
    assert sender.metrics.repaired == 2
    (report,) = reports(collector.records)
    assert "no formatter can print" in report.getMessage()


def test_a_sender_cannot_pass_a_record_as_the_hosts_own_report(collector: RecordWaiter) -> None:
    """An extra named ``isoplug_report`` is renamed: only the replayer's reports carry it."""
    replayer().replay(log_batch([data(extra={"isoplug_report": True})]))
    (record,) = collector.records
    assert not is_report(record)
    assert record.extra_isoplug_report is True  # type: ignore[attr-defined]


def test_malformed_records_are_rejected_alone_and_reported_once(collector: RecordWaiter) -> None:
    """A batch with bad records keeps its good ones; the rejection is counted and reported once."""
    good = msgspec.msgpack.encode(data(seq=1))
    # Too short to be a record (a wrong-typed standard field is salvaged, see
    # tests/test_logs_wrong_types.py).
    bad = msgspec.msgpack.encode(["worker", 20])
    also_good = msgspec.msgpack.encode(data(seq=2))
    raw = msgspec.Raw(b"\x93" + good + bad + also_good)
    target = replayer()
    target.replay(LogBatch(records=raw))
    target.replay(LogBatch(records=raw))
    messages = collector.messages()
    assert messages.count("message 1") == 2 and messages.count("message 2") == 2
    reports = [m for m in messages if "malformed" in m]
    assert len(reports) == 1 and "rejected 1 malformed" in reports[0]
    assert target.metrics.dropped[DropReason.MALFORMED] == 2


def test_garbage_records_field_is_rejected_without_exception(collector: RecordWaiter) -> None:
    """A records field that is not even an array is counted as malformed, nothing raises."""
    target = replayer()
    target.replay(LogBatch(records=msgspec.Raw(b"\xc1")))
    assert target.metrics.dropped[DropReason.MALFORMED] == 1


def test_sender_drops_are_reported_once_per_increase(collector: RecordWaiter) -> None:
    """Drop totals from the sender become one WARNING per increase, with counts by level (with
    no report interval: see test_logs_report_floods.py for the summaries within one)."""
    target = replayer(report_interval=0.0)
    target.replay(log_batch([data(seq=1)], dropped={logging.DEBUG: 5, logging.INFO: 2}))
    target.replay(log_batch([data(seq=2)], dropped={logging.DEBUG: 5, logging.INFO: 2}))
    target.replay(log_batch([data(seq=3)], dropped={logging.DEBUG: 8, logging.INFO: 2}))
    assert [r.getMessage() for r in reports(collector.records)] == [
        "plugin demo says it dropped 7 log records because its log queue was full "
        "(DEBUG: 5, INFO: 2); it logs faster than they can be delivered",
        "plugin demo says it dropped 3 log records because its log queue was full (DEBUG: 3); "
        "it logs faster than they can be delivered",
    ]
    assert all(
        r.name == PREFIX and r.levelno == logging.WARNING for r in reports(collector.records)
    )
    assert target.metrics.dropped[DropReason.SENDER_QUEUE_FULL] == 10


def test_sequence_gaps_are_reported(collector: RecordWaiter) -> None:
    """Records that never arrived are reported with their sequence numbers."""
    target = replayer()
    target.replay(log_batch([data(seq=1), data(seq=2), data(seq=6)]))
    assert (
        "3 log records from plugin demo never arrived (sequence numbers 3 to 5)"
        in collector.messages()
    )
    assert target.metrics.dropped[DropReason.LOST_IN_TRANSIT] == 3


@pytest.fixture
def sender_ledger() -> Iterator[SenderLedger]:
    """A real sequence ledger of this very process, as a sender would announce it."""
    ledger = SenderLedger.create()
    if ledger is None:
        pytest.skip("no memfd on this system")
    try:
        yield ledger
    finally:
        ledger.close()


def reported(collector: RecordWaiter) -> list[str]:
    return [r.getMessage() for r in reports(collector.records)]


def announced(fd: int, sender_pid: int | None = None) -> LogReplayer:
    """A replayer whose sender announced ledger descriptor ``fd`` in its first batch."""
    target = LogReplayer(PREFIX, description="plugin demo", sender_pid=sender_pid)
    target.replay(LogBatch(records=msgspec.Raw(b"\x90"), ledger_fd=fd))
    return target


@pytest.mark.parametrize(
    ("accepted", "arrived", "clean", "expected"),
    [
        # A crash took the last three: no later record shows the gap, the ledger does.
        (
            8,
            5,
            False,
            "plugin demo: log connection ended without a goodbye (crash or kill) after record "
            "#5; 3 records it had accepted (#6 to #8) are lost",
        ),
        # A crash that took nothing says so.
        (
            2,
            2,
            False,
            "plugin demo: log connection ended without a goodbye (crash or kill) after record "
            "#2; every record it had accepted arrived",
        ),
        # A goodbye after a flush that timed out leaves accepted records behind: counted too.
        (
            4,
            1,
            True,
            "plugin demo ended before sending 3 log records it had accepted (#2 to #4); "
            "they are lost",
        ),
    ],
)
def test_the_ledger_counts_what_the_sender_accepted_but_never_sent(
    collector: RecordWaiter,
    sender_ledger: SenderLedger,
    *,
    accepted: int,
    arrived: int,
    clean: bool,
    expected: str,
) -> None:
    """At the connection's end the sender's ledger says how many accepted records never
    arrived; they are reported with their sequence numbers and counted as sender_ended: a
    WARNING, or an INFO when the end cost no record."""
    target = announced(sender_ledger.fd, sender_pid=os.getpid())
    sender_ledger.view[0] = accepted
    target.replay(log_batch([data(seq=n) for n in range(1, arrived + 1)]))
    target.finish(clean=clean)
    assert reported(collector) == [expected]
    assert target.metrics.dropped.get(DropReason.SENDER_ENDED, 0) == accepted - arrived
    (report,) = reports(collector.records)
    assert report.levelno == (logging.WARNING if accepted > arrived else logging.INFO)


def test_a_descriptor_that_is_not_a_ledger_is_refused_with_a_report(
    collector: RecordWaiter, tmp_path: Path
) -> None:
    """A sender naming any other file (here a regular file) gets a report, not a count."""
    with open(tmp_path / "not-a-ledger", "wb") as other:
        other.write(bytes(8))
        other.flush()
        target = announced(other.fileno(), sender_pid=os.getpid())
        target.replay(LogBatch(records=msgspec.Raw(b"\x90"), ledger_fd=other.fileno()))
    target.finish(clean=False)
    (refused, second, ended) = reported(collector)
    assert refused.startswith("cannot use the log ledger of plugin demo: descriptor ")
    assert "not a ledger; a crash will be reported without a count of lost records" in refused
    assert second == "plugin demo announced a second log ledger; kept the first"
    assert ended.endswith("records it had not sent yet, if any, are lost")


def test_a_ledger_from_a_connection_without_a_pid_is_not_opened(
    collector: RecordWaiter, sender_ledger: SenderLedger
) -> None:
    """Without a pid vouched for by the connection, the announced descriptor is never opened."""
    target = announced(sender_ledger.fd)
    sender_ledger.view[0] = 9
    target.finish(clean=True)
    assert reported(collector) == [
        "plugin demo announced a log ledger, but its connection does not say which process it "
        "is; a crash will be reported without a count of lost records"
    ]


def test_rate_limit_drops_low_levels_first_and_reports(collector: RecordWaiter) -> None:
    """Over the rate limit, INFO is dropped while WARNING still passes, and drops are reported."""
    target = replayer(rate=1.0, burst=10.0)
    batch = [data(seq=i) for i in range(1, 31)] + [
        data(seq=i, levelno=logging.WARNING, levelname="WARNING") for i in range(31, 36)
    ]
    target.replay(log_batch(batch))
    target.finish()
    replayed = [r for r in collector.records if not is_report(r)]
    assert sum(1 for r in replayed if r.levelno == logging.INFO) == 10
    assert sum(1 for r in replayed if r.levelno == logging.WARNING) == 5
    assert target.metrics.dropped[DropReason.RATE_LIMITED] == 20
    assert any("rate limit: dropped 20 log records" in m for m in collector.messages())


def test_host_logger_level_filters_and_is_counted(collector: RecordWaiter) -> None:
    """Records below the host logger's level are not handled, and counted as filtered."""
    logging.getLogger(PREFIX).setLevel(logging.WARNING)
    try:
        target = replayer()
        target.replay(
            log_batch([data(seq=1), data(seq=2, levelno=logging.ERROR, levelname="ERROR")])
        )
    finally:
        logging.getLogger(PREFIX).setLevel(logging.NOTSET)
    assert collector.messages() == ["message 2"]
    assert target.metrics.filtered == 1 and target.metrics.replayed == 1


def test_traceback_is_rendered_exactly_once(collector: RecordWaiter) -> None:
    """A forwarded exception shows its traceback once through an ordinary Formatter."""
    with sending("sender") as sent:
        try:
            raise ValueError("boom")
        except ValueError:
            logging.getLogger("sender").exception("it failed")
    replayer().replay(batch(sent))
    (record,) = collector.records
    text = logging.Formatter("%(message)s").format(record)
    assert text.count("Traceback (most recent call last)") == 1
    assert text.startswith("it failed\nTraceback")
    assert record.exc_type == "builtins.ValueError" and record.exc_message == "boom"  # type: ignore[attr-defined]


def test_structlog_event_dicts_render_through_processor_formatter() -> None:
    """A structlog record arrives as an event dict that ProcessorFormatter renders as JSON,
    with the identity the host stamps (its foreign_pre_chain does not run for it)."""
    structlog.configure(
        processors=[structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )
    try:
        with sending("structured.sender") as sent:
            structlog.get_logger("structured.sender").info("paid", order=17, items=["a", "b"])
    finally:
        structlog.reset_defaults()

    output = io.StringIO()
    host_handler = logging.StreamHandler(output)
    host_handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.stdlib.add_logger_name,
                structlog.processors.JSONRenderer(sort_keys=True),
            ]
        )
    )
    host_logger = logging.getLogger(PREFIX)
    host_logger.addHandler(host_handler)
    host_logger.setLevel(logging.DEBUG)
    try:
        replayer().replay(batch(sent))
    finally:
        host_logger.removeHandler(host_handler)
        host_logger.setLevel(logging.NOTSET)
    rendered = json.loads(output.getvalue())
    assert rendered == {
        "event": "paid",
        "items": ["a", "b"],
        "logger": "plugin.demo.structured.sender",
        "order": 17,
        "plugin_id": "demo",
        "runner_pid": 4242,
    }


async def test_receive_replays_a_small_batch_at_once_and_a_flood_in_slices(
    collector: RecordWaiter, monkeypatch: pytest.MonkeyPatch
) -> None:
    """receive() replays at once until REPLAY_SLICE records have gone by since the event loop
    last ran; the rest comes back as an awaitable that yields between slices. Slices count
    across batches, so many small batches yield as often as one large one."""
    # Slices that end on time have a test of their own: here only the count ends them.
    monkeypatch.setattr(replay_module, "REPLAY_SLICE_SECONDS", 3600.0)

    def replayed() -> list[str]:
        return [r.getMessage() for r in collector.records if r.name.startswith(PREFIX)]

    target = replayer(rate=None)
    assert target.receive(log_batch([data(seq=1)])) is None
    assert replayed() == ["message 1"]

    seq = 1
    yields = 0
    for _ in range(3 * REPLAY_SLICE // 10):
        rest = target.receive(log_batch([data(seq=s) for s in range(seq + 1, seq + 11)]))
        seq += 10
        if rest is not None:
            yields += 1
            loop_ran = asyncio.Event()
            asyncio.get_running_loop().call_soon(loop_ran.set)
            await rest
            assert loop_ran.is_set()  # the rest waited for the event loop
    assert yields == seq // REPLAY_SLICE
    assert replayed() == [f"message {s}" for s in range(1, seq + 1)]


class StopsAt(logging.Handler):
    """Stops ``target`` while handling the record with message ``message``, as the receiver's
    close() does from another thread while a handler works."""

    def __init__(self, target: LogReplayer, message: str) -> None:
        super().__init__()
        self.target = target
        self.message = message

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage() == self.message:
            self.target.stop()


def test_a_stopped_replayer_replays_nothing_more_and_counts_what_it_received(
    collector: RecordWaiter,
) -> None:
    """stop() during a batch ends the replay after the record in progress; the rest of the
    batch is counted (by level) as receiver_closed and reported; later batches are not read,
    and the metrics add up: received = replayed + what stop() dropped."""
    target = replayer(rate=None)
    levels = [logging.INFO, logging.WARNING] * 5
    with attached(StopsAt(target, "message 3"), None):
        target.replay(log_batch([data(seq=s, levelno=levels[s - 1]) for s in range(1, 11)]))
    target.replay(log_batch([data(seq=11)]))
    target.finish(clean=True)

    replayed = [r.getMessage() for r in collector.records if not is_report(r)]
    assert replayed == ["message 1", "message 2", "message 3"]
    metrics = target.metrics
    assert (metrics.received, metrics.replayed) == (10, 3)
    assert metrics.dropped == {DropReason.RECEIVER_CLOSED: 7}
    assert metrics.dropped_levels[DropReason.RECEIVER_CLOSED] == {
        logging.WARNING: 4,
        logging.INFO: 3,
    }
    (report,) = [r.getMessage() for r in reports(collector.records)]
    assert "before replaying 7 log records it had received" in report
    assert "INFO: 3" in report and "WARNING: 4" in report


async def test_a_replay_suspended_between_slices_is_counted_when_it_never_resumes(
    collector: RecordWaiter, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In the event loop, the receiver's close may end a session whose replay waits between
    slices: finish() counts the records it never replayed, once, as receiver_closed."""
    monkeypatch.setattr(replay_module, "REPLAY_SLICE_SECONDS", 3600.0)  # a slice of records
    target = replayer(rate=None)
    count = REPLAY_SLICE + 10
    rest = target.receive(log_batch([data(seq=s) for s in range(1, count + 1)]))
    assert rest is not None  # a slice ended on the way
    target.stop()
    assert isinstance(rest, Coroutine)
    rest.close()  # as the peer's close drops what was left to await
    target.finish(clean=True)
    metrics = target.metrics
    assert metrics.received == count
    assert metrics.replayed + metrics.dropped[DropReason.RECEIVER_CLOSED] == count
    assert metrics.replayed == REPLAY_SLICE


class Slow(logging.Handler):
    """Takes ``cost`` seconds per record and notes how often ``ticks`` had ticked."""

    def __init__(self, cost: float, ticks: list[int]) -> None:
        super().__init__()
        self.cost = cost
        self.ticks = ticks
        self.seen: list[int] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.seen.append(self.ticks[0])
        time.sleep(self.cost)


async def test_slices_end_on_time_with_slow_handlers(collector: RecordWaiter) -> None:
    """A slice ends after REPLAY_SLICE_SECONDS, however few records it replayed: with a
    handler that takes longer than that per record, the event loop runs between every two
    records, so it is never held for more than about one record's handling."""
    cost = 5 * REPLAY_SLICE_SECONDS  # well above the slice's time: one record per slice
    ticks = [0]
    stop = asyncio.Event()

    async def ticker() -> None:
        while not stop.is_set():
            ticks[0] += 1
            await asyncio.sleep(0)

    slow = Slow(cost, ticks)
    target = replayer(rate=None)
    ticking = asyncio.create_task(ticker())
    try:
        with attached(slow, PREFIX):
            # A count far below REPLAY_SLICE: only the time ends a slice.
            await target.replay_async(log_batch([data(seq=s) for s in range(1, 21)]))
    finally:
        stop.set()
        await ticking
    assert len(slow.seen) == 20
    # The ticker ran between every two records: the loop waited for one record at most.
    assert all(later > earlier for earlier, later in itertools.pairwise(slow.seen))
