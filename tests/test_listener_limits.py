"""What every listener grants a connection before it has authenticated, tried with raw sockets:
frames of at most 64 KiB (a bigger hello is refused on its header, before its bytes are read),
a short deadline for the whole handshake, and a cap on connections in their handshake at once.

The listeners: the host's control listener (``serve()`` on the loop) and its log bridge's
(``serve_blocking()``, threads), and a standalone ``LogReceiver`` in both modes.
"""

from __future__ import annotations

import array
import asyncio
import contextlib
import dataclasses
import logging
import os
import re
import socket
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

from isoplug import Host
from isoplug.logs import ForwardingHandler
from isoplug.rpc.gate import HandshakeGate
from isoplug.transport import tls_server_context
from isoplug.transport.address import Scheme, parse_address
from isoplug.transport.stream import PeerCredentials
from isoplug.wire import FrameDecoder, Message, Reject, RejectCode, decode_message
from tests.log_helpers import receiver
from tests.plugins_fixtures import FAST, plugins_dir, running
from tests.record_waiter import RecordWaiter, watching
from tests.test_transport_sockets import make_certs

#: Bound on any single wait: a hang fails the test instead of the whole run.
WAIT = 20.0
#: A handshake deadline no test reaches: what closes a connection is then something else.
LONG = 60.0
FORMATTER = logging.Formatter("%(levelname)s %(name)s: %(message)s")
FORGED = "2026-01-01 00:00:00,000 INFO isoplug.host: plugin other: ready"


# -- raw clients ---------------------------------------------------------------------------------


def raw_connect(address: str) -> socket.socket:
    """A plain socket connected to ``address``, which says nothing yet."""
    parsed = parse_address(address)
    if parsed.scheme is Scheme.UNIX:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(parsed.path)
    else:
        sock = socket.create_connection((parsed.host, parsed.port))
    sock.settimeout(WAIT)
    return sock


def read_until_closed(sock: socket.socket) -> bytes:
    """Everything the server says until it closes the connection (fails after ``WAIT``)."""
    said = b""
    with contextlib.suppress(ConnectionResetError):
        while chunk := sock.recv(65536):
            said += chunk
    return said


def said(data: bytes) -> list[Message]:
    return [decode_message(payload) for payload in FrameDecoder().receive_data(data)]


async def closed_after(sock: socket.socket, data: bytes = b"") -> list[Message]:
    """Send ``data``, then wait (off the loop) until the server closes; what it said."""
    if data:
        sock.sendall(data)
    try:
        return said(await asyncio.to_thread(read_until_closed, sock))
    finally:
        sock.close()


def formatted(waiter: RecordWaiter, text: str) -> list[str]:
    return [FORMATTER.format(r) for r in list(waiter.records) if text in r.getMessage()]


async def logged(waiter: RecordWaiter, text: str, count: int = 1) -> list[str]:
    """Wait until ``count`` records contain ``text``; return them formatted."""
    await waiter.wait_until(lambda: len(formatted(waiter, text)) >= count or None, WAIT)
    return formatted(waiter, text)


def assert_short_and_clean(line: str) -> None:
    assert len(line) < 600, line
    assert "\x1b" not in line and "\r" not in line, line
    assert not [part for part in line.split("\n") if part.startswith(FORGED[:10])], line


# -- the listeners under test --------------------------------------------------------------------

#: Where a standalone receiver replays what it receives.
PREFIX = "forwarded"


@contextlib.asynccontextmanager
async def listening(kind: str, tmp_path: Path, **options: Any) -> AsyncIterator[str]:
    """The address of a listener of ``kind``: a host's control or log listener (an idle host:
    no runner), or a standalone receiver in either mode; ``options`` set its limits."""
    owner, _, which = kind.partition("-")
    if owner == "receiver":
        async with receiver(which, prefix=PREFIX, **options) as log_receiver:
            yield log_receiver.address
        return
    config = dataclasses.replace(FAST, **options)
    async with Host(plugins_dir(tmp_path), config=config) as host:
        assert host._listener is not None
        yield str(host._listener.address) if which == "control" else host._log_bridge.address


LISTENERS = ["host-control", "host-logs", "receiver-async", "receiver-threads"]


# -- before authentication, on every listener ----------------------------------------------------


