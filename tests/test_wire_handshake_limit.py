"""The frame limit before authentication, without sockets: a hello is tiny, so until the
handshake completes a connection takes frames of at most 64 KiB; then the session's limit."""

from __future__ import annotations

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from isoplug.errors import AuthenticationFailed, RemoteProtocolError
from isoplug.wire import (
    DEFAULT_MAX_FRAME_SIZE,
    Connection,
    ConnectionState,
    Event,
    FrameDecoder,
    Hello,
    Message,
    Reject,
    RejectCode,
    Role,
    Welcome,
    decode_message,
    encode_frame,
)
from isoplug.wire.framing import HANDSHAKE_MAX_FRAME_SIZE, HEADER_SIZE
from tests.wire_strategies import PROPERTY, messages, splits

TOKEN = "s3cret-token"


def header(length: int) -> bytes:
    return length.to_bytes(HEADER_SIZE, "big")


def event_of(size: int) -> Event:
    """An event whose params take ``size`` bytes."""
    return Event(method="m", params=msgspec.Raw(msgspec.msgpack.encode(b"x" * size)))


def replies(connection: Connection) -> list[Message]:
    decoder = FrameDecoder()
    return [decode_message(p) for p in decoder.receive_data(connection.data_to_send())]


# -- the decoder: the first frame under a limit of its own ---------------------------------------


@PROPERTY
@given(first=messages, rest=st.lists(messages, max_size=5), data=st.data())
def test_a_first_frame_then_a_raised_limit_decode_as_one_stream(
    first: Message, rest: list[Message], data: st.DataObject
) -> None:
    """Taking the first frame under a limit just large enough for it, then raising the limit,
    gives the same frames in the same order as one decoder, however the bytes are cut; the
    frames behind the first are never held to its limit."""
    first_frame = encode_frame(first)
    stream = first_frame + b"".join(encode_frame(message) for message in rest)
    decoder = FrameDecoder(len(first_frame) - HEADER_SIZE)
    got: list[Message] = []
    for chunk in data.draw(splits(stream), label="chunks"):
        rest_of_chunk = chunk
        if not got:
            payload = decoder.next_frame(chunk)
            if payload is None:
                continue
            got.append(decode_message(payload))
            decoder.max_frame_size = DEFAULT_MAX_FRAME_SIZE
            rest_of_chunk = b""  # next_frame() kept what followed the first frame
        got += [decode_message(payload) for payload in decoder.receive_data(rest_of_chunk)]
    assert got == [first, *rest]
    assert decoder.buffered == 0
    decoder.receive_eof()


@PROPERTY
@given(
    excess=st.integers(1, 2**32 - 1 - HANDSHAKE_MAX_FRAME_SIZE),
    tail=st.binary(max_size=64),
    data=st.data(),
)
def test_an_oversized_first_frame_is_refused_once_its_header_is_in_holding_nothing(
    excess: int, tail: bytes, data: st.DataObject
) -> None:
    """A first frame announcing more than the limit is refused by the call that completes its
    header, whatever follows it in the stream; nothing of it stays buffered."""
    stream = header(HANDSHAKE_MAX_FRAME_SIZE + excess) + tail
    decoder = FrameDecoder()
    decoder.max_frame_size = HANDSHAKE_MAX_FRAME_SIZE
    received = 0
    for chunk in data.draw(splits(stream), label="chunks"):
        received += len(chunk)
        if received < HEADER_SIZE:
            assert decoder.next_frame(chunk) is None
            continue
        with pytest.raises(RemoteProtocolError, match="exceeds the limit of 65536 bytes"):
            decoder.next_frame(chunk)
        break
    assert decoder.buffered == 0
    with pytest.raises(RemoteProtocolError, match="already failed"):
        decoder.next_frame(b"")


def test_the_handshake_limit_is_64_kib() -> None:
    assert HANDSHAKE_MAX_FRAME_SIZE == 64 * 1024
    decoder = FrameDecoder(HANDSHAKE_MAX_FRAME_SIZE)
    assert decoder.next_frame(header(HANDSHAKE_MAX_FRAME_SIZE)) is None
    assert decoder.next_frame(b"x" * HANDSHAKE_MAX_FRAME_SIZE) == b"x" * HANDSHAKE_MAX_FRAME_SIZE


# -- the connection: one limit per phase ---------------------------------------------------------


def hello_frame() -> bytes:
    return encode_frame(Hello(min_version=1, max_version=1, token=TOKEN, name="runner"))


