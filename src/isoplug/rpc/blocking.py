"""Sessions over blocking sockets, for threads that must not depend on an event loop.

The runner's log sender uses :class:`BlockingChannel`: a plugin may block its event loop for
seconds, and its logs must keep flowing. A synchronous :class:`~isoplug.logs.LogReceiver`
uses :func:`serve_blocking`: a thread per sender, woken by the kernel the moment a record
arrives. Both speak the same protocol through the same sans-IO
:class:`~isoplug.wire.Connection` as :class:`~isoplug.rpc.Peer`; a channel sends events and
log batches and reads what the other side sends, but does not serve requests.

This module is where both are imported from; the channel lives in
:mod:`isoplug.rpc.blocking_channel`, the server in :mod:`isoplug.rpc.blocking_server`.
"""

from isoplug.rpc.blocking_channel import RECEIVE_SIZE, BlockingChannel
from isoplug.rpc.blocking_server import (
    DEFAULT_MAX_CONNECTIONS,
    BlockingServer,
    ClientLimit,
    SessionHandler,
    serve_blocking,
)

__all__ = [
    "DEFAULT_MAX_CONNECTIONS",
    "RECEIVE_SIZE",
    "BlockingChannel",
    "BlockingServer",
    "ClientLimit",
    "SessionHandler",
    "serve_blocking",
]
