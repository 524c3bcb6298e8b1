"""A sender to a tcp:// or tls:// receiver: it rides out a collector's restart of seconds
(a unix socket's sender gives up on a parent gone, see test_logs_forwarding), closes within
its deadline while the receiver is away, and says, at once and naming the fix, what no later
attempt can mend (a certificate not trusted, for another name, expired; a client certificate
missing), what is likely wrong when the two sides do not speak the same scheme, and that an
ssl_context with a plain-text address would be ignored."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import socket
import ssl
import threading
from pathlib import Path

import pytest
import trustme

from isoplug.logs import ForwardingHandler, forward_logs
from isoplug.logs import reconnect as reconnect_module
from isoplug.testing import eventually
from isoplug.transport import tls_client_context, tls_server_context
from tests.test_logs_forwarding import BOTH_MODES, finish, receiving, run_script
from tests.test_transport_sockets import make_certs

#: A child forwarding to the receiver of its environment (over TLS when given a CA file,
#: argv[2]) that logs numbered records: one, then, once the test closed the receiver (the
#: step file receiver-gone), one every 20 ms for 2 s, longer than a sender used to keep
#: trying (~0.75 s), and prints how many it logged. Then (argv[3]) ``back``: once the test
#: has a receiver listening again (receiver-back), three more; ``close``: it closes its
#: handler, the receiver still away, and prints the records it counts as dropped.
RESTART_CHILD = """
import logging, sys, time
from pathlib import Path
from isoplug.logs import forward_logs
from isoplug.transport import tls_client_context

steps, ca, ending = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
handler = forward_logs(level=logging.INFO, ssl_context=tls_client_context(ca) if ca else None)
log = logging.getLogger("numbered")
logged = 0

def log_next():
    global logged
    log.warning("record %d", logged, extra={"n": logged})
    logged += 1

def wait_for(step):
    while not (steps / step).exists():
        time.sleep(0.01)

log_next()
wait_for("receiver-gone")
until = time.monotonic() + 2.0
while time.monotonic() < until:
    log_next()
    time.sleep(0.02)
print(logged, flush=True)
if ending == "back":
    wait_for("receiver-back")
    for _ in range(3):
        log_next()
else:
    handler.close(timeout=0.5)
    print(sum(handler.dropped.values()), flush=True)
"""


def restart_contexts(scheme: str, tmp_path: Path) -> tuple[ssl.SSLContext | None, str]:
    """The receiver's context for ``scheme``, and the CA file its child trusts ("" for tcp)."""
    if scheme == "tcp":
        return None, ""
    certs = make_certs(tmp_path)
    return tls_server_context(certs.server), certs.ca


async def delivers_once_back(
    child: asyncio.subprocess.Process,
    steps: Path,
    address: str,
    token: str,
    server: ssl.SSLContext | None,
) -> str:
    """A RESTART_CHILD (``back``) that logged while its receiver was away: with a receiver
    at ``address`` again, it delivers what it queued and the rest, in order; its stderr."""
    assert child.stdout is not None
    logged = int(await asyncio.wait_for(child.stdout.readline(), 30))
    async with receiving("threads", address=address, ssl_context=server, token=token) as (_, after):
        (steps / "receiver-back").touch()
        code, stderr = await finish(child)
        assert code == 0, stderr
        await after.wait_until(lambda: logged + 2 in after.numbers(), timeout=15)
    arrived = after.numbers()
    # The record sent first after the cut may die in the closed socket (TCP keeps no ledger);
    # every record queued from the next on arrives, in order.
    assert arrived == list(range(arrived[0], logged + 3)) and arrived[0] <= 2, arrived
    return stderr


