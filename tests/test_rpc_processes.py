"""The RPC layer between real processes, and everything a bad or vanishing peer can do to it."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from isoplug.errors import (
    AuthenticationFailed,
    ConnectionBroken,
    HandshakeTimeout,
    VersionMismatch,
)
from isoplug.rpc import Peer, serve
from isoplug.transport import Listener, connect, listen
from isoplug.transport.stream import Stream
from isoplug.wire import (
    Connection,
    ConnectionState,
    Goodbye,
    Hello,
    Reject,
    Request,
    Response,
    Role,
    decode_message,
    encode_frame,
)
from isoplug.wire.framing import FrameDecoder
from tests.processes import child_env
from tests.rpc_helpers import TOKEN

CHILD = str(Path(__file__).with_name("peer_child.py"))


class Host:
    """A listening test host that records every peer that completes the handshake."""

    def __init__(self) -> None:
        self.peers: asyncio.Queue[Peer] = asyncio.Queue()
        self.listener: Listener | None = None

    async def on_peer(self, peer: Peer) -> None:
        await self.peers.put(peer)
        await peer.wait_closed()

    @property
    def address(self) -> str:
        assert self.listener is not None
        return str(self.listener.address)

    def spawn_child(self) -> subprocess.Popen[str]:
        child = subprocess.Popen(
            [sys.executable, CHILD],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=child_env(),
        )
        assert child.stdin is not None
        child.stdin.write(json.dumps({"address": self.address, "token": TOKEN}) + "\n")
        child.stdin.close()
        return child

    async def next_peer(self) -> Peer:
        return await asyncio.wait_for(self.peers.get(), 20)


@asynccontextmanager
async def running_host(handshake_timeout: float = 2.0) -> AsyncIterator[Host]:
    host = Host()
    host.listener = await serve(
        "unix:",
        TOKEN,
        host.on_peer,
        handlers={"host.echo": lambda p: p},
        handshake_timeout=handshake_timeout,
    )
    try:
        yield host
    finally:
        await host.listener.aclose()


async def finish(child: subprocess.Popen[str]) -> tuple[int, str]:
    """Wait (without blocking the event loop) for the child; return its exit code and stdout."""
    assert child.stdout is not None
    stdout = await asyncio.to_thread(child.stdout.read)
    child.stdout.close()
    code = await asyncio.to_thread(child.wait, 20)
    return code, stdout


async def raw_client(address: str) -> tuple[Stream, FrameDecoder]:
    return await connect(address), FrameDecoder()


async def open_raw_session(address: str) -> tuple[Stream, FrameDecoder]:
    """A connection past the handshake, driven by hand: it can then send anything."""
    stream, frames = await raw_client(address)
    client = Connection(Role.CLIENT, TOKEN)
    stream.write(client.data_to_send())
    while client.state is ConnectionState.HANDSHAKE:
        client.receive_data(await stream.receive_some())
    return stream, frames


async def read_messages(stream: Stream, frames: FrameDecoder) -> list[Any]:
    """Read until the other side closes; return every message it sent."""
    messages: list[Any] = []
    while True:
        data = await stream.receive_some()
        if not data:
            return messages
        messages.extend(decode_message(frame) for frame in frames.receive_data(data))


async def test_host_and_child_process_call_each_other(no_fd_leak: None) -> None:
    """A child process answers the host's requests and calls the host back."""
    async with running_host() as host:
        child = host.spawn_child()
        peer = await host.next_peer()
        assert await peer.request("pid") == child.pid
        assert await peer.request("call_back", {"x": [1, 2]}) == {"x": [1, 2]}
        await peer.aclose("test finished")
        code, stdout = await finish(child)
    assert code == 0
    assert "ConnectionClosed" in stdout and "test finished" in stdout


async def test_child_killed_mid_request_gives_connection_broken(no_fd_leak: None) -> None:
    """SIGKILL of the child during a request fails the request at once; the host lives on."""
    async with running_host() as host:
        child = host.spawn_child()
        peer = await host.next_peer()
        call = asyncio.create_task(peer.request("hang", timeout=None))
        assert await peer.request("echo", "ready") == "ready"
        os.kill(child.pid, signal.SIGKILL)
        with pytest.raises(ConnectionBroken, match="'hang' has no answer"):
            await asyncio.wait_for(call, 20)
        await finish(child)
        # The same listener still serves new children.
        second = host.spawn_child()
        peer2 = await host.next_peer()
        assert await peer2.request("echo", 7) == 7
        await peer2.aclose()
        await finish(second)


async def test_child_exiting_inside_a_handler_gives_connection_broken() -> None:
    """A child that calls os._exit while handling a request makes the request fail clearly."""
    async with running_host() as host:
        child = host.spawn_child()
        peer = await host.next_peer()
        with pytest.raises(ConnectionBroken):
            await peer.request("die")
        code, _ = await finish(child)
        assert code == 3


