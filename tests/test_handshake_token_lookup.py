"""A listener may look up the expected token per client hello (one token per runner)."""

from __future__ import annotations

import asyncio
import logging

import pytest

from isoplug.errors import AuthenticationFailed
from isoplug.rpc import Peer, serve
from isoplug.wire import Connection, ConnectionState, Hello, Reject, Role, decode_message
from isoplug.wire.framing import FrameDecoder

TOKENS = {"runner-a": "token-a-0123456789", "runner-b": "token-b-0123456789"}


def handshake(server: Connection, client: Connection) -> list[object]:
    """Feed the client's hello to the server; return what the server answered."""
    try:
        server.receive_data(client.data_to_send())
    finally:
        answer = server.data_to_send()
    return [decode_message(frame) for frame in FrameDecoder().receive_data(answer)]


def lookup_server(seen: list[Hello]) -> Connection:
    def lookup(hello: Hello) -> str | None:
        seen.append(hello)
        return TOKENS.get(hello.name)

    return Connection(Role.SERVER, lookup)


def test_the_lookup_is_called_with_the_hello_and_the_right_token_opens_the_session() -> None:
    """The server asks the lookup for the named client's token and accepts a match."""
    seen: list[Hello] = []
    server = lookup_server(seen)
    client = Connection(Role.CLIENT, TOKENS["runner-b"], name="runner-b", pid=42)
    handshake(server, client)
    assert server.state is ConnectionState.OPEN
    assert [h.name for h in seen] == ["runner-b"] and seen[0].pid == 42


def test_another_clients_token_is_refused() -> None:
    """Runner a's token does not open a session for runner b: tokens are per client."""
    server = lookup_server([])
    client = Connection(Role.CLIENT, TOKENS["runner-a"], name="runner-b")
    with pytest.raises(
        AuthenticationFailed, match="wrong session token \\(the client says it is 'runner-b'\\)"
    ):
        handshake(server, client)
    assert server.state is ConnectionState.ERROR


def test_an_unknown_client_is_refused_as_unknown_runner() -> None:
    """A lookup returning None refuses the hello; the client is told only 'unknown runner'."""
    server = lookup_server([])
    client = Connection(Role.CLIENT, "anything", name="ghost", pid=7)
    with pytest.raises(AuthenticationFailed, match=r"^runner 'ghost' is not expected: no start"):
        server.receive_data(client.data_to_send())
    [reject] = [decode_message(f) for f in FrameDecoder().receive_data(server.data_to_send())]
    assert isinstance(reject, Reject)
    assert reject.code == "authentication" and reject.reason == "unknown runner"


def test_the_comparison_stays_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """Looked-up tokens are compared with hmac.compare_digest, never with ==."""
    calls: list[tuple[bytes, bytes]] = []
    import hmac

    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr("isoplug.wire.hello_checks.hmac.compare_digest", spy)
    handshake(lookup_server([]), Connection(Role.CLIENT, TOKENS["runner-a"], name="runner-a"))
    assert calls == [(TOKENS["runner-a"].encode(), TOKENS["runner-a"].encode())]


def test_a_client_cannot_present_a_lookup() -> None:
    """Only the listening side may use a lookup; a client needs the token itself."""
    with pytest.raises(TypeError, match="must be a str"):
        Connection(Role.CLIENT, lambda hello: "x")


async def test_serve_routes_each_runner_by_its_own_token(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Over a real socket: each runner gets in with its own token; a swapped token does not."""
    caplog.set_level(logging.WARNING, logger="isoplug.rpc")
    accepted: asyncio.Queue[str] = asyncio.Queue()

    async def on_peer(peer: Peer) -> None:
        await accepted.put(peer.peer_name)
        await peer.wait_closed()

    listener = await serve("unix:", lambda hello: TOKENS.get(hello.name), on_peer)
    try:
        for name, token in TOKENS.items():
            peer = await Peer.connect(listener.address, token, name=name)
            assert await asyncio.wait_for(accepted.get(), 10) == name
            await peer.aclose()
        with pytest.raises(AuthenticationFailed, match="wrong session token"):
            await Peer.connect(listener.address, TOKENS["runner-a"], name="runner-b")
        with pytest.raises(AuthenticationFailed, match="unknown runner"):
            await Peer.connect(listener.address, "x", name="intruder")
    finally:
        await listener.aclose()
    assert any("runner 'intruder' is not expected" in r.getMessage() for r in caplog.records)
