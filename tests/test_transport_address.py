"""Address syntax: ``unix:/path``, ``unix:``, ``tcp://host:port``, ``tls://host:port``."""

from __future__ import annotations

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from isoplug.errors import AddressError, IsoplugError
from isoplug.transport import Address, Scheme, parse_address


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("unix:/run/isoplug/sock", Address(Scheme.UNIX, path="/run/isoplug/sock")),
        ("unix:", Address(Scheme.UNIX, path="")),
        ("unix:/", Address(Scheme.UNIX, path="/")),
        ("unix:relative/sock", Address(Scheme.UNIX, path="relative/sock")),
        ("unix:/with space/and:colon", Address(Scheme.UNIX, path="/with space/and:colon")),
        ("tcp://127.0.0.1:9000", Address(Scheme.TCP, host="127.0.0.1", port=9000)),
        ("tcp://localhost:0", Address(Scheme.TCP, host="localhost", port=0)),
        ("tcp://example.org:65535", Address(Scheme.TCP, host="example.org", port=65535)),
        ("tls://example.org:443", Address(Scheme.TLS, host="example.org", port=443)),
        ("tcp://[::1]:9000", Address(Scheme.TCP, host="::1", port=9000)),
        ("tls://[fe80::1%eth0]:1", Address(Scheme.TLS, host="fe80::1%eth0", port=1)),
    ],
)
def test_parse_valid(text: str, expected: Address) -> None:
    """Every documented form parses into the scheme, path, host and port it spells."""
    assert parse_address(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "unix:/run/isoplug/sock",
        "unix:",
        "tcp://127.0.0.1:9000",
        "tcp://localhost:0",
        "tls://example.org:65535",
        "tcp://[::1]:9000",
        "tls://[2001:db8::42]:443",
    ],
)
def test_round_trip(text: str) -> None:
    """``str(parse_address(x)) == x`` for every address written in canonical form."""
    assert str(parse_address(text)) == text


def test_unbracketed_ipv6_gets_brackets() -> None:
    """An IPv6 host is always printed in brackets, so the printed form parses back the same."""
    address = Address(Scheme.TCP, host="::1", port=80)
    assert str(address) == "tcp://[::1]:80"
    assert parse_address(str(address)) == address


def test_address_passes_through() -> None:
    """``parse_address`` returns an already parsed :class:`Address` unchanged."""
    address = Address(Scheme.TLS, host="h", port=1)
    assert parse_address(address) is address


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("tcp://localhost", "missing port"),
        ("tls://example.org", "missing port"),
        ("tcp://localhost:", "port must be a number from 0 to 65535"),
        ("tcp://localhost:65536", "port must be a number from 0 to 65535"),
        ("tcp://localhost:99999999", "port must be a number from 0 to 65535"),
        ("tcp://localhost:-1", "port must be a number from 0 to 65535"),
        ("tcp://localhost:+80", "port must be a number from 0 to 65535"),
        ("tcp://localhost: 80", "port must be a number from 0 to 65535"),
        ("tcp://localhost:http", "port must be a number from 0 to 65535"),
        ("tcp://localhost:\u00b2", "port must be a number from 0 to 65535"),
        ("tcp://localhost:\u0661\u0662", "port must be a number from 0 to 65535"),
        ("tcp://localhost:" + "9" * 5000, "port must be a number from 0 to 65535"),
        ("udp://localhost:53", "unknown scheme 'udp'"),
        ("TCP://localhost:53", "unknown scheme 'TCP'"),
        ("://localhost:53", "unknown scheme ''"),
        ("localhost:53", "is not an address"),
        ("/run/isoplug/sock", "is not an address"),
        ("", "is not an address"),
        ("unix://run/isoplug/sock", "without '//'"),
        ("unix:///run/isoplug/sock", "without '//'"),
        ("tcp://:80", "missing host"),
        ("tcp://[]:80", "missing host"),
        ("unix:/run/iso\0plug", "NUL"),
        ("tcp://[::1]", "expected [ipv6-host]:port"),
        ("tcp://[::1:80", "expected [ipv6-host]:port"),
        ("tcp://[::1]80", "expected [ipv6-host]:port"),
        ("tcp://a]:80", "cannot contain '[' or ']'"),
        ("tcp://[[::1]:80", "cannot contain '[' or ']'"),
    ],
)
def test_parse_invalid(text: str, problem: str) -> None:
    """A malformed address raises AddressError (a ValueError) with a message naming the problem."""
    with pytest.raises(AddressError) as caught:
        parse_address(text)
    assert isinstance(caught.value, ValueError)
    assert problem in str(caught.value)
    assert repr(text)[:40] in str(caught.value)


_ADDRESS_LIKE = st.builds(
    "".join,
    st.tuples(
        st.sampled_from(["", "unix:", "unix://", "tcp://", "tls://", "udp://", "tcp:/", "://"]),
        st.sampled_from(["", "[", "[::1]", "::1", "localhost", "h]"]),
        st.text(max_size=8),
        st.sampled_from(["", ":", "]:", ":80", ":65536"]),
        st.text(alphabet="0123456789\u00b2\u0661:[]%/\0 -+", max_size=8),
    ),
)


@settings(max_examples=400)
@given(st.one_of(st.text(), _ADDRESS_LIKE))
@example("tcp://h:\u00b2")
@example("tcp://a]:b:1")
def test_arbitrary_text_parses_or_raises_address_error(text: str) -> None:
    """Any text parses (and its printed form parses back equal) or raises AddressError."""
    try:
        address = parse_address(text)
    except AddressError:
        return
    assert isinstance(address, Address)
    assert parse_address(str(address)) == address


@given(
    scheme=st.sampled_from([Scheme.TCP, Scheme.TLS]),
    host=st.one_of(
        st.from_regex(r"[a-z0-9][a-z0-9.-]{0,30}", fullmatch=True),
        st.ip_addresses().map(str),
    ),
    port=st.integers(0, 65535),
)
def test_network_round_trip_property(scheme: Scheme, host: str, port: int) -> None:
    """Any host (name, IPv4 or IPv6) and port survive printing and parsing unchanged."""
    address = Address(scheme, host=host, port=port)
    assert parse_address(str(address)) == address


@given(path=st.text().filter(lambda p: "\0" not in p and not p.startswith("//")))
def test_unix_round_trip_property(path: str) -> None:
    """Any unix socket path without NUL or a leading '//' round-trips exactly."""
    text = f"unix:{path}"
    address = parse_address(text)
    assert address == Address(Scheme.UNIX, path=path)
    assert str(address) == text


def test_address_error_is_an_isoplug_value_error() -> None:
    """AddressError sits under both IsoplugError and ValueError, so either catch works."""
    assert issubclass(AddressError, IsoplugError)
    assert issubclass(AddressError, ValueError)
