"""Units of the log pipeline: batch frames, record capture, text sanitizing, the token bucket."""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Callable
from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from isoplug.errors import LocalProtocolError
from isoplug.logs import DropReason, LogMetrics, capture
from isoplug.logs.capture import MAX_FIELD_CHARS, capture_record, encode_line, line_site
from isoplug.logs.ratelimit import TokenBucket
from isoplug.wire import DEFAULT_MAX_FRAME_SIZE, LogBatch, LogRecordData, decode_message
from isoplug.wire.framing import HEADER_SIZE, encode_frame
from isoplug.wire.logframes import log_batch, log_batch_frame
from tests.log_helpers import record_decoder
from tests.record_waiter import RecordWaiter
from tests.wire_strategies import PROPERTY, drop_counts, log_records

records_decoder = msgspec.msgpack.Decoder(list[LogRecordData])

# -- log batch frames ---------------------------------------------------------------------------

#: The smallest record there is: only the required fields, all empty.
TINY = LogRecordData(name="", levelno=0, levelname="", created=0.0)


def encoded(records: list[LogRecordData]) -> list[bytes]:
    """Each record encoded on its own, as a sender encodes them when they are emitted."""
    return [msgspec.msgpack.encode(record) for record in records]


@PROPERTY
@given(records=st.lists(log_records, max_size=4), dropped=drop_counts)
def test_log_batch_frame_is_byte_identical_to_encoding_a_log_batch(
    records: list[LogRecordData], dropped: dict[int, int]
) -> None:
    """log_batch_frame of pre-encoded records gives exactly the bytes of encode_frame(log_batch)."""
    frame = log_batch_frame(encoded(records), dropped, DEFAULT_MAX_FRAME_SIZE)
    assert frame == encode_frame(log_batch(records, dropped))


@pytest.mark.parametrize("count", [0, 1, 15, 16, 17, 65535, 65536])
def test_log_batch_frame_matches_at_every_array_header_size(count: int) -> None:
    """Record counts at the msgpack fixarray, array16 and array32 boundaries frame identically."""
    dropped = {logging.DEBUG: 3, logging.NOTSET: 1}
    frame = log_batch_frame([msgspec.msgpack.encode(TINY)] * count, dropped, DEFAULT_MAX_FRAME_SIZE)
    assert frame == encode_frame(log_batch([TINY] * count, dropped))
    batch = decode_message(frame[HEADER_SIZE:])
    assert isinstance(batch, LogBatch)
    assert batch.dropped == dropped
    assert records_decoder.decode(batch.records) == [TINY] * count


def test_log_batch_without_drop_counts_sends_an_empty_map() -> None:
    """log_batch(records) with no drop totals carries an empty map, like an empty dict would."""
    assert log_batch([TINY]) == log_batch([TINY], {})
    assert log_batch([TINY]).dropped == {}


def test_log_batch_frame_over_the_frame_limit_is_a_local_protocol_error() -> None:
    """A batch one byte over max_frame_size raises LocalProtocolError; at the limit it is sent."""
    records = [msgspec.msgpack.encode(TINY)] * 100
    frame = log_batch_frame(records, {}, DEFAULT_MAX_FRAME_SIZE)
    size = len(frame) - HEADER_SIZE
    assert log_batch_frame(records, {}, size) == frame
    with pytest.raises(LocalProtocolError, match=f"{size} bytes exceeds the frame limit"):
        log_batch_frame(records, {}, size - 1)
    # encode_frame draws the line at the same place.
    assert encode_frame(log_batch([TINY] * 100), size) == frame
    with pytest.raises(LocalProtocolError):
        encode_frame(log_batch([TINY] * 100), size - 1)


# -- capturing records --------------------------------------------------------------------------


class Opaque:
    """A value msgpack cannot carry, with a fixed repr."""

    def __repr__(self) -> str:
        return "<Opaque 42>"


class BadRepr:
    """A value msgpack cannot carry whose repr raises."""

    def __repr__(self) -> str:
        raise RuntimeError("no repr for you")


class Unprintable(Exception):
    """An exception whose ``__str__`` raises."""

    def __str__(self) -> str:
        raise RuntimeError("no str for you")


