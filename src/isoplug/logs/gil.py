"""Letting the event loop's thread have the GIL while another thread replays a flood.

A thread that replays records into ``logging`` as fast as they come holds the GIL almost all
the time. CPython hands the GIL to a thread that asks for it only at the next forced switch
(every 5 ms) and not fairly: under a flood of a runner's stdout, two such threads made a step
of the host's event loop wait 60-260 ms for it, and ``sched_yield`` did not help (the yielding
thread takes the GIL straight back). A real sleep after each large batch lets the loop in: the
worst step fell to 9-14 ms, for about a fifth of a flood's throughput. The log bridge's
threads pause at most every :data:`SHARE_INTERVAL` of replaying, and only after batches of
:data:`FLOOD_BATCH` records or more (a flood's), so a trickle of records pays nothing and a
flood about a tenth of its throughput.

A pause of one thread is not enough when two such threads work for one flood (a runner's
stdio reader and its replay thread): the other one takes the GIL during the pause, the loop's
thread loses the race again, and a step of the loop waited 30-65 ms for it while those two
threads ran. Threads that take turns through one :class:`GilShare` pause together instead: a
pause opens a quiet window for all of them (each waits it out before its next slice), so the
GIL is free during it for whoever else waits, the event loop's thread first of all.

The host's threads that replay for its event loop all share :data:`HOST_SHARE`: every
runner's stdio reader and replay threads (:mod:`isoplug.host.stdio`) and every log
connection's replay thread (:mod:`isoplug.logs.session`), so that none of them takes the GIL
in another's pause.
"""

from __future__ import annotations

import time

__all__ = ["FLOOD_BATCH", "GIL_PAUSE", "HOST_SHARE", "SHARE_INTERVAL", "GilShare"]

#: Seconds a replaying thread sleeps after a large batch: long enough for the waiting thread
#: to be scheduled and take the GIL (a Linux sleep lasts at least ~60 us of timer slack).
GIL_PAUSE = 0.0002
#: A batch of at least this many records is a flood's: the thread may pause after it.
FLOOD_BATCH = 64
#: Seconds of replaying between two pauses, at least: the event loop then waits about this
#: long for the GIL at worst, and the flood loses GIL_PAUSE in every SHARE_INTERVAL.
SHARE_INTERVAL = 0.001


class GilShare:
    """Threads that work in slices of GIL time and pause together (see the module docstring):
    each calls :meth:`wait_turn` before a slice and :meth:`pause` after it.

    No lock: the quiet window is one float, written under the GIL; a lost update only shortens
    one window.
    """

    def __init__(self, pause: float = GIL_PAUSE) -> None:
        self._pause = pause
        self._quiet_until = 0.0

    def pause(self) -> None:
        """After a slice: open a quiet window for every thread of this share, and sleep it out."""
        self._quiet_until = max(self._quiet_until, time.monotonic() + self._pause)
        time.sleep(self._pause)
        self.wait_turn()

    def wait_turn(self) -> None:
        """Before a slice: sleep out the quiet window another thread of this share opened."""
        while (left := self._quiet_until - time.monotonic()) > 0:
            time.sleep(left)


#: The one share of this process's threads that replay for the host's event loop (see the
#: module docstring). A share per runner left the loop losing the GIL to the other runners'
#: threads: with 3 runners flooding at once, a loop lag p99 of 17-55 ms against 3-8 ms with
#: one share, which costs such a flood about 14% of its lines/s (docs/benchmarks.md).
HOST_SHARE = GilShare()
