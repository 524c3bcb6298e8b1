"""Socket specifics: private unix directories, TCP options, peer credentials, TLS, listeners."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import shutil
import socket
import ssl
import stat
import tempfile
import threading
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import trustme

from isoplug.errors import ConnectError, ConnectionClosed, TransportError
from isoplug.transport import (
    SocketStream,
    Stream,
    connect,
    connect_blocking,
    listen,
    make_private_socket_dir,
    memory_stream_pair,
    tls_client_context,
    tls_server_context,
)
from isoplug.transport import sockets as sockets_module
from isoplug.transport.blocking import listen_blocking

SOCKET_KINDS = ["unix", "tcp", "tls"]

#: Generous bound on any single wait: a hang fails the test instead of the whole run.
WAIT = 20.0


# -- helpers ------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Certs:
    """PEM files from a throwaway CA: its certificate, and key+chain files for both ends."""

    ca: str
    server: str
    client: str


def make_certs(directory: Path, name: str = "ca") -> Certs:
    """Issue a CA, a server certificate for 127.0.0.1/localhost and a client certificate."""
    ca = trustme.CA()
    certs = Certs(
        ca=str(directory / f"{name}.pem"),
        server=str(directory / f"{name}-server.pem"),
        client=str(directory / f"{name}-client.pem"),
    )
    ca.cert_pem.write_to_path(certs.ca)
    ca.issue_cert("127.0.0.1", "localhost").private_key_and_cert_chain_pem.write_to_path(
        certs.server
    )
    ca.issue_cert("isoplug-client").private_key_and_cert_chain_pem.write_to_path(certs.client)
    return certs


@pytest.fixture
def certs(tmp_path: Path) -> Certs:
    """Certificates from a CA made for this test."""
    return make_certs(tmp_path)


def address_for(kind: str) -> str:
    """A listen address of the given kind that picks a fresh socket."""
    return {"unix": "unix:", "tcp": "tcp://127.0.0.1:0", "tls": "tls://127.0.0.1:0"}[kind]


def contexts_for(kind: str, certs: Certs) -> tuple[ssl.SSLContext | None, ssl.SSLContext | None]:
    """(server, client) TLS contexts for ``kind``: both ``None`` unless it is tls."""
    if kind != "tls":
        return None, None
    return tls_server_context(certs.server), tls_client_context(certs.ca)


async def receive_until_eof(stream: Stream) -> bytes:
    """Read everything until the peer's close."""
    buffer = bytearray()
    while chunk := await stream.receive_some():
        buffer += chunk
    return bytes(buffer)


async def echo(stream: Stream) -> None:
    """A connection handler that sends back everything it receives."""
    while data := await stream.receive_some():
        stream.write(data)
        await stream.drain()


async def echo_round_trip(stream: Stream, payload: bytes = b"ping") -> None:
    """Send ``payload`` to an echo handler and check that it comes back."""
    stream.write(payload)
    await stream.drain()
    received = b""
    async with asyncio.timeout(WAIT):
        while len(received) < len(payload):
            chunk = await stream.receive_some()
            assert chunk, "EOF before the echo"
            received += chunk
    assert received == payload


@contextlib.asynccontextmanager
async def connected_pair(
    kind: str, certs: Certs | None = None
) -> AsyncIterator[tuple[SocketStream, SocketStream]]:
    """A connected (client, server) pair over a real listener of the given socket kind."""
    accepted: asyncio.Future[Stream] = asyncio.get_running_loop().create_future()
    test_done = asyncio.Event()

    async def handler(stream: Stream) -> None:
        accepted.set_result(stream)
        await test_done.wait()

    server_context, client_context = (None, None) if certs is None else contexts_for(kind, certs)
    async with await listen(address_for(kind), handler, ssl_context=server_context) as listener:
        client = await connect(listener.address, ssl_context=client_context)
        try:
            async with asyncio.timeout(WAIT):
                server = await accepted
            assert isinstance(client, SocketStream)
            assert isinstance(server, SocketStream)
            yield client, server
        finally:
            test_done.set()
            await client.aclose()


