"""Room among the host's file descriptors (``RLIMIT_NOFILE``) for a runner's start, looked
for before the start rather than found missing halfway through it.

A runner's start takes about :data:`~isoplug.host.shortage.DESCRIPTORS_PER_RUNNER` of the
host's descriptors, and not all at once: its pipes and health channel before its spawn, then
the reader of its pipes, its control connection (accepted by the host's event loop), its log
connections (accepted by the log bridge's threads), its log ring and ledger. A descriptor
missing at one of the later steps could not be told as the host's shortage: uvloop (libuv)
closes a connection it cannot accept, unseen by anyone (the runner only learns that the host
closed its connection during the handshake, and exits with code 5), asyncio's loop leaves it
waiting with a traceback a second at a time, and a runner left without the reader of its pipes
would run with its output unread. So a runner starts only when the descriptors its start takes
are free, less those that runners starting at the same time have claimed; otherwise its start
fails with ``EMFILE``, said as the host out of file descriptors (see
:mod:`isoplug.host.shortage`) and retried with backoff, as after a crash.

The limit is the process's, shared by every host in it: so is the room, hence module state.
"""

from __future__ import annotations

import errno
import os
import resource
import threading

from isoplug.host.shortage import DESCRIPTORS_PER_RUNNER

__all__ = [
    "DESCRIPTORS_TO_START",
    "DescriptorClaim",
    "claim_room_to_start",
    "short_of_descriptors",
]

#: What a start claims: a runner's own descriptors and a few more, for what the host opens
#: meanwhile on behalf of runners already running (a listing of /proc, a health check's).
DESCRIPTORS_TO_START = DESCRIPTORS_PER_RUNNER + 3
_FD_FOLDER = "/proc/self/fd"


class _Claims:
    """The descriptors claimed by the starts under way (those not yet ready or ended)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.count = 0


_CLAIMS = _Claims()


class DescriptorClaim:
    """The room claimed for one start; :meth:`release` once the runner is ready or ended (its
    descriptors are then counted as open ones). Idempotent."""

    def __init__(self, count: int) -> None:
        self._count = count

    def release(self) -> None:
        with _CLAIMS.lock:
            _CLAIMS.count -= self._count
            self._count = 0


def claim_room_to_start() -> DescriptorClaim:
    """Claim :data:`DESCRIPTORS_TO_START` descriptors for a runner's start. Raises
    :class:`OSError` (``EMFILE``) when fewer are free under the soft limit, less those claimed
    by the other starts under way; no claim is made where the limit or the open descriptors
    cannot be known (no limit, no ``/proc``)."""
    free = _free_numbers()
    if free is None:
        return DescriptorClaim(0)
    with _CLAIMS.lock:
        if free - _CLAIMS.count < DESCRIPTORS_TO_START:
            raise OSError(errno.EMFILE, os.strerror(errno.EMFILE))
        _CLAIMS.count += DESCRIPTORS_TO_START
    return DescriptorClaim(DESCRIPTORS_TO_START)


def short_of_descriptors() -> OSError | None:
    """``EMFILE`` when fewer descriptors than a start takes are free under the soft limit now
    (claims aside), else None: why, most likely, a runner could not connect."""
    try:
        free = _free_numbers()
    except OSError as error:
        return error
    if free is not None and free < DESCRIPTORS_TO_START:
        return OSError(errno.EMFILE, os.strerror(errno.EMFILE))
    return None


def _free_numbers() -> int | None:
    """How many descriptor numbers below the soft limit are free; None where that cannot be
    known (no limit, no readable ``/proc``). Raises :class:`OSError` (``EMFILE``, ``ENFILE``)
    when even the listing finds no descriptor: the very shortage looked for."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return None
    try:
        names = os.listdir(_FD_FOLDER)
    except OSError as error:
        if error.errno in (errno.EMFILE, errno.ENFILE):
            raise
        return None  # no /proc here, or not readable: nothing to count by
    # A descriptor numbered at or above the soft limit (opened before it was lowered) takes
    # no number the next open could get. The listing's own, closed now, counts: one spare more.
    return soft - sum(1 for name in names if name.isdigit() and int(name) < soft)