@pytest.fixture
def collector() -> RecordWaiter:
    """A fresh collector."""
    return RecordWaiter()


@pytest.fixture
def log(collector: RecordWaiter) -> logging.Logger:
    """A logger of its own, outside the logging tree, whose records only ``collector`` sees.

    (Being outside the tree keeps pytest's capture handlers, which format every record and
    would trip over deliberately broken ones, away from it.)
    """
    logger = logging.Logger("test.capture", logging.DEBUG)
    logger.addHandler(collector)
    return logger


def captured(collector: RecordWaiter, seq: int = 1) -> tuple[logging.LogRecord, LogRecordData]:
    """The single record collected so far, and what capture_record made of it."""
    (record,) = collector.records
    return record, record_decoder.decode(capture_record(record, seq))


def test_captured_records_carry_every_standard_field(
    log: logging.Logger, collector: RecordWaiter
) -> None:
    """Decoding capture_record's bytes gives the record's fields and its merged message."""
    log.warning("hello %s, you are %d", "ann", 42)
    record, data = captured(collector, seq=7)
    assert data.name == "test.capture" == record.name
    assert (data.levelno, data.levelname) == (logging.WARNING, "WARNING")
    assert data.created == record.created
    assert (data.pathname, data.filename, data.module) == (
        record.pathname,
        record.filename,
        record.module,
    )
    assert (data.lineno, data.func_name) == (record.lineno, record.funcName)
    assert data.func_name == "test_captured_records_carry_every_standard_field"
    assert (data.thread, data.thread_name) == (record.thread, record.threadName)
    assert (data.process, data.process_name) == (record.process, record.processName)
    assert data.seq == 7
    assert data.message == "hello ann, you are 42" == record.getMessage()
    assert data.task_name is None
    assert (data.exc_text, data.exc_type, data.exc_message, data.stack_info) == (None,) * 4
    assert (data.extra, data.event, data.event_method) == ({}, None, None)


def test_captured_records_carry_the_asyncio_task_name(
    log: logging.Logger, collector: RecordWaiter
) -> None:
    """A record logged in a named asyncio task carries its name (Python 3.12+; None before)."""

    async def log_in_a_task() -> None:
        log.info("in a task")

    async def main() -> None:
        await asyncio.create_task(log_in_a_task(), name="the-task")

    asyncio.run(main())
    _, data = captured(collector)
    assert data.task_name == ("the-task" if sys.version_info >= (3, 12) else None)


_text = st.text(st.characters(exclude_categories=["Cs"]), max_size=40)


@PROPERTY
@given(
    name=_text,
    level=st.integers(0, 2**31),
    message=st.text(st.characters(exclude_categories=["Cs"]), max_size=3000),
    path=_text,
    lineno=st.integers(0, 2**31),
    function=_text,
    thread_name=_text,
    created=st.floats(allow_nan=False),
    seq=st.integers(0, 2**63 - 1),
    task=st.none() | _text,
)
def test_a_printed_line_encodes_exactly_as_its_record_would(  # noqa: PLR0917 # the fields
    name: str,
    level: int,
    message: str,
    path: str,
    lineno: int,
    function: str,
    thread_name: str,
    created: float,
    seq: int,
    task: str | None,
) -> None:
    """encode_line (the print() path, no LogRecord) gives capture_record's bytes."""
    record = logging.LogRecord(name, level, path, lineno, message, None, None, func=function)
    record.created = created
    record.threadName = thread_name
    if sys.version_info >= (3, 12):
        record.taskName = task  # type: ignore[attr-defined] # 3.12+ only
    site = line_site(record.__dict__, thread_name)
    line = encode_line(site, created, seq, message, task)
    if task is None or sys.version_info >= (3, 12):
        assert line == capture_record(record, seq)
    decoded = record_decoder.decode(line)
    assert (decoded.name, decoded.levelno, decoded.created) == (name, level, created)
    assert (decoded.pathname, decoded.lineno, decoded.func_name) == (path, lineno, function)
    assert (decoded.thread_name, decoded.seq, decoded.message) == (thread_name, seq, message)
    assert decoded.task_name == task