@pytest.mark.parametrize("kind", LISTENERS)
async def test_an_oversized_hello_is_refused_on_its_header_before_its_bytes(
    kind: str, tmp_path: Path
) -> None:
    """A hello announcing 1 MiB is refused as soon as its 4-byte header arrives: the server
    closes without waiting for the megabyte (its deadline is a minute away), says why, and
    warns in one short line."""
    with watching("isoplug.rpc") as waiter:
        async with listening(kind, tmp_path, handshake_timeout=LONG) as address:
            reply = await closed_after(raw_connect(address), (1024 * 1024).to_bytes(4, "big"))
            assert len(reply) == 1 and isinstance(reply[0], Reject)
            assert reply[0].code == RejectCode.PROTOCOL
            assert "frame of 1048576 bytes exceeds the limit of 65536 bytes" in reply[0].reason
            (line,) = await logged(waiter, "exceeds the limit")
    assert_refusal_said(
        line,
        address,
        r"frame of 1048576 bytes exceeds the limit of 65536 bytes before the handshake completed",
    )
    assert_short_and_clean(line)


@pytest.mark.parametrize("kind", LISTENERS)
async def test_a_malformed_hello_is_warned_about_short_and_escaped(
    kind: str, tmp_path: Path
) -> None:
    """A hello-sized frame of garbage quoting escapes and a forged line: the warning quotes it
    escaped, on one line, cut short."""
    garbage = msgspec.msgpack.encode([f"\x1b[2J\n{FORGED}" + "x" * 10_000, 1])
    with watching("isoplug.rpc") as waiter:
        async with listening(kind, tmp_path, handshake_timeout=LONG) as address:
            frame = len(garbage).to_bytes(4, "big") + garbage
            (reject,) = await closed_after(raw_connect(address), frame)
            assert isinstance(reject, Reject) and reject.code == RejectCode.PROTOCOL
            (line,) = await logged(waiter, "malformed message")
    assert_short_and_clean(line)
    assert "\\x1b[2J" in line


@pytest.mark.parametrize("kind", LISTENERS)
async def test_a_silent_connection_is_closed_at_the_deadline(kind: str, tmp_path: Path) -> None:
    with watching("isoplug.rpc") as waiter:
        async with listening(kind, tmp_path, handshake_timeout=0.5) as address:
            (reject,) = await closed_after(raw_connect(address))
            assert reject == Reject(code=RejectCode.TIMEOUT, reason="no hello within 0.5 s")
            (line,) = await logged(waiter, "no hello within 0.5 s")
    assert_short_and_clean(line)


@pytest.mark.parametrize("passing", [False, True], ids=["bytes", "bytes-and-memfd"])
@pytest.mark.parametrize("kind", LISTENERS)
async def test_a_half_hello_left_open_is_refused_at_the_deadline(
    kind: str, passing: bool, tmp_path: Path
) -> None:
    """Three bytes of a hello (with a memfd, as a log sender passes its ledger), then nothing,
    the connection kept open: refused at the deadline, and said so, by every listener. The
    threaded ones said it "ended during its handshake, neither admitted nor refused:
    connection lost during the handshake", the words for a peer that left (found by an
    outside check)."""
    with watching("isoplug.rpc") as waiter:
        async with listening(kind, tmp_path, handshake_timeout=0.5) as address:
            sock = raw_connect(address)
            memfd = os.memfd_create("isoplug-log-ledger")
            try:
                rights = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [memfd]))]
                sock.sendmsg([b"\x00\x00\x00"], rights if passing else [])
            finally:
                os.close(memfd)
            (reject,) = await closed_after(sock)
            assert reject == Reject(code=RejectCode.TIMEOUT, reason="no hello within 0.5 s")
            (line,) = await logged(waiter, "no hello within 0.5 s")
    assert_refusal_said(line, address, r"no hello within 0\.5 s")


@pytest.mark.parametrize("kind", LISTENERS)
async def test_a_trickling_connection_is_closed_at_the_deadline_all_the_same(
    kind: str, tmp_path: Path
) -> None:
    """Bytes arriving one by one do not extend the deadline: it is for the whole handshake."""
    async with listening(kind, tmp_path, handshake_timeout=0.5) as address:
        sock = raw_connect(address)
        stop = threading.Event()

        def trickle() -> None:
            # A 100-byte frame, a byte every 50 ms: 5 s in all, ten times the deadline.
            for byte in (100).to_bytes(4, "big") + b"x" * 100:
                if stop.wait(0.05):
                    return
                try:
                    sock.send(bytes([byte]))
                except OSError:  # closed by the server: the point
                    return

        trickler = threading.Thread(target=trickle)
        trickler.start()
        try:
            (reject,) = await closed_after(sock)
        finally:
            stop.set()
            await asyncio.to_thread(trickler.join)
        assert reject == Reject(code=RejectCode.TIMEOUT, reason="no hello within 0.5 s")


