"""What a plugin's record claims that the host cannot take as said: a time before the sending
process started or after the record arrived, maps in lists under reserved names, reserved
names spelt with look-alike letters of any script; and where a line structlog printed comes
from. A real host and runner (the claimant fixture), and a real LogReceiver."""

from __future__ import annotations

import asyncio
import datetime
import logging
import os
import time
from pathlib import Path

from isoplug.logs import ForwardingHandler
from isoplug.transport.process_tree import started_at
from tests.plugins_fixtures import running
from tests.plugins_fixtures.claimant.claimant_plugin import (
    FOREIGN,
    FUTURE,
    LISTED,
    LOOKALIKES,
    PAST,
)
from tests.test_logs_forged_fields import pjl, slog
from tests.test_logs_forwarding import PREFIX, receiving

CLAIMANT = "plugin.claimant"


def assert_arrival_time(record: logging.LogRecord, claimed: float, before: float) -> None:
    """``record`` shows the time it arrived (between ``before`` and now), its sender's claim
    kept as ``extra_created`` (to within a day: the plugin's "a year from now" is its own);
    every formatter prints the arrival time."""
    assert before <= record.created <= time.time(), record.created
    assert record.msecs == int((record.created % 1) * 1000)
    assert abs(record.extra_created - claimed) < 86400  # type: ignore[attr-defined]
    year = str(datetime.datetime.fromtimestamp(record.created).year)
    assert pjl(record)["asctime"].startswith(year)
    if not isinstance(record.msg, dict):
        # structlog renders an event dict as it is (no TimeStamper of the host's runs).
        assert slog(record)["timestamp"].startswith(year)


async def test_a_time_before_the_process_or_after_arrival_is_the_arrival(
    tmp_path: Path,
) -> None:
    async with running(tmp_path, "claimant") as (host, waiter):
        before = time.time()
        await host.call("claimant", "times")
        future = await waiter.wait_for(f"{CLAIMANT}.claims", "from the future")
        past = await waiter.wait_for(f"{CLAIMANT}.claims", "from 1999")
        lguru = await waiter.wait_for(f"{CLAIMANT}.claimant_plugin", "loguru from 1999")
        forged = await waiter.wait_for(f"{CLAIMANT}.billing", "event from 1999")
        stamped = await waiter.wait_for(f"{CLAIMANT}.billing", "event stamped now")
        honest = await waiter.wait_for(f"{CLAIMANT}.claims", "honest time")
    assert_arrival_time(future, FUTURE, before)
    assert_arrival_time(past, PAST, before)
    assert_arrival_time(lguru, PAST, before)
    assert_arrival_time(forged, PAST, before)
    # The event's own timestamp says the forged time too: it is no longer the record's.
    assert isinstance(forged.msg, dict)
    assert forged.msg["extra_timestamp"] == "1999-01-01T00:00:00+00:00"
    assert "timestamp" not in forged.msg
    # A plugin-side TimeStamper's true time is the (corrected) record's: it stays.
    assert isinstance(stamped.msg, dict)
    assert "timestamp" in stamped.msg and "extra_timestamp" not in stamped.msg
    assert before <= honest.created <= time.time()
    assert not hasattr(honest, "extra_created")


async def test_a_receiver_bounds_a_time_by_the_senders_start() -> None:
    """A standalone receiver knows its sender's start from the kernel-vouched pid: a record
    made before it (an hour before this process started) shows its arrival time."""
    start = started_at(os.getpid())
    assert start is not None
    async with receiving() as (log_receiver, collector):
        handler = ForwardingHandler(log_receiver.address, log_receiver.token)
        try:
            assert await asyncio.to_thread(handler.start, 10)
            logger = logging.getLogger("claims")
            record = logger.makeRecord("claims", logging.INFO, __file__, 1, "early", (), None)
            record.created = start - 3600
            before = time.time()
            handler.handle(record)
            late = logger.makeRecord("claims", logging.INFO, __file__, 1, "fresh", (), None)
            handler.handle(late)
            early = await collector.wait_for(f"{PREFIX}.claims", "early")
            fresh = await collector.wait_for(f"{PREFIX}.claims", "fresh")
        finally:
            handler.close()
    assert before <= early.created and early.extra_created == start - 3600  # type: ignore[attr-defined]
    assert fresh.created == late.created and not hasattr(fresh, "extra_created")


async def test_maps_in_lists_under_reserved_names_are_renamed(tmp_path: Path) -> None:
    """ECS and Elasticsearch flatten a list of objects as an object: ``error: [{"type": ...}]``
    is ``error.type``. By every door (a logging extra, a structlog event, loguru)."""
    async with running(tmp_path, "claimant") as (host, waiter):
        await host.call("claimant", "lists")
        records = [
            await waiter.wait_for(f"{CLAIMANT}.claims", "listed extra"),
            await waiter.wait_for(f"{CLAIMANT}.claimant_plugin", "listed loguru"),
        ]
        event = await waiter.wait_for(f"{CLAIMANT}.billing", "listed event")
    for record in records:
        for key, claimed in LISTED.items():
            assert key not in vars(record), (record.getMessage(), key)
            assert vars(record)[f"extra_{key}"] == claimed
        assert "error" not in slog(record) and "error" not in pjl(record)
    assert isinstance(event.msg, dict)
    for key, claimed in LISTED.items():
        assert key not in event.msg and event.msg[f"extra_{key}"] == claimed
    assert "code" not in pjl(event)


async def test_look_alike_spellings_of_reserved_names_are_renamed(tmp_path: Path) -> None:
    async with running(tmp_path, "claimant") as (host, waiter):
        await host.call("claimant", "alike")
        record = await waiter.wait_for(f"{CLAIMANT}.claims", "alike extra")
    attributes = vars(record)
    for key, claimed in LOOKALIKES.items():
        assert key not in attributes and attributes[f"extra_{key}"] == claimed, key
    for key, value in FOREIGN.items():
        assert attributes[key] == value, key


async def test_a_line_structlog_prints_comes_from_the_plugins_call(tmp_path: Path) -> None:
    """structlog's PrintLoggerFactory writes the line: its location is the plugin's call of
    structlog, past structlog's own frames."""
    async with running(tmp_path, "claimant") as (host, waiter):
        await host.call("claimant", "json_print")
        record = await waiter.wait_for(f"{CLAIMANT}.stdout", "printed by structlog")
        forged = await waiter.wait_for(f"{CLAIMANT}.stdout", "forged by structlog")
    assert record.funcName == "json_print", (record.pathname, record.funcName)
    assert record.filename == "claimant_plugin.py"
    source = Path(__file__).parent / "plugins_fixtures/claimant/claimant_plugin.py"
    line = source.read_text().splitlines()[record.lineno - 1]
    assert "the line's location" in line
    assert record.levelno == logging.INFO
    # Its TimeStamper's and CallsiteParameterAdder's fields say what the record says: kept.
    fields = vars(record)
    assert fields["func_name"] == "json_print"
    assert "timestamp" in fields
    assert not [key for key in fields if key.startswith("extra_")], fields
    assert slog(record)["func_name"] == "json_print"
    # Fields that say something else, and an exception text the host cannot vouch for, are
    # claims.
    claims = vars(forged)
    assert claims["extra_timestamp"] == "1999-01-01T00:00:00Z"
    assert claims["extra_func_name"] == "host_main" and claims["extra_lineno"] == 1
    assert "extra_exception" in claims
    assert not {"timestamp", "func_name", "exception"} & claims.keys()
