"""The calls a peer awaits answers to: each one's future, its deadline, and its end.

Separate from :mod:`isoplug.rpc.peer` because it is one self-contained piece of bookkeeping
with its own trick (one timer for every deadline, see :meth:`PendingCalls._arm`), shared by
the peer's calling side (which adds and forgets calls), its dispatcher (which delivers
answers) and its end (which fails whatever is left).
"""

from __future__ import annotations

import asyncio
import math

from isoplug.errors import ConnectionBroken, ConnectionClosed, IsoplugError
from isoplug.wire import ErrorResponse, Message, Response

__all__ = ["DeadlinePassed", "PendingCalls"]


class DeadlinePassed(Exception):
    """Set on a pending call's future when its timeout passes; the peer turns it into a
    :class:`~isoplug.errors.RequestTimeout` naming the call."""


class PendingCalls:
    """Request id -> the method called and the future its answer is set on."""

    def __init__(self) -> None:
        #: Request id -> the method, the future, and the loop time at which the request times
        #: out (inf: never; see _arm). One entry per call, added and dropped once.
        self._calls: dict[int, tuple[str, asyncio.Future[Message], float]] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = math.inf
        #: The loop's clock, looked up once: it is read for every call made.
        self._now = asyncio.get_running_loop().time

    def add(
        self, request_id: int, method: str, future: asyncio.Future[Message], timeout: float | None
    ) -> None:
        """Await an answer to ``request_id`` on ``future``, failing it with
        :class:`DeadlinePassed` after ``timeout`` seconds (``None``: never)."""
        if timeout is None:
            self._calls[request_id] = (method, future, math.inf)
            return
        deadline = self._now() + timeout
        self._calls[request_id] = (method, future, deadline)
        if deadline < self._timer_at:
            self._arm(deadline)

    def forget(self, request_id: int) -> None:
        """The call is over (answered, timed out or cancelled): a late answer is dropped."""
        self._calls.pop(request_id, None)

    async def late_answer(self, request_id: int, method: str, grace: float) -> Message | None:
        """The answer to ``request_id``, whose caller gave up (a cancel was sent), if it comes
        within ``grace`` seconds; else None. What became of the request, in the other
        side's words."""
        future: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
        self.add(request_id, method, future, grace)
        try:
            return await future
        except (DeadlinePassed, IsoplugError):
            return None
        finally:
            self.forget(request_id)

    def answer(self, message: Response | ErrorResponse) -> None:
        """Deliver an answer to the call awaiting it, if any still does."""
        pending = self._calls.get(message.id)
        if pending is not None and not pending[1].done():
            pending[1].set_result(message)
        # else: the caller gave up (timeout or cancel) before the answer came.

    def fail_all(self, error: IsoplugError) -> None:
        """The session ended with ``error``: every call still waiting raises its kind."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for method, future, _ in self._calls.values():
            if not future.done():
                future.set_exception(_pending_failure(method, error))
        self._calls.clear()

    def _arm(self, when: float) -> None:
        # One timer per peer, not one per request: arming and cancelling a timer per call cost
        # ~6 us (asyncio.timeout ~10 us), a tenth of a round trip. The timer is moved only
        # when a request's deadline comes before it; when it fires it expires what is due and
        # re-arms for the earliest deadline left.
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = when
        self._timer = asyncio.get_running_loop().call_at(when, self._expire)

    def _expire(self) -> None:
        self._timer = None
        self._timer_at = math.inf
        loop = asyncio.get_running_loop()
        now = loop.time()
        earliest = math.inf
        due: list[asyncio.Future[Message]] = []
        for _, future, deadline in list(self._calls.values()):
            if deadline <= now:
                # Expired: failed below unless answered first; its entry leaves at forget().
                if not future.done():
                    due.append(future)
            elif deadline < earliest:
                earliest = deadline
        if earliest < math.inf:
            self._arm(earliest)
        if due:
            # An answer that came by now wins over the timeout, but it may still be unread:
            # after a SIGSTOP/SIGCONT of this process epoll_wait fails with EINTR and Python
            # returns no events once its timeout has passed, so this timer runs in a round that
            # read nothing. The next round polls the sockets (its reads run after the callback
            # scheduled here), and the round after that fails the calls still unanswered.
            # Only a timeout pays for the two rounds.
            loop.call_soon(loop.call_soon, _fail_unanswered, due)


def _fail_unanswered(futures: list[asyncio.Future[Message]]) -> None:
    for future in futures:
        if not future.done():
            future.set_exception(DeadlinePassed())


def _pending_failure(method: str, error: IsoplugError) -> IsoplugError:
    text = f"{method!r} has no answer: {error}"
    if isinstance(error, ConnectionClosed):
        return ConnectionClosed(text)
    return ConnectionBroken(text)
