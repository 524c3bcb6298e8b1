"""Blocking sockets for code that must not depend on an event loop (the runner's log thread).

The same addresses and TLS contexts as the asyncio side; the same sans-IO
:class:`~isoplug.wire.Connection` drives the protocol over it.
"""

from __future__ import annotations

import socket
import ssl

from isoplug.errors import ConnectError
from isoplug.transport.address import Address, Scheme, parse_address

__all__ = ["connect_blocking"]


def connect_blocking(
    address: str | Address,
    *,
    ssl_context: ssl.SSLContext | None = None,
    timeout: float | None = 10.0,
) -> socket.socket:
    """Open a blocking socket to ``address`` (``timeout`` applies to connecting only).

    Raises :class:`~isoplug.errors.ConnectError` when nothing listens there or TLS fails.
    """
    parsed = parse_address(address)
    sock: socket.socket
    try:
        if parsed.scheme is Scheme.UNIX:
            if not parsed.path:
                raise ConnectError("cannot connect to 'unix:' without a socket path")
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.settimeout(timeout)
                sock.connect(parsed.path)
            except BaseException:
                sock.close()
                raise
        else:
            sock = socket.create_connection((parsed.host, parsed.port), timeout=timeout)
            # Without it a small message waits for the peer's delayed ACK: ~40 ms.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if parsed.scheme is Scheme.TLS:
                context = ssl_context or ssl.create_default_context()
                try:
                    sock = context.wrap_socket(sock, server_hostname=parsed.host)
                except BaseException:
                    sock.close()
                    raise
        sock.settimeout(None)
    except (OSError, ValueError) as exc:  # ValueError: a host getaddrinfo refuses
        raise ConnectError(f"cannot connect to {parsed}: {exc}") from exc
    return sock
