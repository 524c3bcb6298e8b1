"""The connection state machine, driven by two Connection objects wired together in memory."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

import isoplug
from isoplug.errors import (
    AuthenticationFailed,
    HandshakeError,
    HandshakeTimeout,
    LocalProtocolError,
    RemoteProtocolError,
    VersionMismatch,
)
from isoplug.wire import (
    Cancel,
    Connection,
    ConnectionState,
    ErrorInfo,
    ErrorResponse,
    Event,
    FrameDecoder,
    Goodbye,
    Hello,
    LogRecordData,
    Message,
    Reject,
    RejectCode,
    Request,
    Response,
    Role,
    Welcome,
    decode_message,
    encode_frame,
    encode_value,
)
from isoplug.wire.logframes import log_batch
from tests.wire_strategies import PROPERTY, frame, log_records, raws, splits, stream_pieces, texts

TOKEN = "s3cret-token"


def make_client(token: str = TOKEN, **options: Any) -> Connection:
    """A client connection (the runner's side) that has not sent its hello yet."""
    return Connection(Role.CLIENT, token, name="runner-7", pid=4242, **options)


def make_server(**options: Any) -> Connection:
    """A server connection (the host's side) waiting for a hello."""
    return Connection(Role.SERVER, TOKEN, name="host", pid=1, **options)


def deliver(sender: Connection, receiver: Connection) -> list[Message]:
    """Move everything ``sender`` queued into ``receiver``; return what ``receiver`` got."""
    return receiver.receive_data(sender.data_to_send())


def open_pair() -> tuple[Connection, Connection]:
    """A client and a server that completed the handshake."""
    client, server = make_client(), make_server()
    assert deliver(client, server) == []
    assert deliver(server, client) == []
    return client, server


def frames(*messages: Message) -> bytes:
    """The frames of ``messages``, concatenated, as a peer would send them."""
    return b"".join(encode_frame(message) for message in messages)


def unframe(data: bytes) -> list[Message]:
    """Decode bytes a connection queued for its peer; they must be whole, valid frames."""
    decoder = FrameDecoder()
    messages = [decode_message(payload) for payload in decoder.receive_data(data)]
    decoder.receive_eof()
    return messages


def hello(token: str = TOKEN, min_version: int = 1, max_version: int = 1) -> Hello:
    """A hello as a well-behaved client sends it."""
    return Hello(min_version=min_version, max_version=max_version, token=token)


# -- handshake ----------------------------------------------------------------------------------


def test_the_client_speaks_first_with_a_hello() -> None:
    """A new client queues exactly one hello with its version range, token, role, name and pid."""
    client = make_client(connection_role="logs", min_version=1, max_version=3)
    assert unframe(client.data_to_send()) == [
        Hello(
            min_version=1,
            max_version=3,
            token=TOKEN,
            role="logs",
            name="runner-7",
            pid=4242,
            library_version=isoplug.__version__,
        )
    ]
    assert client.data_to_send() == b""
    assert client.state is ConnectionState.HANDSHAKE


def test_the_server_waits_silently_for_the_hello() -> None:
    """A new server queues nothing and is in the handshake state."""
    server = make_server()
    assert server.data_to_send() == b""
    assert server.state is ConnectionState.HANDSHAKE
    assert server.receive_data(b"") == []


def test_a_successful_handshake_opens_both_sides_and_introduces_them() -> None:
    """After hello and welcome both sides are OPEN at the same version and know each other."""
    client, server = make_client(), make_server()
    assert deliver(client, server) == []
    assert server.state is ConnectionState.OPEN
    assert server.peer_hello is not None
    assert (server.peer_hello.name, server.peer_hello.pid) == ("runner-7", 4242)
    assert server.peer_hello.role == "control"
    assert deliver(server, client) == []
    assert client.state is ConnectionState.OPEN
    assert client.peer_welcome == Welcome(version=1, name="host", pid=1)
    assert client.version == server.version == 1
    assert client.data_to_send() == server.data_to_send() == b""


@pytest.mark.parametrize(
    ("client_range", "server_range", "agreed"),
    [
        pytest.param((1, 3), (1, 1), 1, id="client-newer"),
        pytest.param((1, 1), (1, 3), 1, id="server-newer"),
        pytest.param((2, 5), (1, 3), 3, id="overlap-picks-highest-common"),
        pytest.param((1, 3), (3, 7), 3, id="single-common-version"),
        pytest.param((2, 2), (2, 2), 2, id="same-single-version"),
    ],
)
def test_the_handshake_agrees_on_the_highest_version_both_speak(
    client_range: tuple[int, int], server_range: tuple[int, int], agreed: int
) -> None:
    """Both sides end up at the highest protocol version within both ranges."""
    client = make_client(min_version=client_range[0], max_version=client_range[1])
    server = make_server(min_version=server_range[0], max_version=server_range[1])
    deliver(client, server)
    deliver(server, client)
    assert client.state is server.state is ConnectionState.OPEN
    assert client.version == server.version == agreed


def test_a_version_range_that_is_empty_is_a_value_error() -> None:
    """A connection cannot be created with min_version above max_version."""
    with pytest.raises(ValueError, match="min_version 3 > max_version 2"):
        make_client(min_version=3, max_version=2)


def test_a_wrong_token_fails_both_sides_with_authentication_failed() -> None:
    """A wrong token makes the server raise AuthenticationFailed and reject; the client too."""
    client, server = make_client(token="guess"), make_server()
    # The hello's pid is the client's claim: the server's message leaves it out (the I/O layer
    # adds the kernel's word where it has one).
    with pytest.raises(
        AuthenticationFailed, match=r"^wrong session token \(the client says it is 'runner-7'\)$"
    ):
        deliver(client, server)
    assert server.state is ConnectionState.ERROR
    reply = server.data_to_send()
    assert unframe(reply) == [Reject(code=RejectCode.AUTHENTICATION, reason="wrong session token")]
    with pytest.raises(AuthenticationFailed, match=r"^wrong session token$"):
        client.receive_data(reply)
    assert client.state is ConnectionState.ERROR
    assert client.close_reason == "rejected by peer: wrong session token"


def test_admission_refuses_a_right_token_and_is_asked_only_once_the_token_matched() -> None:
    """``admit`` sees only hellos whose token matched; its reason stays on the server's side,
    the client hears a generic refusal."""
    asked: list[str] = []

    def admit(hello: Hello) -> str | None:
        asked.append(hello.name)
        return "pid 99 is not that runner's"

    with pytest.raises(AuthenticationFailed, match=r"^wrong session token"):
        deliver(make_client(token="guess"), make_server(admit=admit))
    assert asked == []
    client, server = make_client(), make_server(admit=admit)
    with pytest.raises(AuthenticationFailed, match=r"^pid 99 is not that runner's$"):
        deliver(client, server)
    assert asked == ["runner-7"]
    reply = server.data_to_send()
    assert unframe(reply) == [
        Reject(code=RejectCode.AUTHENTICATION, reason="refused by the listener")
    ]
    with pytest.raises(AuthenticationFailed, match=r"^refused by the listener$"):
        client.receive_data(reply)


def test_no_shared_version_fails_both_sides_with_version_mismatch_naming_the_ranges() -> None:
    """Disjoint version ranges make both sides raise VersionMismatch naming both ranges, by
    the part each side plays (never "this side", which reads inverted once quoted by the
    other), with both isoplug versions and the fix; each names the other's range."""
    client = make_client(min_version=2, max_version=3)
    server = make_server(min_version=1, max_version=1)
    mine = isoplug.__version__
    expected = (
        f"no protocol version in common: the listener speaks protocol versions 1..1 "
        f"(isoplug {mine}), the client 2..3 (isoplug {mine}); install one isoplug version "
        "on both sides"
    )
    with pytest.raises(VersionMismatch) as refused:
        deliver(client, server)
    assert str(refused.value) == expected
    assert refused.value.peer_versions == (2, 3)
    reply = server.data_to_send()
    assert unframe(reply) == [
        Reject(
            code=RejectCode.VERSION,
            reason=expected,
            min_version=1,
            max_version=1,
            library_version=mine,
        )
    ]
    with pytest.raises(VersionMismatch) as rejected:
        client.receive_data(reply)
    assert str(rejected.value) == expected
    assert rejected.value.peer_versions == (1, 1)
    assert client.state is server.state is ConnectionState.ERROR


def test_a_version_refusal_of_an_older_listener_is_worded_from_the_client_side() -> None:
    """An isoplug older than the reject's version fields words it from its own side ("peer":
    the client); the client reads the listener's range from those words."""
    client = make_client(min_version=2, max_version=2)
    client.data_to_send()
    old = "peer speaks protocol versions 2..2, this side speaks 1..1"
    with pytest.raises(VersionMismatch) as rejected:
        client.receive_data(frames(Reject(code=RejectCode.VERSION, reason=old)))
    assert str(rejected.value).startswith(
        "no protocol version in common: the listener speaks protocol versions 1..1, "
        f"the client 2..2 (isoplug {isoplug.__version__})"
    )
    assert rejected.value.peer_versions == (1, 1)


@pytest.mark.parametrize(
    ("code", "error"),
    [
        (RejectCode.AUTHENTICATION, AuthenticationFailed),
        (RejectCode.TIMEOUT, HandshakeTimeout),
        (RejectCode.PROTOCOL, HandshakeError),
        ("from-the-future", HandshakeError),
    ],
)
def test_the_client_maps_each_reject_code_to_its_handshake_error(
    code: str, error: type[HandshakeError]
) -> None:
    """A reject raises the HandshakeError subclass for its code (the base class if unknown)."""
    client = make_client()
    client.data_to_send()
    with pytest.raises(HandshakeError, match=r"^the reason$") as caught:
        client.receive_data(frames(Reject(code=code, reason="the reason")))
    assert type(caught.value) is error
    assert client.state is ConnectionState.ERROR
    assert client.data_to_send() == b""


def test_a_request_before_the_hello_is_a_protocol_error_answered_with_a_reject() -> None:
    """A server receiving a request before the hello raises and queues a protocol reject."""
    server = make_server()
    with pytest.raises(RemoteProtocolError, match="expected a hello, got Request"):
        server.receive_data(frames(Request(id=1, method="m")))
    assert server.state is ConnectionState.ERROR
    (reject,) = unframe(server.data_to_send())
    assert isinstance(reject, Reject)
    assert reject.code == RejectCode.PROTOCOL
    assert "expected a hello, got Request" in reject.reason


def test_a_client_receiving_anything_but_welcome_or_reject_first_fails_quietly() -> None:
    """A client whose first message is neither welcome nor reject raises and queues nothing."""
    client = make_client()
    client.data_to_send()
    with pytest.raises(RemoteProtocolError, match="expected a welcome, got Event"):
        client.receive_data(frames(Event(method="m")))
    assert client.state is ConnectionState.ERROR
    assert client.data_to_send() == b""


def test_a_welcome_outside_the_offered_range_is_a_protocol_error() -> None:
    """A client refuses a welcome at a version it did not offer, naming its range."""
    client = make_client(min_version=1, max_version=2)
    client.data_to_send()
    with pytest.raises(RemoteProtocolError, match=r"version 5, which is outside the range 1\.\.2"):
        client.receive_data(frames(Welcome(version=5)))
    assert client.state is ConnectionState.ERROR
    assert client.version is None


def test_a_hello_whose_token_is_not_utf8_is_a_protocol_error() -> None:
    """A hello carrying invalid UTF-8 is rejected as a protocol error, not a crash."""
    server = make_server()
    payload = b"\x94\xa5hello\x01\x01\xa2\xc3\x28"
    with pytest.raises(RemoteProtocolError, match="malformed message"):
        server.receive_data(frame(payload))
    (reject,) = unframe(server.data_to_send())
    assert isinstance(reject, Reject)
    assert reject.code == RejectCode.PROTOCOL


def test_a_newer_clients_hello_with_extra_fields_is_accepted() -> None:
    """A hello with trailing fields this version does not know still opens the session."""
    server = make_server()
    newer = msgspec.msgpack.encode(
        ["hello", 1, 9, TOKEN, "control", "next", 3, "9.0", ["zstd"], 1.5]
    )
    assert server.receive_data(frame(newer)) == []
    assert server.state is ConnectionState.OPEN
    assert server.peer_hello == Hello(1, 9, TOKEN, "control", "next", 3, "9.0")
    assert unframe(server.data_to_send()) == [Welcome(version=1, name="host", pid=1)]


@pytest.mark.parametrize(
    ("receiver", "message"),
    [
        pytest.param("server", hello(), id="second-hello"),
        pytest.param("client", Welcome(version=1), id="second-welcome"),
        pytest.param("client", Reject(code=RejectCode.PROTOCOL, reason="late"), id="late-reject"),
        pytest.param("server", Welcome(version=1), id="welcome-to-server"),
    ],
)
def test_handshake_messages_after_the_handshake_are_protocol_errors(
    receiver: str, message: Message
) -> None:
    """A hello, welcome or reject on an open connection raises and queues a goodbye."""
    client, server = open_pair()
    connection = client if receiver == "client" else server
    name = type(message).__name__
    with pytest.raises(RemoteProtocolError, match=f"unexpected {name} after the handshake"):
        connection.receive_data(frames(message))
    assert connection.state is ConnectionState.ERROR
    (goodbye,) = unframe(connection.data_to_send())
    assert isinstance(goodbye, Goodbye)
    assert f"unexpected {name}" in goodbye.reason


def test_a_server_handshake_timeout_reaches_the_client_as_handshake_timeout() -> None:
    """fail(TIMEOUT) during the server's handshake queues a reject the client raises as timeout."""
    client, server = make_client(), make_server()
    client.data_to_send()
    server.fail(RejectCode.TIMEOUT, "no hello within 5.0 s")
    assert server.state is ConnectionState.ERROR
    assert server.close_reason == "no hello within 5.0 s"
    with pytest.raises(HandshakeTimeout, match=r"no hello within 5\.0 s") as caught:
        deliver(server, client)
    assert isinstance(caught.value, TimeoutError)


def test_a_client_giving_up_on_the_handshake_has_nothing_to_tell() -> None:
    """fail() during the client's handshake moves it to ERROR and queues nothing."""
    client = make_client()
    client.data_to_send()
    client.fail(RejectCode.TIMEOUT, "no welcome within 5.0 s")
    assert client.state is ConnectionState.ERROR
    assert client.close_reason == "no welcome within 5.0 s"
    assert client.data_to_send() == b""


def test_failing_an_open_connection_says_goodbye_with_the_reason() -> None:
    """fail() on an open connection queues a goodbye with the reason; the peer closes with it."""
    client, server = open_pair()
    server.fail(RejectCode.TIMEOUT, "runner stopped answering")
    assert server.state is ConnectionState.ERROR
    assert deliver(server, client) == [Goodbye(reason="runner stopped answering")]
    assert client.state is ConnectionState.CLOSED
    assert client.close_reason == "runner stopped answering"


def test_failing_a_finished_connection_changes_nothing() -> None:
    """fail() after a goodbye or an error queues nothing and keeps the state and reason."""
    client, server = open_pair()
    client.send(Goodbye(reason="done"))
    client.data_to_send()
    client.fail(RejectCode.TIMEOUT, "too late")
    assert (client.state, client.close_reason) == (ConnectionState.CLOSED, "done")
    assert client.data_to_send() == b""
    with pytest.raises(RemoteProtocolError):
        server.receive_data(frames(Response(id=99)))
    server.data_to_send()
    server.fail(RejectCode.TIMEOUT, "too late")
    assert server.state is ConnectionState.ERROR
    assert server.close_reason != "too late"
    assert server.data_to_send() == b""


def test_messages_in_the_same_chunk_as_the_hello_are_returned() -> None:
    """Messages that arrive right behind the hello are processed and returned by that call."""
    client, server = make_client(), make_server()
    chunk = client.data_to_send() + frames(Request(id=1, method="ping"), Event(method="e"))
    assert server.receive_data(chunk) == [Request(id=1, method="ping"), Event(method="e")]
    server.send(Response(id=1))
    assert unframe(server.data_to_send()) == [
        Welcome(version=1, name="host", pid=1),
        Response(id=1),
    ]


def test_the_welcome_says_the_servers_level_when_it_has_one() -> None:
    """A log receiver's server says from which level it handles records, asked as the session
    opens; other servers say none; a welcome from an older server, without the field, too."""
    levels = iter([10, 20])
    client, server = make_client(), make_server(welcome_level=lambda: next(levels))
    deliver(client, server)
    deliver(server, client)
    assert client.peer_welcome is not None and client.peer_welcome.level == 10
    client, _ = open_pair()
    assert client.peer_welcome is not None and client.peer_welcome.level is None
    older = make_client()
    assert older.receive_data(frame(msgspec.msgpack.encode(["welcome", 1, "host", 1]))) == []
    assert older.peer_welcome == Welcome(version=1, name="host", pid=1)


def test_messages_in_the_same_chunk_as_the_welcome_are_returned() -> None:
    """Messages the server sends right after its welcome arrive with it and are returned."""
    client, server = make_client(), make_server()
    deliver(client, server)
    server.send(Event(method="ready"))
    server.send(Request(id=server.next_request_id(), method="configure"))
    assert deliver(server, client) == [Event(method="ready"), Request(id=1, method="configure")]
    assert client.state is ConnectionState.OPEN


def test_a_goodbye_right_behind_the_hello_closes_the_new_session() -> None:
    """A hello and a goodbye in one chunk open the session and close it again."""
    client, server = make_client(), make_server()
    chunk = client.data_to_send() + frames(Goodbye(reason="changed my mind"))
    assert server.receive_data(chunk) == [Goodbye(reason="changed my mind")]
    assert server.state is ConnectionState.CLOSED
    assert unframe(server.data_to_send()) == [Welcome(version=1, name="host", pid=1)]


# -- requests and responses ---------------------------------------------------------------------


def test_requests_and_responses_flow_both_ways() -> None:
    """Either side sends requests with its own ids; each answer closes the matching request."""
    client, server = open_pair()
    first, second = client.next_request_id(), client.next_request_id()
    assert (first, second) == (1, 2)
    client.send(Request(id=first, method="add", params=encode_value([1, 2])))
    client.send(Request(id=second, method="slow"))
    assert client.open_requests_sent == {1, 2}
    assert deliver(client, server) == [
        Request(id=1, method="add", params=encode_value([1, 2])),
        Request(id=2, method="slow"),
    ]
    server.send(Request(id=server.next_request_id(), method="log_level"))
    server.send(Response(id=1, result=encode_value(3)))
    assert deliver(server, client) == [
        Request(id=1, method="log_level"),
        Response(id=1, result=encode_value(3)),
    ]
    assert client.open_requests_sent == {2}
    client.send(Response(id=1))
    assert deliver(client, server) == [Response(id=1)]
    assert server.open_requests_sent == frozenset()


def test_events_cancels_and_log_batches_need_no_answer() -> None:
    """Events, cancels and log batches are delivered as sent and open nothing."""
    client, server = open_pair()
    record = LogRecordData(
        name="plugin",
        levelno=20,
        levelname="INFO",
        created=1.5,
        seq=1,
        message="hello",
        extra={"user": "ann"},
    )
    sent: list[Message] = [
        Event(method="progress", params=encode_value(0.5)),
        Cancel(id=12),
        log_batch([record], {10: 3}),
    ]
    for message in sent:
        client.send(message)
    assert deliver(client, server) == sent
    assert client.open_requests_sent == server.open_requests_sent == frozenset()


def test_a_response_to_a_request_never_sent_is_a_protocol_error_told_to_the_peer() -> None:
    """A response for an id that is not open raises and queues a goodbye with the reason."""
    client, server = open_pair()
    with pytest.raises(RemoteProtocolError, match="Response for request 9, which is not open"):
        client.receive_data(frames(Response(id=9)))
    assert client.state is ConnectionState.ERROR
    assert client.close_reason == "Response for request 9, which is not open"
    assert deliver(client, server) == [
        Goodbye(reason="protocol error: Response for request 9, which is not open")
    ]
    assert server.state is ConnectionState.CLOSED


def test_an_error_response_to_a_request_never_sent_is_a_protocol_error() -> None:
    """An error response for an id that is not open raises RemoteProtocolError."""
    client, _ = open_pair()
    error = ErrorInfo(code="error", type="builtins.ValueError", message="no")
    with pytest.raises(RemoteProtocolError, match="ErrorResponse for request 3, which is not open"):
        client.receive_data(frames(ErrorResponse(id=3, error=error)))
    (goodbye,) = unframe(client.data_to_send())
    assert isinstance(goodbye, Goodbye)


def test_a_second_answer_to_the_same_request_is_a_protocol_error() -> None:
    """Once a request is answered its id is closed, so a second answer is a protocol error."""
    client, server = open_pair()
    client.send(Request(id=1, method="m"))
    deliver(client, server)
    with pytest.raises(RemoteProtocolError, match="request 1, which is not open"):
        client.receive_data(frames(Response(id=1), Response(id=1)))


def test_a_peer_reusing_an_open_request_id_is_a_protocol_error() -> None:
    """A request whose id is still open on the receiving side raises and queues a goodbye."""
    client, server = open_pair()
    client.send(Request(id=1, method="m"))
    deliver(client, server)
    with pytest.raises(RemoteProtocolError, match="request id 1 reused while still open"):
        server.receive_data(frames(Request(id=1, method="again")))
    (goodbye,) = unframe(server.data_to_send())
    assert isinstance(goodbye, Goodbye)
    assert "request id 1 reused" in goodbye.reason


def test_a_request_id_may_be_reused_once_answered() -> None:
    """After its answer, a request id is free again on both sides."""
    client, server = open_pair()
    for round_trip in range(3):
        client.send(Request(id=1, method="m", params=encode_value(round_trip)))
        assert deliver(client, server) == [
            Request(id=1, method="m", params=encode_value(round_trip))
        ]
        server.send(Response(id=1, result=encode_value(round_trip)))
        assert deliver(server, client) == [Response(id=1, result=encode_value(round_trip))]
    assert client.open_requests_sent == frozenset()


def test_a_cancelled_request_answered_with_an_error_response_is_closed_on_both_sides() -> None:
    """A cancel leaves the request open until its ErrorResponse, which closes it for good."""
    client, server = open_pair()
    request_id = client.next_request_id()
    client.send(Request(id=request_id, method="slow"))
    client.send(Cancel(id=request_id))
    assert deliver(client, server) == [Request(id=request_id, method="slow"), Cancel(id=request_id)]
    assert client.open_requests_sent == {request_id}
    cancelled = ErrorInfo(code="cancelled", type="asyncio.CancelledError", message="")
    server.send(ErrorResponse(id=request_id, error=cancelled))
    with pytest.raises(LocalProtocolError, match=f"request {request_id} is not open"):
        server.send(Response(id=request_id))
    assert deliver(server, client) == [ErrorResponse(id=request_id, error=cancelled)]
    assert client.open_requests_sent == frozenset()
    with pytest.raises(RemoteProtocolError, match="not open"):
        client.receive_data(frames(Response(id=request_id)))


# -- what this side may send --------------------------------------------------------------------


@pytest.mark.parametrize("role", [Role.CLIENT, Role.SERVER])
def test_sending_before_the_handshake_is_a_local_protocol_error(role: Role) -> None:
    """Neither side may send application messages before the session is open."""
    connection = make_client() if role is Role.CLIENT else make_server()
    connection.data_to_send()
    with pytest.raises(
        LocalProtocolError, match="cannot send Event on a connection in state handshake"
    ):
        connection.send(Event(method="early"))
    assert connection.state is ConnectionState.HANDSHAKE
    assert connection.data_to_send() == b""


def test_sending_after_a_goodbye_is_a_local_protocol_error_naming_the_reason() -> None:
    """After our goodbye nothing more may be sent; the error says why the connection closed."""
    client, _ = open_pair()
    client.send(Goodbye(reason="shutting down"))
    assert client.state is ConnectionState.CLOSED
    assert client.close_reason == "shutting down"
    with pytest.raises(LocalProtocolError, match=r"state closed \(shutting down\)"):
        client.send(Event(method="late"))
    assert unframe(client.data_to_send()) == [Goodbye(reason="shutting down")]


def test_sending_after_a_protocol_error_is_a_local_protocol_error() -> None:
    """A failed connection refuses to send anything."""
    client, _ = open_pair()
    with pytest.raises(RemoteProtocolError):
        client.receive_data(b"\xff\xff\xff\xff")
    with pytest.raises(LocalProtocolError, match="state error"):
        client.send(Event(method="late"))


@pytest.mark.parametrize(
    "message",
    [hello(), Welcome(version=1), Reject(code=RejectCode.PROTOCOL, reason="r")],
    ids=["hello", "welcome", "reject"],
)
def test_sending_a_handshake_message_on_an_open_connection_is_refused(message: Message) -> None:
    """Hello, welcome and reject are the connection's own business, never sent by hand."""
    client, _ = open_pair()
    with pytest.raises(LocalProtocolError, match="is a handshake message"):
        client.send(message)
    assert client.state is ConnectionState.OPEN


def test_sending_a_request_with_an_id_still_open_is_refused() -> None:
    """A request id in use by an unanswered request of ours cannot be sent again."""
    client, _ = open_pair()
    client.send(Request(id=5, method="m"))
    with pytest.raises(LocalProtocolError, match="request id 5 is already in use"):
        client.send(Request(id=5, method="m"))
    assert unframe(client.data_to_send()) == [Request(id=5, method="m")]


def test_answering_a_request_that_is_not_open_is_refused() -> None:
    """A response or error response needs an open request from the peer with that id."""
    client, _ = open_pair()
    with pytest.raises(LocalProtocolError, match="request 8 is not open"):
        client.send(Response(id=8))
    error = ErrorInfo(code="error", type="t", message="m")
    with pytest.raises(LocalProtocolError, match="request 8 is not open"):
        client.send(ErrorResponse(id=8, error=error))


def test_a_message_too_big_or_unencodable_is_refused_and_the_connection_stays_usable() -> None:
    """send() raising for size or encoding queues nothing and leaves the connection open."""
    client, server = open_pair()
    small = Connection(Role.CLIENT, TOKEN, max_frame_size=64)
    server_small = Connection(Role.SERVER, TOKEN, max_frame_size=64)
    deliver(small, server_small)
    deliver(server_small, small)
    with pytest.raises(LocalProtocolError, match="limit is 64 bytes"):
        small.send(Request(id=1, method="m", params=encode_value("x" * 100)))
    assert small.open_requests_sent == frozenset()
    with pytest.raises(LocalProtocolError, match="cannot encode Goodbye"):
        client.send(Goodbye(reason="\ud800"))
    for connection in (small, client):
        assert connection.state is ConnectionState.OPEN
        assert connection.data_to_send() == b""
    client.send(Request(id=1, method="m"))
    assert deliver(client, server) == [Request(id=1, method="m")]


# -- goodbye and end of stream ------------------------------------------------------------------


def test_a_goodbye_closes_both_sides_with_its_reason() -> None:
    """Our goodbye closes us with its reason; the peer returns it last and closes with it too."""
    client, server = open_pair()
    client.send(Event(method="last words"))
    client.send(Goodbye(reason="plugin finished"))
    assert (client.state, client.close_reason) == (ConnectionState.CLOSED, "plugin finished")
    assert deliver(client, server) == [
        Event(method="last words"),
        Goodbye(reason="plugin finished"),
    ]
    assert (server.state, server.close_reason) == (ConnectionState.CLOSED, "plugin finished")


def test_a_goodbye_without_a_reason_gets_a_default_one() -> None:
    """An empty goodbye reason becomes 'closed by this side' / 'peer said goodbye'."""
    client, server = open_pair()
    client.send(Goodbye())
    deliver(client, server)
    assert client.close_reason == "closed by this side"
    assert server.close_reason == "peer said goodbye"


def test_everything_after_a_goodbye_is_ignored() -> None:
    """Messages behind a goodbye in the same chunk, and later bytes, are dropped silently."""
    _, server = open_pair()
    chunk = frames(Goodbye(reason="bye"), Event(method="ghost"), Response(id=77))
    assert server.receive_data(chunk) == [Goodbye(reason="bye")]
    assert server.receive_data(b"\xff garbage after close") == []
    server.receive_eof()
    assert server.state is ConnectionState.CLOSED
    assert server.data_to_send() == b""


def test_end_of_stream_after_goodbye_is_clean() -> None:
    """receive_eof after a goodbye (either side's) raises nothing and keeps the state CLOSED."""
    client, server = open_pair()
    client.send(Goodbye(reason="done"))
    deliver(client, server)
    client.receive_eof()
    server.receive_eof()
    assert client.state is server.state is ConnectionState.CLOSED


def test_end_of_stream_without_goodbye_while_open_is_a_protocol_error() -> None:
    """An open connection whose peer just disappears raises RemoteProtocolError and tells nobody."""
    client, _ = open_pair()
    with pytest.raises(RemoteProtocolError, match="peer closed the connection without a goodbye"):
        client.receive_eof()
    assert client.state is ConnectionState.ERROR
    assert client.data_to_send() == b""
    client.receive_eof()


@pytest.mark.parametrize("role", [Role.CLIENT, Role.SERVER])
def test_end_of_stream_during_the_handshake_is_a_protocol_error(role: Role) -> None:
    """A peer closing before the handshake completed raises RemoteProtocolError."""
    connection = make_client() if role is Role.CLIENT else make_server()
    connection.data_to_send()
    with pytest.raises(RemoteProtocolError, match="during the handshake"):
        connection.receive_eof()
    assert connection.state is ConnectionState.ERROR


def test_end_of_stream_in_the_middle_of_a_frame_is_a_protocol_error_about_the_frame() -> None:
    """EOF cutting a frame short raises RemoteProtocolError mentioning the frame."""
    client, _ = open_pair()
    data = frames(Event(method="cut short"))
    assert client.receive_data(data[:-3]) == []
    with pytest.raises(RemoteProtocolError, match=r"middle of a frame .*3 missing"):
        client.receive_eof()
    assert client.state is ConnectionState.ERROR
    assert client.data_to_send() == b""


def test_receiving_after_a_failure_is_a_local_protocol_error() -> None:
    """Feeding bytes to a connection that already failed is the caller's mistake."""
    client, _ = open_pair()
    with pytest.raises(RemoteProtocolError):
        client.receive_data(frames(Response(id=1)))
    with pytest.raises(LocalProtocolError, match="connection already failed"):
        client.receive_data(frames(Event(method="m")))


# -- bad bytes from the peer --------------------------------------------------------------------


def test_an_oversized_frame_from_the_peer_is_a_protocol_error_told_to_the_peer() -> None:
    """A frame header above the limit raises RemoteProtocolError and queues a goodbye."""
    client = Connection(Role.CLIENT, TOKEN, max_frame_size=1000)
    server = make_server()
    deliver(client, server)
    deliver(server, client)
    with pytest.raises(RemoteProtocolError, match="frame of 1001 bytes exceeds"):
        client.receive_data((1001).to_bytes(4, "big"))
    (goodbye,) = unframe(client.data_to_send())
    assert isinstance(goodbye, Goodbye)
    assert "exceeds the limit of 1000 bytes" in goodbye.reason


def test_a_malformed_message_from_the_peer_is_a_protocol_error_told_to_the_peer() -> None:
    """A frame that is not a valid message raises and queues a goodbye saying it was malformed."""
    client, server = open_pair()
    with pytest.raises(RemoteProtocolError, match="malformed message"):
        server.receive_data(frame(msgspec.msgpack.encode(["cancel", "not an int"])))
    assert deliver(server, client) == [
        Goodbye(reason="protocol error: malformed message: Expected `int`, got `str` - at `$[1]`")
    ]


def test_the_goodbye_for_a_huge_bad_message_stays_small() -> None:
    """The reason told to the peer is shortened when the error quotes a lot of its bytes."""
    _, server = open_pair()
    bad_tag = msgspec.msgpack.encode(["x" * 1_000_000])
    with pytest.raises(RemoteProtocolError, match="malformed message"):
        server.receive_data(frame(bad_tag))
    (goodbye,) = unframe(server.data_to_send())
    assert isinstance(goodbye, Goodbye)
    assert goodbye.reason.startswith("protocol error: malformed message")
    assert len(goodbye.reason) <= 1000


def test_a_bad_message_is_a_remote_protocol_error_even_when_no_reply_fits_in_a_frame() -> None:
    """With a frame limit too small for any goodbye, a bad message still fails cleanly."""
    client = Connection(Role.CLIENT, TOKEN, max_frame_size=64)
    server = Connection(Role.SERVER, TOKEN, max_frame_size=64)
    deliver(client, server)
    deliver(server, client)
    with pytest.raises(RemoteProtocolError, match="malformed message"):
        server.receive_data(frame(msgspec.msgpack.encode(["y" * 30])))
    assert server.state is ConnectionState.ERROR
    assert server.data_to_send() == b""


# -- properties ---------------------------------------------------------------------------------

application_messages = st.one_of(
    st.builds(Request, id=st.just(0), method=texts, params=raws),
    st.builds(Event, method=texts, params=raws),
    st.builds(Cancel, id=st.integers(0, 100)),
    st.builds(log_batch, st.lists(log_records, max_size=2)),
)


@PROPERTY
@given(outgoing=st.lists(application_messages, max_size=8), data=st.data())
def test_application_traffic_arrives_in_order_however_the_stream_is_cut(
    outgoing: list[Message], data: st.DataObject
) -> None:
    """Messages sent on an open connection arrive in order, and every request is answered once."""
    client, server = open_pair()
    sent: list[Message] = []
    for message in outgoing:
        if isinstance(message, Request):
            # Requests are drawn with id 0; give each the id the connection allocates.
            to_send: Message = msgspec.structs.replace(message, id=client.next_request_id())
        else:
            to_send = message
        client.send(to_send)
        sent.append(to_send)
    received: list[Message] = []
    for chunk in data.draw(splits(client.data_to_send()), label="client chunks"):
        received += server.receive_data(chunk)
    assert received == sent
    requests = [message.id for message in sent if isinstance(message, Request)]
    assert client.open_requests_sent == set(requests)
    for request_id in data.draw(st.permutations(requests), label="answer order"):
        server.send(Response(id=request_id, result=encode_value(request_id)))
    answers: list[Message] = []
    for chunk in data.draw(splits(server.data_to_send()), label="server chunks"):
        answers += client.receive_data(chunk)
    assert sorted(answer.id for answer in answers if isinstance(answer, Response)) == requests
    assert client.open_requests_sent == frozenset()


HELLO_FRAME = frames(hello())
WELCOME_FRAME = frames(Welcome(version=1))
hostile_streams = st.lists(
    st.one_of(stream_pieces, st.sampled_from([HELLO_FRAME, WELCOME_FRAME])), max_size=8
).map(b"".join)


def fresh(setup: str) -> Connection:
    """A connection in the state named by ``setup``, its own output already flushed."""
    role, _, when = setup.partition("-")
    connection = make_client() if role == "client" else make_server()
    if when == "open":
        connection.receive_data(WELCOME_FRAME if role == "client" else HELLO_FRAME)
        assert connection.state is ConnectionState.OPEN
    connection.data_to_send()
    return connection


@pytest.mark.parametrize(
    "setup", ["server-handshake", "server-open", "client-handshake", "client-open"]
)
@PROPERTY
@given(stream=hostile_streams, data=st.data())
def test_arbitrary_bytes_never_raise_anything_but_protocol_or_handshake_errors(
    setup: str, stream: bytes, data: st.DataObject
) -> None:
    """Any bytes from the peer are processed or fail with RemoteProtocolError/HandshakeError."""
    connection = fresh(setup)
    for chunk in data.draw(splits(stream), label="chunks"):
        try:
            received = connection.receive_data(chunk)
        except (RemoteProtocolError, HandshakeError):
            assert connection.state is ConnectionState.ERROR
            # Whatever it queued for the peer (a welcome, then why it failed) is well-formed.
            for reply in unframe(connection.data_to_send()):
                assert isinstance(reply, Welcome | Reject | Goodbye)
            return
        assert connection.state is not ConnectionState.ERROR
        for message in received[:-1]:
            assert not isinstance(message, Goodbye)
        unframe(connection.data_to_send())
    try:
        connection.receive_eof()
    except RemoteProtocolError:
        assert connection.state is ConnectionState.ERROR
    else:
        assert connection.state is ConnectionState.CLOSED
