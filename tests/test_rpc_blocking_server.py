"""Blocking listeners and sessions served by threads, over real sockets (no event loop)."""

from __future__ import annotations

import contextlib
import logging
import os
import resource
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from isoplug.errors import (
    AuthenticationFailed,
    ConnectionBroken,
    ConnectionClosed,
    HandshakeError,
    TransportError,
)
from isoplug.rpc import BlockingChannel
from isoplug.rpc.blocking import BlockingServer, ClientLimit, serve_blocking
from isoplug.rpc.gate import busy_reject
from isoplug.rpc.handshake import blocking_client_handshake
from isoplug.transport import connect_blocking, tls_client_context, tls_server_context
from isoplug.transport.blocking import listen_blocking
from isoplug.transport.process_tree import tree_under
from isoplug.wire import Event, Hello, encode_frame
from tests.greedy_sender import greedy_tree
from tests.record_waiter import wait_blocking
from tests.test_transport_sockets import Certs, make_certs

TOKEN = "s3cret"
#: Generous bound on any single wait: a hang fails the test instead of the whole run.
WAIT = 20.0


def read_until_it_ends(channel: BlockingChannel) -> None:
    """Read until the other side ends the session (what that raises propagates)."""
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        channel.receive(0.5)


class Sessions:
    """A session handler that keeps the events each session received and how it ended."""

    def __init__(self, *, fail_on: str | None = None) -> None:
        self.events: list[str] = []
        self.endings: list[BaseException] = []
        self.server: BlockingServer | None = None
        self.closing_when_ended: list[bool] = []
        self._fail_on = fail_on

    def __call__(self, channel: BlockingChannel) -> None:
        try:
            while True:
                for message in channel.receive():
                    if not isinstance(message, Event):
                        continue  # the goodbye: the next receive() raises ConnectionClosed
                    if message.method == self._fail_on:
                        raise RuntimeError("handler bug")
                    if message.method == "leave":
                        return
                    self.events.append(message.method)
        except (ConnectionClosed, ConnectionBroken) as exc:
            self.endings.append(exc)
            assert self.server is not None
            self.closing_when_ended.append(self.server.closing)


@pytest.fixture
def served() -> Iterator[tuple[BlockingServer, Sessions]]:
    sessions = Sessions(fail_on="explode")
    server = serve_blocking("unix:", TOKEN, sessions, name="test", handshake_timeout=0.5)
    sessions.server = server
    try:
        yield server, sessions
    finally:
        server.close()


def connect(server: BlockingServer, token: str = TOKEN) -> BlockingChannel:
    return BlockingChannel.connect(server.address, token, name="client", timeout=WAIT)


def assert_serving(server: BlockingServer, sessions: Sessions, event: str) -> None:
    """A new client gets a session, whose handler receives ``event``."""
    channel = connect(server)
    try:
        channel.notify(event)
        wait_blocking(lambda: event in sessions.events)
    finally:
        channel.close()


# -- the listener --------------------------------------------------------------------------------


def test_close_wakes_a_thread_blocked_in_accept_and_removes_the_socket() -> None:
    listener = listen_blocking("unix:")
    path = listener.address.path
    directory = os.path.dirname(path)
    results: list[object] = []
    thread = threading.Thread(target=lambda: results.append(listener.accept()))
    thread.start()
    wait_blocking(lambda: listener._accepting)  # in accept(), about to wait or waiting
    listener.close()
    thread.join(WAIT)
    assert not thread.is_alive() and results == [None]
    assert not os.path.exists(path) and not os.path.exists(directory)
    assert listener.accept() is None  # and again, after close


def test_an_explicit_unix_path_in_use_is_refused_and_a_stale_one_replaced(
    tmp_path: Path,
) -> None:
    path = tmp_path / "blocking.sock"
    first = listen_blocking(f"unix:{path}")
    try:
        with pytest.raises(TransportError, match="another process is listening there"):
            listen_blocking(f"unix:{path}")
    finally:
        first.close()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as stale:
        stale.bind(str(path))
    second = listen_blocking(f"unix:{path}")
    try:
        assert second.address.path == str(path)
    finally:
        second.close()
    assert not path.exists() and tmp_path.is_dir()


def test_tcp_listener_reports_its_port_and_sets_nodelay() -> None:
    listener = listen_blocking("tcp://127.0.0.1:0")
    try:
        assert listener.address.port
        with connect_blocking(listener.address):
            accepted = listener.accept()
            assert accepted is not None
            with accepted:
                assert accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
    finally:
        listener.close()


