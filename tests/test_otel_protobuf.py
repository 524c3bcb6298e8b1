"""isoplug writes OTLP protobuf bytes itself: the official generated classes must read them
back as written, whatever the values (property tests), and a record's mapping must be the one
the OpenTelemetry SDK's own handler makes."""

from __future__ import annotations

import logging
import math
import sys
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValueList
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord
from opentelemetry.sdk._logs._internal import std_to_otel

from isoplug.otel import protobuf
from isoplug.otel.logs import encode_request
from isoplug.otel.records import RecordEncoder, severity_number
from isoplug.testing.otlp import any_value


def _decoded(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [_decoded(v) for v in value.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: _decoded(kv.value) for kv in value.kvlist_value.values}
    return getattr(value, kind)


def _expected(value: Any) -> Any:
    """What a value becomes on the wire: tuples as lists, ints past 64 bits as text."""
    if isinstance(value, bool) or value is None or isinstance(value, float | str | bytes):
        return value
    if isinstance(value, int):
        return value if -(2**63) <= value < 2**63 else str(value)
    if isinstance(value, dict):
        return {str(k): _expected(v) for k, v in value.items()}
    return [_expected(v) for v in value]


scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False)
    | st.text()
    | st.binary(max_size=300)
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=5)
        | st.tuples(inner, inner)
        | st.dictionaries(st.text(max_size=10), inner, max_size=5)
    ),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(values)
def test_any_value_decodes_as_written(value: Any) -> None:
    decoded = AnyValue.FromString(protobuf.any_value(value))
    assert _decoded(decoded) == _expected(value)


@settings(max_examples=100, deadline=None)
@given(st.dictionaries(st.text(max_size=20), values, max_size=8))
def test_key_values_decode_as_written(attributes: dict[str, Any]) -> None:
    decoded = KeyValueList.FromString(protobuf.key_values(attributes))
    assert {kv.key: _decoded(kv.value) for kv in decoded.values} == _expected(attributes)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=30), values)
def test_a_record_attribute_decodes_as_written(key: str, value: Any) -> None:
    (decoded,) = LogRecord.FromString(protobuf.attribute(key, value)).attributes
    assert (decoded.key, _decoded(decoded.value)) == (key, _expected(value))


def test_text_python_cannot_encode_is_escaped() -> None:
    decoded = AnyValue.FromString(protobuf.any_value("lone \udc80 surrogate"))
    assert decoded.string_value == "lone \\udc80 surrogate"


def test_deep_and_odd_values_do_not_break_encoding() -> None:
    deep: list[Any] = []
    node = deep
    for _ in range(50):
        node.append([])
        node = node[0]
    cyclic: dict[str, Any] = {}
    cyclic["self"] = cyclic

    class Broken:
        def __str__(self) -> str:
            raise RuntimeError("no")

    for value in (deep, cyclic, Broken(), math.inf, object()):
        AnyValue.FromString(protobuf.any_value(value))  # decodes: nothing raised


def test_keys_with_the_same_text_stay_unique() -> None:
    """OTLP allows one value per key: a later key whose text an earlier one has is numbered."""
    values = {1: "int-one", "1": "str-one", "1 (2)": "taken", 1.0j: "complex"}
    decoded = KeyValueList.FromString(protobuf.key_values(values))
    keys = [kv.key for kv in decoded.values]
    assert keys == ["1", "1 (3)", "1 (2)", "1j"]
    again = KeyValueList.FromString(protobuf.key_values({True: "a", "True": "b", "x": "c"}))
    assert [kv.key for kv in again.values] == ["True", "True (2)", "x"]


def test_severity_numbers_are_the_sdks() -> None:
    for level in range(10, 60):
        assert severity_number(level) == std_to_otel(level).value, level
    assert severity_number(5) == 1  # loguru's TRACE: TRACE, where the SDK says UNSPECIFIED


