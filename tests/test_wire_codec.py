"""The codec: messages and values to msgpack and back, and what it does with bad bytes."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from isoplug.errors import LocalProtocolError, RemoteProtocolError
from isoplug.wire import (
    Cancel,
    ErrorInfo,
    ErrorResponse,
    Event,
    Goodbye,
    Hello,
    LogBatch,
    LogRecordData,
    Message,
    Request,
    Response,
    decode_message,
    decode_value,
    encode_message,
    encode_value,
)
from tests.wire_strategies import PROPERTY, messages, values

#: Deeper than any interpreter's recursion limit allows a recursive decoder to go.
TOO_DEEP = 100_000


def fields_of(struct: msgspec.Struct) -> list[msgspec.Raw]:
    """The positional fields of an encoded struct (a message: tag first), each still encoded."""
    return msgspec.msgpack.decode(msgspec.msgpack.encode(struct), type=list[msgspec.Raw])


def default_of(field: msgspec.structs.FieldInfo) -> Any:
    """The value a field takes when a message leaves it out."""
    if field.default is not msgspec.NODEFAULT:
        return field.default
    return field.default_factory()


# -- round trips ------------------------------------------------------------------------------


@PROPERTY
@given(message=messages)
def test_every_message_survives_encoding_and_decoding(message: Message) -> None:
    """decode_message(encode_message(m)) equals m and has its class, from bytes or a memoryview."""
    payload = encode_message(message)
    decoded = decode_message(payload)
    assert type(decoded) is type(message)
    assert decoded == message
    assert decode_message(memoryview(payload)) == message


@PROPERTY
@given(value=values)
def test_values_survive_encode_value_and_decode_value(value: Any) -> None:
    """decode_value(encode_value(v)) equals v for every msgpack-able value."""
    assert decode_value(encode_value(value)) == value


def test_decode_value_validates_against_the_requested_type() -> None:
    """decode_value returns a value of the requested type, or raises msgspec.ValidationError."""
    raw = encode_value({"a": 1, "b": 2})
    assert decode_value(raw, dict[str, int]) == {"a": 1, "b": 2}
    with pytest.raises(msgspec.ValidationError):
        decode_value(raw, list[int])


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"\xc1", id="not-msgpack"),
        pytest.param(b"\xa1\xff", id="invalid-utf8"),
        pytest.param(b"\x91" * TOO_DEEP + b"\xc0", id="nested-too-deep"),
    ],
)
def test_decode_value_reports_undecodable_bytes_as_decode_error(data: bytes) -> None:
    """Bytes decode_value cannot decode always raise msgspec.DecodeError, whatever the cause."""
    with pytest.raises(msgspec.DecodeError):
        decode_value(msgspec.Raw(data))


def test_a_message_without_params_carries_nil() -> None:
    """Params and results left out are an encoded nil, which decodes to None."""
    assert decode_value(Request(id=1, method="m").params) is None
    assert decode_value(Response(id=1).result) is None
    assert decode_value(Event(method="m").params) is None


# -- encoding mistakes are ours -----------------------------------------------------------------


def _nested(depth: int) -> list[Any]:
    value: list[Any] = []
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.parametrize(
    ("value", "type_name"),
    [
        pytest.param(object(), "object", id="unsupported-type"),
        pytest.param(2**64, "int", id="int-too-big"),
        pytest.param(-(2**63) - 1, "int", id="int-too-small"),
        pytest.param("\ud800", "str", id="lone-surrogate"),
        pytest.param({"key": object()}, "dict", id="unsupported-inside-dict"),
        pytest.param(_nested(TOO_DEEP), "list", id="nested-too-deep"),
    ],
)
def test_encode_value_refuses_what_msgpack_cannot_carry(value: Any, type_name: str) -> None:
    """A value msgpack cannot carry raises LocalProtocolError naming the value's type."""
    with pytest.raises(LocalProtocolError, match=f"cannot send a value of type {type_name}"):
        encode_value(value)


# -- decoding mistakes are the peer's -----------------------------------------------------------


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"\xc1", id="reserved-byte"),
        pytest.param(b"\x92\xa3bye", id="truncated"),
        pytest.param(encode_message(Goodbye(reason="x")) + b"\xc0", id="trailing-bytes"),
        pytest.param(b"GET / HTTP/1.1\r\n", id="http"),
    ],
)
def test_bytes_that_are_not_one_msgpack_value_are_a_remote_protocol_error(payload: bytes) -> None:
    """A payload that is not exactly one msgpack value raises a readable RemoteProtocolError."""
    with pytest.raises(RemoteProtocolError, match=r"^malformed message: \S") as caught:
        decode_message(payload)
    assert "\n" not in str(caught.value)
    assert isinstance(caught.value.__cause__, msgspec.DecodeError)