@pytest.mark.parametrize("mode", ["async", "threads"])
async def test_past_the_cap_connections_are_refused_at_once_and_senders_keep_sending(
    mode: str,
) -> None:
    """Two connections in their handshake fill a cap of two: the next ones get a busy reject
    at once and one warning says so; a sender already authenticated keeps sending; once a seat
    frees up a new sender is served; the count of refusals not said is said at close."""
    with watching("isoplug.rpc") as waiter, watching(PREFIX) as records:
        async with receiver(
            mode, prefix=PREFIX, max_handshakes=2, handshake_timeout=LONG
        ) as log_receiver:
            address = log_receiver.address
            kept = ForwardingHandler(address, log_receiver.token, name="kept")
            late = ForwardingHandler(address, log_receiver.token, name="late")
            silent: list[socket.socket] = []
            try:
                assert await asyncio.to_thread(kept.start, WAIT)
                # The receiver gives a seat back after its welcome is sent: once a record of
                # the sender's arrived, the seat is free for the two that fill the cap.
                kept.handle(record("admitted"))
                await records.wait_for(f"{PREFIX}.sender", "admitted", WAIT)
                silent = [raw_connect(address), raw_connect(address)]
                for _ in range(3):
                    (busy,) = await closed_after(raw_connect(address))
                    assert isinstance(busy, Reject) and busy.code == RejectCode.BUSY
                    assert "at its limit of 2 connections of its own waiting to authenticate" in (
                        busy.reason
                    )
                kept.handle(record("while full"))
                await records.wait_for(f"{PREFIX}.sender", "while full", WAIT)
                silent.pop().close()
                (ended,) = await logged(waiter, "the peer closed the connection before its hello")
                # It left: nothing refused it.
                assert "ended during its handshake, neither admitted nor refused" in ended
                assert "refused a connection" not in ended
                assert await asyncio.to_thread(late.start, WAIT)
                late.handle(record("after"))
                await records.wait_for(f"{PREFIX}.sender", "after", WAIT)
            finally:
                for sock in silent:
                    sock.close()
                await asyncio.to_thread(kept.close)
                await asyncio.to_thread(late.close)
    (refusing,) = formatted(waiter, "refusing new connections")
    # This test's connections are the receiver's own process's: the places of its own.
    assert refusing == (
        f"WARNING isoplug.rpc: log-receiver on {address}: refusing new connections: the "
        "receiver's own processes: at its limit of 2 connections of its own waiting to "
        "authenticate"
    )
    # Within the report interval: no word of accepting again, the rest counted at close.
    assert not formatted(waiter, "accepting connections again")
    (rest,) = formatted(waiter, "refused at once")
    assert rest.endswith(
        f"on {address}: 2 more connection(s) refused at once, not logged one by one (the "
        "latest: the receiver's own processes: at its limit of 2 connections of its own "
        "waiting to authenticate)"
    )


def record(message: str) -> logging.LogRecord:
    return logging.getLogger("sender").makeRecord(
        "sender", logging.INFO, __file__, 1, message, (), None
    )