def resolving_as(monkeypatch: pytest.MonkeyPatch, name: str, addresses: list[str]) -> None:
    """Make ``name`` resolve to ``addresses`` (IPv4, in that order) for this test."""
    resolve = socket.getaddrinfo

    def resolved(host: object, port: object, *args: Any, **kwargs: Any) -> list[Any]:
        if host != name:
            return resolve(host, port, *args, **kwargs)  # type: ignore[arg-type]
        return [
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port)) for address in addresses
        ]

    monkeypatch.setattr(socket, "getaddrinfo", resolved)


async def settle_failed_handshakes() -> None:
    """Wait for asyncio's own accept tasks, such as a server-side TLS handshake that is failing.

    A listener hands out only connections that completed their handshake, so it cannot close
    the others; the test must not end while asyncio still finishes them.
    """
    others = asyncio.all_tasks() - {asyncio.current_task()}
    if others:
        _done, pending = await asyncio.wait(others, timeout=WAIT)
        assert not pending, f"tasks still running: {pending}"


def raw_socket(stream: SocketStream) -> socket.socket:
    """The OS socket under a socket stream (asyncio's read-only view of it)."""
    assert stream._transport is not None
    sock: socket.socket = stream._transport.get_extra_info("socket")
    return sock


@pytest.fixture
def refused_port() -> Iterator[int]:
    """A TCP port on 127.0.0.1 that is bound (so nobody else takes it) but not listening."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A TCP port whose listener accepts connections (in the kernel) but never says a word."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        yield sock.getsockname()[1]


# -- private unix socket directories ------------------------------------------------------------


async def test_private_unix_dir_is_0700_and_ours(tmp_path: Path) -> None:
    """listen("unix:") makes a directory of mode exactly 0700, owned by us, holding the socket."""
    old_umask = os.umask(0)  # a permissive umask must not widen the directory
    try:
        listener = await listen("unix:", echo)
    finally:
        os.umask(old_umask)
    async with listener:
        path = listener.address.path
        directory = os.path.dirname(path)
        info = os.stat(directory)
        assert stat.S_ISDIR(info.st_mode)
        assert stat.S_IMODE(info.st_mode) == 0o700
        assert info.st_uid == os.getuid()
        assert stat.S_ISSOCK(os.stat(path).st_mode)
        assert str(listener) == f"unix:{path}"
        async with asyncio.timeout(WAIT):
            client = await connect(listener.address)
        try:
            await echo_round_trip(client)
        finally:
            await client.aclose()


async def test_private_unix_dir_is_0700_from_creation(monkeypatch: pytest.MonkeyPatch) -> None:
    """The private directory comes from tempfile.mkdtemp (0700 at once) and is never chmod-ed."""
    made: list[str] = []
    real_mkdtemp = tempfile.mkdtemp

    def spy_mkdtemp(*args: object, **kwargs: object) -> str:
        directory: str = real_mkdtemp(*args, **kwargs)  # type: ignore[call-overload]
        made.append(directory)
        assert stat.S_IMODE(os.stat(directory).st_mode) == 0o700
        return directory

    def no_chmod(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"chmod{args} would leave a window with the wrong mode")

    monkeypatch.setattr(tempfile, "mkdtemp", spy_mkdtemp)
    monkeypatch.setattr(os, "chmod", no_chmod)
    async with await listen("unix:", echo) as listener:
        assert made == [os.path.dirname(listener.address.path)]


async def test_listener_aclose_removes_socket_and_private_dir() -> None:
    """Closing a unix listener removes its socket and private directory; closing is idempotent."""
    listener = await listen("unix:", echo)
    path = listener.address.path
    assert os.path.exists(path)
    await listener.aclose()
    assert not os.path.exists(path)
    assert not os.path.exists(os.path.dirname(path))
    await listener.aclose()


@pytest.mark.parametrize(
    "deleted",
    ["folder", "socket"],
)
async def test_a_listener_whose_socket_was_deleted_listens_again_at_the_same_path(
    deleted: str,
) -> None:
    """Its folder, or its socket alone, deleted (a temporary-file cleaner), a unix listener
    says so and listens again at the same path, in its folder made again (0700): the
    connection accepted before goes on, and every client given the address reaches it again;
    closing removes it."""
    async with await listen("unix:", echo) as listener:
        assert await listener.listen_again_if_lost() is None  # nothing lost
        path = listener.address.path
        folder = os.path.dirname(path)
        before = await connect(listener.address)
        try:
            await echo_round_trip(before)
            if deleted == "folder":
                shutil.rmtree(folder)
            else:
                os.unlink(path)
            lost = await listener.listen_again_if_lost()
            assert lost == (
                f"its folder {folder} was deleted" if deleted == "folder" else f"{path} was deleted"
            )
            assert listener.address.path == path
            assert stat.S_IMODE(os.stat(folder).st_mode) == 0o700
            assert await listener.listen_again_if_lost() is None
            await echo_round_trip(before, b"still served")
            after = await connect(f"unix:{path}")
            try:
                await echo_round_trip(after)
            finally:
                await after.aclose()
        finally:
            await before.aclose()
    assert not os.path.exists(folder)


async def test_a_listener_whose_folder_was_made_again_by_another_listens_in_a_fresh_one() -> None:
    """A folder made again under the lost one's name by someone else (another mode here) is
    neither used nor removed: the listener listens in a fresh private folder instead."""
    async with await listen("unix:", echo) as listener:
        old = os.path.dirname(listener.address.path)
        shutil.rmtree(old)
        os.mkdir(old, 0o755)
        try:
            lost = await listener.listen_again_if_lost()
            assert lost is not None and "made again by someone else" in lost
            new = os.path.dirname(listener.address.path)
            assert new != old and stat.S_IMODE(os.stat(new).st_mode) == 0o700
            client = await connect(listener.address)
            try:
                await echo_round_trip(client)
            finally:
                await client.aclose()
        finally:
            await listener.aclose()
            assert os.path.isdir(old) and not os.path.exists(new)
            os.rmdir(old)


async def test_explicit_unix_path_is_removed_but_its_dir_kept(tmp_path: Path) -> None:
    """A listener on a given unix path removes the socket when closed but not the directory."""
    path = tmp_path / "explicit.sock"
    async with await listen(f"unix:{path}", echo) as listener:
        assert listener.address.path == str(path)
        assert stat.S_ISSOCK(path.stat().st_mode)
    assert not path.exists()
    assert tmp_path.is_dir()


async def test_an_explicit_unix_path_in_use_is_refused_and_a_stale_one_replaced(
    tmp_path: Path,
) -> None:
    """Listening on a path another listener serves fails clearly (its clients stay its own);
    a socket file left behind by a dead process is replaced."""
    path = tmp_path / "shared.sock"
    async with await listen(f"unix:{path}", echo):
        with pytest.raises(TransportError, match="another process is listening there"):
            await listen(f"unix:{path}", echo)
        stream = await connect(f"unix:{path}")  # the first listener still serves its clients
        try:
            await echo_round_trip(stream)
        finally:
            await stream.aclose()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as stale:
        stale.bind(str(path))
    async with await listen(f"unix:{path}", echo) as listener:
        assert listener.address.path == str(path)


def test_private_dir_falls_back_to_tmp_when_tmpdir_is_too_deep(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """make_private_socket_dir avoids a $TMPDIR so deep that the socket path would not fit."""
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    deep.mkdir(parents=True)
    monkeypatch.setattr(tempfile, "tempdir", str(deep))
    directory = make_private_socket_dir()
    try:
        assert directory.startswith("/tmp/")
        assert len(os.path.join(directory, "sock")) <= 100
        assert stat.S_IMODE(os.stat(directory).st_mode) == 0o700
        assert list(deep.iterdir()) == []
    finally:
        os.rmdir(directory)


def test_private_dir_falls_back_to_tmp_when_tmpdir_was_deleted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A $TMPDIR deleted under a running process (a temporary-file cleaner): the private
    directory is made in /tmp instead, where a dead process's are looked for too."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "deleted"))
    directory = make_private_socket_dir()
    try:
        assert directory.startswith("/tmp/isoplug-")
        assert stat.S_IMODE(os.stat(directory).st_mode) == 0o700
    finally:
        os.rmdir(directory)


async def test_listen_on_missing_directory_raises_transport_error(tmp_path: Path) -> None:
    """Listening on a unix path whose directory does not exist raises TransportError."""
    with pytest.raises(TransportError, match="cannot listen on unix:"):
        await listen(f"unix:{tmp_path}/missing/sock", echo)


# -- TCP ----------------------------------------------------------------------------------------


async def test_tcp_listener_reports_real_port() -> None:
    """A listener on tcp://127.0.0.1:0 reports the port the kernel picked, and it works."""
    async with await listen("tcp://127.0.0.1:0", echo) as listener:
        assert listener.address.host == "127.0.0.1"
        assert listener.address.port != 0
        assert str(listener) == f"tcp://127.0.0.1:{listener.address.port}"
        client = await connect(f"tcp://127.0.0.1:{listener.address.port}")
        try:
            await echo_round_trip(client)
        finally:
            await client.aclose()


