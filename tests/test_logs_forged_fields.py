"""No name a consumer shows as a record's own passes from a plugin, by any door, and no raw
control or bidi character reaches a handler from inside a nested value: a real host and runner
(the masquerader fixture), rendered by the real consumers (python-json-logger, structlog's
ProcessorFormatter, the OpenTelemetry SDK's LoggingHandler)."""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path
from typing import Any

import structlog
from pythonjsonlogger.json import JsonFormatter

from tests.log_helpers import otel_attributes as otel
from tests.plugins_fixtures import running
from tests.plugins_fixtures.masquerader.masquerader_plugin import CONSUMER_FIELDS, RAW

#: The characters of RAW no output may hold raw.
RAW_CHARACTERS = [c for c in RAW if not c.isprintable()]
#: What the structlog event of forge_event claims, besides CONSUMER_FIELDS.
FORGED_EVENT: dict[str, Any] = {
    "name": "isoplug.host",
    "asctime": "1999-01-01 00:00:00,000",
    "levelno": 50,
    "exc_type": "isoplug.errors.PluginFailed",
    "exc_message": "host crashed",
    "taskName": "host-task",
    "timestamp": "1999-01-01T00:00:00Z",
    "exception": "Traceback (most recent call last):\n  KeyboardInterrupt: forged",
    "stack": "forged stack",
    "level_number": 50,
    "func_name": "host_main",
    "process_name": "isoplug-host",
    "positional_args": ["x"],
}


def pjl(record: logging.LogRecord) -> dict[str, Any]:
    """``record`` as python-json-logger prints it (which merges a dict message over its own
    fields), non-ASCII characters written as they are."""
    formatter = JsonFormatter(
        "%(asctime)s %(name)s %(levelname)s %(levelno)s %(taskName)s %(message)s",
        json_ensure_ascii=False,
    )
    return _through(formatter, record)


def slog(record: logging.LogRecord) -> dict[str, Any]:
    """``record`` through structlog's ProcessorFormatter with every processor that writes a
    field of its own and ExtraAdder() without an allow list, non-ASCII written as is."""
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[
            structlog.stdlib.add_logger_name,
            structlog.stdlib.add_log_level,
            structlog.processors.TimeStamper(fmt="iso"),
            structlog.processors.CallsiteParameterAdder(),
            structlog.stdlib.ExtraAdder(),
        ],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(sort_keys=True, ensure_ascii=False),
        ],
    )
    return _through(formatter, record)


def _through(formatter: logging.Formatter, record: logging.LogRecord) -> dict[str, Any]:
    output = io.StringIO()
    handler = logging.StreamHandler(output)
    handler.setFormatter(formatter)
    handler.handle(record)
    text = output.getvalue()
    for raw in RAW_CHARACTERS:
        assert raw not in text, f"raw {raw!r} reached the output: {text!r}"
    result: dict[str, Any] = json.loads(text)
    return result


def assert_renamed(output: dict[str, Any], claims: dict[str, Any]) -> None:
    """Each claim is kept as extra_<key>, and the output's own field (if any) is not it."""
    for key, claimed in claims.items():
        assert output.get(key) != claimed, (key, output)
        assert output[f"extra_{key}"] == claimed, (key, output)


async def test_a_structlog_event_cannot_forge_the_records_fields(tmp_path: Path) -> None:
    async with running(tmp_path, "masquerader") as (host, waiter):
        await host.call("masquerader", "forge_event")
        record = await waiter.wait_for("plugin.masquerader.billing", "payment accepted")
    as_pjl = pjl(record)
    assert as_pjl["name"] == "plugin.masquerader.billing"
    assert as_pjl["levelno"] == logging.INFO
    assert not as_pjl["asctime"].startswith("1999")
    assert_renamed(as_pjl, {**FORGED_EVENT, **CONSUMER_FIELDS})
    as_slog = slog(record)
    assert as_slog["logger"] == "plugin.masquerader.billing"
    assert_renamed(as_slog, {**FORGED_EVENT, **CONSUMER_FIELDS})
    assert "exception" not in as_slog and "stack" not in as_slog
    assert record.exc_type is None  # type: ignore[attr-defined]
    assert not {"exception.type", "code.function", "thread.name"} & otel(record).keys()


