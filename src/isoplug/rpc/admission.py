"""Which incoming requests run now, wait their turn, or are refused: a peer's admission.

A peer serves at most ``max_running`` requests of its (limited) ``async`` handlers at once,
each in a task of its own, and those together with at most ``max_running_bytes`` of params
(one request alone always runs, whatever its size: a frame bounds it). Past either, a request
waits in a queue, in order of arrival, and is
started as soon as a running one ends; past the queue's bounds (``max_queued`` requests, or
``max_queued_bytes`` of their params in all) a request is refused at once with the code
``"busy"`` (:class:`~isoplug.errors.PluginBusy` on the calling side), naming the limit and how
many are in flight. A cancel of a queued request takes it out and is answered at once.

The reader never stops for work: it used to pause reading past the limit, so that the cancels,
the shutdown request and new calls the other side sent stayed unread behind work that could
last minutes. Memory is bounded by the queue's bounds instead.

Sans-IO: :class:`Admission` decides and keeps the queue; the dispatcher
(:mod:`isoplug.rpc.dispatch`) starts the tasks and sends the answers it hands out.
"""

from __future__ import annotations

import collections
import dataclasses
from typing import Final

from isoplug.wire import ErrorInfo, Request

__all__ = [
    "BUSY_CODE",
    "DEFAULT_LIMITS",
    "NOT_STARTED_TYPE",
    "Admission",
    "AdmissionLimits",
]

#: The error code of a refused request (see :class:`isoplug.errors.PluginBusy`).
BUSY_CODE: Final = "busy"
_BUSY_TYPE: Final = "isoplug.errors.PluginBusy"
#: The error type of a request cancelled before it started (code ``"cancelled"``): the side
#: that sent it learns that the handler never ran, rather than that it was cancelled in it.
NOT_STARTED_TYPE: Final = "isoplug.rpc.admission.NotStarted"


@dataclasses.dataclass(frozen=True)
class AdmissionLimits:
    """How many requests (and how many bytes of params) run at once, and how many (and how
    many bytes of params) may wait."""

    max_running: int = 256
    max_queued: int = 1024
    max_queued_bytes: int = 64 * 1024 * 1024
    #: A peer whose requests carry large params (a plugin calling a host capability with
    #: megabytes, hundreds of times at once) holds them while they run: bounded so too.
    max_running_bytes: int = 64 * 1024 * 1024

    def __post_init__(self) -> None:
        if self.max_running < 1:
            raise ValueError(f"max_running must be at least 1, not {self.max_running!r}")
        if self.max_queued < 0 or self.max_queued_bytes < 0 or self.max_running_bytes < 0:
            raise ValueError(
                "max_queued, max_queued_bytes and max_running_bytes must not be negative"
            )


DEFAULT_LIMITS: Final = AdmissionLimits()


class Admission:
    """The queue of requests waiting for a free place, and the answers to those that cannot
    have one. The caller counts the running ones (its tasks) and passes that count in."""

    def __init__(self, limits: AdmissionLimits = DEFAULT_LIMITS) -> None:
        self.limits = limits
        #: Request id -> the request, in order of arrival (read, never changed, by the dispatcher).
        self.queued: collections.OrderedDict[int, Request] = collections.OrderedDict()
        self.queued_bytes = 0
        #: Requests refused since the start (for diagnostics and tests).
        self.refused = 0
        #: Set by :meth:`close`: every later request is answered at once, not started.
        self.closed_reason: str | None = None

    def __len__(self) -> int:
        return len(self.queued)

    def __bool__(self) -> bool:
        return bool(self.queued)

    def offer(self, request: Request, running: int) -> ErrorInfo | None:
        """``request`` found no free place (``running`` already run): queue it (None), or the
        error to answer it with at once (refused: the queue is full, or admission closed)."""
        if self.closed_reason is not None:
            return self._not_started(self.closed_reason)
        size = len(request.params)
        limits = self.limits
        if len(self.queued) >= limits.max_queued:
            bound = f"max_queued {limits.max_queued:,}"
        elif self.queued and self.queued_bytes + size > limits.max_queued_bytes:
            # One request alone always fits (a frame bounds it): a large one is never refused
            # for its size only.
            bound = f"max_queued_bytes {limits.max_queued_bytes:,}"
        else:
            self.queued[request.id] = request
            self.queued_bytes += size
            return None
        self.refused += 1
        return ErrorInfo(
            code=BUSY_CODE,
            type=_BUSY_TYPE,
            message=(
                f"too many requests in flight: {running:,} running (max_running "
                f"{limits.max_running:,}) and {len(self.queued):,} queued "
                f"({self.queued_bytes:,} bytes); past {bound} a request is refused, not queued"
            ),
        )

    def take(self, running_bytes: int = 0) -> Request | None:
        """The request that waited longest, out of the queue (None: none waits, or its params
        do not fit beside the ``running_bytes`` of those running, which are not none)."""
        if not self.queued:
            return None
        if running_bytes:
            first = next(iter(self.queued.values()))
            if running_bytes + len(first.params) > self.limits.max_running_bytes:
                return None
        _, request = self.queued.popitem(last=False)
        self.queued_bytes -= len(request.params)
        return request

    def withdraw(self, request_id: int, running: int) -> ErrorInfo | None:
        """A cancel for ``request_id``: if it is queued, take it out and return the answer
        saying it never started (None: it is not queued)."""
        request = self.queued.get(request_id)
        if request is None:
            return None
        ahead = 0
        for queued_id in self.queued:
            if queued_id == request_id:
                break
            ahead += 1
        del self.queued[request_id]
        self.queued_bytes -= len(request.params)
        return self._not_started(
            f"{running + ahead:,} requests ahead of it: {running:,} running, {ahead:,} queued "
            "before it"
        )

    def close(self, reason: str) -> list[tuple[int, ErrorInfo]]:
        """Admit nothing more: return the answers for every queued request (each saying
        ``reason`` and that it never started), and answer later ones so too."""
        self.closed_reason = reason
        answers = [(request_id, self._not_started(reason)) for request_id in self.queued]
        self.queued.clear()
        self.queued_bytes = 0
        return answers

    def clear(self) -> None:
        """Forget every queued request (the session ended: nobody awaits their answers)."""
        self.queued.clear()
        self.queued_bytes = 0

    @staticmethod
    def _not_started(message: str) -> ErrorInfo:
        return ErrorInfo(code="cancelled", type=NOT_STARTED_TYPE, message=message)
