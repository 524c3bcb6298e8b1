"""One address syntax for every transport: ``unix:/path``, ``tcp://host:port``, ``tls://host:port``.

``unix:`` with no path asks a listener to make a fresh private directory for its socket.
IPv6 hosts are written in brackets: ``tcp://[::1]:9000``.
"""

from __future__ import annotations

import dataclasses
import enum

from isoplug.errors import AddressError

__all__ = ["Address", "Scheme", "parse_address", "parse_connect_address"]


class Scheme(enum.Enum):
    UNIX = "unix"
    TCP = "tcp"
    TLS = "tls"


@dataclasses.dataclass(frozen=True, slots=True)
class Address:
    """A parsed transport address. ``str(address)`` gives the syntax back."""

    scheme: Scheme
    #: Socket path (unix only); "" asks the listener for a private one.
    path: str = ""
    host: str = ""
    port: int = 0

    def __str__(self) -> str:
        if self.scheme is Scheme.UNIX:
            return f"unix:{self.path}"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme.value}://{host}:{self.port}"


def parse_address(text: str | Address) -> Address:
    """Parse an address string.

    Raises :class:`~isoplug.errors.AddressError` naming what is wrong, e.g. a missing port or
    an unknown scheme.
    """
    if isinstance(text, Address):
        return text
    if text.startswith("unix:"):
        path = text[len("unix:") :]
        if path.startswith("//"):
            raise AddressError(f"{text!r}: write unix addresses as unix:/path, without '//'")
        if "\0" in path:
            raise AddressError(f"{text!r}: a socket path cannot contain NUL")
        return Address(Scheme.UNIX, path=path)
    scheme_text, separator, rest = text.partition("://")
    if not separator:
        raise AddressError(
            f"{text!r} is not an address: expected unix:/path, tcp://host:port or tls://host:port"
        )
    try:
        scheme = Scheme(scheme_text)
    except ValueError:
        raise AddressError(
            f"{text!r}: unknown scheme {scheme_text!r} (expected unix, tcp or tls)"
        ) from None
    if scheme is Scheme.UNIX:
        raise AddressError(f"{text!r}: write unix addresses as unix:/path")
    if rest.startswith("["):
        host, bracket, port_text = rest[1:].partition("]")
        if not bracket or not port_text.startswith(":"):
            raise AddressError(f"{text!r}: expected [ipv6-host]:port")
        port_text = port_text[1:]
    else:
        host, colon, port_text = rest.rpartition(":")
        if not colon:
            raise AddressError(f"{text!r}: missing port (expected {scheme.value}://host:port)")
    if not host:
        raise AddressError(f"{text!r}: missing host")
    if "[" in host or "]" in host:
        raise AddressError(f"{text!r}: a host cannot contain '[' or ']'")
    # ASCII digits only: str.isdigit() also accepts '²', which int() rejects; the length cap
    # keeps int() away from its limit on huge digit strings.
    ascii_digits = port_text.isascii() and port_text.isdigit()
    if not ascii_digits or len(port_text) > 5 or int(port_text) > 65535:
        raise AddressError(f"{text!r}: port must be a number from 0 to 65535")
    return Address(scheme, host=host, port=int(port_text))


def parse_connect_address(text: str | Address) -> Address:
    """Parse an address a client connects to: as :func:`parse_address`, but ``unix:`` with
    no path and port 0, which only a listener can be given, raise
    :class:`~isoplug.errors.AddressError` too (a sender told either tried in vain for 6 s)."""
    address = parse_address(text)
    if address.scheme is Scheme.UNIX and not address.path:
        raise AddressError(
            f"{str(text)!r} names no socket to connect to: 'unix:' alone asks a listener for a "
            "fresh socket; give the receiver's address (LogReceiver.address)"
        )
    if address.scheme is not Scheme.UNIX and address.port == 0:
        raise AddressError(
            f"{str(text)!r}: port 0 asks a listener for a free port; give the port the receiver "
            "listens on (LogReceiver.address)"
        )
    return address