@pytest.mark.parametrize("scheme", ["tcp", "tls"])
async def test_a_network_sender_finds_its_receiver_back_after_seconds(
    scheme: str, tmp_path: Path
) -> None:
    """The receiver is away for over 2 s (a collector's restart): the child says once that it
    is unreachable and what becomes of its records, keeps them queued, and once a receiver
    listens at the address again says it is back and delivers them all, then the later ones.
    (It used to give up for good after ~0.75 s with nothing listening.)"""
    server, ca = restart_contexts(scheme, tmp_path)
    steps = tmp_path / "steps"
    steps.mkdir()
    async with receiving(
        "threads", drain_timeout=0.2, address=f"{scheme}://127.0.0.1:0", ssl_context=server
    ) as (first, before):
        address, token = first.address, first.token
        child = await run_script(first, RESTART_CHILD, str(steps), ca, "back")
        await before.wait_until(lambda: before.numbers() == [0])
    (steps / "receiver-gone").touch()
    stderr = await delivers_once_back(child, steps, address, token, server)
    said = stderr.splitlines()
    unreachable = [line for line in said if "the receiver is unreachable" in line]
    assert len(unreachable) == 1, stderr
    assert unreachable[0].endswith(
        "retrying every up to 5 s; records queue up to 8.0 MiB, then are dropped and counted"
    )
    resumed = [line for line in said if " resumed after " in line]
    assert len(resumed) == 1 and resumed[0].endswith("0 records were dropped meanwhile"), stderr
    assert "stopped" not in stderr


class Squatter:
    """Whoever takes a port for a moment while its collector restarts: it answers each
    connection's TLS with ``answer`` (the 7 bytes of a "certificate required" alert, or a
    certificate from a CA nobody trusts), unauthenticated, and counts them."""

    def __init__(self, port: int, answer: str) -> None:
        self.answered = 0
        self._answer = answer
        self._listening = socket.create_server(("127.0.0.1", port))
        self._listening.settimeout(0.05)
        self._context = leaf_context(trustme.CA().issue_cert("127.0.0.1"))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                connection, _ = self._listening.accept()
            except TimeoutError:
                continue
            with connection:
                connection.settimeout(5)
                with contextlib.suppress(OSError):  # the sender may cut it first
                    if self._answer == "alert":
                        connection.recv(4096)  # its ClientHello
                        connection.sendall(b"\x15\x03\x03\x00\x02\x02\x74")
                    else:
                        self._context.wrap_socket(connection, server_side=True).close()
            self.answered += 1

    def close(self) -> None:
        self._stop.set()
        self._thread.join(10)
        self._listening.close()


@pytest.mark.parametrize("answer", ["alert", "certificate"])
async def test_a_tls_sender_welcomed_before_retries_whoever_fails_verification_meanwhile(
    answer: str, tmp_path: Path
) -> None:
    """While its collector restarts, whoever takes the port answers with a certificate nobody
    trusts or a "certificate required" alert: the sender, welcomed there before, says so once
    and retries, and delivers everything to the collector once it is back. (The first such
    answer ended forwarding for good: a failure that means a configuration error only before
    the first welcome.)"""
    server, ca = restart_contexts("tls", tmp_path)
    steps = tmp_path / "steps"
    steps.mkdir()
    async with receiving(
        "threads", drain_timeout=0.2, address="tls://127.0.0.1:0", ssl_context=server
    ) as (first, before):
        address, token = first.address, first.token
        child = await run_script(first, RESTART_CHILD, str(steps), ca, "back")
        await before.wait_until(lambda: before.numbers() == [0])
    (steps / "receiver-gone").touch()
    squatter = Squatter(int(address.rpartition(":")[2]), answer)
    try:
        # Two attempts answered: the second is said no more.
        await eventually(lambda: squatter.answered >= 2, timeout=30)
    finally:
        await asyncio.to_thread(squatter.close)
    stderr = await delivers_once_back(child, steps, address, token, server)
    failed = "TLSV13_ALERT_CERTIFICATE_REQUIRED" if answer == "alert" else "unable to get local"
    doubts = [line for line in stderr.splitlines() if "failed verification" in line]
    assert len(doubts) == 1, stderr
    assert doubts[0].startswith(
        f"isoplug: log forwarding from pid {child.pid}: the receiver at {address} failed "
        f"verification ({failed}"
    )
    assert doubts[0].endswith("): not the collector this sender knew? retrying"), stderr
    assert "stopped" not in stderr and " resumed after " in stderr, stderr


