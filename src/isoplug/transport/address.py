"""One address syntax for every transport: ``unix:/path``, ``tcp://host:port``, ``tls://host:port``.

``unix:`` with no path asks a listener to make a fresh private directory for its socket; a
relative path is taken from the working directory when the sender or receiver is made (see
:func:`absolute_unix_path`). IPv6 hosts are written in brackets: ``tcp://[::1]:9000``. A
``pathlib.Path`` (any :class:`os.PathLike`) is the path of a unix socket.
"""

from __future__ import annotations

import dataclasses
import enum
import os
import sys

from isoplug.errors import AddressError

__all__ = [
    "Address",
    "AddressLike",
    "Scheme",
    "absolute_unix_path",
    "parse_address",
    "parse_connect_address",
    "parse_listen_address",
]

#: The forms an address takes, for the messages that refuse one.
_FORMS = "unix:/path, tcp://host:port or tls://host:port"
#: The longest socket path connect() takes: sun_path, less its NUL (108 bytes on Linux, 104 on
#: macOS and the BSDs).
_MAX_SOCKET_PATH_BYTES = 107 if sys.platform.startswith("linux") else 103
#: How much of a refused address a message quotes.
_SHOWN_CHARS = 120


def _shown(text: str | Address) -> str:
    """``text`` as a message quotes it: ``repr`` (control characters escaped), capped."""
    text = str(text)
    if len(text) <= _SHOWN_CHARS:
        return repr(text)
    return f"{text[:_SHOWN_CHARS]!r}... ({len(text):,} characters)"


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


#: What an address may be given as: its text, a unix socket's path, or one parsed already.
AddressLike = str | os.PathLike[str] | Address


def parse_address(text: AddressLike) -> Address:
    """Parse an address string, or take an :class:`os.PathLike` as a unix socket's path.

    Raises :class:`~isoplug.errors.AddressError` naming what is wrong, e.g. a missing port or
    an unknown scheme; :class:`TypeError` for what is neither.
    """
    if isinstance(text, Address):
        return text
    if isinstance(text, os.PathLike):
        return _socket_path(text)
    if not isinstance(text, str):
        raise TypeError(
            f"an address is a str ({_FORMS}) or a unix socket's path (a pathlib.Path), not "
            f"{type(text).__name__} {text!r:.{_SHOWN_CHARS}}"
        )
    if text.startswith("unix:"):
        path = text[len("unix:") :]
        if path.startswith("//"):
            raise AddressError(f"{_shown(text)}: write unix addresses as unix:/path, without '//'")
        if "\0" in path:
            raise AddressError(f"{_shown(text)}: a socket path cannot contain NUL")
        return Address(Scheme.UNIX, path=path)
    scheme_text, separator, rest = text.partition("://")
    if not separator:
        raise AddressError(f"{_shown(text)} is not an address: expected {_FORMS}")
    try:
        scheme = Scheme(scheme_text)
    except ValueError:
        raise AddressError(
            f"{_shown(text)}: unknown scheme {scheme_text!r} (expected unix, tcp or tls)"
        ) from None
    if scheme is Scheme.UNIX:
        raise AddressError(f"{_shown(text)}: write unix addresses as unix:/path")
    if rest.startswith("["):
        host, bracket, port_text = rest[1:].partition("]")
        if not bracket or not port_text.startswith(":"):
            raise AddressError(f"{_shown(text)}: expected [ipv6-host]:port")
        port_text = port_text[1:]
    else:
        host, colon, port_text = rest.rpartition(":")
        if not colon:
            raise AddressError(
                f"{_shown(text)}: missing port (expected {scheme.value}://host:port)"
            )
    if not host:
        raise AddressError(f"{_shown(text)}: missing host")
    if "[" in host or "]" in host:
        raise AddressError(f"{_shown(text)}: a host cannot contain '[' or ']'")
    # ASCII digits only: str.isdigit() also accepts '²', which int() rejects; the length cap
    # keeps int() away from its limit on huge digit strings.
    ascii_digits = port_text.isascii() and port_text.isdigit()
    if not ascii_digits or len(port_text) > 5 or int(port_text) > 65535:
        raise AddressError(f"{_shown(text)}: port must be a number from 0 to 65535")
    return Address(scheme, host=host, port=int(port_text))


