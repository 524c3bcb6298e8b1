"""Framing: length-prefixed frames, built by FrameWriter and split again by FrameDecoder."""

from __future__ import annotations

import contextlib

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from isoplug.errors import LocalProtocolError, RemoteProtocolError
from isoplug.wire import (
    DEFAULT_MAX_FRAME_SIZE,
    Cancel,
    Event,
    FrameDecoder,
    FrameWriter,
    Goodbye,
    LogBatch,
    LogRecordData,
    Message,
    decode_message,
    encode_frame,
    encode_message,
)
from isoplug.wire.framing import HEADER_SIZE
from isoplug.wire.logframes import log_batch
from tests.wire_strategies import PROPERTY, frame, messages, splits, stream_pieces


def header(length: int) -> bytes:
    """A frame header announcing ``length`` payload bytes."""
    return length.to_bytes(HEADER_SIZE, "big")


def decode_stream(decoder: FrameDecoder, chunks: list[bytes]) -> list[Message]:
    """Feed ``chunks`` one by one and decode every frame they complete."""
    return [decode_message(payload) for chunk in chunks for payload in decoder.receive_data(chunk)]


def big_event(size: int) -> Event:
    """An event whose encoding takes ``size`` bytes (between 9 and 264)."""
    # Array header, "evt", "m" and the bin8 header of the params take 9 bytes.
    event = Event(method="m", params=msgspec.Raw(msgspec.msgpack.encode(b"x" * (size - 9))))
    assert len(encode_message(event)) == size
    return event


# -- properties ---------------------------------------------------------------------------------


@PROPERTY
@given(sequence=st.lists(messages, max_size=6), data=st.data())
def test_frames_split_anywhere_decode_to_the_same_messages_in_order(
    sequence: list[Message], data: st.DataObject
) -> None:
    """Concatenated frames cut at arbitrary byte boundaries decode to the same messages in order."""
    stream = b"".join(encode_frame(message) for message in sequence)
    decoder = FrameDecoder()
    assert decode_stream(decoder, data.draw(splits(stream), label="chunks")) == sequence
    assert decoder.buffered == 0
    decoder.receive_eof()


@PROPERTY
@given(sequence=st.lists(messages, max_size=6), data=st.data())
def test_a_frame_writer_batch_is_the_concatenation_of_single_frames(
    sequence: list[Message], data: st.DataObject
) -> None:
    """Messages added to one FrameWriter produce the same bytes as encode_frame one by one."""
    writer = FrameWriter()
    for message in sequence:
        writer.add(message)
    assert len(writer) == sum(len(encode_frame(message)) for message in sequence)
    stream = writer.take()
    assert stream == b"".join(encode_frame(message) for message in sequence)
    assert len(writer) == 0
    assert writer.take() == b""
    chunks = data.draw(splits(stream), label="chunks")
    assert decode_stream(FrameDecoder(), chunks) == sequence


@PROPERTY
@given(data=st.data(), stream=st.lists(stream_pieces, max_size=8).map(b"".join))
def test_arbitrary_bytes_are_decoded_or_rejected_as_a_remote_protocol_error(
    data: st.DataObject, stream: bytes
) -> None:
    """Any bytes fed to FrameDecoder and decode_message decode or raise RemoteProtocolError only."""
    decoder = FrameDecoder(max_frame_size=1024)
    for chunk in data.draw(splits(stream), label="chunks"):
        try:
            payloads = decoder.receive_data(chunk)
        except RemoteProtocolError:
            with pytest.raises(RemoteProtocolError):
                decoder.receive_data(b"")
            return
        for payload in payloads:
            # A garbage frame is rejected alone; framing itself is intact, so carry on.
            with contextlib.suppress(RemoteProtocolError):
                decode_message(payload)
    try:
        decoder.receive_eof()
    except RemoteProtocolError:
        assert decoder.buffered > 0


@PROPERTY
@given(junk=st.binary(min_size=1, max_size=64))
def test_unframed_garbage_is_decoded_or_rejected_as_a_remote_protocol_error(junk: bytes) -> None:
    """Raw bytes with no framing at all never raise anything but RemoteProtocolError."""
    decoder = FrameDecoder()
    try:
        payloads = decoder.receive_data(junk)
        for payload in payloads:
            decode_message(payload)
        decoder.receive_eof()
    except RemoteProtocolError:
        pass


# -- decoding -----------------------------------------------------------------------------------


def test_a_frame_is_a_big_endian_length_then_the_payload() -> None:
    """encode_frame writes a 4-byte big-endian payload length followed by the payload."""
    payload = encode_message(Cancel(id=7))
    assert encode_frame(Cancel(id=7)) == header(len(payload)) + payload