async def test_a_network_sender_closed_while_its_receiver_is_away_says_what_it_dropped(
    tmp_path: Path,
) -> None:
    """Closed with the receiver still away, the child waits no longer than its close timeout,
    counts what it still held as dropped and says so (no receiver ever will)."""
    steps = tmp_path / "steps"
    steps.mkdir()
    async with receiving("threads", drain_timeout=0.2, address="tcp://127.0.0.1:0") as (
        receiver,
        collector,
    ):
        child = await run_script(receiver, RESTART_CHILD, str(steps), "", "close")
        await collector.wait_until(lambda: collector.numbers() == [0])
    (steps / "receiver-gone").touch()
    stdout, said = await asyncio.wait_for(child.communicate(), 30)
    stderr = said.decode(errors="replace")
    assert child.returncode == 0, stderr
    dropped = int(stdout.split()[-1])
    assert dropped > 0, stderr
    assert f"; {dropped:,} records were dropped meanwhile and at the close" in stderr, stderr
    assert "the receiver unreachable for" in stderr and "stopped" not in stderr


def leaf_context(leaf: trustme.LeafCert) -> ssl.SSLContext:
    """A receiver's context presenting ``leaf``."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    leaf.configure_cert(context)
    return context


def failing_tls(case: str, tmp_path: Path) -> tuple[ssl.SSLContext, ssl.SSLContext, str]:
    """(receiver's context, sender's context, what the sender's failure says) for ``case``."""
    certs = make_certs(tmp_path)
    ca = trustme.CA()
    trusting = tls_client_context(certs.ca)
    if case == "another CA":
        return (
            tls_server_context(make_certs(tmp_path, "other").server),
            trusting,
            "this sender does not trust the receiver's certificate (unable to get local "
            "issuer certificate): give the sender an ssl_context that trusts the receiver's "
            "CA (ssl.create_default_context(cafile=...)",
        )
    if case == "another name":
        sender = ssl.create_default_context()
        ca.configure_trust(sender)
        return (
            leaf_context(ca.issue_cert("logs.example")),
            sender,
            "the receiver's certificate is not valid for the name connected by (IP address "
            "mismatch, certificate is not valid for '127.0.0.1'.): connect by a name its "
            "certificate holds",
        )
    if case == "expired":
        sender = ssl.create_default_context()
        ca.configure_trust(sender)
        now = datetime.datetime.now(datetime.UTC)
        expired = ca.issue_cert(
            "127.0.0.1",
            not_before=now - datetime.timedelta(days=30),
            not_after=now - datetime.timedelta(days=1),
        )
        return (
            leaf_context(expired),
            sender,
            "the receiver's certificate is outside its validity period (certificate has "
            "expired): give the receiver a current certificate",
        )
    assert case == "no client certificate"
    return (
        tls_server_context(certs.server, client_cafile=certs.ca),
        trusting,
        "the receiver requires a client certificate, and this sender's ssl_context has none "
        "(TLSV13_ALERT_CERTIFICATE_REQUIRED): load one into it (context.load_cert_chain(",
    )


@pytest.mark.parametrize("case", ["another CA", "another name", "expired", "no client certificate"])
async def test_a_tls_failure_no_attempt_can_mend_ends_forwarding_at_once(
    case: str, tmp_path: Path
) -> None:
    """As a wrong token does: one attempt (not 9, over ~6.5 s), and a failure naming the
    problem and its fix."""
    server, client, expected = failing_tls(case, tmp_path)
    async with receiving("threads", address="tls://127.0.0.1:0", ssl_context=server) as (
        receiver,
        _,
    ):
        handler = ForwardingHandler(receiver.address, receiver.token, ssl_context=client)
        handler.say_failures = False
        try:
            assert not await asyncio.to_thread(handler.start, 30)
        finally:
            await asyncio.to_thread(handler.close)
    failure = handler.failure
    assert failure is not None and expected in failure, failure
    assert failure.startswith(f"cannot connect to {receiver.address}")
    assert "attempts" not in failure


@BOTH_MODES
@pytest.mark.parametrize("sender", ["tls", "tcp"])
async def test_a_scheme_the_receiver_does_not_speak_is_named_as_the_likely_cause(
    mode: str, sender: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A TLS sender at a plain-text receiver, a plain-text sender at a TLS one: the failure
    asks whether the receiver speaks the other scheme (other causes give the same errors)."""
    monkeypatch.setattr(reconnect_module, "RECONNECT_DELAYS", (0.0,))
    certs = make_certs(tmp_path)
    listening = "tcp" if sender == "tls" else "tls"
    server = tls_server_context(certs.server) if listening == "tls" else None
    async with receiving(mode, address=f"{listening}://127.0.0.1:0", ssl_context=server) as (
        receiver,
        _,
    ):
        address = receiver.address.replace(f"{listening}://", f"{sender}://")
        client = tls_client_context(certs.ca) if sender == "tls" else None
        handler = ForwardingHandler(address, receiver.token, ssl_context=client)
        handler.say_failures = False
        try:
            assert not await asyncio.to_thread(handler.start, 30)
        finally:
            await asyncio.to_thread(handler.close)
    failure = handler.failure or ""
    if sender == "tls":
        assert (
            "[SSL: WRONG_VERSION_NUMBER] wrong version number (_ssl.c:" in failure
            and f"; the receiver at {address} did not answer the TLS handshake as TLS; is it "
            f"listening with tls:// and an ssl_context?"
            in failure
        ), failure
    else:
        assert failure.endswith(
            "; the receiver cut the connection before answering the hello; if it listens "
            "with TLS, connect with a tls:// address and an ssl_context)"
        ), failure


def answer_every_hello_with(answer: bytes) -> tuple[socket.socket, threading.Thread]:
    """A tcp listener that is no isoplug receiver: it answers each connection's first bytes
    with ``answer``, then closes; the thread ends once the listener is closed."""
    listening = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        with contextlib.suppress(OSError):  # the listener closed
            while True:
                connection, _ = listening.accept()
                with connection, contextlib.suppress(OSError):
                    connection.settimeout(10)
                    connection.recv(65536)
                    connection.sendall(answer)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return listening, thread


@pytest.mark.parametrize("answer", [b"HTTP/1.1 400 Bad Request\r\n\r\n", b"\x7f\xff\xff\xff"])
async def test_a_collector_answering_in_another_protocol_is_not_said_to_have_cut(
    answer: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Garbage, or a huge frame header, in answer to the hello was said as "the receiver cut
    the connection before answering the hello; if it listens with TLS...": it answered."""
    monkeypatch.setattr(reconnect_module, "RECONNECT_DELAYS", (0.0,))
    listening, thread = answer_every_hello_with(answer)
    address = f"tcp://127.0.0.1:{listening.getsockname()[1]}"
    handler = ForwardingHandler(address, "token")
    handler.say_failures = False
    try:
        assert not await asyncio.to_thread(handler.start, 30)
    finally:
        await asyncio.to_thread(handler.close)
        listening.shutdown(socket.SHUT_RDWR)
        listening.close()
        await asyncio.to_thread(thread.join, 10)
    failure = handler.failure or ""
    assert failure.endswith(
        f"; the receiver at {address} answered the hello with something that is not "
        "isoplug's protocol: is an isoplug LogReceiver listening there?)"
    ), failure
    assert "cut the connection" not in failure


@pytest.mark.parametrize("scheme", ["tcp", "unix"])
def test_an_ssl_context_with_a_plain_text_address_is_refused_when_given(
    scheme: str, tmp_path: Path
) -> None:
    """It would be ignored: the token and the records would cross in plain text."""
    address = "tcp://127.0.0.1:9" if scheme == "tcp" else "unix:/tmp/isoplug-nowhere.sock"
    context = tls_client_context(make_certs(tmp_path).ca)
    for make in (ForwardingHandler, forward_logs):
        with pytest.raises(ValueError, match="use a tls:// address") as raised:
            make(address, "token", ssl_context=context)
        assert str(raised.value).startswith(f"{address}: an ssl_context was given, but a {scheme}:")


def test_a_servers_context_given_to_a_sender_is_refused_when_given(tmp_path: Path) -> None:
    """A context made for the listening side (ssl.Purpose.CLIENT_AUTH) cannot connect: every
    attempt used to fail, 9 of them."""
    context = tls_server_context(make_certs(tmp_path).server)
    with pytest.raises(ValueError, match="give a sender a client context"):
        ForwardingHandler("tls://127.0.0.1:9", "token", ssl_context=context)
