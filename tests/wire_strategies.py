"""Hypothesis strategies for the wire tests: every message type, and hostile byte streams.

Shared by ``test_wire_codec.py``, ``test_wire_framing.py`` and ``test_wire_connection.py``.
"""

from __future__ import annotations

import itertools
from typing import Any

import msgspec
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

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
    Reject,
    Request,
    Response,
    Welcome,
    encode_message,
    encode_value,
)
from isoplug.wire.framing import HEADER_SIZE
from isoplug.wire.logframes import log_batch
from isoplug.wire.messages import ExceptionData, FrameData

#: Settings for the property tests: fast, reproducible from run to run, no per-example deadline
#: (a cold first example can be slow on a loaded machine).
PROPERTY = settings(
    max_examples=100,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)

#: Every tag of the protocol, as a peer would put it first in a message array.
TAGS = ("hello", "welcome", "reject", "req", "res", "err", "evt", "cancel", "bye", "logs")

#: The integers msgpack can carry (and hence an ``int`` field).
ints = st.integers(min_value=-(2**63), max_value=2**64 - 1)
texts = st.text(max_size=12)
floats = st.floats(allow_nan=False)
optional_ints = st.none() | ints
optional_texts = st.none() | texts

#: Values whose msgpack round trip gives back an equal value (lists, not tuples; no NaN).
values: st.SearchStrategy[Any] = st.recursive(
    st.none() | st.booleans() | ints | floats | texts | st.binary(max_size=12),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(texts, children, max_size=4),
    max_leaves=8,
)
raws: st.SearchStrategy[msgspec.Raw] = values.map(encode_value)
value_dicts = st.dictionaries(texts, values, max_size=3)

frames = st.builds(
    FrameData,
    filename=texts,
    lineno=optional_ints,
    name=texts,
    line=texts,
    end_lineno=optional_ints,
    colno=optional_ints,
    end_colno=optional_ints,
)


def _exception(**links: st.SearchStrategy[Any]) -> st.SearchStrategy[ExceptionData]:
    return st.builds(
        ExceptionData,
        type_name=texts,
        module=texts,
        message=texts,
        frames=st.lists(frames, max_size=3),
        notes=st.lists(texts, max_size=2),
        suppress_context=st.booleans(),
        **links,
    )


#: Any exception a sender can describe: chains, notes and group members, a few levels deep.
exceptions: st.SearchStrategy[ExceptionData] = st.recursive(
    _exception(),
    lambda children: _exception(
        cause=st.none() | children,
        context=st.none() | children,
        members=st.lists(children, max_size=2),
    ),
    max_leaves=4,
)

#: Any log record, every field drawn (keyword arguments: the strategy ignores field order).
log_records = st.builds(
    LogRecordData,
    name=texts,
    levelno=ints,
    levelname=texts,
    created=floats,
    pathname=texts,
    filename=texts,
    module=texts,
    lineno=ints,
    func_name=texts,
    thread=optional_ints,
    thread_name=optional_texts,
    process=optional_ints,
    process_name=optional_texts,
    seq=ints,
    message=texts,
    task_name=optional_texts,
    exc_text=optional_texts,
    exc_type=optional_texts,
    exc_message=optional_texts,
    stack_info=optional_texts,
    extra=value_dicts,
    event=st.none() | value_dicts,
    event_method=optional_texts,
    template=optional_texts,
    exception=st.none() | exceptions,
)

#: Drop totals of a log batch: level number to count.
drop_counts = st.dictionaries(ints, ints, max_size=3)

#: A log batch of up to three records, built the way a sender holding records builds it.
log_batches: st.SearchStrategy[LogBatch] = st.builds(
    log_batch, st.lists(log_records, max_size=3), drop_counts
)

error_infos = st.builds(ErrorInfo, code=texts, type=texts, message=texts, traceback=texts)

#: Any valid message of any type.
messages: st.SearchStrategy[Message] = st.one_of(
    st.builds(
        Hello, min_version=ints, max_version=ints, token=texts, role=texts, name=texts, pid=ints
    ),
    st.builds(Welcome, version=ints, name=texts, pid=ints),
    st.builds(Reject, code=texts, reason=texts),
    st.builds(Request, id=ints, method=texts, params=raws),
    st.builds(Response, id=ints, result=raws),
    st.builds(ErrorResponse, id=ints, error=error_infos),
    st.builds(Event, method=texts, params=raws),
    st.builds(Cancel, id=ints),
    st.builds(Goodbye, reason=texts),
    log_batches,
)


def frame(payload: bytes) -> bytes:
    """Wrap ``payload`` in a frame with a correct length prefix."""
    return len(payload).to_bytes(HEADER_SIZE, "big") + payload


@st.composite
def mutated_payloads(draw: st.DrawFn) -> bytes:
    """The encoding of a valid message with a few bytes overwritten, maybe cut short."""
    payload = bytearray(encode_message(draw(messages)))
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        payload[draw(st.integers(0, len(payload) - 1))] = draw(st.integers(0, 255))
    if draw(st.booleans()):
        del payload[draw(st.integers(0, len(payload))) :]
    return bytes(payload)


#: A msgpack array that looks like a message (a tag, or some other string, then any fields).
message_shaped_payloads = st.builds(
    lambda tag, fields: msgspec.msgpack.encode([tag, *fields]),
    st.sampled_from(TAGS) | texts,
    st.lists(values, max_size=6),
)

#: Frame payloads a broken or hostile peer might send: valid, damaged, or anything at all.
payloads = st.one_of(
    messages.map(encode_message),
    mutated_payloads(),
    message_shaped_payloads,
    st.binary(max_size=32),
)

#: Pieces of a hostile stream: mostly well-framed payloads, sometimes framing garbage.
stream_pieces = st.one_of(payloads.map(frame), payloads.map(frame), st.binary(max_size=8))


@st.composite
def splits(draw: st.DrawFn, data: bytes) -> list[bytes]:
    """``data`` cut into consecutive chunks at arbitrary positions (empty chunks included)."""
    cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=8)))
    bounds = [0, *cuts, len(data)]
    return [data[start:end] for start, end in itertools.pairwise(bounds)]