def _socket_path(path: os.PathLike[str]) -> Address:
    """The unix address of the socket at ``path``: a path is taken as it is, never parsed
    (a folder named ``tcp:`` is a folder)."""
    text = os.fspath(path)
    if not isinstance(text, str):
        raise TypeError(
            f"a socket path is a str path (a pathlib.Path), not {type(text).__name__} "
            f"{text!r:.{_SHOWN_CHARS}}"
        )
    if "\0" in text:
        raise AddressError(f"{_shown(text)}: a socket path cannot contain NUL")
    if not text:
        raise AddressError("an empty path names no socket: give the socket's path")
    return Address(Scheme.UNIX, path=text)


def parse_connect_address(text: AddressLike) -> Address:
    """Parse an address a client connects to: as :func:`parse_address`, but what could only
    fail once connecting is refused here, with :class:`~isoplug.errors.AddressError` too (a
    sender told it tried in vain for 6 s, in a thread, or at its first record): ``unix:`` with
    no path and port 0, which only a listener can be given; whitespace around the address; a
    host with whitespace or control characters; a socket path longer than a unix socket
    address holds. A relative socket path is made absolute, from the working directory now
    (:func:`absolute_unix_path`)."""
    if isinstance(text, str) and text != text.strip():
        raise AddressError(
            f"{_shown(text)}: whitespace around the address (a stray space or newline, from a "
            f"file or the environment?); give the address alone: {_FORMS}"
        )
    address = parse_address(text)
    if not isinstance(text, str):
        text = address  # the messages below quote the address as its text
    if address.scheme is Scheme.UNIX and not address.path:
        raise AddressError(
            f"{_shown(text)} names no socket to connect to: 'unix:' alone asks a listener for "
            "a fresh socket; give the receiver's address (LogReceiver.address)"
        )
    if address.scheme is Scheme.UNIX:
        return _connectable_unix(text, absolute_unix_path(address))
    if address.port == 0:
        raise AddressError(
            f"{_shown(text)}: port 0 asks a listener for a free port; give the port the "
            "receiver listens on (LogReceiver.address)"
        )
    return _with_plain_host(text, address)


def parse_listen_address(text: AddressLike) -> Address:
    """Parse an address a listener is given: as :func:`parse_address`, but a host with
    whitespace or control characters is refused here, with
    :class:`~isoplug.errors.AddressError`, as a sender's is (:func:`parse_connect_address`),
    rather than by the bind, whose error would quote the characters raw."""
    address = parse_address(text)
    return _with_plain_host(text if isinstance(text, str) else address, address)


def _with_plain_host(text: str | Address, address: Address) -> Address:
    """``address``, unless its host holds whitespace or a control, format or bidi character
    (no host name does: one that does came from a stray byte, or means to mislead whoever
    reads it in a message)."""
    host = address.host
    if not host.isprintable() or any(c.isspace() for c in host):
        raise AddressError(
            f"{_shown(text)}: a host cannot contain whitespace or control characters "
            f"(expected {address.scheme.value}://host:port)"
        )
    return address


def absolute_unix_path(address: Address) -> Address:
    """``address`` with its socket path made absolute from the working directory now: a
    relative path means the folder the program was in when it gave the address, not wherever
    it (or a child given the address) is when it connects. Anything else, unchanged. Raises
    :class:`~isoplug.errors.AddressError` when the working directory is gone."""
    if address.scheme is not Scheme.UNIX or not address.path or os.path.isabs(address.path):
        return address
    try:
        folder = os.getcwd()
    except FileNotFoundError:
        raise AddressError(
            f"{_shown(address)}: a relative socket path is taken from the working directory, "
            "which is gone (deleted); give an absolute path: unix:/path"
        ) from None
    return Address(Scheme.UNIX, path=os.path.join(folder, address.path))


def _connectable_unix(text: str | Address, address: Address) -> Address:
    """``address`` (an absolute ``unix:`` one), if connect() can take its path."""
    try:
        size = len(os.fsencode(address.path))
    except UnicodeError:
        raise AddressError(
            f"{_shown(text)}: the socket path cannot be encoded as a file name "
            f"({sys.getfilesystemencoding()})"
        ) from None
    if size > _MAX_SOCKET_PATH_BYTES:
        raise AddressError(
            f"{_shown(text)}: the socket path {_shown(address.path)} is {size} bytes long; a "
            f"unix socket address holds at most {_MAX_SOCKET_PATH_BYTES} (give a shorter path: "
            "a receiver made with 'unix:' alone takes a short one)"
        )
    return address
