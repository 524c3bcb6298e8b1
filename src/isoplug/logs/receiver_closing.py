"""How a :class:`~isoplug.logs.LogReceiver` closes, in either mode: it waits up to its drain
time for its senders to finish (those let in meanwhile too, from their tree's waiting room:
:mod:`isoplug.logs.sender_trees`), accounts for the ends still pending, stops replaying, and
closes everything, saying what that cost.

Apart from :mod:`isoplug.logs.receiver`, which holds the receiver's opening and its sessions,
because a close's steps and their order (each one's comment says why it comes where it does)
are one concern of their own. :class:`ReceiverClosing` is a base class of the receiver.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Coroutine
from typing import Any

from isoplug.errors import UsageError
from isoplug.log_guard import guarded_logger
from isoplug.logs.drain_end import closed_summary, drain_warning, sender_hung_up
from isoplug.logs.receiver_connections import ReceiverConnections
from isoplug.logs.sender_trees import closed_unread_warning
from isoplug.rpc import Peer
from isoplug.rpc.blocking import BlockingChannel, BlockingServer, ClientLimit
from isoplug.transport import Listener

__all__ = ["CLOSE_GRACE", "DEFAULT_DRAIN_TIMEOUT", "ReceiverClosing"]

_log = guarded_logger("isoplug.logs")

#: How long leaving the receiver waits for connected senders to send their last records.
DEFAULT_DRAIN_TIMEOUT = 5.0
#: How often a closing receiver on an event loop looks whether the ends its watcher thread took
#: have been handed to the loop (a callback of the loop's, due at once).
_HANDOVER_POLL = 0.001
#: After the drain time, how long a synchronous receiver's threads have to end: to finish the
#: record a host handler is handling, report what is lost and say goodbye. A thread still in a
#: handler then is left to finish that record alone; it replays nothing more.
CLOSE_GRACE = 1.0


class ReceiverClosing(ReceiverConnections):
    """The closing half of :class:`~isoplug.logs.LogReceiver` (a base class of it; see the
    module docstring). Its state is the receiver's."""

    drain_timeout: float
    #: Async use: each open connection, with what says its end was accounted for.
    _open_peers: dict[Peer, asyncio.Future[None]]
    #: Sync use: each connection its thread serves.
    _open_channels: dict[int, BlockingChannel]
    _server: BlockingServer | None
    #: Its sender trees' places, and the connections waiting for one.
    _tree_limit: ClientLimit
    #: The receiver's own.
    aclose: Callable[[], Coroutine[Any, Any, None]]

    async def _drain_and_close(self, listener: Listener) -> None:
        loop = asyncio.get_running_loop()
        drain_ends = loop.time() + self.drain_timeout
        # Each connection's end accounted for, not only the connection closed: what its
        # sender's ring gives back is replayed in slices on this loop after it closed.
        still_open = await self._senders_finished(drain_ends)
        if still_open:
            self._warn_still_open(
                len(still_open),
                [p.stream.fileno() for p, end in self._open_peers.items() if end in still_open],
            )
        # Senders that did not come back in time: their ends are accounted for now.
        self._chains.pending.close()
        # Their accounting runs on this loop in slices: done before replaying stops. So does
        # that of the ends the watcher thread took just before (a sender that exited): handed
        # to this loop, maybe not started yet. Stopping the replay before them counted what
        # their rings give back as lost to the close, for senders that ended before it began.
        settler = self._settler_for(loop)
        await settler.wait()
        while self._ends.any_deferred and loop.time() < drain_ends:
            await asyncio.sleep(_HANDOVER_POLL)
            await settler.wait()
        self._stop_replaying()
        await listener.aclose()
        self._say_closed_unread()
        # Its watcher thread hands every end to this loop, so it ends at once; polled, not
        # joined: the loop stays free meanwhile.
        grace_ends = loop.time() + CLOSE_GRACE
        while not self._chains.pending.wait_closed(0) and loop.time() < grace_ends:
            await asyncio.sleep(0.001)
        # What it handed over meanwhile (replaying stopped now: quick).
        await self._settler_for(loop).wait()
        if still_open:
            self._say_what_closing_cost(len(still_open))
        self._handler_errors.close()
        self._refusals.close()

    async def _senders_finished(self, drain_ends: float) -> set[asyncio.Future[None]]:
        """Wait until ``drain_ends`` (the loop's time) for the open connections to end, those
        let in meanwhile included (a connection that waited for its tree's place, let in as
        one ended or as its sender did, as in threads); the ends of those still open then."""
        loop = asyncio.get_running_loop()
        room = self._tree_limit.waiting_room
        while True:
            still_open = {end for end in self._open_peers.values() if not end.done()}
            entering = room is not None and room.entering > 0
            left = drain_ends - loop.time()
            if left <= 0 or not (still_open or entering):
                return still_open
            if still_open:
                await asyncio.wait(still_open, timeout=left)
            else:
                # Let in, on their way to their handshake: a turn or two of the loop.
                await asyncio.sleep(_HANDOVER_POLL)

    def _say_closed_unread(self) -> None:
        room = self._tree_limit.waiting_room
        said = None if room is None else closed_unread_warning(room)
        if said is not None:
            _log.warning(said)

    def _close_on_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        """``close()`` of a receiver started on ``loop``: its ``aclose()``, run there."""
        try:
            running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            raise UsageError(
                "this LogReceiver was started on this event loop (await receiver.start(), or "
                "async with): close() here would block the loop its close runs on; use "
                "`await receiver.aclose()` (or `async with LogReceiver() as receiver:`)"
            )
        if loop.is_closed():
            # Its tasks were cancelled and its connections ended with it: what is left to
            # close (the listening sockets, the accounting of those ends) needs a loop, any.
            _run_on_a_loop_of_its_own(self.aclose())
            return
        if not loop.is_running():
            raise UsageError(
                "this LogReceiver was started on an event loop that is stopped, not closed: "
                "its listener is that loop's; close it there, "
                "`loop.run_until_complete(receiver.aclose())`, or close that loop first "
                "(`loop.close()`), after which close() closes the receiver itself"
            )
        asyncio.run_coroutine_threadsafe(self.aclose(), loop).result()

    def _warn_still_open(self, count: int, fds: list[int | None]) -> None:
        """``count`` connections are open when the drain time is up; ``fds``: the sockets of
        those that carry records (others are in their handshake)."""
        hung_up = sum(map(sender_hung_up, fds))
        _log.warning(drain_warning(count - hung_up, hung_up, self.drain_timeout))

    def _say_what_closing_cost(self, cut: int) -> None:
        summary = closed_summary(self.metrics().values(), cut)
        if summary is not None:
            _log.warning(summary)

    def _close_server(self, server: BlockingServer) -> None:
        drain_ends = time.monotonic() + self.drain_timeout
        still_open = server.wait_idle(self.drain_timeout)
        if still_open:
            # list(): their threads may end meanwhile.
            channels = list(self._open_channels.values())
            self._warn_still_open(still_open, [c.socket.fileno() for c in channels])
        # Senders that did not come back in time: their ends are accounted for now, here.
        self._chains.pending.close()
        # Those the watcher thread took just before (a sender that exited) are accounted for
        # on it, replaying what their rings give back: stopping the replay before they are
        # done counted that as lost to the close, for senders that ended before it began.
        self._ends.wait_settled(max(0.0, drain_ends - time.monotonic()))
        self._stop_replaying()
        grace_ends = time.monotonic() + CLOSE_GRACE
        server.close(CLOSE_GRACE)
        self._say_closed_unread()
        # The watcher thread may be accounting for an end it took just before (replaying
        # stopped now): it ends within the same grace, closing its wake pipe.
        self._chains.pending.wait_closed(max(0.0, grace_ends - time.monotonic()))
        self._server = None
        if still_open:
            self._say_what_closing_cost(still_open)
        self._handler_errors.close()
        self._refusals.close()


def _run_on_a_loop_of_its_own(closing: Coroutine[Any, Any, None]) -> None:
    """Run ``closing`` to its end with ``asyncio.run()`` in a thread of its own: the caller's
    thread may be running another loop, where ``asyncio.run()`` is refused."""
    failure: list[BaseException] = []

    def run() -> None:
        try:
            asyncio.run(closing)
        except BaseException as exc:  # raised again on the caller's thread
            failure.append(exc)

    thread = threading.Thread(target=run, name="isoplug-log-receiver-close")
    thread.start()
    thread.join()
    if failure:
        raise failure[0]