def test_an_empty_chunk_completes_nothing() -> None:
    """Feeding no bytes returns no frames and buffers nothing."""
    decoder = FrameDecoder()
    assert decoder.receive_data(b"") == []
    assert decoder.buffered == 0


def test_an_incomplete_frame_is_buffered_until_its_last_byte_arrives() -> None:
    """A frame fed byte by byte comes out exactly when its last byte arrives."""
    data = encode_frame(Goodbye(reason="later"))
    decoder = FrameDecoder()
    for count, byte in enumerate(data[:-1], start=1):
        assert decoder.receive_data(bytes([byte])) == []
        assert decoder.buffered == count
    (payload,) = decoder.receive_data(data[-1:])
    assert decode_message(payload) == Goodbye(reason="later")
    assert decoder.buffered == 0


def test_an_empty_payload_is_a_frame() -> None:
    """A frame announcing zero bytes yields one empty payload (which the codec then rejects)."""
    (payload,) = FrameDecoder().receive_data(header(0))
    assert bytes(payload) == b""
    with pytest.raises(RemoteProtocolError):
        decode_message(payload)


def test_returned_payloads_stay_valid_and_read_only_after_more_data_arrives() -> None:
    """Payloads returned by receive_data are unaffected by later calls and cannot be written."""
    first, second = encode_frame(Cancel(id=1)), encode_frame(Cancel(id=2))
    decoder = FrameDecoder()
    early = decoder.receive_data(first + second[:3])
    late = decoder.receive_data(second[3:] + first)
    decoder.receive_data(second * 3)
    assert [decode_message(payload) for payload in early + late] == [
        Cancel(id=1),
        Cancel(id=2),
        Cancel(id=1),
    ]
    for payload in early + late:
        assert isinstance(payload, bytes) or payload.readonly


def test_a_frame_of_exactly_the_limit_is_accepted() -> None:
    """A frame whose payload is exactly max_frame_size bytes is delivered."""
    data = encode_frame(big_event(100))
    assert len(data) == HEADER_SIZE + 100
    (payload,) = FrameDecoder(max_frame_size=100).receive_data(data)
    assert decode_message(payload) == big_event(100)


def test_an_oversized_frame_is_rejected_as_soon_as_its_header_arrives() -> None:
    """A header announcing more than max_frame_size fails before any payload byte is sent."""
    decoder = FrameDecoder(max_frame_size=100)
    announced = header(101)
    assert decoder.receive_data(announced[:3]) == []
    with pytest.raises(RemoteProtocolError, match=r"frame of 101 bytes exceeds .* 100 bytes"):
        decoder.receive_data(announced[3:])


def test_an_oversized_frame_after_complete_frames_in_the_same_chunk_is_rejected() -> None:
    """A chunk holding good frames then an oversized header raises RemoteProtocolError."""
    decoder = FrameDecoder(max_frame_size=100)
    with pytest.raises(RemoteProtocolError, match="exceeds the limit"):
        decoder.receive_data(encode_frame(Cancel(id=1)) + header(2**32 - 1))


def test_the_default_limit_is_16_mib() -> None:
    """Without a limit given, frames up to 16 MiB are accepted and a byte more is not."""
    decoder = FrameDecoder()
    assert decoder.max_frame_size == DEFAULT_MAX_FRAME_SIZE == 16 * 1024 * 1024
    assert decoder.receive_data(header(DEFAULT_MAX_FRAME_SIZE)) == []
    with pytest.raises(RemoteProtocolError, match=f"frame of {DEFAULT_MAX_FRAME_SIZE + 1} bytes"):
        FrameDecoder().receive_data(header(DEFAULT_MAX_FRAME_SIZE + 1))


@pytest.mark.parametrize("limit", [0, -1, 2**32])
def test_a_limit_the_header_cannot_express_is_a_value_error(limit: int) -> None:
    """max_frame_size must be between 1 and the largest length a 4-byte header can hold."""
    with pytest.raises(ValueError, match="max_frame_size"):
        FrameDecoder(max_frame_size=limit)


def test_after_a_failure_the_decoder_refuses_all_further_input() -> None:
    """Once framing failed, every later receive_data raises RemoteProtocolError, even valid data."""
    decoder = FrameDecoder(max_frame_size=10)
    with pytest.raises(RemoteProtocolError):
        decoder.receive_data(header(11))
    for data in (encode_frame(Cancel(id=1)), b""):
        with pytest.raises(RemoteProtocolError, match="already failed"):
            decoder.receive_data(data)