def test_a_request_decodes_with_resources_scopes_and_records() -> None:
    encoder = RecordEncoder(current_trace=None)
    logger = logging.getLogger("plugin.p.work")
    records = []
    for n in range(3):
        record = logger.makeRecord(
            logger.name, logging.INFO, "/p/work.py", 10 + n, "item %d of %s", (n, "x"), None,
            "handle", {"plugin_id": "p", "runner_pid": 4242, "seq": n + 1, "size": n * 1.5},
        )  # fmt: skip
        records.append(encoder.encode(record, True))
    try:
        raise KeyError("missing")
    except KeyError:
        failing = logger.makeRecord(
            "isoplug.host", logging.ERROR, "/h.py", 1, "failed", (), sys.exc_info(), "f"
        )
    host = encoder.encode(failing, False)
    resources: dict[Any, dict[str, str]] = {
        ("p", 4242, 4242): {"port": "p"},
        None: {"service.name": "s"},
    }
    payload = encode_request(
        {("p", 4242, 4242): {"plugin.p.work": records}, None: {"isoplug.host": [host]}},
        lambda key: protobuf.encoded_resource(resources[key]),
    )
    request = ExportLogsServiceRequest.FromString(payload)
    plugin, own = request.resource_logs
    assert {kv.key: _decoded(kv.value) for kv in plugin.resource.attributes} == {"port": "p"}
    (scope,) = plugin.scope_logs
    assert scope.scope.name == "plugin.p.work"
    bodies = [r.body.string_value for r in scope.log_records]
    assert bodies == ["item 0 of x", "item 1 of x", "item 2 of x"]
    last = {kv.key: _decoded(kv.value) for kv in scope.log_records[2].attributes}
    assert last["isoplug.log.seq"] == 3
    assert last["size"] == 3.0
    assert last["code.line.number"] == 12
    (error,) = own.scope_logs[0].log_records
    attributes = {kv.key: _decoded(kv.value) for kv in error.attributes}
    assert attributes["exception.type"] == "KeyError"
    assert attributes["exception.message"] == "'missing'"
    assert attributes["exception.stacktrace"].startswith("Traceback (most recent call last):")
    assert error.severity_number == 17


def test_a_builtin_exception_is_named_alike_for_the_plugins_and_the_hosts() -> None:
    """``exception.type`` of a builtin is its bare name whoever raised it (the SDK's own handler
    and tracebacks say ``KeyError``); any other type keeps its module."""
    encoder = RecordEncoder(current_trace=None)
    logger = logging.getLogger("plugin.p")
    named = []
    try:
        raise KeyError("k")
    except KeyError:
        exc_info = sys.exc_info()
    for exc_type in ("builtins.KeyError", "shop.errors.OutOfStock"):
        record = logger.makeRecord(
            "plugin.p", logging.ERROR, "f", 1, "m", (), exc_info, "", {"exc_type": exc_type}
        )
        payload = encode_request(
            {("p", 1, 1): {"plugin.p": [encoder.encode(record, True)]}},
            lambda key: protobuf.encoded_resource({}),
        )
        (resource,) = ExportLogsServiceRequest.FromString(payload).resource_logs
        (line,) = resource.scope_logs[0].log_records
        named.append({kv.key: _decoded(kv.value) for kv in line.attributes}["exception.type"])
    assert named == ["KeyError", "shop.errors.OutOfStock"]


def test_a_line_read_from_a_stream_has_no_function_nor_line_number() -> None:
    """A line the host read from a runner's stderr: its place is the stream; no empty
    function name nor line 0 for a backend to show as a place in code."""
    encoder = RecordEncoder(current_trace=None)
    record = logging.getLogger("plugin.p.stderr").makeRecord(
        "plugin.p.stderr", logging.WARNING, "<stderr>", 0, "a line", (), None, ""
    )
    payload = encode_request(
        {("p", 1, 1): {"plugin.p.stderr": [encoder.encode(record, True)]}},
        lambda key: protobuf.encoded_resource({}),
    )
    (resource,) = ExportLogsServiceRequest.FromString(payload).resource_logs
    (line,) = resource.scope_logs[0].log_records
    attributes = {kv.key: _decoded(kv.value) for kv in line.attributes}
    assert attributes["code.file.path"] == "<stderr>"
    assert "code.function.name" not in attributes and "code.line.number" not in attributes


def test_the_receivers_json_reading_matches() -> None:
    assert any_value({"kvlistValue": {"values": [{"key": "a", "value": {"intValue": "5"}}]}}) == {
        "a": 5
    }