@pytest.mark.parametrize(
    "value",
    [
        pytest.param(["nope", 1], id="unknown-tag"),
        pytest.param([7, 1], id="tag-not-a-string"),
        pytest.param([], id="empty-array"),
        pytest.param({"t": "cancel", "id": 1}, id="map-instead-of-array"),
        pytest.param("bye", id="bare-string"),
        pytest.param(["cancel", "1"], id="string-for-int"),
        pytest.param(["cancel", 1.5], id="float-for-int"),
        pytest.param(["cancel", None], id="nil-for-int"),
        pytest.param(["cancel"], id="required-field-missing"),
        pytest.param(["req", 1, 2], id="int-for-string"),
        pytest.param(["err", 1, ["code", "type"]], id="nested-struct-too-short"),
        pytest.param(["err", 1, "boom"], id="string-for-struct"),
        pytest.param(["logs", [], "not drop counts"], id="bad-log-drop-counts"),
        pytest.param(["logs", [], {"10": 1}], id="string-key-for-int-key"),
        pytest.param(["bye", {"reason": "x"}], id="map-for-string"),
    ],
)
def test_msgpack_of_the_wrong_shape_is_a_remote_protocol_error(value: Any) -> None:
    """Valid msgpack that is not a known message with fields of the right types is rejected."""
    with pytest.raises(RemoteProtocolError, match=r"^malformed message: ") as caught:
        decode_message(msgspec.msgpack.encode(value))
    assert isinstance(caught.value.__cause__, msgspec.ValidationError)


def test_the_error_for_a_wrong_field_says_where_it_is() -> None:
    """The error for a field of the wrong type names the expected type and the field's position."""
    with pytest.raises(RemoteProtocolError, match=r"Expected `int`, got `str` - at `\$\[1\]`"):
        decode_message(msgspec.msgpack.encode(["cancel", "1"]))


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param(b"\x92\xa3bye\xa1\xff", id="in-a-field"),
        pytest.param(b"\x92\xa3b\xffe\xa0", id="in-the-tag"),
        pytest.param(b"\x92\xa3bye\xa3\xed\xa0\x80", id="encoded-surrogate"),
    ],
)
def test_strings_that_are_not_utf8_are_a_remote_protocol_error(payload: bytes) -> None:
    """A msgpack string holding invalid UTF-8 is the peer's protocol error, not a crash."""
    with pytest.raises(RemoteProtocolError, match="malformed message"):
        decode_message(payload)


def test_params_nested_too_deeply_are_a_remote_protocol_error() -> None:
    """Params nested deeper than the decoder can follow are the peer's protocol error."""
    payload = b"\x94\xa3req\x01\xa1m" + b"\x91" * TOO_DEEP + b"\xc0"
    with pytest.raises(RemoteProtocolError, match="malformed message"):
        decode_message(payload)


def test_log_extras_nested_too_deeply_are_a_remote_protocol_error() -> None:
    """A log record whose extra attributes nest too deeply is the peer's protocol error."""
    record = LogRecordData(name="n", levelno=20, levelname="INFO", created=0, seq=1, message="m")
    extra_index = [field.name for field in msgspec.structs.fields(record)].index("extra")
    before_extra = fields_of(record)[:extra_index]
    # The record is the last thing encoded, so the nil of "deep" is the payload's last byte.
    shallow = msgspec.msgpack.encode(["logs", [[*before_extra, {"deep": None}]]])
    payload = shallow[:-1] + b"\x91" * TOO_DEEP + b"\xc0"
    with pytest.raises(RemoteProtocolError, match="malformed message"):
        decode_message(payload)


# -- schema evolution ---------------------------------------------------------------------------


class NewerHello(Hello, frozen=True, tag="hello"):
    """A hello from a future version that added a trailing field."""

    capabilities: list[str] = msgspec.field(default_factory=list)


class NewerRequest(Request, frozen=True, tag="req"):
    """A request from a future version that added a trailing deadline."""

    deadline: float = 0.0


class NewerErrorInfo(ErrorInfo, frozen=True):
    """Error details from a future version that added the remote exception's notes."""

    notes: list[str] = msgspec.field(default_factory=list)


class NewerErrorResponse(msgspec.Struct, frozen=True, array_like=True, tag_field="t", tag="err"):
    """An error response from a future version: newer error details plus a trailing field."""

    id: int
    error: NewerErrorInfo
    retry_after: float = 0.0