def test_end_of_stream_between_frames_is_clean() -> None:
    """receive_eof after whole frames (or none) raises nothing."""
    decoder = FrameDecoder()
    decoder.receive_eof()
    decoder.receive_data(encode_frame(Cancel(id=1)))
    decoder.receive_eof()


def test_end_of_stream_inside_a_payload_says_how_many_bytes_are_missing() -> None:
    """EOF cutting a payload short raises RemoteProtocolError with bytes received and missing."""
    decoder = FrameDecoder()
    decoder.receive_data(header(10) + b"abc")
    with pytest.raises(
        RemoteProtocolError,
        match=r"in the middle of a frame \(3 of 10 payload bytes, 7 missing\)",
    ):
        decoder.receive_eof()


def test_end_of_stream_inside_a_header_says_how_many_bytes_are_missing() -> None:
    """EOF cutting a header short raises RemoteProtocolError with header bytes received/missing."""
    decoder = FrameDecoder()
    decoder.receive_data(encode_frame(Cancel(id=1)) + b"\x00")
    with pytest.raises(
        RemoteProtocolError, match=r"in the middle of a frame \(1 of 4 header bytes, 3 missing\)"
    ):
        decoder.receive_eof()


def test_a_failed_decoder_does_not_complain_again_at_end_of_stream() -> None:
    """After a framing failure, receive_eof is quiet: the error was already reported."""
    decoder = FrameDecoder()
    decoder.receive_data(header(10) + b"abc")
    with pytest.raises(RemoteProtocolError):
        decoder.receive_eof()
    decoder.receive_eof()


# -- encoding -----------------------------------------------------------------------------------


def test_encode_frame_refuses_a_frame_above_the_limit_naming_both_sizes() -> None:
    """encode_frame raises LocalProtocolError naming the frame's size and the limit."""
    with pytest.raises(
        LocalProtocolError, match=r"refusing to send a frame of 101 bytes: the limit is 100 bytes"
    ):
        encode_frame(big_event(101), max_frame_size=100)


def test_a_frame_writer_refusing_an_oversized_frame_keeps_what_it_had() -> None:
    """FrameWriter.add of an oversized message raises LocalProtocolError, its buffer unchanged."""
    writer = FrameWriter(max_frame_size=100)
    writer.add(Cancel(id=1))
    before = len(writer)
    with pytest.raises(LocalProtocolError, match="101 bytes"):
        writer.add(big_event(101))
    assert len(writer) == before
    writer.add(Cancel(id=2))
    assert writer.take() == encode_frame(Cancel(id=1)) + encode_frame(Cancel(id=2))


def test_a_frame_writer_refusing_an_unencodable_message_keeps_what_it_had() -> None:
    """FrameWriter.add of a message msgpack cannot carry raises LocalProtocolError, buffer kept."""
    writer = FrameWriter()
    writer.add(Cancel(id=1))
    # Drop totals beyond msgpack's 64-bit range: the one part of a batch the writer encodes.
    too_many_drops = LogBatch(records=log_batch([]).records, dropped={10: 2**64})
    for unencodable in (too_many_drops, Goodbye(reason="\ud800"), Cancel(id=2**64)):
        with pytest.raises(LocalProtocolError, match=f"cannot encode {type(unencodable).__name__}"):
            writer.add(unencodable)
    assert writer.take() == encode_frame(Cancel(id=1))


def test_a_log_batch_nested_too_deeply_to_encode_is_a_local_protocol_error() -> None:
    """A message whose values nest too deeply for the encoder raises LocalProtocolError."""
    deep: list[object] = []
    for _ in range(100_000):
        deep = [deep]
    record = LogRecordData(
        name="n", levelno=20, levelname="INFO", created=0.0, extra={"deep": deep}
    )
    # Structs do not check field types when built: a caller ignoring the annotations can still
    # hand the writer records that are not pre-encoded, and it must refuse them cleanly.
    batch = LogBatch(records=[record])  # type: ignore[arg-type]
    writer = FrameWriter()
    with pytest.raises(LocalProtocolError, match="cannot encode LogBatch"):
        writer.add(batch)
    assert len(writer) == 0


def test_raw_params_are_framed_verbatim() -> None:
    """Raw params are copied into the frame as they are, not re-encoded or validated."""
    params = msgspec.Raw(b"\x91" * 1000 + b"\xc0")
    data = encode_frame(Event(method="m", params=params))
    assert data.endswith(bytes(params))
    assert frame(encode_message(Event(method="m", params=params))) == data
