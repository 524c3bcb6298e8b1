"""A LogReceiver on TCP and TLS as an operator meets it: what it says of clients that fail,
where it says it listens, and the TLS contexts and files it is given (real sockets, real TLS
with certificates made for each test)."""

from __future__ import annotations

import asyncio
import datetime
import logging
import socket
import ssl
from pathlib import Path

import pytest
import trustme
from cryptography.hazmat.primitives import serialization

from isoplug.errors import AddressError, IsoplugError
from isoplug.logs import ADDRESS_ENV, ForwardingHandler, LogReceiver
from isoplug.rpc.blocking import BlockingChannel
from isoplug.rpc.handshake import blocking_client_handshake
from isoplug.transport import tls_client_context, tls_server_context
from tests.record_waiter import RecordWaiter, watching
from tests.test_logs_forwarding import BOTH_MODES, receiving
from tests.test_transport_sockets import make_certs


def host_port(address: str) -> tuple[str, int]:
    """The host and port of a ``tcp://``/``tls://`` address (IPv4 or a name)."""
    host, _, port = address.partition("://")[2].rpartition(":")
    return host, int(port)


def tls_client_that_fails(address: str, context: ssl.SSLContext) -> int:
    """Connect to ``address`` with ``context``, whose handshake is expected to fail; return
    the client's own port, the one the receiver should name."""
    with socket.create_connection(host_port(address), timeout=20) as sock:
        port = int(sock.getsockname()[1])
        with pytest.raises((ssl.SSLError, OSError)):
            context.wrap_socket(sock, server_hostname="127.0.0.1").do_handshake()
    return port


def wrong_token_client(address: str, name: str) -> int:
    """Open a plain TCP connection whose hello has a wrong token and claims ``name``."""
    with socket.create_connection(host_port(address), timeout=20) as sock:
        port = int(sock.getsockname()[1])
        with pytest.raises(IsoplugError, match="wrong session token"):
            blocking_client_handshake(sock, "not-the-token", name=name, role="logs")
    return port


async def forward_one(
    address: str,
    token: str,
    collector: RecordWaiter,
    text: str,
    ssl_context: ssl.SSLContext | None = None,
) -> None:
    """Forward one record saying ``text`` to ``address`` and wait until it is replayed."""
    handler = ForwardingHandler(address, token, ssl_context=ssl_context)
    try:
        assert await asyncio.to_thread(handler.start, 10)
        handler.handle(
            logging.getLogger("sent").makeRecord(
                "sent", logging.WARNING, __file__, 1, text, (), None
            )
        )
        await collector.wait_until(lambda: text in collector.messages())
    finally:
        await asyncio.to_thread(handler.close)


@BOTH_MODES
async def test_a_failed_tls_handshake_is_warned_about_naming_the_client_and_the_fix(
    mode: str, tmp_path: Path
) -> None:
    """A receiver whose context has no certificate fails every client's handshake: on an
    event loop it said nothing at all (asyncio drops the failure); in both modes the warning
    names the client by its host:port and asks about load_cert_chain."""
    certs = make_certs(tmp_path)
    no_certificate = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    with watching("isoplug.rpc") as seen:
        async with receiving(mode, address="tls://127.0.0.1:0", ssl_context=no_certificate) as (
            receiver,
            _,
        ):
            port = await asyncio.to_thread(
                tls_client_that_fails, receiver.address, tls_client_context(certs.ca)
            )
            record = await seen.take_record(text="TLS handshake with a client failed")
    message = record.getMessage()
    assert record.levelno == logging.WARNING
    assert f"refused a connection from 127.0.0.1:{port} on {receiver.address}" in message
    assert "NO_SHARED_CIPHER" in message
    assert "does the receiver's ssl_context have a certificate (load_cert_chain)?" in message