async def test_a_name_with_several_addresses_gets_one_socket_and_port(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A name that resolves to two addresses (as localhost does to ::1 and 127.0.0.1 on many
    machines; here made so) is bound once, on the first: the port the listener reports is
    the only one it listens on."""
    resolving_as(monkeypatch, "twice.test", ["127.0.0.1", "127.0.0.2"])
    async with await listen("tcp://twice.test:0", echo) as listener:
        assert isinstance(listener._server, asyncio.Server)
        assert len(listener._server.sockets) == 1
        client = await connect(listener.address)
        try:
            await echo_round_trip(client)
        finally:
            await client.aclose()


async def test_connect_tries_each_address_a_name_resolves_to(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A name whose first address refuses (nothing listens on 127.0.0.2 there) is reached on
    its second; with every address refusing, the error says so for each."""
    async with await listen("tcp://127.0.0.1:0", echo) as listener:
        port = listener.address.port
        resolving_as(monkeypatch, "second.test", ["127.0.0.2", "127.0.0.1"])
        client = await connect(f"tcp://second.test:{port}")
        try:
            await echo_round_trip(client)
        finally:
            await client.aclose()
    resolving_as(monkeypatch, "neither.test", ["127.0.0.2", "127.0.0.3"])
    failed_both = r"every address failed: .*127\.0\.0\.2.*; .*127\.0\.0\.3"
    with pytest.raises(ConnectError, match=failed_both):
        await connect(f"tcp://neither.test:{port}")


@pytest.mark.parametrize("kind", ["tcp", "tls"])
async def test_names_resolve_while_the_applications_default_executor_is_full(
    kind: str, certs: Certs
) -> None:
    """The loop's default executor is the application's: with its one worker busy, listening
    on and connecting to ``localhost`` (a name, resolved in a thread) still work, and a TLS
    connection still checks the certificate against the name."""
    loop = asyncio.get_running_loop()
    application_executor = ThreadPoolExecutor(1, thread_name_prefix="application")
    loop.set_default_executor(application_executor)
    release = threading.Event()
    job = loop.run_in_executor(None, release.wait, WAIT)
    server_context, client_context = contexts_for(kind, certs)
    try:
        async with asyncio.timeout(WAIT / 2):
            async with await listen(
                f"{kind}://localhost:0", echo, ssl_context=server_context
            ) as listener:
                client = await connect(
                    f"{kind}://localhost:{listener.address.port}", ssl_context=client_context
                )
                try:
                    await echo_round_trip(client)
                finally:
                    await client.aclose()
        assert not job.done(), "the name was resolved on the application's default executor"
    finally:
        release.set()
        await job
        application_executor.shutdown()


@pytest.mark.parametrize("kind", ["tcp", "tls"])
async def test_tcp_nodelay_on_both_ends(kind: str, certs: Certs) -> None:
    """TCP_NODELAY is set on both the accepted and the connected socket (tcp and tls)."""
    async with connected_pair(kind, certs) as (client, server):
        for stream in (client, server):
            sock = raw_socket(stream)
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0


async def test_listen_on_port_in_use_raises_transport_error() -> None:
    """Listening on a TCP port another listener holds raises TransportError naming the address."""
    async with await listen("tcp://127.0.0.1:0", echo) as first:
        address = f"tcp://127.0.0.1:{first.address.port}"
        with pytest.raises(TransportError, match=f"cannot listen on {address}"):
            await listen(address, echo)


async def test_listen_tls_without_context_raises_transport_error() -> None:
    """Listening on tls:// without an ssl_context raises TransportError."""
    with pytest.raises(TransportError, match="needs an ssl_context"):
        await listen("tls://127.0.0.1:0", echo)


# -- peer credentials ---------------------------------------------------------------------------


async def test_unix_peer_credentials_are_ours() -> None:
    """On a unix stream (both ends) peer_credentials gives this process's pid, uid and gid."""
    async with connected_pair("unix") as (client, server):
        for stream in (client, server):
            credentials = stream.peer_credentials
            assert credentials is not None
            assert (credentials.pid, credentials.uid, credentials.gid) == (
                os.getpid(),
                os.getuid(),
                os.getgid(),
            )
            assert f"pid={os.getpid()}" in repr(credentials)


async def test_peer_credentials_none_without_unix_socket() -> None:
    """TCP and memory streams have no peer credentials."""
    async with connected_pair("tcp") as (client, server):
        assert client.peer_credentials is None
        assert server.peer_credentials is None
    left, right = memory_stream_pair()
    assert left.peer_credentials is None
    assert right.peer_credentials is None


# -- connecting to nothing ----------------------------------------------------------------------


async def test_connect_to_missing_unix_path_raises_connect_error(tmp_path: Path) -> None:
    """connect() to a unix path where no socket exists raises ConnectError naming the address."""
    address = f"unix:{tmp_path}/nothing-here"
    with pytest.raises(ConnectError, match=f"cannot connect to {address}"):
        await connect(address)


async def test_connect_to_stale_unix_socket_raises_connect_error(tmp_path: Path) -> None:
    """connect() to a unix socket file nobody listens on raises ConnectError naming the address."""
    path = tmp_path / "stale.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.bind(str(path))
    with pytest.raises(ConnectError, match=f"cannot connect to unix:{path}"):
        await connect(f"unix:{path}")


async def test_connect_to_unix_without_path_raises_connect_error() -> None:
    """connect("unix:") raises ConnectError: only a listener can pick a private path."""
    with pytest.raises(ConnectError, match="without a socket path"):
        await connect("unix:")


async def test_connect_to_closed_tcp_port_raises_connect_error(refused_port: int) -> None:
    """connect() to a TCP port nobody listens on raises ConnectError naming the address."""
    address = f"tcp://127.0.0.1:{refused_port}"
    with pytest.raises(ConnectError, match=f"cannot connect to {address}") as caught:
        await connect(address)
    assert isinstance(caught.value.__cause__, ConnectionRefusedError)


async def test_connect_timeout_raises_connect_error(silent_port: int) -> None:
    """A TLS server that never answers the handshake makes connect() raise ConnectError in time."""
    address = f"tls://127.0.0.1:{silent_port}"
    with pytest.raises(ConnectError, match=r"no answer within 0\.2 s"):
        await connect(address, ssl_context=ssl.create_default_context(), timeout=0.2)


@pytest.mark.parametrize("host", ["bad\0host", "a" * 64 + ".example"])
async def test_unusable_host_raises_transport_errors(host: str) -> None:
    """A host getaddrinfo refuses (NUL, over-long label) gives ConnectError / TransportError."""
    with pytest.raises(ConnectError):
        await connect(f"tcp://{host}:1")
    with pytest.raises(ConnectError):
        connect_blocking(f"tcp://{host}:1")
    with pytest.raises(TransportError):
        await listen(f"tcp://{host}:0", echo)
    with pytest.raises(TransportError):
        listen_blocking(f"tcp://{host}:0")


# -- TLS ----------------------------------------------------------------------------------------


async def test_tls_untrusted_ca_fails_and_server_survives(tmp_path: Path, certs: Certs) -> None:
    """A client that does not trust the server's CA gets ConnectError; the server still serves."""
    stranger = make_certs(tmp_path, "stranger")
    server_context = tls_server_context(certs.server)
    async with await listen("tls://127.0.0.1:0", echo, ssl_context=server_context) as listener:
        for _ in range(2):
            with pytest.raises(ConnectError, match=f"cannot connect to {listener.address}"):
                await connect(listener.address, ssl_context=tls_client_context(stranger.ca))
        await settle_failed_handshakes()
        good = await connect(listener.address, ssl_context=tls_client_context(certs.ca))
        try:
            await echo_round_trip(good)
        finally:
            await good.aclose()


async def test_tls_mutual_auth(certs: Certs) -> None:
    """With client_cafile, a client without a certificate is refused; one with a cert is served."""
    server_context = tls_server_context(certs.server, client_cafile=certs.ca)
    handled = 0

    async def counting_echo(stream: Stream) -> None:
        nonlocal handled
        handled += 1
        await echo(stream)

    async with await listen(
        "tls://127.0.0.1:0", counting_echo, ssl_context=server_context
    ) as listener:
        # TLS 1.3 finishes the client's side of the handshake before the server checks the
        # client's certificate, so the refusal shows either in connect() or on the first read.
        try:
            anonymous = await connect(listener.address, ssl_context=tls_client_context(certs.ca))
        except ConnectError:
            pass
        else:
            try:
                async with asyncio.timeout(WAIT):
                    with contextlib.suppress(TransportError):
                        assert await anonymous.receive_some() == b""
            finally:
                await anonymous.aclose()
        await settle_failed_handshakes()
        assert handled == 0

        client_context = tls_client_context(certs.ca, certfile=certs.client)
        good = await connect(listener.address, ssl_context=client_context)
        try:
            await echo_round_trip(good)
        finally:
            await good.aclose()
        assert handled == 1


async def test_tls_close_logs_no_warning(certs: Certs, caplog: pytest.LogCaptureFixture) -> None:
    """An orderly TLS close on either end logs nothing at WARNING or above."""
    caplog.set_level(logging.WARNING)
    async with connected_pair("tls", certs) as (client, server):
        client.write(b"bye")
        await client.aclose()
        async with asyncio.timeout(WAIT):
            assert await receive_until_eof(server) == b"bye"
        await server.aclose()
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []


# -- listener and handlers ----------------------------------------------------------------------


@pytest.mark.parametrize("kind", SOCKET_KINDS)
async def test_failing_handler_is_logged_and_listener_keeps_accepting(
    kind: str, certs: Certs, caplog: pytest.LogCaptureFixture
) -> None:
    """A raising handler is logged on 'isoplug.transport', its stream closed, and others served."""
    caplog.set_level(logging.ERROR, logger="isoplug.transport")
    calls = 0

    async def flaky(stream: Stream) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("handler bug")
        await echo(stream)

    server_context, client_context = contexts_for(kind, certs)
    async with await listen(address_for(kind), flaky, ssl_context=server_context) as listener:
        first = await connect(listener.address, ssl_context=client_context)
        try:
            async with asyncio.timeout(WAIT):
                assert await receive_until_eof(first) == b""
        finally:
            await first.aclose()
        records = [r for r in caplog.records if r.name == "isoplug.transport"]
        assert len(records) == 1
        assert records[0].levelno == logging.ERROR
        assert str(listener.address) in records[0].getMessage()
        assert records[0].exc_info is not None
        assert isinstance(records[0].exc_info[1], RuntimeError)

        second = await connect(listener.address, ssl_context=client_context)
        try:
            await echo_round_trip(second)
        finally:
            await second.aclose()
        assert calls == 2


@pytest.mark.parametrize("kind", SOCKET_KINDS)
async def test_handler_return_closes_stream(kind: str, certs: Certs) -> None:
    """When a handler returns, the listener closes its stream and the client sees EOF."""

    async def greet(stream: Stream) -> None:
        stream.write(b"hello and goodbye")

    server_context, client_context = contexts_for(kind, certs)
    async with await listen(address_for(kind), greet, ssl_context=server_context) as listener:
        client = await connect(listener.address, ssl_context=client_context)
        try:
            async with asyncio.timeout(WAIT):
                assert await receive_until_eof(client) == b"hello and goodbye"
        finally:
            await client.aclose()


@pytest.mark.parametrize("kind", SOCKET_KINDS)
async def test_listener_aclose_cancels_handlers_and_closes_streams(kind: str, certs: Certs) -> None:
    """Listener.aclose() cancels running handlers and closes their streams; clients see EOF."""
    loop = asyncio.get_running_loop()
    started: list[asyncio.Future[Stream]] = [loop.create_future() for _ in range(3)]
    cancelled = 0

    async def stuck(stream: Stream) -> None:
        nonlocal cancelled
        next(f for f in started if not f.done()).set_result(stream)
        try:
            await stream.receive_some()  # the client never sends
        except asyncio.CancelledError:
            cancelled += 1
            raise

    server_context, client_context = contexts_for(kind, certs)
    listener = await listen(address_for(kind), stuck, ssl_context=server_context)
    clients = [await connect(listener.address, ssl_context=client_context) for _ in started]
    try:
        async with asyncio.timeout(WAIT):
            servers = await asyncio.gather(*started)
        await listener.aclose()
        assert cancelled == len(started)
        for server in servers:
            with pytest.raises(ConnectionClosed):
                server.write(b"x")
        async with asyncio.timeout(WAIT):
            for client in clients:
                assert await receive_until_eof(client) == b""
    finally:
        for client in clients:
            await client.aclose()
        await listener.aclose()


async def test_no_handler_starts_once_listener_is_closing(
    certs: Certs, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A connection whose TLS handshake completes after aclose() began never reaches the handler."""
    accepted: list[SocketStream] = []

    class RecordingStream(SocketStream):
        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__(*args, **kwargs)  # type: ignore[arg-type]
            accepted.append(self)

    monkeypatch.setattr(sockets_module, "SocketStream", RecordingStream)
    handled = 0

    async def handler(stream: Stream) -> None:
        nonlocal handled
        handled += 1

    loop = asyncio.get_running_loop()
    lost: asyncio.Future[None] = loop.create_future()

    class Client(asyncio.Protocol):
        def connection_lost(self, exc: Exception | None) -> None:
            if not lost.done():
                lost.set_result(None)

    listener = await listen(
        "tls://127.0.0.1:0", handler, ssl_context=tls_server_context(certs.server)
    )
    transport, protocol = await loop.create_connection(
        Client, listener.address.host, listener.address.port
    )
    try:
        async with asyncio.timeout(WAIT):
            while not accepted:  # the server accepted the TCP connection, handshake pending
                await asyncio.sleep(0)
        closing = asyncio.create_task(listener.aclose())
        await asyncio.sleep(0)  # aclose() has marked the listener closed and stopped accepting
        async with asyncio.timeout(WAIT):
            try:
                await loop.start_tls(
                    transport, protocol, tls_client_context(certs.ca), server_hostname="127.0.0.1"
                )
            except OSError:
                pass  # dropped in its handshake (run in the handler's task, cancelled by aclose)
            else:
                await lost
            await closing
        assert handled == 0
    finally:
        transport.abort()
        await listener.aclose()


# -- no leaks -----------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", SOCKET_KINDS)
async def test_no_fd_leak_across_open_close_cycles(
    kind: str, certs: Certs, refused_port: int, tmp_path: Path, no_fd_leak: None
) -> None:
    """Opening and closing listeners and connections (and failing to connect) leaks no fds."""
    server_context, client_context = contexts_for(kind, certs)
    for _ in range(3):
        async with await listen(address_for(kind), echo, ssl_context=server_context) as listener:
            clients: list[Stream] = []
            for _ in range(3):
                clients.append(await connect(listener.address, ssl_context=client_context))
            for client in clients:
                await echo_round_trip(client)
            await clients[0].aclose()  # one closed by the client, the rest by the listener
        for client in clients:
            await client.aclose()
        for dead in (f"unix:{tmp_path}/nothing", f"tcp://127.0.0.1:{refused_port}"):
            with pytest.raises(ConnectError):
                await connect(dead)
            with pytest.raises(ConnectError):
                await asyncio.to_thread(connect_blocking, dead)


# -- blocking connect ---------------------------------------------------------------------------


@pytest.mark.parametrize("kind", SOCKET_KINDS)
async def test_connect_blocking_reaches_asyncio_listener(
    kind: str, certs: Certs, no_fd_leak: None
) -> None:
    """connect_blocking() to unix/tcp/tls gives a socket whose bytes the asyncio side receives."""
    payload = b"from a blocking socket"
    received: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    async def collect(stream: Stream) -> None:
        data = b""
        while len(data) < len(payload):
            chunk = await stream.receive_some()
            assert chunk, "EOF before the payload"
            data += chunk
        received.set_result(data)
        stream.write(b"ack")
        await stream.drain()

    def ask(sock: socket.socket) -> bytes:
        sock.sendall(payload)
        # Read the answer before closing: closing with unread bytes (such as TLS 1.3 session
        # tickets) makes the kernel send RST instead of FIN.
        answer = b""
        while chunk := sock.recv(16):
            answer += chunk
        return answer

    server_context, client_context = contexts_for(kind, certs)
    async with await listen(address_for(kind), collect, ssl_context=server_context) as listener:
        # In a thread: the TLS handshake needs this event loop running meanwhile.
        sock = await asyncio.to_thread(
            connect_blocking, listener.address, ssl_context=client_context
        )
        try:
            assert sock.gettimeout() is None
            if kind != "unix":
                assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
            if kind == "tls":
                assert isinstance(sock, ssl.SSLSocket)
            assert await asyncio.to_thread(ask, sock) == b"ack"
        finally:
            sock.close()
        assert received.result() == payload


def test_connect_blocking_to_dead_addresses(tmp_path: Path, refused_port: int) -> None:
    """connect_blocking() to where nothing listens raises ConnectError naming the address."""
    for address in (f"unix:{tmp_path}/nothing", f"tcp://127.0.0.1:{refused_port}"):
        with pytest.raises(ConnectError, match=f"cannot connect to {address}"):
            connect_blocking(address)
    with pytest.raises(ConnectError, match="without a socket path"):
        connect_blocking("unix:")


def test_connect_blocking_timeout(silent_port: int) -> None:
    """connect_blocking() to a TLS server that never answers raises ConnectError after timeout."""
    with pytest.raises(ConnectError, match=f"cannot connect to tls://127.0.0.1:{silent_port}"):
        connect_blocking(f"tls://127.0.0.1:{silent_port}", timeout=0.2)


async def test_connect_blocking_untrusted_ca(tmp_path: Path, certs: Certs) -> None:
    """connect_blocking() with a context that does not trust the server's CA raises ConnectError."""
    stranger = make_certs(tmp_path, "stranger")
    server_context = tls_server_context(certs.server)
    async with await listen("tls://127.0.0.1:0", echo, ssl_context=server_context) as listener:
        with pytest.raises(ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            await asyncio.to_thread(
                connect_blocking, listener.address, ssl_context=tls_client_context(stranger.ca)
            )
        await settle_failed_handshakes()
