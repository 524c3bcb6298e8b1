"""Leaving a LogReceiver whose senders still have records to replay when its drain time is up:
it returns in time, replays nothing afterwards, and counts what it did not replay. Closing it
more than once, or from two places at once, closes it once."""

from __future__ import annotations

import asyncio
import logging
import threading
import time

import pytest

from isoplug.logs import DropReason, ForwardingHandler, LogReceiver
from isoplug.logs.receiver_closing import CLOSE_GRACE
from tests.log_helpers import reports
from tests.record_waiter import attached
from tests.test_logs_forwarding import (
    BOTH_MODES,
    PREFIX,
    combined_metrics,
    finish,
    receiving,
    run_child,
)

DRAIN_TIMEOUT = 0.5


class SlowAfterHeld(logging.Handler):
    """A slow host handler: it holds record ``held`` until ``go_on`` is set (the drain time
    is up), then takes ``cost`` seconds for every later record."""

    def __init__(self, held: int, cost: float) -> None:
        super().__init__()
        self.held_number = held
        self.cost = cost
        self.holding = threading.Event()
        self.go_on = threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        number = getattr(record, "n", None)
        if number is None:
            return  # the receiver's reports
        if number == self.held_number:
            self.holding.set()
            self.go_on.wait(60)
        elif number > self.held_number:
            time.sleep(self.cost)


class ReleaseWhenDrainIsUp(logging.Handler):
    def __init__(self, go_on: threading.Event) -> None:
        super().__init__()
        self.go_on = go_on

    def emit(self, record: logging.LogRecord) -> None:
        if f"after {DRAIN_TIMEOUT:.1f} s;" in record.getMessage():
            self.go_on.set()


async def test_a_sync_receiver_stops_replaying_at_its_drain_time_and_counts_the_rest(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The child logs COUNT records and exits normally, all of them in its ring or the kernel;
    the handler here is too slow to replay them within the drain time. Leaving the receiver
    stops its thread within CLOSE_GRACE of the drain time; when close() returns, the thread
    has ended (the end's accounting is done) and every record is replayed or counted as
    receiver_closed, with a report: replayed + dropped = COUNT, and received = replayed +
    what it received and dropped. Slow enough that the old receiver, which replayed on after
    close() returned, fails every check below."""
    count = 3000
    # 1 ms a record: the ~2,900 after the held one take about 3 s, past CLOSE_GRACE.
    slow = SlowAfterHeld(held=100, cost=0.001)
    with (
        attached(slow, PREFIX),
        attached(ReleaseWhenDrainIsUp(slow.go_on), "isoplug.logs"),
    ):
        async with receiving("threads", drain_timeout=DRAIN_TIMEOUT) as (receiver, collector):
            child = await run_child(receiver, "clean-exit", str(count))
            assert (await finish(child))[0] == 0
            assert await asyncio.to_thread(slow.holding.wait, 30)
            began = time.monotonic()
        took = time.monotonic() - began  # receiving() closed the receiver (in a thread)
        metrics = combined_metrics(receiver)
        replayed = len(collector.numbers())
        said = [r.getMessage() for r in reports(collector.records)]

    assert metrics.replayed == replayed
    assert metrics.replayed + sum(metrics.dropped.values()) == count
    assert set(metrics.dropped) == {DropReason.RECEIVER_CLOSED}
    received_dropped = sum(metrics.dropped_levels.get(DropReason.RECEIVER_CLOSED, {}).values())
    assert metrics.received == metrics.replayed + received_dropped
    assert any("the log receiver closed at the end of its drain time" in text for text in said)
    assert "did not end within" not in caplog.text  # its thread ended in time
    assert "crash or kill" not in caplog.text
    # Generous for a busy machine: the old receiver took DRAIN_TIMEOUT + 5 s.
    assert took < DRAIN_TIMEOUT + CLOSE_GRACE + 2.5


@BOTH_MODES
async def test_closing_twice_or_from_two_places_at_once_closes_once_and_quietly(
    mode: str, caplog: pytest.LogCaptureFixture
) -> None:
    """aclose() and close() together, from two tasks and a thread at once, and each again
    after: each returns once the receiver is closed, and the drain time's warning is said
    once. (close() on the loop's own thread raises instead: see test_logs_receiver_api.)"""
    receiver = LogReceiver(prefix=PREFIX, drain_timeout=0.2)
    if mode == "loop":
        await receiver.start()
    else:
        receiver.open()
    handler = ForwardingHandler(receiver.address, receiver.token)
    try:
        # A sender still connected: leaving waits out the drain time, then warns.
        assert await asyncio.to_thread(handler.start, 10)
        await asyncio.gather(
            receiver.aclose(),
            receiver.aclose(),
            asyncio.to_thread(receiver.close),
            asyncio.to_thread(receiver.close),
        )
        receiver.close()  # closed: nothing to do, on the loop's thread too
        await receiver.aclose()
    finally:
        handler.close()
    said = [r.getMessage() for r in caplog.records if r.name == "isoplug.logs"]
    assert sum("still connected after 0.2 s" in text for text in said) == 1, said
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert "crash or kill" not in caplog.text


class SlowHandler(logging.Handler):
    """A host handler that takes ``cost`` seconds for each numbered record."""

    def __init__(self, cost: float) -> None:
        super().__init__()
        self.cost = cost

    def emit(self, record: logging.LogRecord) -> None:
        if hasattr(record, "n"):
            time.sleep(self.cost)  # the slowness under test, not a wait


@BOTH_MODES
async def test_the_drain_warning_tells_senders_that_left_from_senders_still_connected(
    mode: str, caplog: pytest.LogCaptureFixture
) -> None:
    """At the drain time's end, one sender is still connected (idle) and one exited long
    before, its records waiting here behind a slow handler: the warning tells them apart (it
    called both "still connected", their undelivered records lost), and once closed the
    receiver says how many records the close cost, as metrics() counts them."""
    count = 3000
    # 5 ms a record: 15 s of replay, far past the drain time however the machine runs.
    handler: ForwardingHandler | None = None
    with attached(SlowHandler(cost=0.005), PREFIX):
        try:
            async with receiving(mode, drain_timeout=DRAIN_TIMEOUT) as (receiver, collector):
                handler = ForwardingHandler(receiver.address, receiver.token, name="idle")
                assert await asyncio.to_thread(handler.start, 10)
                child = await run_child(receiver, "clean-exit", str(count))
                assert (await finish(child))[0] == 0
        finally:
            if handler is not None:
                handler.close()
        metrics = combined_metrics(receiver)
        replayed = len(collector.numbers())
    said = [r.getMessage() for r in caplog.records if r.name == "isoplug.logs"]
    assert (
        "1 log sender(s) still connected after 0.5 s; closing them (what they have not "
        "delivered yet is lost); also, 1 log sender(s) that ended their connection (exited, "
        "or closed their handler) still had records here not replayed after 0.5 s; replay "
        "stops (what is not replayed yet is lost)"
    ) in said, said
    lost = metrics.dropped[DropReason.RECEIVER_CLOSED]
    assert replayed + lost == count
    assert (
        f"the log receiver closed 2 connection(s) at the end of its drain time: {lost:,} log "
        "records they sent or had accepted were not replayed and are lost (counted as "
        "receiver_closed in metrics(); the reports above say whose)"
    ) in said, said