def test_extra_attributes_arrive_native_or_as_repr(
    log: logging.Logger, collector: RecordWaiter
) -> None:
    """Extra values msgpack carries arrive as they are; others, however nested, as their repr."""
    log.info(
        "with extras",
        extra={
            "user": "ann",
            "count": 3,
            "ratio": 1.5,
            "flag": True,
            "nothing": None,
            "blob": b"\x00\xff",
            "items": [1, "a", None],
            "mapping": {"k": [1, 2]},
            "opaque": Opaque(),
            "nested": {"inner": [Opaque(), 1]},
            "bad_repr": BadRepr(),
        },
    )
    _, data = captured(collector)
    assert data.message == "with extras"
    assert data.extra == {
        "user": "ann",
        "count": 3,
        "ratio": 1.5,
        "flag": True,
        "nothing": None,
        "blob": b"\x00\xff",
        "items": [1, "a", None],
        "mapping": {"k": [1, 2]},
        "opaque": "<Opaque 42>",
        "nested": {"inner": ["<Opaque 42>", 1]},
        "bad_repr": "<repr() of BadRepr failed: RuntimeError>",
    }


class TaggedRecord(logging.LogRecord):
    """A record class, as a custom record factory makes, that sets an attribute of its own."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.tag = "from the factory"


def set_request_id(record: logging.LogRecord) -> None:
    """As a filter or a record factory does (CPython keeps it in the object's inline values)."""
    record.request_id = 5


def set_request_id_in_dict(record: logging.LogRecord) -> None:
    """As ``Logger.makeRecord`` sets ``extra``."""
    record.__dict__["request_id"] = 5


def delete_unsent_then_set_request_id(record: logging.LogRecord) -> None:
    """Keeps the attribute count standard: the count alone would miss the extra."""
    del record.msecs
    set_request_id(record)


def move_module_to_the_end(record: logging.LogRecord) -> None:
    """A standard attribute set again after deletion comes after the extras in ``__dict__``."""
    del record.module
    record.module = "moved"
    set_request_id(record)


@pytest.mark.parametrize(
    "change",
    [
        set_request_id,
        set_request_id_in_dict,
        delete_unsent_then_set_request_id,
        move_module_to_the_end,
    ],
)
def test_attributes_added_after_creation_arrive_as_extra(
    change: Callable[[logging.LogRecord], None],
) -> None:
    """However an attribute got onto a record, it is sent as extra, and nothing standard is."""
    record = logging.LogRecord("app.x", logging.INFO, "/src/app.py", 7, "plain %s", (1,), None)
    change(record)
    data = record_decoder.decode(capture_record(record, 1))
    assert (data.message, data.extra) == ("plain 1", {"request_id": 5})
    assert data.module == record.module


def test_a_record_subclass_sends_its_own_attributes_as_extra() -> None:
    """A record class of its own (``logging.setLogRecordFactory``) loses none of its fields."""
    record = TaggedRecord("app.x", logging.INFO, "/src/app.py", 7, "plain", (), None)
    data = record_decoder.decode(capture_record(record, 1))
    assert (data.message, data.extra) == ("plain", {"tag": "from the factory"})


def test_a_message_that_came_with_extras_still_captures_plain_records_right(
    log: logging.Logger, collector: RecordWaiter
) -> None:
    """Records of a message once seen with extras skip the straight-line path (a speed hint
    only): its plain records still arrive without extras, and its extras still arrive."""
    log.info("mixed %s", 1, extra={"user": "ann"})
    log.info("mixed %s", 2)
    log.info("mixed %s", 3, extra={"user": "bob"})
    decoded = [
        record_decoder.decode(capture_record(record, seq))
        for seq, record in enumerate(collector.records, 1)
    ]
    assert [(data.message, data.extra) for data in decoded] == [
        ("mixed 1", {"user": "ann"}),
        ("mixed 2", {}),
        ("mixed 3", {"user": "bob"}),
    ]
    assert "mixed %s" in capture._MESSAGES_WITH_EXTRAS


@pytest.mark.parametrize(("msg", "args"), [("hinted plain", ()), ("hinted %s", (1,))])
def test_a_message_remembered_for_its_extras_is_sent_as_the_same_bytes(
    msg: str, args: tuple[object, ...]
) -> None:
    """Which path a record takes is only a hint learnt from earlier records: its bytes are the
    same either way (the array stops at its last field that is set)."""

    def record() -> logging.LogRecord:
        made = logging.LogRecord("app.x", logging.INFO, "/src/app.py", 7, msg, args, None)
        made.created = 1.5
        return made

    before = capture_record(record(), 1)
    with_extra = record()
    with_extra.user = "ann"
    capture_record(with_extra, 2)
    assert msg in capture._MESSAGES_WITH_EXTRAS
    assert capture_record(record(), 1) == before


def test_messages_remembered_for_their_extras_stay_bounded() -> None:
    """A message made anew for every record (an f-string) with extras cannot grow memory."""
    limit = capture._MESSAGES_WITH_EXTRAS_LIMIT
    for number in range(2 * limit + 1):
        record = logging.LogRecord("app", logging.INFO, "/p.py", 1, f"one {number}", (), None)
        record.user = number
        assert record_decoder.decode(capture_record(record, 1)).extra == {"user": number}
    assert 0 < len(capture._MESSAGES_WITH_EXTRAS) <= limit


@pytest.mark.parametrize("attribute", ["funcName", "msg", "levelname", "exc_info"])
def test_a_deleted_standard_attribute_is_sent_at_its_default(attribute: str) -> None:
    """A record someone took a standard attribute from is still sent, with the rest intact."""
    record = logging.LogRecord("app.x", logging.INFO, "/src/app.py", 7, "plain", (), None)
    delattr(record, attribute)
    data = record_decoder.decode(capture_record(record, 1))
    assert (data.name, data.lineno) == ("app.x", 7)
    assert data.message == ("" if attribute == "msg" else "plain")
    assert data.func_name is None
    assert data.levelname == ("NOTSET" if attribute == "levelname" else "INFO")


def test_an_exception_record_carries_its_traceback_once_and_its_type(
    log: logging.Logger, collector: RecordWaiter
) -> None:
    """log.exception sends the formatted traceback once, the qualified type and the message."""
    try:
        _ = 1 / 0
    except ZeroDivisionError:
        log.exception("it failed")
    _, data = captured(collector)
    assert data.message == "it failed"
    assert data.exc_type == "builtins.ZeroDivisionError"
    assert data.exc_message == "division by zero"
    assert data.exc_text is not None
    assert data.exc_text.startswith("Traceback (most recent call last):")
    assert data.exc_text.count("Traceback (most recent call last):") == 1
    assert data.exc_text.endswith("ZeroDivisionError: division by zero")
    assert "test_an_exception_record_carries_its_traceback_once_and_its_type" in data.exc_text


def test_a_traceback_a_formatter_already_rendered_is_sent_once_and_not_as_extra(
    log: logging.Logger, collector: RecordWaiter
) -> None:
    """A record another handler formatted first keeps one traceback, no message/asctime extra."""
    try:
        _ = 1 / 0
    except ZeroDivisionError:
        log.exception("it failed")
    (record,) = collector.records
    logging.Formatter("%(asctime)s %(message)s").format(record)
    assert record.exc_text
    data = record_decoder.decode(capture_record(record, 1))
    assert data.exc_text == record.exc_text
    assert data.exc_text.count("Traceback (most recent call last):") == 1
    assert data.exc_type == "builtins.ZeroDivisionError"
    assert data.extra == {}


def test_an_exception_whose_str_raises_still_encodes_readably(
    log: logging.Logger, collector: RecordWaiter
) -> None:
    """An exception whose __str__ raises gives an exc_message naming the type and the failure."""
    try:
        raise Unprintable
    except Unprintable:
        log.exception("unprintable")
    _, data = captured(collector)
    assert data.exc_type == f"{Unprintable.__module__}.Unprintable"
    assert data.exc_message == "<str() of Unprintable failed: RuntimeError: no str for you>"
    assert data.exc_text is not None
    assert "Unprintable" in data.exc_text


def test_a_bad_format_string_becomes_a_message_about_the_failure(
    log: logging.Logger, collector: RecordWaiter
) -> None:
    """log.info('%d', 'x') is captured with a message saying the formatting failed."""
    log.info("%d", "x")
    _, data = captured(collector)
    assert data.message.startswith("'%d' % ('x',) failed: TypeError: ")


def test_stack_info_arrives(log: logging.Logger, collector: RecordWaiter) -> None:
    """A record logged with stack_info=True carries the stack text."""
    log.info("where am I", stack_info=True)
    record, data = captured(collector)
    assert data.stack_info == record.stack_info
    assert data.stack_info is not None
    assert data.stack_info.startswith("Stack (most recent call last):")
    assert "test_stack_info_arrives" in data.stack_info


def test_a_structlog_record_sends_its_event_dict_and_method(
    log: logging.Logger, collector: RecordWaiter
) -> None:
    """A record whose msg is an event dict sends it as event, with _name as event_method."""
    event = {"event": "user logged in", "user": "ann", "attempt": 2}
    log.info(event, extra={"_logger": object(), "_name": "info", "request_id": "r-1"})
    _, data = captured(collector)
    assert data.event == event
    assert data.event_method == "info"
    assert data.extra == {"request_id": "r-1"}
    assert "user logged in" in data.message


def test_unencodable_values_in_an_event_dict_arrive_as_repr(
    log: logging.Logger, collector: RecordWaiter
) -> None:
    """An event dict holding a value msgpack cannot carry sends that value's repr."""
    log.info({"event": "e", "thing": Opaque()}, extra={"_logger": object(), "_name": "warning"})
    _, data = captured(collector)
    assert data.event == {"event": "e", "thing": "<Opaque 42>"}
    assert data.event_method == "warning"


def test_a_plain_record_with_a_name_extra_has_no_event_method(
    log: logging.Logger, collector: RecordWaiter
) -> None:
    """_name only becomes event_method when msg is an event dict; it is never an extra."""
    log.info("plain", extra={"_name": "info"})
    _, data = captured(collector)
    assert (data.event, data.event_method, data.extra) == (None, None, {})


def test_an_overlong_message_is_truncated_with_a_marker(
    log: logging.Logger, collector: RecordWaiter
) -> None:
    """A message longer than MAX_FIELD_CHARS is cut there and says how much was cut."""
    log.info("%s", "x" * (MAX_FIELD_CHARS + 10))
    _, data = captured(collector)
    assert data.message == "x" * MAX_FIELD_CHARS + (
        "... [truncated 10 characters in the emitting process]"
    )


def test_a_message_of_exactly_max_field_chars_is_kept_whole(
    log: logging.Logger, collector: RecordWaiter
) -> None:
    """A message of exactly MAX_FIELD_CHARS characters is sent unchanged."""
    log.info("y" * MAX_FIELD_CHARS)
    _, data = captured(collector)
    assert data.message == "y" * MAX_FIELD_CHARS


@PROPERTY
@given(
    message=st.text(max_size=40),
    args=st.one_of(
        st.just(()),
        st.tuples(st.integers() | st.text(max_size=10) | st.floats() | st.none()),
        st.tuples(st.integers(), st.text(max_size=10)),
    ),
)
def test_the_plain_record_fast_path_matches_the_general_path(
    message: str, args: tuple[Any, ...]
) -> None:
    """A plain record (text message, no exception, no extras) is captured by a straight-line
    path that leaves out the fields at their defaults; whatever the message and arguments,
    even a failing format or a lone surrogate, it decodes to what the general path gives."""
    record = logging.LogRecord("app.x", logging.INFO, "/src/app.py", 7, message, args, None)
    # The fast path first: it reads the record before anything has built its __dict__.
    fast = capture_record(record, 9)
    try:
        general = capture._capture(record, 9, safe=False)
    except capture._ENCODE_FAILURES:
        general = capture._capture(record, 9, safe=True)
    assert record_decoder.decode(fast) == record_decoder.decode(general)


def test_captured_records_frame_and_decode_as_a_batch(
    log: logging.Logger, collector: RecordWaiter
) -> None:
    """capture_record output framed by log_batch_frame decodes back to the same records."""
    for number in range(20):
        log.debug("record %d", number, extra={"n": number})
    frame = log_batch_frame(
        [capture_record(record, seq) for seq, record in enumerate(collector.records, 1)],
        {logging.DEBUG: 2},
        DEFAULT_MAX_FRAME_SIZE,
    )
    batch = decode_message(frame[HEADER_SIZE:])
    assert isinstance(batch, LogBatch)
    records = records_decoder.decode(batch.records)
    assert [(r.seq, r.message, r.extra) for r in records] == [
        (n + 1, f"record {n}", {"n": n}) for n in range(20)
    ]


# -- the token bucket ---------------------------------------------------------------------------


class FakeClock:
    """A clock that only moves when told to."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def takes(take: Any, attempts: int = 100) -> int:
    """How many of ``attempts`` calls of ``take`` succeed in a row, stopping at the first no."""
    for count in range(attempts):
        if not take():
            return count
    return attempts


def test_take_allows_a_burst_then_refuses() -> None:
    """A full bucket allows exactly ``burst`` takes, then refuses while the clock stands still."""
    bucket = TokenBucket(rate=10.0, burst=5, clock=FakeClock())
    assert takes(bucket.take) == 5
    assert not bucket.take()


def test_take_refills_at_the_rate_up_to_the_burst() -> None:
    """Tokens come back at ``rate`` per second, never more than ``burst``."""
    clock = FakeClock()
    bucket = TokenBucket(rate=8.0, burst=5, clock=clock)
    takes(bucket.take)
    # Binary fractions of a second, so that the sums below are exact.
    clock.now += 0.3125  # 2.5 tokens
    assert takes(bucket.take) == 2
    clock.now += 0.0625  # 0.5 + 0.5 = 1 token
    assert takes(bucket.take) == 1
    clock.now += 3600.0
    assert takes(bucket.take) == 5


def test_take_priority_borrows_beyond_an_empty_bucket_but_is_bounded() -> None:
    """take_priority goes on where take refuses, refuses past its debt limit, then refills."""
    clock = FakeClock()
    bucket = TokenBucket(rate=10.0, burst=5, clock=clock)
    assert takes(bucket.take) == 5
    assert not bucket.take()
    borrowed = takes(bucket.take_priority)
    assert 1 <= borrowed <= 5
    assert not bucket.take_priority()
    # The debt is paid back before an ordinary take succeeds again.
    clock.now += borrowed / 10.0 + 0.05
    assert not bucket.take()
    assert bucket.take_priority()


def test_take_priority_borrows_down_to_minus_burst() -> None:
    """From a full bucket take_priority allows 2 * burst takes (down to -burst), then refuses."""
    bucket = TokenBucket(rate=10.0, burst=5, clock=FakeClock())
    assert takes(bucket.take_priority) == 10
    assert not bucket.take_priority()


@pytest.mark.parametrize(
    ("rate", "burst"),
    [(0.0, 5.0), (-1.0, 5.0), (10.0, 0.0), (10.0, 0.5), (10.0, -3.0), (float("nan"), 5.0)],
)
def test_invalid_rate_or_burst_is_a_value_error(rate: float, burst: float) -> None:
    """A rate that is not positive or a burst below one raises ValueError."""
    with pytest.raises(ValueError, match="rate must be a finite number > 0"):
        TokenBucket(rate=rate, burst=burst, clock=FakeClock())


def test_log_metrics_combined_sums_counts_merges_drops_and_keeps_the_latest_time() -> None:
    first = LogMetrics(received=3, replayed=2, filtered=1, bytes=100, last_record_time=5.0)
    first.count_drop(DropReason.RATE_LIMITED, 4)
    second = LogMetrics(received=7, replayed=7, bytes=50, last_record_time=9.0)
    second.count_drop(DropReason.RATE_LIMITED)
    second.count_drop(DropReason.MALFORMED, 2)
    idle = LogMetrics()
    total = LogMetrics.combined([first, idle, second])
    assert total == LogMetrics(
        received=10,
        replayed=9,
        filtered=1,
        dropped={DropReason.RATE_LIMITED: 5, DropReason.MALFORMED: 2},
        bytes=150,
        last_record_time=9.0,
    )
    assert LogMetrics.combined([idle]).last_record_time is None
    assert first.dropped == {DropReason.RATE_LIMITED: 4}  # the parts are left as they were
