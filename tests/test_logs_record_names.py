"""The names a sender may not use in its records (isoplug.logs.record_names), sans-IO."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import pytest

from isoplug.logs.line_fields import parse_json_line
from isoplug.logs.record_names import (
    CONSUMER_NAMES,
    IDENTITY_NAMES,
    MESSAGE_NAMES,
    RESERVED_NAMES,
    SEVERITY_NAMES,
    level_name,
    reserved_field,
    reserved_name,
)


@pytest.fixture
def host_level() -> Iterator[int]:
    """A level the host names itself (35, AUDIT), for the duration of the test."""
    logging.addLevelName(35, "AUDIT")
    try:
        yield 35
    finally:
        del logging._levelToName[35]
        del logging._nameToLevel["AUDIT"]


@pytest.mark.parametrize(
    ("levelno", "claimed", "expected"),
    [
        (20, "CRITICAL", "INFO"),
        (50, "FATAL", "CRITICAL"),
        (22, "CRITICAL", "Level 22"),
        (22, "critical", "Level 22"),
        (22, "Fatal", "Level 22"),
        (22, "warn", "Level 22"),
        (22, "NOTSET", "Level 22"),
        (22, "INFO isoplug.host:", "Level 22"),
        (22, "", "Level 22"),
        (25, "SUCCESS", "SUCCESS"),
        (5, "TRACE", "TRACE"),
        (22, "Notice", "Notice"),
    ],
)
def test_a_level_name_is_standard_the_senders_own_word_or_level_n(
    levelno: int, claimed: str, expected: str
) -> None:
    assert level_name(levelno, claimed) == expected


def test_the_hosts_own_level_names_win_and_cannot_be_borrowed(host_level: int) -> None:
    assert level_name(host_level, "CRITICAL") == "AUDIT"
    assert level_name(host_level, "Whatever") == "AUDIT"
    assert level_name(36, "AUDIT") == "Level 36"
    assert level_name(36, "audit") == "Level 36"


def test_identity_names_hold_what_formatters_read_a_records_identity_under() -> None:
    assert {"logger", "logger_name", "plugin_id", "runner_pid", "stream", "seq"} <= IDENTITY_NAMES
    assert {"sender", "sender_pid", "isoplug_report", "process"} <= IDENTITY_NAMES


def test_severity_and_message_names_hold_what_formatters_read_a_level_and_message_under() -> None:
    """structlog's level and event, python-json-logger's usual renames of levelname (level,
    severity, log.level), hclog's; every one a name a sender's extra is renamed under."""
    assert {"level", "levelname", "severity", "log.level", "@level"} == set(SEVERITY_NAMES)
    assert {"event", "message", "msg", "@message"} == set(MESSAGE_NAMES)
    assert {*SEVERITY_NAMES, *MESSAGE_NAMES, *IDENTITY_NAMES, *CONSUMER_NAMES} == RESERVED_NAMES


def test_a_json_lines_level_and_message_are_read_under_the_same_names() -> None:
    """A printed JSON line's level and message are read under these names, in their order;
    its other such fields are extras (renamed when they become a record's)."""
    line = {"event": "e", "message": "m", "severity": "error", "level": "debug", "x": 1}
    assert parse_json_line(json.dumps(line)) == (
        logging.DEBUG,
        "m",
        {"event": "e", "severity": "error", "x": 1},
    )


@pytest.mark.parametrize(
    "key",
    [
        "log.logger",
        "@module",
        "@caller",
        "@timestamp",
        "logger.name",
        "error.type",
        "error.message",
        "error.stack_trace",
        "exception.type",
        "Exception.Message",
        "exception.stacktrace",
        "code.function",
        "code.lineno",
        "thread.name",
        "thread.id",
        "process.pid",
        "process.executable.name",
        "pid",
        "exc_type",
        "Exc_Type",
        "taskName",
        "asctime",
        "name",
        "levelno",
        "plugin-id",
        "plugin_\u0456d",  # a Cyrillic i
        "lo\u200bgger",  # a zero-width space
        "isoplug_report",
        "isoplug.plugin.id",
        "LOG.LEVEL",
    ],
)
def test_reserved_however_spelt(key: str) -> None:
    assert reserved_name(key)


@pytest.mark.parametrize(
    "key",
    ["user_id", "order.total", "code", "error", "error_code", "process_time", "log_file", "data"],
)
def test_ordinary_names_keep_theirs(key: str) -> None:
    assert not reserved_name(key)
    assert not reserved_field(key, 1)


def test_a_map_is_judged_by_the_names_consumers_flatten_it_into() -> None:
    assert reserved_field("error", {"type": "KeyboardInterrupt"})
    assert reserved_field("plugin", {"id": "bank"})
    assert reserved_field("data", {"log": {"level": "critical"}}) is False
    assert not reserved_field("error", {})
    assert not reserved_field("order", {"total": 3})


def test_a_list_of_maps_is_judged_as_each_map_is() -> None:
    """ECS and Elasticsearch flatten an array of objects as an object."""
    assert reserved_field("error", [{"type": "KeyboardInterrupt"}])
    assert reserved_field("code", [1, {"function": "host_main"}])
    assert reserved_field("plugin", [{"name": "x"}, {"id": "bank"}])
    assert reserved_field("log", [{"level": {}}])  # under a namespace: any map
    assert reserved_field("user", {"log": [{"level": "critical"}]}) is False
    assert reserved_field("plugin", {"ids": [{"x": 1}], "other": [{"id": 2}]}) is False
    assert not reserved_field("error", [])
    assert not reserved_field("error", [{}])
    assert not reserved_field("error", ["KeyboardInterrupt"])
    assert not reserved_field("orders", [{"id": 1, "status": "paid"}])


@pytest.mark.parametrize(
    "key",
    [
        "le\u0475el",  # an Izhitsa for the v
        "l\u0585gger",  # an Armenian o
        "pl\u1d1cgin_id",  # a Latin small capital U
        "run\u0578er_pid",  # an Armenian n
        "p\u026ad",  # a Latin small capital I
        "\u0565rror.type",  # an Armenian e-like letter, under a namespace
        "exc\u10e7type",  # a Georgian letter that spells no word: it separates two
        "thr\u0511ad.name",  # a Cyrillic letter beyond the table
        "m\u0455\u0261",  # letters the table reads already
        "isopl\u028ag_report",
    ],
)
def test_a_letter_of_another_script_reads_as_the_reserved_word_it_spells(key: str) -> None:
    assert reserved_name(key), key


@pytest.mark.parametrize(
    "key",
    [
        "gr\u00f6\u00dfe",  # German
        "\u540d\u524d",  # Japanese
        "\u0438\u043c\u044f",  # Russian: no Latin letter, so no look-alike of "msg"
        "\u0434\u0430\u0442\u0430",
        "s\u00f8n",  # Danish
        "wy\u0142\u0105cz",  # Polish
        "caf\u00e9",
        "\u00e6ble",
        "user_\u540d",
        "\u03c0\u03b9\u03b4",  # Greek: the table reads only the iota as Latin
    ],
)
def test_words_of_other_languages_keep_their_names(key: str) -> None:
    assert not reserved_name(key), key
    assert not reserved_field(key, {"x": 1})