def ipv6_loopback_works() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.skipif(not ipv6_loopback_works(), reason="no IPv6 loopback here")
def test_tcp_listener_on_ipv6() -> None:
    listener = listen_blocking("tcp://[::1]:0")
    try:
        assert listener.address.host == "::1" and listener.address.port
        with connect_blocking(listener.address):
            accepted = listener.accept()
            assert accepted is not None
            accepted.close()
    finally:
        listener.close()


def test_unusable_addresses_raise_transport_errors(tmp_path: Path) -> None:
    with pytest.raises(TransportError, match="needs an ssl_context"):
        listen_blocking("tls://127.0.0.1:0")
    with pytest.raises(TransportError, match="cannot listen on"):
        listen_blocking(f"unix:{tmp_path}/missing/dir/sock")


# -- sessions ------------------------------------------------------------------------------------


def test_a_session_runs_its_handler_and_ends_with_a_goodbye(
    served: tuple[BlockingServer, Sessions],
) -> None:
    server, sessions = served
    channel = connect(server)
    try:
        channel.notify("one")
        channel.notify("two")
        wait_blocking(lambda: sessions.events == ["one", "two"])
        channel.notify("leave")  # the handler returns: the server says goodbye
        with pytest.raises(ConnectionClosed):
            read_until_it_ends(channel)
    finally:
        channel.close()
    assert server.wait_idle(WAIT) == 0


def test_a_wrong_token_is_refused_and_reported(
    served: tuple[BlockingServer, Sessions], caplog: pytest.LogCaptureFixture
) -> None:
    server, sessions = served
    with pytest.raises(AuthenticationFailed, match="wrong session token"):
        connect(server, token="wrong")
    # The pid is the kernel's word on who connected (this process), not the hello's claim.
    wait_blocking(lambda: f"refused a connection from pid {os.getpid()} on" in caplog.text)
    assert "wrong session token" in caplog.text
    assert server.wait_idle(WAIT) == 0 and not sessions.events


def test_a_silent_client_is_told_why_and_dropped_after_the_handshake_timeout(
    served: tuple[BlockingServer, Sessions], caplog: pytest.LogCaptureFixture
) -> None:
    server, _ = served
    with connect_blocking(server.address) as silent:
        silent.settimeout(WAIT)
        said = b""
        while chunk := silent.recv(4096):
            said += chunk
    assert b"no hello within 0.5 s" in said  # the reject message
    wait_blocking(lambda: "no hello within 0.5 s" in caplog.text)


def test_a_failing_handler_is_logged_and_the_server_keeps_serving(
    served: tuple[BlockingServer, Sessions], caplog: pytest.LogCaptureFixture
) -> None:
    server, sessions = served
    doomed = connect(server)
    try:
        doomed.notify("explode")
        with pytest.raises(ConnectionClosed):
            read_until_it_ends(doomed)
    finally:
        doomed.close()
    assert "connection handler for" in caplog.text and "RuntimeError: handler bug" in caplog.text
    assert_serving(server, sessions, "still here")


def test_wait_idle_counts_open_sessions(served: tuple[BlockingServer, Sessions]) -> None:
    server, sessions = served
    channel = connect(server)
    try:
        channel.notify("hello")
        wait_blocking(lambda: sessions.events == ["hello"])
        assert server.wait_idle(0.05) == 1
    finally:
        channel.close()
    assert server.wait_idle(WAIT) == 0
    assert isinstance(sessions.endings[0], ConnectionClosed)  # the client said goodbye


def test_close_ends_open_sessions_and_handshakes_at_once(
    served: tuple[BlockingServer, Sessions],
) -> None:
    server, sessions = served
    channel = connect(server)
    silent = connect_blocking(server.address)  # stays in the handshake
    try:
        channel.notify("hello")
        wait_blocking(lambda: sessions.events == ["hello"])
        began = time.monotonic()
        server.close()
        assert time.monotonic() - began < 5  # not the close timeout: nothing was stuck
        assert server.wait_idle(0) == 0
        # The handler saw its session end while the server was closing, then said goodbye.
        assert len(sessions.endings) == 1 and isinstance(sessions.endings[0], ConnectionClosed)
        assert sessions.closing_when_ended == [True]
        with pytest.raises(ConnectionClosed):
            read_until_it_ends(channel)
    finally:
        channel.close()
        silent.close()


