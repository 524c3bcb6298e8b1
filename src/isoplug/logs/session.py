"""One log sender's connection, served by a thread of its own until it ends.

The thread sleeps in ``recv()`` and replays each batch the moment it arrives: no event loop
stands between the socket and ``logging``, and a slow handler (a file, a network logger)
delays only this sender, which waits in turn (back-pressure is the socket's). Both the
synchronous :class:`~isoplug.logs.LogReceiver` and the plugin host serve log connections so.
"""

from __future__ import annotations

import time

from isoplug.errors import ConnectionBroken, ConnectionClosed, ProtocolError
from isoplug.log_guard import guarded_logger
from isoplug.logs.gil import FLOOD_BATCH, SHARE_INTERVAL, GilShare
from isoplug.logs.replay import LogReplayer
from isoplug.rpc.blocking import BlockingChannel
from isoplug.wire import Goodbye, LogBatch

__all__ = ["replay_until_closed"]

_log = guarded_logger("isoplug.logs")


def replay_until_closed(
    channel: BlockingChannel, replayer: LogReplayer, sender: str, *, gil: GilShare | None = None
) -> bool:
    """Replay every batch ``channel`` brings until the connection ends; return whether it
    ended cleanly (a goodbye, or our own side closing it).

    ``gil``: take turns through this share with the process's other replaying threads, pausing
    briefly after large batches, so that an event loop in this process keeps running during a
    flood (see :mod:`isoplug.logs.gil`); the plugin host gives its one share
    (:data:`~isoplug.logs.gil.HOST_SHARE`), at the cost of some of a flood's throughput.

    Returns (True) soon after the replayer is stopped (:meth:`LogReplayer.stop`), leaving
    the rest unread.

    ``sender`` names the sender in warnings. Anything but log batches is ignored (said once:
    a hostile sender must not flood our own log); a protocol error ends the connection, not
    the caller.
    """
    replayer.use_passed_ledger(channel.passed_descriptor)
    ignored = 0
    metrics = replayer.metrics
    last_pause = 0.0
    try:
        while True:
            for message in channel.receive():
                if type(message) is LogBatch:
                    before = metrics.received
                    if gil is not None:
                        # Another replaying thread's pause: the loop's turn, not ours.
                        gil.wait_turn()
                    replayer.replay(message)
                    if replayer.stopped:
                        # The receiver's drain time is up: what is left unread is counted from
                        # the sender's ledger (see LogReplayer.stop).
                        return True
                    if gil is not None and metrics.received - before >= FLOOD_BATCH:
                        now = time.monotonic()
                        if now - last_pause >= SHARE_INTERVAL:
                            # A flood: let the host's event loop have the GIL, all the sharing
                            # threads pausing together (isoplug.logs.gil).
                            gil.pause()
                            last_pause = time.monotonic()
                    continue
                if type(message) is Goodbye:
                    continue  # the connection is closed now: the next receive() says so
                ignored += 1
                if ignored == 1:
                    _log.warning(
                        "ignoring what log sender %s sends besides log batches (first: %s)",
                        sender,
                        type(message).__name__,
                    )
    except ConnectionClosed:
        return True
    except ConnectionBroken:
        return False  # it crashed or was killed: the replayer's finish() reports what it took
    except ProtocolError as exc:
        _log.warning("closing session with %s: %s", sender, exc)
        return False