@BOTH_MODES
async def test_the_address_keeps_the_host_name_a_certificate_names(
    mode: str, tmp_path: Path
) -> None:
    """``tls://localhost:0`` was reported as ``tls://127.0.0.1:PORT``: a child verifying a
    certificate that names only ``localhost`` failed. The name stays, with the port bound,
    and a sender given child_env()'s address delivers."""
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    ca.issue_cert("localhost").private_key_and_cert_chain_pem.write_to_path(
        str(tmp_path / "localhost.pem")
    )
    server = tls_server_context(str(tmp_path / "localhost.pem"))
    async with receiving(mode, address="tls://localhost:0", ssl_context=server) as (
        receiver,
        collector,
    ):
        assert receiver.address.startswith("tls://localhost:")
        assert host_port(receiver.address)[1] > 0
        address = receiver.child_env()[ADDRESS_ENV]
        assert address == receiver.address
        client = tls_client_context(str(tmp_path / "ca.pem"))
        await forward_one(address, receiver.token, collector, "by its name", client)


@pytest.mark.parametrize(("wildcard", "loopback"), [("0.0.0.0", "127.0.0.1"), ("[::]", "[::1]")])
async def test_a_wildcard_receiver_gives_its_children_the_loopback_address(
    wildcard: str, loopback: str
) -> None:
    """A receiver bound to every interface says so in ``address``; its children, which run
    here, are given the loopback address of that family, which they can connect to."""
    if wildcard == "[::]" and not socket.has_ipv6:
        pytest.skip("no IPv6 here")
    async with receiving(address=f"tcp://{wildcard}:0") as (receiver, collector):
        port = receiver.address.rpartition(":")[2]
        assert receiver.address == f"tcp://{wildcard}:{port}"
        address = receiver.child_env()[ADDRESS_ENV]
        assert address == f"tcp://{loopback}:{port}"
        await forward_one(address, receiver.token, collector, "via loopback")


@BOTH_MODES
async def test_a_refusal_over_tcp_names_the_peer_by_its_address_and_the_name_as_a_claim(
    mode: str,
) -> None:
    """A wrong token was said as ``wrong session token from pid 1 (systemd)``: the name the
    client chose, worded as the kernel's word on a pid. The peer is named by its host:port,
    the name quoted as what it says it is."""
    with watching("isoplug.rpc") as seen:
        async with receiving(mode, address="tcp://127.0.0.1:0") as (receiver, _):
            port = await asyncio.to_thread(wrong_token_client, receiver.address, "pid 1 (systemd)")
            record = await seen.take_record(text="wrong session token")
    assert record.getMessage() == (
        f"refused a connection from 127.0.0.1:{port} on {receiver.address}: wrong session "
        "token (the client says it is 'pid 1 (systemd)')"
    )


@BOTH_MODES
async def test_a_tls_client_on_a_plaintext_listener_is_told_apart(
    mode: str, tmp_path: Path
) -> None:
    """A TLS ClientHello read as a frame length was said as ``frame of 369295618 bytes
    exceeds the limit``; the warning now says what connected and what to change."""
    certs = make_certs(tmp_path)
    with watching("isoplug.rpc") as seen:
        async with receiving(mode, address="tcp://127.0.0.1:0") as (receiver, _):
            port = await asyncio.to_thread(
                tls_client_that_fails, receiver.address, tls_client_context(certs.ca)
            )
            record = await seen.take_record(text="ClientHello")
    assert record.getMessage().startswith(
        f"refused a connection from 127.0.0.1:{port} on {receiver.address}: a TLS client "
        "connected to a plaintext (tcp://) listener"
    )
    assert "use tls:// with an ssl_context on both sides" in record.getMessage()


def test_a_context_the_receiver_cannot_use_is_refused_where_it_is_made(tmp_path: Path) -> None:
    """A context given with a tcp:// address was ignored (tokens and records in clear); a
    client's context on tls:// failed every handshake, said per connection only."""
    certs = make_certs(tmp_path)
    with pytest.raises(ValueError, match=r"use a tls:// address \(tls://127\.0\.0\.1:0\)"):
        LogReceiver("tcp://127.0.0.1:0", ssl_context=tls_server_context(certs.server))
    client_purpose = ssl.create_default_context()
    client_purpose.load_cert_chain(certs.server)
    with pytest.raises(ValueError, match=r"is a client's .*Purpose\.CLIENT_AUTH"):
        LogReceiver("tls://127.0.0.1:0", ssl_context=client_purpose)


