"""When the host itself did not run: the gaps in its event loop, which its runners are not
blamed for.

A host frozen with its runners (``docker pause``, ``systemctl freeze``, a ``kill -STOP`` of the
whole tree, a paused VM whose monotonic clock moves on) finds, once it runs again, every runner's
event loop "blocked" for as long as the freeze lasted: nothing in them hung. A host stopped alone
(Ctrl-Z) or starved of CPU reads a health answer seconds after it was sent. Either way the
time is the host's. One timer per event loop (:class:`HostPauses`, shared by every runner's
:class:`~isoplug.host.health.HealthWatch` while there is one) ticks every :data:`TICK` seconds;
when a tick runs more than :data:`GAP` seconds late, the host did not run from the tick before
to now, and the health checks take that time off what they count against a runner
(:meth:`HostPauses.overlap`). Both processes read the same ``CLOCK_MONOTONIC``, so the runner's
times and the host's compare.
"""

from __future__ import annotations

import asyncio
import collections
import time
import weakref

from isoplug.log_guard import guarded_logger

__all__ = ["GAP", "TICK", "HostPauses", "host_pauses"]

_log = guarded_logger("isoplug.host")

#: How often the host notes that its loop runs: the gaps it finds are this precise (a gap is
#: taken to start at the last tick, so it is overstated by at most this much).
TICK = 0.25
#: A tick this late (seconds) means the host did not run. A loaded host's loop is late by
#: milliseconds, rarely by a few hundred (a host at nice 19 under two busy loops held up at
#: that), so 1 s is no normal lag; and it is half the default health_timeout (2 s), so a
#: shorter gap cannot alone make a runner look hung at the defaults.
GAP = 1.0
#: Gaps kept: health checks look back at most a few ``health_interval`` s.
_KEPT = 32

_by_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, HostPauses] = (
    weakref.WeakKeyDictionary()
)


def host_pauses() -> HostPauses:
    """The running loop's :class:`HostPauses` (made on first use)."""
    loop = asyncio.get_running_loop()
    pauses = _by_loop.get(loop)
    if pauses is None:
        pauses = _by_loop[loop] = HostPauses(loop)
    return pauses


class HostPauses:
    """The gaps in one event loop's running, found while anyone watches (:meth:`watch`)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._watchers = 0
        self._timer: asyncio.TimerHandle | None = None
        self._ticked = 0.0
        #: (start, end) in ``time.monotonic()`` of each gap found, oldest first.
        self.gaps: collections.deque[tuple[float, float]] = collections.deque(maxlen=_KEPT)

    def watch(self) -> None:
        """One more watcher: ticks while there is any."""
        self._watchers += 1
        if self._timer is None:
            self._ticked = time.monotonic()
            self._timer = self._loop.call_later(TICK, self._tick)

    def unwatch(self) -> None:
        self._watchers -= 1
        if self._watchers <= 0 and self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def overlap(self, start: float, end: float) -> float:
        """How long, of ``start``..``end`` (``time.monotonic()``), the host did not run."""
        return sum(
            max(0.0, min(end, gap_end) - max(start, gap_start)) for gap_start, gap_end in self.gaps
        )

    def _tick(self) -> None:
        now = time.monotonic()
        if now - self._ticked - TICK > GAP:
            self.gaps.append((self._ticked, now))
            _log.info(
                "the host did not run for %.1f s (stopped, starved, or its event loop blocked "
                "by a callback): its runners' health deadlines are extended by that",
                now - self._ticked,
            )
        self._ticked = now
        self._timer = self._loop.call_later(TICK, self._tick)