async def test_a_full_host_refuses_strangers_while_its_runners_work_and_restart(
    tmp_path: Path,
) -> None:
    """The README's "Connections": with both listeners' places taken by strangers, more
    strangers are refused at once and each listener says so once; the running plugin keeps
    answering and logging, and a runner restarted meanwhile connects, starts and logs: its
    connections (the kernel says whose) have places of their own."""
    config = dataclasses.replace(FAST, max_handshakes=2, handshake_timeout=LONG)
    with watching("isoplug.rpc") as waiter:
        async with running(tmp_path, "hostile", config=config) as (host, records):
            assert host._listener is not None
            addresses = [str(host._listener.address), host._log_bridge.address]
            strangers = [raw_connect(address) for address in addresses for _ in range(2)]
            try:
                for address in addresses:
                    for _ in range(2):
                        (busy,) = await closed_after(raw_connect(address))
                        assert isinstance(busy, Reject) and busy.code == RejectCode.BUSY
                await host.call("hostile", "send", door="log", text="while full")
                await records.wait_until(lambda: arrived(records, "while full"), WAIT)
                pid_before = host.plugin("hostile").pid
                await host.restart("hostile")
                assert host.plugin("hostile").pid != pid_before
                await host.call("hostile", "send", door="log", text="restarted")
                (record,) = await records.wait_until(lambda: arrived(records, "restarted"), WAIT)
                assert record.name == "plugin.hostile.hostile"  # its log connection, not stderr
            finally:
                for sock in strangers:
                    sock.close()
    refusing = formatted(waiter, "refusing new connections")
    assert [line.split(" on ")[0] for line in refusing] == [
        "WARNING isoplug.rpc: isoplug-host",
        "WARNING isoplug.rpc: isoplug-host-logs",
    ]
    assert not formatted(waiter, "accepting connections again")


def arrived(records: RecordWaiter, text: str) -> list[logging.LogRecord] | None:
    return [r for r in list(records.records) if text in r.getMessage()] or None


# -- TLS: the TLS handshake is part of the deadline, and of the seat ------------------------------


@pytest.mark.parametrize("mode", ["async", "threads"])
async def test_a_client_that_never_starts_tls_is_dropped_at_the_deadline(
    mode: str, tmp_path: Path
) -> None:
    certs = make_certs(tmp_path)
    async with receiver(
        mode,
        prefix=PREFIX,
        address="tls://127.0.0.1:0",
        ssl_context=tls_server_context(certs.server),
        handshake_timeout=0.5,
    ) as log_receiver:
        # A minute was asyncio's own TLS deadline: WAIT fails the test long before.
        assert await closed_after(raw_connect(log_receiver.address)) == []


async def test_a_tls_handshake_holds_a_seat_of_the_threaded_server(tmp_path: Path) -> None:
    """In the threaded server a connection takes its seat before TLS: one that never starts
    TLS keeps the next out (closed at once: telling it would need TLS)."""
    certs = make_certs(tmp_path)
    async with receiver(
        "threads",
        prefix=PREFIX,
        address="tls://127.0.0.1:0",
        ssl_context=tls_server_context(certs.server),
        handshake_timeout=LONG,
        max_handshakes=1,
    ) as log_receiver:
        with watching("isoplug.rpc") as waiter, raw_connect(log_receiver.address):
            assert await closed_after(raw_connect(log_receiver.address)) == []
            await logged(waiter, "refusing new connections: at its limit of 1 connections")


# -- the gate's word, without sockets ------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_seats_are_counted_and_refused_past_the_cap() -> None:
    gate = HandshakeGate("server", 2)
    assert gate.enter() and gate.enter() and not gate.enter()
    assert gate.pending == 2
    gate.leave()
    assert gate.enter() and gate.pending == 2
    with pytest.raises(ValueError, match="at least 1"):
        HandshakeGate("server", 0)


def test_a_family_has_seats_of_its_own_that_strangers_cannot_take() -> None:
    """With strangers in every seat, a connection the kinship function knows (by the pid the
    kernel gives) still gets one, of its family's own lane, which it alone fills."""
    families = {10: "alpha", 11: "alpha", 20: "beta"}
    gate = HandshakeGate("server", 2, kinship=families.get)
    strangers = [gate.enter(PeerCredentials(99, 0, 0)), gate.enter()]
    assert all(strangers) and not gate.enter(PeerCredentials(98, 0, 0))
    alpha = [gate.enter(PeerCredentials(10, 0, 0)), gate.enter(PeerCredentials(11, 0, 0))]
    assert all(alpha) and {seat.family for seat in alpha} == {"alpha"}
    refused = gate.enter(PeerCredentials(10, 0, 0))
    assert not refused and refused.refused == (
        "alpha: at its limit of 2 connections of its own waiting to authenticate"
    )
    assert gate.enter(PeerCredentials(20, 0, 0))  # another family is not affected
    assert gate.pending == 2 and gate.kin_pending("alpha") == 2
    gate.leave(alpha[0])
    assert gate.kin_pending("alpha") == 1 and gate.pending == 2
    assert gate.enter(PeerCredentials(11, 0, 0))


