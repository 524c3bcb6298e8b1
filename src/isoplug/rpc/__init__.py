"""Requests, responses and events between two processes over any isoplug transport."""

from isoplug.rpc.blocking import BlockingChannel
from isoplug.rpc.handshake import (
    DEFAULT_HANDSHAKE_TIMEOUT,
    blocking_client_handshake,
    client_handshake,
    server_handshake,
)
from isoplug.rpc.peer import DEFAULT_REQUEST_TIMEOUT, Handler, Peer
from isoplug.rpc.server import serve

__all__ = [
    "DEFAULT_HANDSHAKE_TIMEOUT",
    "DEFAULT_REQUEST_TIMEOUT",
    "BlockingChannel",
    "Handler",
    "Peer",
    "blocking_client_handshake",
    "client_handshake",
    "serve",
    "server_handshake",
]
