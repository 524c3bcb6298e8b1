"""Byte streams between processes: unix sockets, TCP, TLS, and an in-memory pair for tests.

Addresses: ``unix:/path`` (``unix:`` alone makes a private directory when listening),
``tcp://host:port``, ``tls://host:port``; or a unix socket's path (``pathlib.Path``).
"""

from isoplug.transport.address import (
    Address,
    AddressLike,
    Scheme,
    absolute_unix_path,
    parse_address,
    parse_connect_address,
    parse_listen_address,
)
from isoplug.transport.blocking import connect_blocking
from isoplug.transport.listening import make_private_socket_dir
from isoplug.transport.memory import MemoryStream, memory_stream_pair
from isoplug.transport.sockets import Listener, connect, listen
from isoplug.transport.stream import PeerCredentials, SocketStream, Stream
from isoplug.transport.tls import tls_client_context, tls_server_context

__all__ = [
    "Address",
    "AddressLike",
    "Listener",
    "MemoryStream",
    "PeerCredentials",
    "Scheme",
    "SocketStream",
    "Stream",
    "absolute_unix_path",
    "connect",
    "connect_blocking",
    "listen",
    "make_private_socket_dir",
    "memory_stream_pair",
    "parse_address",
    "parse_connect_address",
    "parse_listen_address",
    "tls_client_context",
    "tls_server_context",
]