def test_turning_away_is_said_once_then_summed_up_once_per_interval(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Seats freed and taken again (a stranger reconnecting as each one closes) make no line
    each time: one warning when refusing starts, then at most one line per interval, with
    the count since the last one; what is left at close is said then."""
    clock = Clock()
    gate = HandshakeGate("server", 1, clock=clock, report_interval=60.0)
    gate.address = "unix:/x"
    assert gate.enter()
    for _ in range(5):  # five turns: refused, then a seat freed and taken again
        assert not gate.enter()
        gate.leave()
        assert gate.enter()
        clock.now += 1.0
    assert not gate.enter()
    clock.now += 60.0
    assert not gate.enter()
    gate.leave()
    assert gate.enter()  # less than an interval since the last line: nothing said
    clock.now += 60.0
    gate.leave()
    assert gate.enter()
    assert not gate.enter()  # just said that it accepts again: counted
    gate.close()
    assert [r.getMessage() for r in caplog.records] == [
        "server on unix:/x: refusing new connections: at its limit of 1 connections waiting "
        "to authenticate",
        "server on unix:/x: refusing new connections: 6 refused in the last 65 s (the latest: "
        "at its limit of 1 connections waiting to authenticate)",
        "server on unix:/x: accepting connections again",
        "server on unix:/x: 1 more connection(s) refused at once, not logged one by one (the "
        "latest: at its limit of 1 connections waiting to authenticate)",
    ]


def test_failed_handshakes_are_warned_about_at_a_bounded_rate_and_counted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Ten warnings at once, then one per interval; what was left out is counted in the next
    warning, and at close."""
    clock = Clock()
    gate = HandshakeGate("server", 1, clock=clock)
    gate.address = "unix:/x"
    for n in range(25):
        gate.failed(ValueError(f"bad {n}"), " from pid 7")
    messages = [r.getMessage() for r in caplog.records]
    assert messages == [f"refused a connection from pid 7 on unix:/x: bad {n}" for n in range(10)]
    clock.now += 59.0
    gate.failed(ValueError("bad 24b"))  # less than an interval: counted
    clock.now += 1.0
    gate.failed(ValueError("bad 25"))
    assert caplog.records[-1].getMessage() == (
        "refused a connection on unix:/x: bad 25 (16 more failed handshakes before it, not logged "
        "one by one)"
    )
    gate.failed(ValueError("bad 26"))  # no allowance left: counted
    gate.close()
    assert caplog.records[-1].getMessage() == (
        "server on unix:/x: 1 more failed handshake(s) (refused, or ended by the peer), not "
        "logged one by one"
    )
    assert len(caplog.records) == 12


def test_a_failed_handshakes_text_is_escaped_and_cut(caplog: pytest.LogCaptureFixture) -> None:
    gate = HandshakeGate("server", 1)
    gate.failed(ValueError(f"\x1b[2J\n{FORGED}" + "x" * 10_000))
    (line,) = [FORMATTER.format(r) for r in caplog.records]
    assert_short_and_clean(line)


@pytest.mark.parametrize("mode", ["async", "threads"])
async def test_a_sender_refused_as_busy_at_first_tries_again(mode: str) -> None:
    """A receiver at its cap of connections in their handshake answers a new sender "busy":
    that is no receiver gone, so the sender's first connection is tried again (as after a
    break) and gets through once a place frees up."""
    with watching("isoplug.rpc") as waiter, watching(PREFIX) as records:
        async with receiver(
            mode, prefix=PREFIX, max_handshakes=1, handshake_timeout=LONG
        ) as log_receiver:
            address = log_receiver.address
            silent = raw_connect(address)
            late = ForwardingHandler(address, log_receiver.token, name="late")
            try:
                starting = asyncio.ensure_future(asyncio.to_thread(late.start, WAIT))
                await logged(waiter, "refusing new connections")
                silent.close()
                assert await starting, late.failure
                late.handle(record("after a busy first try"))
                await records.wait_for(f"{PREFIX}.sender", "after a busy first try", WAIT)
            finally:
                silent.close()
                await asyncio.to_thread(late.close)


def assert_refusal_said(line: str, address: str, reason: str) -> None:
    """``line`` is the listener's one WARNING refusing a connection on ``address`` for
    ``reason`` (a regular expression), with the connecting pid where the kernel told it."""
    assert re.fullmatch(
        rf"WARNING isoplug\.rpc: refused a connection( from pid \d+)? on {re.escape(address)}: "
        + reason,
        line,
    ), line
