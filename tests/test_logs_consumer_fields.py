"""What the host's formatters write themselves stays true, whatever a plugin's extras say:
the fields structlog's processors and python-json-logger write from the record (its time,
exception, stack, level number, call site), and the host's own markers (``isoplug_...``).
With a real host and runner, through the real libraries."""

from __future__ import annotations

import datetime
import logging
from pathlib import Path
from typing import Any

import pytest
import structlog

from isoplug.logs import ReplayLimits
from isoplug.logs.line_fields import MAX_JSON_EXTRAS
from isoplug.logs.record_names import CONSUMER_NAMES
from tests.plugins_fixtures import running
from tests.plugins_fixtures.impostor.impostor_plugin import Impostor
from tests.test_logs_host_truth import shown_by

FORGED: dict[str, Any] = Impostor.FORGED_FIELDS
MARKERS = {"isoplug_truncated_keys", "isoplug_anything"}


def every_processor_then_extras() -> logging.Formatter:
    """structlog's stdlib chain with every processor that writes a field from the record, and
    ``ExtraAdder()`` last, where an extra of the same name would replace what they wrote."""
    return structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[
            structlog.stdlib.add_log_level,
            structlog.stdlib.add_log_level_number,
            structlog.stdlib.add_logger_name,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.CallsiteParameterAdder(),
            structlog.stdlib.ExtraAdder(),
        ],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            structlog.processors.StackInfoRenderer(),
            structlog.processors.JSONRenderer(),
        ],
    )


def test_the_reserved_names_are_what_these_consumers_write() -> None:
    """Every name reserved is one that structlog's processors or python-json-logger write
    from a record (so the list stays what it claims to be)."""
    callsite = {p.value for p in structlog.processors.CallsiteParameter}
    own = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__)
    assert callsite - own <= CONSUMER_NAMES
    assert {"timestamp", "time", "@timestamp", "exception", "stack", "level_number"} <= (
        CONSUMER_NAMES
    )
    assert set(FORGED) == CONSUMER_NAMES | MARKERS


async def test_a_plugins_extras_cannot_forge_what_the_hosts_formatters_write(
    tmp_path: Path,
) -> None:
    """An INFO record without an exception whose extras (a logging extra, a printed JSON
    line's fields, loguru's bound values) forge a time, an exception, a stack, a level number,
    a call site and the host's markers renders, through structlog's processors with
    ``ExtraAdder()`` last and through python-json-logger renaming ``asctime`` to ``time``, with
    the record's own values, and no exception, stack or marker; each claim stays, as
    ``extra_<name>``, and an extra already named ``extra_time`` keeps its own."""
    pythonjsonlogger = pytest.importorskip("pythonjsonlogger.json")
    async with running(tmp_path, "impostor") as (host, waiter):
        await host.call("impostor", "claim_consumer_fields")
        doors = {
            "extra": await waiter.wait_for("plugin.impostor.impostor.work", "routine extra"),
            "json-line": await waiter.wait_for("plugin.impostor.stdout", "routine json-line"),
            "loguru": await waiter.wait_for_record(plugin="impostor", text="routine loguru"),
        }
    extra = doors["extra"]
    assert extra.extra_time == "mine"  # type: ignore[attr-defined]
    assert extra.extra_extra_time == FORGED["time"]  # type: ignore[attr-defined]
    time_as = pythonjsonlogger.JsonFormatter(
        "%(asctime)s %(message)s", rename_fields={"asctime": "time"}
    )
    stamped = pythonjsonlogger.JsonFormatter("%(message)s", timestamp=True)
    for door, record in doors.items():
        assert not {name for name in FORGED if hasattr(record, name)}, door
        renamed = "extra_extra_time" if door == "extra" else "extra_time"
        assert vars(record)[renamed] == FORGED["time"], door
        # Kept, as text the sanitizer cleaned (a continuation line indented).
        values = vars(record)
        assert "RuntimeError: forged" in values["extra_exception"], door
        assert values["extra_isoplug_truncated_keys"] == 99, door
        shown = shown_by(every_processor_then_extras(), record)
        for name, forged in FORGED.items():
            assert shown.get(name) != forged, (door, name)
            assert f"extra_{name}" in shown, (door, name)
        assert "exception" not in shown and "stack" not in shown, door
        assert not MARKERS & shown.keys(), door
        assert shown["level_number"] == logging.INFO, door
        assert shown["func_name"] == record.funcName, door
        assert shown["thread_name"] == record.threadName, door
        assert str(shown["timestamp"]).startswith(_day_of(record)), door
        shown = shown_by(time_as, record)
        assert shown["time"] == time_as.formatTime(record), door
        assert "exception" not in shown and not MARKERS & shown.keys(), door
        shown = shown_by(stamped, record)
        assert str(shown["timestamp"]).startswith(_day_of(record)), door
        assert shown["extra_@timestamp"] == FORGED["@timestamp"], door


async def test_only_the_host_says_how_many_extras_it_cut(tmp_path: Path) -> None:
    """A logging record and a printed JSON line with more extras than the host (or the line
    classifier) keeps, the first a forged ``isoplug_truncated_keys``, carry the true count
    under that name, set by isoplug, and the forged one as ``extra_isoplug_truncated_keys``;
    a record with few extras has no such marker, the forged one renamed."""
    limits = ReplayLimits(max_extra_keys=8)
    many = MAX_JSON_EXTRAS + 10
    async with running(tmp_path, "impostor", log_limits=limits) as (host, waiter):
        for count in (20, 2, many):
            await host.call("impostor", "too_many_fields", count)
        cut = await waiter.wait_for("plugin.impostor.impostor.work", "many extra [20]")
        few = await waiter.wait_for("plugin.impostor.impostor.work", "many extra [2]")
        line = await waiter.wait_for("plugin.impostor.stdout", "many json-line [2]")
        long_line = await waiter.wait_for("plugin.impostor.stdout", f"many json-line [{many}]")
    # The host kept 8 keys: the renamed claim and 7 fields; 12 were left out.
    assert cut.isoplug_truncated_keys == 12  # type: ignore[attr-defined]
    assert cut.extra_isoplug_truncated_keys == 1  # type: ignore[attr-defined]
    assert few.extra_isoplug_truncated_keys == 1  # type: ignore[attr-defined]
    assert not hasattr(few, "isoplug_truncated_keys")
    assert not hasattr(line, "isoplug_truncated_keys")
    # The classifier kept MAX_JSON_EXTRAS fields (the renamed claim among them); the host
    # keeps what a stream's record says of it, and cuts no more of the line itself: its
    # limit of 8 keys leaves out the rest, and says so, under the same name.
    assert long_line.extra_isoplug_truncated_keys == 1  # type: ignore[attr-defined]
    assert long_line.isoplug_truncated_keys > 0  # type: ignore[attr-defined]


def _day_of(record: logging.LogRecord) -> str:
    """The UTC date of ``record``'s creation, as ISO timestamps start."""
    return datetime.datetime.fromtimestamp(record.created, datetime.UTC).strftime("%Y-%m-%d")