def test_a_server_refuses_a_big_hello_header_before_its_payload_arrives() -> None:
    """A hello announcing 1 MiB is refused when its 4-byte header arrives; the client hears a
    short protocol reject, and the server's reason says the handshake's limit."""
    server = Connection(Role.SERVER, TOKEN)
    with pytest.raises(RemoteProtocolError) as raised:
        server.receive_data(header(1024 * 1024))
    assert str(raised.value) == (
        "frame of 1048576 bytes exceeds the limit of 65536 bytes before the handshake completed"
    )
    assert server.state is ConnectionState.ERROR
    assert server.close_reason == str(raised.value)
    (reject,) = replies(server)
    assert isinstance(reject, Reject) and reject.code == RejectCode.PROTOCOL
    assert "exceeds the limit of 65536 bytes" in reject.reason


def test_a_client_refuses_a_big_welcome_header_too() -> None:
    client = Connection(Role.CLIENT, TOKEN)
    client.data_to_send()
    with pytest.raises(RemoteProtocolError, match="before the handshake completed"):
        client.receive_data(header(HANDSHAKE_MAX_FRAME_SIZE + 1))


def test_once_open_the_sessions_limit_applies_even_in_the_hellos_chunk() -> None:
    """Frames above the handshake's limit are fine once authenticated, even when they arrive
    in the same bytes as the hello; the session's limit still holds after that."""
    server = Connection(Role.SERVER, TOKEN, max_frame_size=200 * 1024)
    big = event_of(150 * 1024)
    assert server.receive_data(hello_frame() + encode_frame(big)) == [big]
    assert server.state is ConnectionState.OPEN
    with pytest.raises(RemoteProtocolError, match=r"exceeds the limit of 204800 bytes$"):
        server.receive_data(header(200 * 1024 + 1))


def test_a_wrong_token_in_a_hello_followed_by_a_big_frame_is_refused_for_the_token() -> None:
    """The frame behind a refused hello is never decoded: the token decides first."""
    server = Connection(Role.SERVER, "another token")
    with pytest.raises(AuthenticationFailed, match="wrong session token"):
        server.receive_data(hello_frame() + header(DEFAULT_MAX_FRAME_SIZE))
    assert server.state is ConnectionState.ERROR


def test_the_handshake_limit_is_configurable_and_never_above_the_sessions() -> None:
    server = Connection(Role.SERVER, TOKEN, handshake_max_frame_size=10)
    with pytest.raises(RemoteProtocolError, match="exceeds the limit of 10 bytes"):
        server.receive_data(hello_frame())
    small = Connection(Role.SERVER, TOKEN, max_frame_size=20)
    with pytest.raises(RemoteProtocolError, match="exceeds the limit of 20 bytes"):
        small.receive_data(header(21))
    with pytest.raises(ValueError, match="handshake_max_frame_size"):
        Connection(Role.SERVER, TOKEN, handshake_max_frame_size=0)


@PROPERTY
@given(sizes=st.lists(st.integers(0, 300), max_size=6), data=st.data())
def test_traffic_behind_a_hello_arrives_whole_however_cut_past_a_tight_handshake_limit(
    sizes: list[int], data: st.DataObject
) -> None:
    """With a handshake limit exactly the hello's size, the session's messages (most of them
    bigger than that) arrive in order, however the bytes are cut around the hello."""
    hello = hello_frame()
    server = Connection(
        Role.SERVER, TOKEN, handshake_max_frame_size=len(hello) - HEADER_SIZE, max_frame_size=400
    )
    sent = [event_of(size) for size in sizes]
    stream = hello + b"".join(encode_frame(event) for event in sent)
    received: list[Message] = []
    for chunk in data.draw(splits(stream), label="chunks"):
        received += server.receive_data(chunk)
    assert received == sent
    assert server.state is ConnectionState.OPEN


def test_a_handshake_over_two_connections_still_completes() -> None:
    """The limit changes nothing for a well-behaved pair, byte by byte."""
    client = Connection(Role.CLIENT, TOKEN, name="c")
    server = Connection(Role.SERVER, TOKEN, name="s")
    for byte in client.data_to_send():
        server.receive_data(bytes([byte]))
    for byte in server.data_to_send():
        client.receive_data(bytes([byte]))
    assert client.state is server.state is ConnectionState.OPEN
    assert client.peer_welcome == Welcome(version=1, name="s", pid=0)