def test_the_tls_helpers_name_the_file_and_the_fix(tmp_path: Path) -> None:
    """A missing file said ``[Errno 2]`` without its name, a non-PEM one ``[SSL] PEM lib``,
    and an encrypted key prompted for its pass phrase on the terminal."""
    missing = str(tmp_path / "nope.pem")
    with pytest.raises(ValueError, match=rf"certfile '{missing}' does not exist"):
        tls_server_context(missing)
    with pytest.raises(ValueError, match=rf"cafile '{missing}' does not exist"):
        tls_client_context(missing)
    not_pem = tmp_path / "notpem.pem"
    not_pem.write_text("this is not a certificate\n")
    with pytest.raises(ValueError, match=rf"certfile '{not_pem}' holds no PEM certificate"):
        tls_server_context(str(not_pem))
    leaf = trustme.CA().issue_cert("localhost")
    leaf.cert_chain_pems[0].write_to_path(str(tmp_path / "cert.pem"))
    key = serialization.load_pem_private_key(leaf.private_key_pem.bytes(), None)
    (tmp_path / "encrypted.key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"secret"),
        )
    )
    cert, encrypted = str(tmp_path / "cert.pem"), str(tmp_path / "encrypted.key")
    with pytest.raises(ValueError, match=r"is encrypted .* password="):
        tls_server_context(cert, encrypted)  # under pytest a prompt would read stdin and fail
    assert tls_server_context(cert, encrypted, password="secret").protocol is (
        ssl.PROTOCOL_TLS_SERVER
    )
    with pytest.raises(ValueError, match="the password does not decrypt its key"):
        tls_server_context(cert, encrypted, password="wrong")


def test_an_expired_certificate_is_warned_about_once_not_refused(tmp_path: Path) -> None:
    """An expired certificate was taken silently; every client then failed to verify it."""
    expired = trustme.CA().issue_cert(
        "localhost",
        not_before=datetime.datetime(2020, 1, 1, tzinfo=datetime.UTC),
        not_after=datetime.datetime(2021, 1, 1, tzinfo=datetime.UTC),
    )
    path = str(tmp_path / "expired.pem")
    expired.private_key_and_cert_chain_pem.write_to_path(path)
    with watching("isoplug.transport") as seen:
        tls_server_context(path)
    warnings = [r.getMessage() for r in seen.records if r.levelno == logging.WARNING]
    assert warnings == [
        f"the certificate in {path!r} expired on Jan  1 00:00:00 2021 GMT: every peer that "
        "verifies it will refuse it; renew it"
    ]


@pytest.mark.parametrize("host", ["loc\x1bal", "a\u202eb", "localhost\n"])
def test_a_host_with_control_characters_is_refused_where_the_receiver_is_made(host: str) -> None:
    """As a sender's is: it failed at the bind, with a TransportError quoting them raw."""
    with pytest.raises(AddressError, match="a host cannot contain whitespace or control") as raised:
        LogReceiver(f"tcp://{host}:0")
    assert host not in str(raised.value)


@BOTH_MODES
async def test_a_claimed_name_is_quoted_once_so_a_real_control_and_its_text_differ(
    mode: str,
) -> None:
    """A real U+202E and the text ``\\u202e`` were both said as ``'\\\\u202e'`` (escaped by
    the sanitizer, then by repr); a role refusal said "(it says it is ...)"."""
    with watching("isoplug.rpc") as seen, watching("isoplug.logs") as logs:
        async with receiving(mode, address="tcp://127.0.0.1:0") as (receiver, _):
            for name in ("a\u202eb", "a\\u202eb"):
                await asyncio.to_thread(wrong_token_client, receiver.address, name)
            channel = await asyncio.to_thread(
                BlockingChannel.connect,
                receiver.address,
                receiver.token,
                name="c\u202ed",
                role="control",
            )
            try:
                role = await logs.take_record(text="this receiver only takes logs")
            finally:
                channel.close()
            real = await seen.take_record(text="wrong session token")
            typed = await seen.take_record(text="wrong session token")
    assert real.getMessage().endswith("(the client says it is 'a\\u202eb')")
    assert typed.getMessage().endswith("(the client says it is 'a\\\\u202eb')")
    assert "(the client says it is 'c\\u202ed'): this receiver only takes logs" in role.getMessage()
