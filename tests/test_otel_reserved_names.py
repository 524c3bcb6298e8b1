"""The rule for extras that may not keep their names in an OpenTelemetry export
(:mod:`isoplug.otel.reserved_names`), and the encoder applying it to a record."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from opentelemetry.proto.logs.v1.logs_pb2 import ScopeLogs

from isoplug.otel.records import OWN_ATTRIBUTES, RecordEncoder
from isoplug.otel.reserved_names import ReservedNames, words

RESOURCE = {"service.name", "isoplug.plugin.id", "process.pid", "team", "k8s.pod.name"}


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("isoplug", {"plugin": {"id": "victim"}}),
        ("service", {"name": "evil"}),
        ("code", {"file": {"path": "/etc/shadow"}}),
        ("", {"isoplug": {"x": 1}}),
        # Flattened by Elasticsearch and the like as the maps in it are: service.name.
        ("service", [{"name": "evil"}]),
        ("host", (1, [{"name": "evil"}])),
        ("", [{"isoplug": {"x": 1}}]),
        ("isoplug_plugin_id", 1),
        ("service_name", 1),
        ("Service.Name", 1),
        ("ISOPLUG.LOG.SEQ", 1),
        ("isoplug\u200b.plugin.id", 1),
        ("\u0456soplug.plugin.id", 1),
        ("\uff49soplug.x", 1),
        (" service.name", 1),
        ("service.version", 1),
        ("host.name", 1),
        ("deployment.environment", 1),
        ("otel.scope.name", 1),
        ("code.lineno", 1),
        ("k8s_pod_uid", 1),
        ("Team", 1),
        ("log_level", 1),
    ],
)
def test_reserved_however_spelt_or_nested(key: str, value: Any) -> None:
    assert ReservedNames(OWN_ATTRIBUTES | RESOURCE).reserved(key, value)


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("user_id", 7),
        ("request", {"id": "r1", "code": 404}),
        ("order.total", 1.5),
        ("code", 404),
        ("host", "db1"),
        ("service", "payments"),
        ("service", ["payments", "billing"]),
        ("items", [{"id": 1, "code": 404}]),
        ("processing_time", 0.5),
        ("hostname", "db1"),
        ("team_size", 3),
        ("\u043a\u043e\u0434", 1),
    ],
)
def test_ordinary_extras_keep_their_names(key: str, value: Any) -> None:
    assert not ReservedNames(OWN_ATTRIBUTES | RESOURCE).reserved(key, value)


def test_words_drop_invisible_characters_and_case() -> None:
    assert words("  ISOPLUG\u200b.Plugin_id ") == ("isoplug", "plugin", "id")
    assert words("\u00e9v\u00e9nement") == ("evenement",)


def test_the_encoder_renames_and_keeps_the_hosts_markers() -> None:
    encoder = RecordEncoder(current_trace=None, resource_names=RESOURCE)
    record = logging.LogRecord("plugin.x", 20, "/p.py", 1, "m", (), None)
    record.__dict__.update(
        {
            "isoplug_report": True,
            "service_name": "evil",
            "user_id": 7,
            1: "int-one",  # type: ignore[dict-item]  # what extra={1: ...} does
            "extra_1": "taken",
        }
    )
    # encode() gives a ScopeLogs.log_records entry, its field tag included.
    (decoded,) = ScopeLogs.FromString(encoder.encode(record, plugin_record=True)).log_records
    attributes: dict[str, Any] = {}
    for kv in decoded.attributes:
        assert kv.key not in attributes, kv.key
        kind = kv.value.WhichOneof("value")
        attributes[kv.key] = getattr(kv.value, kind) if kind else None
    assert attributes["isoplug_report"] is True
    assert attributes["extra_service_name"] == "evil"
    assert "service_name" not in attributes
    assert attributes["user_id"] == 7
    assert attributes["extra_1"] == "taken"
    assert attributes["extra_extra_1"] == "int-one"