def test_a_newer_peers_hello_with_an_extra_trailing_field_decodes() -> None:
    """A hello with a trailing field this version does not know decodes, the field ignored."""
    newer = NewerHello(min_version=1, max_version=3, token="t", name="r", capabilities=["zstd"])
    decoded = decode_message(msgspec.msgpack.encode(newer))
    assert decoded == Hello(min_version=1, max_version=3, token="t", name="r")
    assert type(decoded) is Hello


def test_a_newer_peers_request_with_an_extra_trailing_field_decodes() -> None:
    """A request with a trailing field this version does not know decodes, the field ignored."""
    newer = NewerRequest(id=4, method="m", params=encode_value([1, 2]), deadline=1.5)
    decoded = decode_message(msgspec.msgpack.encode(newer))
    assert decoded == Request(id=4, method="m", params=encode_value([1, 2]))


def test_extra_trailing_fields_in_a_nested_struct_are_ignored_too() -> None:
    """A nested struct (ErrorInfo) with an unknown trailing field decodes like an older one."""
    newer = NewerErrorResponse(
        id=2, error=NewerErrorInfo("cancelled", "t", "m", "tb", notes=["n"]), retry_after=3.0
    )
    decoded = decode_message(msgspec.msgpack.encode(newer))
    assert decoded == ErrorResponse(id=2, error=ErrorInfo("cancelled", "t", "m", "tb"))


@PROPERTY
@given(message=messages, extra=st.lists(values, min_size=1, max_size=3))
def test_any_message_with_extra_trailing_fields_decodes_to_the_same_message(
    message: Message, extra: list[Any]
) -> None:
    """Any message followed by extra trailing fields of any value decodes as if they were absent."""
    payload = msgspec.msgpack.encode([*fields_of(message), *extra])
    assert decode_message(payload) == message


def test_an_older_peers_hello_gets_the_defaults_of_the_missing_trailing_fields() -> None:
    """A hello carrying only its required fields decodes with the defaults of the rest."""
    decoded = decode_message(msgspec.msgpack.encode(["hello", 1, 1, "token"]))
    assert decoded == Hello(min_version=1, max_version=1, token="token")
    assert isinstance(decoded, Hello)
    assert (decoded.role, decoded.name, decoded.pid) == ("control", "", 0)


def test_an_older_peers_log_batch_gets_empty_extras_and_drop_counts() -> None:
    """Log records and batches carrying only required fields decode with their defaults."""
    record: list[Any] = ["name", 20, "INFO", 1.5]
    decoded = decode_message(msgspec.msgpack.encode(["logs", [record]]))
    assert isinstance(decoded, LogBatch)
    assert decoded.dropped == {}
    (only,) = msgspec.msgpack.decode(decoded.records, type=list[LogRecordData])
    assert only == LogRecordData(name="name", levelno=20, levelname="INFO", created=1.5)
    assert (only.extra, only.event, only.thread, only.lineno) == ({}, None, None, 0)
    assert (only.seq, only.message, only.event_method) == (0, "", None)


def test_a_malformed_log_record_is_left_for_the_receiver_to_reject() -> None:
    """A batch whose record has the wrong shape still decodes: its records stay raw bytes."""
    bad_record = ["not", "a", "record"]
    decoded = decode_message(msgspec.msgpack.encode(["logs", [bad_record], {10: 1}]))
    assert isinstance(decoded, LogBatch)
    assert decoded.dropped == {10: 1}
    assert msgspec.msgpack.decode(decoded.records) == [bad_record]
    with pytest.raises(msgspec.ValidationError):
        msgspec.msgpack.decode(decoded.records, type=list[LogRecordData])


@PROPERTY
@given(message=messages, data=st.data())
def test_any_message_missing_trailing_defaulted_fields_decodes_to_their_defaults(
    message: Message, data: st.DataObject
) -> None:
    """Leaving off any number of trailing fields that have defaults decodes them as defaults."""
    fields = msgspec.structs.fields(message)
    required = sum(field.required for field in fields)
    kept = data.draw(st.integers(required, len(fields)), label="fields kept")
    payload = msgspec.msgpack.encode(fields_of(message)[: 1 + kept])
    expected = msgspec.structs.replace(
        message, **{field.name: default_of(field) for field in fields[kept:]}
    )
    assert decode_message(payload) == expected


def test_messages_are_positional_arrays_led_by_their_tag() -> None:
    """On the wire a message is a msgpack array: its tag, then its fields in declared order."""
    assert encode_message(Cancel(id=1)) == b"\x92\xa6cancel\x01"
    assert encode_message(Goodbye()) == b"\x92\xa3bye\xa0"