async def test_a_structlog_events_true_processor_output_stays(tmp_path: Path) -> None:
    """TimeStamper, add_log_level_number and CallsiteParameterAdder in the plugin write
    reserved keys truthfully: they stay, unrenamed."""
    async with running(tmp_path, "masquerader") as (host, waiter):
        await host.call("masquerader", "true_event")
        record = await waiter.wait_for("plugin.masquerader.billing", "true keys")
    event = record.msg
    assert isinstance(event, dict)
    assert event["level_number"] == logging.WARNING
    assert event["func_name"] == "true_event"
    assert event["thread_name"] == record.threadName
    assert "timestamp" in event
    assert not [key for key in event if key.startswith("extra_")], event


async def test_consumer_names_are_renamed_by_every_door(tmp_path: Path) -> None:
    """ECS, Datadog, OpenTelemetry and hclog names in a logging extra, a printed JSON line
    and loguru's bound values arrive as extra_<name>: no consumer shows them as the
    record's."""
    async with running(tmp_path, "masquerader") as (host, waiter):
        await host.call("masquerader", "consumer_names")
        records = [
            await waiter.wait_for("plugin.masquerader.masq", "door extra"),
            await waiter.wait_for("plugin.masquerader.stdout", "door json"),
            await waiter.wait_for("plugin.masquerader.masquerader_plugin", "door loguru"),
        ]
    for record in records:
        attributes = vars(record)
        claims = dict(CONSUMER_FIELDS)
        if record.name.endswith("stdout"):
            # A printed line's nested map arrives as its JSON text, which no consumer
            # flattens into error.kind: it keeps its name.
            assert json.loads(attributes["error"]) == claims.pop("error")
        for key, claimed in claims.items():
            assert key not in attributes, (record.getMessage(), key)
            assert attributes[f"extra_{key}"] == claimed, (record.getMessage(), key)
        assert_renamed(pjl(record), claims)
        assert_renamed(slog(record), claims)
        exported = otel(record)
        assert not {"exception.type", "exception.message", "code.function", "thread.name"} & (
            exported.keys()
        ), exported


async def test_nested_values_and_keys_are_sanitized(tmp_path: Path) -> None:
    """Raw escapes, C1 controls, bidi overrides and line separators inside a nested extra,
    structlog event value or loguru patch reach no handler raw (the renderers write
    non-ASCII as is); a nest too deep is text, and the records after it flow."""
    async with running(tmp_path, "masquerader") as (host, waiter):
        await host.call("masquerader", "nested")
        records = [
            await waiter.wait_for("plugin.masquerader.masq", "nested extra"),
            await waiter.wait_for("plugin.masquerader.billing", "nested event"),
            await waiter.wait_for("plugin.masquerader.masquerader_plugin", "nested loguru"),
        ]
        deep = await waiter.wait_for("plugin.masquerader.masq", "deep extra")
    for record in records:
        as_pjl = pjl(record)
        slog(record)
        data = as_pjl["data"]
        assert data["k"] == "\\x1b[2J\\x9b\\u202e\\u2028"
        assert data["\\x1b[2J\\x9b\\u202e\\u2028"] == 1
        assert data["l"][1]["deeper"] == data["k"]
    assert isinstance(deep.deep, str)  # type: ignore[attr-defined]
    pjl(deep)


async def test_extra_keys_that_clean_alike_keep_every_value(tmp_path: Path) -> None:
    async with running(tmp_path, "masquerader") as (host, waiter):
        await host.call("masquerader", "colliding")
        record = await waiter.wait_for("plugin.masquerader.masq", "colliding")
        doors = [
            await waiter.wait_for("plugin.masquerader.masquerader_plugin", "colliding loguru"),
            await waiter.wait_for("plugin.masquerader.stdout", "colliding json"),
        ]
    for door in doors:
        assert door.extra_extra_logger == "claimed"  # type: ignore[attr-defined]
        assert door.extra_logger == "own"  # type: ignore[attr-defined]
    values = {value for value in vars(record).values() if str(value).startswith("value-")}
    assert values == {"value-1", "value-2", "value-3", "value-4"}
    assert {"\\x1b", "\\x1b#2"} <= vars(record).keys()