def test_sessions_over_tls_a_plain_text_client_refused_and_close_says_goodbye(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    certs: Certs = make_certs(tmp_path)
    sessions = Sessions()
    server = serve_blocking(
        "tls://127.0.0.1:0",
        TOKEN,
        sessions,
        ssl_context=tls_server_context(certs.server),
        handshake_timeout=2,
    )
    sessions.server = server
    try:
        with connect_blocking(f"tcp://127.0.0.1:{server.address.port}") as plain:
            plain.sendall(b"hello? " * 100)
            plain.settimeout(WAIT)
            # The server drops it: EOF, or a reset since our bytes went unread.
            with contextlib.suppress(ConnectionResetError):
                while plain.recv(4096):
                    pass
        wait_blocking(lambda: "TLS handshake with a client failed" in caplog.text)
        channel = BlockingChannel.connect(
            server.address, TOKEN, ssl_context=tls_client_context(certs.ca), timeout=WAIT
        )
        try:
            assert isinstance(channel.socket, ssl.SSLSocket)
            channel.notify("over tls")
            wait_blocking(lambda: sessions.events == ["over tls"])
            server.close()  # ends the open session: the goodbye still goes out over TLS
            with pytest.raises(ConnectionClosed):
                read_until_it_ends(channel)
            assert sessions.closing_when_ended == [True]
        finally:
            channel.close()
    finally:
        server.close()


def test_the_refusal_log_names_the_listener(
    served: tuple[BlockingServer, Sessions], caplog: pytest.LogCaptureFixture
) -> None:
    server, _ = served
    caplog.set_level(logging.WARNING, "isoplug.rpc")
    with pytest.raises(AuthenticationFailed):
        connect(server, token="nope")
    wait_blocking(lambda: f"from pid {os.getpid()} on {server.address}" in caplog.text)


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc to fill the fd table")
def test_accept_out_of_file_descriptors_is_reported_and_retried(
    served: tuple[BlockingServer, Sessions], caplog: pytest.LogCaptureFixture
) -> None:
    """With the descriptor table full, accepting fails: the server says so, pauses, and takes
    the waiting client once descriptors are free again."""
    server, sessions = served
    client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    fillers: list[int] = []
    try:
        resource.setrlimit(
            resource.RLIMIT_NOFILE, (max(map(int, os.listdir("/proc/self/fd"))) + 1, hard)
        )
        with contextlib.suppress(OSError):  # EMFILE: every descriptor number is taken
            while True:
                fillers.append(os.dup(0))
        client.connect(server.address.path)  # queued in the backlog; accept() gets EMFILE
        wait_blocking(lambda: "retrying in 1 s" in caplog.text)
    finally:
        for fd in fillers:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert "Too many open files" in caplog.text
    client.close()
    assert_serving(server, sessions, "after the pause")  # the server accepts again


def test_connections_past_the_limit_are_refused_and_reported_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """At its limit the server refuses new connections at once, telling them why; it says so
    once, and serves again as soon as a session ends."""
    sessions = Sessions()
    server = serve_blocking("unix:", TOKEN, sessions, name="capped", max_connections=2)
    sessions.server = server
    channels = [connect(server), connect(server)]
    try:
        for _ in range(3):
            with pytest.raises(HandshakeError, match="at its limit of 2 open connections"):
                connect(server)
        channels.pop().close()
        wait_blocking(lambda: server.wait_idle(0) == 1)
        assert_serving(server, sessions, "served again")
        assert sessions.events == ["served again"]
    finally:
        for channel in channels:
            channel.close()
        server.close()
    refusals = [r.getMessage() for r in caplog.records if "refusing" in r.getMessage()]
    assert refusals == [
        f"capped on {server.address}: refusing new connections: at its limit of 2 open connections"
    ]
    # Within the report interval no more is said until the server closes, with the count.
    assert f"capped on {server.address}: 2 more connection(s) refused at once" in caplog.text


def test_each_client_is_capped_on_its_own_and_counts_again_once_it_closes() -> None:
    """With a limit per client, one client at its limit is refused in the handshake (and the
    owner told, not the log), the others are served, and a closed session gives its place
    back; handshakes that fail after admission give theirs back too."""
    sessions = Sessions()
    told: list[tuple[str, int | None]] = []
    limit = ClientLimit(
        lambda hello, _credentials: hello.name,
        2,
        lambda client, credentials: told.append(
            (client, None if credentials is None else credentials.pid)
        ),
    )
    server = serve_blocking("unix:", TOKEN, sessions, name="per-client", client_limit=limit)
    sessions.server = server

    def connect_as(name: str) -> BlockingChannel:
        return BlockingChannel.connect(server.address, TOKEN, name=name, timeout=WAIT)

    channels = [connect_as("greedy"), connect_as("greedy")]
    try:
        for _ in range(2):
            with pytest.raises(AuthenticationFailed, match="refused by the listener"):
                connect_as("greedy")
        assert told == [("greedy", os.getpid())] * 2
        channels.append(connect_as("modest"))
        assert server.client_connections("greedy") == 2
        assert server.client_connections("modest") == 1
        channels.pop(0).close()
        wait_blocking(lambda: server.client_connections("greedy") == 1)
        # Admitted (its token matched), then refused for its protocol versions.
        future = Hello(min_version=999, max_version=999, token=TOKEN, role="x", name="greedy")
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(WAIT)
            sock.connect(server.address.path)
            sock.sendall(encode_frame(future))
            while sock.recv(65536):
                pass
        # Its place comes back once the server's thread is through with it (after the close
        # the client saw): waited for, never assumed.
        wait_blocking(lambda: server.client_connections("greedy") == 1)
        channels.append(connect_as("greedy"))
        assert server.client_connections("greedy") == 2
    finally:
        for channel in channels:
            channel.close()
        server.close()
    assert server.client_connections("greedy") == server.client_connections("modest") == 0
    with pytest.raises(ValueError, match="at least 1"):
        ClientLimit(lambda hello, _credentials: hello.name, 0, lambda client, credentials: None)


def test_a_connection_no_thread_can_be_started_for_is_refused_not_fatal(
    served: tuple[BlockingServer, Sessions], caplog: pytest.LogCaptureFixture
) -> None:
    """When no thread can be started (here: a stack larger than the address space, which no
    overcommit policy grants), the connection is refused and reported; the server keeps
    accepting once threads can start again."""
    server, sessions = served
    threading.stack_size(2**48)
    try:
        with pytest.raises(HandshakeError, match="cannot start a thread"):
            connect(server)
    finally:
        threading.stack_size(0)
    assert "refusing new connections: cannot start a thread" in caplog.text
    assert_serving(server, sessions, "still serving")


def test_clients_with_places_of_their_own_cannot_fill_the_listener() -> None:
    """``own_places``: three process trees (the kernel's word) each hold every place their
    limit gives (2 each: 6, three times the listener's ``max_connections``). Past its own
    limit a tree is refused at once and its owner told; the listener-wide limit, which
    counts only what no client holds, never refuses one of them."""
    told: list[str] = []
    me = os.getpid()

    def tree(pid: int) -> str | None:
        top = tree_under(pid, me)
        return None if top is None else f"tree {top}"

    sessions = Sessions()
    server = serve_blocking(
        "unix:",
        TOKEN,
        sessions,
        name="own-places",
        max_connections=2,
        kinship=tree,
        client_limit=ClientLimit(
            lambda hello, _credentials: None,
            2,
            lambda client, credentials: told.append(client),
            own_places=True,
        ),
    )
    sessions.server = server
    try:
        with (
            greedy_tree(server.address, TOKEN, 3) as first,
            greedy_tree(server.address, TOKEN, 3) as second,
            greedy_tree(server.address, TOKEN, 2) as third,
        ):
            outcomes = [(tree.accepted, tree.refused) for tree in (first, second, third)]
            assert outcomes == [(2, 1), (2, 1), (2, 0)]
            assert sorted(told) == sorted(f"tree {tree.pid}" for tree in (first, second))
            assert all(server.client_connections(client) == 2 for client in told)
    finally:
        server.close()
    assert all(server.client_connections(client) == 0 for client in told)


@pytest.mark.parametrize("passing", [False, True], ids=["plain", "passing a descriptor"])
def test_a_client_whose_hello_meets_a_closed_server_reads_its_rejection(passing: bool) -> None:
    """A full server writes its rejection and closes before it reads the hello: the client's
    write of the hello then fails (EPIPE), and the client raises the rejection's reason, not a
    bare "connection lost" (a log sender passes its ring with that write, its hello never
    waiting for the server)."""
    client, server = socket.socketpair()
    read_end, write_end = os.pipe()
    try:
        server.sendall(busy_reject("server: at its limit of 1 open connections"))
        server.close()
        with pytest.raises(HandshakeError, match="at its limit of 1 open connections"):
            blocking_client_handshake(
                client,
                "t" * 43,
                role="logs",
                after_hello=b"" if passing else b"x",
                passing=read_end if passing else None,
            )
    finally:
        client.close()
        os.close(read_end)
        os.close(write_end)