async def test_garbage_from_the_child_closes_only_its_connection(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A child that writes garbage loses its own session; the host and other children go on."""
    caplog.set_level(logging.WARNING, logger="isoplug.rpc")
    async with running_host() as host:
        good_child = host.spawn_child()
        good = await host.next_peer()
        bad_child = host.spawn_child()
        bad = await host.next_peer()
        # The garbage arrives before the answer, so the request fails with the reason.
        with pytest.raises(ConnectionBroken, match="malformed message"):
            await bad.request("send_garbage")
        await asyncio.wait_for(bad.wait_closed(), 20)
        assert "malformed message" in str(bad.close_error)
        # The host told the child why: the child's session ended with the host's goodbye.
        code, stdout = await finish(bad_child)
        assert code == 0
        assert "protocol error: malformed message" in stdout
        assert await good.request("echo", "unaffected") == "unaffected"
        await good.aclose()
        await finish(good_child)
    assert any("malformed message" in r.getMessage() for r in caplog.records)


async def test_wrong_token_is_refused_on_both_sides(caplog: pytest.LogCaptureFixture) -> None:
    """A wrong token raises AuthenticationFailed for the client; the host logs the refusal."""
    caplog.set_level(logging.WARNING, logger="isoplug.rpc")
    async with running_host() as host:
        with pytest.raises(AuthenticationFailed, match="wrong session token"):
            await Peer.connect(host.address, "not-the-token", name="intruder")
        assert host.peers.empty()
    assert any(
        "wrong session token (the client says it is 'intruder')" in r.getMessage()
        for r in caplog.records
    )


async def test_version_mismatch_is_refused_with_both_ranges() -> None:
    """A client speaking only future versions gets VersionMismatch naming both ranges."""
    async with running_host() as host:
        stream, frames = await raw_client(host.address)
        client = Connection(Role.CLIENT, TOKEN, min_version=7, max_version=9)
        stream.write(client.data_to_send())
        messages = await read_messages(stream, frames)
        await stream.aclose()
    assert len(messages) == 1 and isinstance(messages[0], Reject)
    with pytest.raises(
        VersionMismatch, match=r"listener speaks protocol versions 1\.\.1 .*, the client 7\.\.9"
    ):
        client.receive_data(encode_frame(messages[0]))


async def test_no_hello_within_the_deadline_is_refused() -> None:
    """A client that connects and says nothing is rejected after the handshake deadline."""
    # A short deadline: the client is this process, which needs no time to start.
    async with running_host(handshake_timeout=0.3) as host:
        stream, frames = await raw_client(host.address)
        messages = await asyncio.wait_for(read_messages(stream, frames), 20)
        await stream.aclose()
    assert len(messages) == 1 and isinstance(messages[0], Reject)
    assert messages[0].code == "timeout" and "no hello within 0.3 s" in messages[0].reason


async def test_client_gives_up_on_a_server_that_never_welcomes() -> None:
    """Peer.connect raises HandshakeTimeout when the server accepts but never answers."""
    silent: list[Stream] = []
    done = asyncio.Event()

    async def say_nothing(stream: Stream) -> None:
        silent.append(stream)
        await done.wait()

    listener = await listen("unix:", say_nothing)
    try:
        with pytest.raises(HandshakeTimeout, match=r"no welcome within 0\.2 s"):
            await Peer.connect(listener.address, TOKEN, handshake_timeout=0.2)
    finally:
        done.set()
        await listener.aclose()


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        (b"\xff\xff\xff\xff", "exceeds the limit"),
        (encode_frame(Request(id=1, method="x")), "expected a hello, got Request"),
        (b"\x00\x00\x00\x03abc", "malformed message"),
        (b"\x00\x00\x00\x10trunc", None),
    ],
    ids=["oversized-frame", "request-before-hello", "not-msgpack", "truncated-frame"],
)
async def test_bad_bytes_before_the_handshake_close_only_that_connection(
    payload: bytes, expected: str | None, no_fd_leak: None, caplog: pytest.LogCaptureFixture
) -> None:
    """Garbage, oversized or truncated frames are refused with a reason and nothing leaks."""
    caplog.set_level(logging.WARNING, logger="isoplug.rpc")
    async with running_host() as host:
        bystander = await Peer.connect(host.address, TOKEN, handlers={"echo": lambda p: p})
        stream, frames = await raw_client(host.address)
        stream.write(payload)
        if expected is None:
            # Truncated: the peer vanishes mid-frame.
            await stream.aclose()
            await asyncio.sleep(0)
        else:
            messages = await asyncio.wait_for(read_messages(stream, frames), 20)
            await stream.aclose()
            assert isinstance(messages[-1], Reject)
            assert expected in messages[-1].reason
        server_side = await host.next_peer()  # the bystander
        assert await server_side.request("echo", "ok") == "ok"
        await bystander.aclose()
    if expected is None:
        assert any("middle of a frame" in r.getMessage() for r in caplog.records)


async def test_response_to_an_unknown_request_closes_the_session_with_a_reason() -> None:
    """A response for a request that was never sent is a protocol error the peer is told about."""
    async with running_host() as host:
        stream, frames = await open_raw_session(host.address)
        stream.write(encode_frame(Response(id=99)))
        server_peer = await host.next_peer()
        messages = await asyncio.wait_for(read_messages(stream, frames), 20)
        await stream.aclose()
        await asyncio.wait_for(server_peer.wait_closed(), 20)
    assert isinstance(messages[-1], Goodbye)
    assert "Response for request 99, which is not open" in messages[-1].reason


async def test_second_hello_after_the_handshake_is_a_protocol_error() -> None:
    """A hello inside an open session closes it with a reason."""
    async with running_host() as host:
        stream, frames = await open_raw_session(host.address)
        stream.write(encode_frame(Hello(min_version=1, max_version=1, token=TOKEN)))
        messages = await asyncio.wait_for(read_messages(stream, frames), 20)
        await stream.aclose()
    assert isinstance(messages[-1], Goodbye)
    assert "unexpected Hello after the handshake" in messages[-1].reason


async def test_listener_close_removes_the_socket_and_its_directory() -> None:
    """Closing the host's listener leaves no socket file or private directory behind."""
    async with running_host() as host:
        path = Path(host.address.removeprefix("unix:"))
        assert path.exists()
        assert (path.parent.stat().st_mode & 0o777) == 0o700
    assert not path.exists()
    assert not path.parent.exists()
