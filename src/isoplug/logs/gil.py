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
"""

from __future__ import annotations

import time

__all__ = ["FLOOD_BATCH", "GIL_PAUSE", "SHARE_INTERVAL", "yield_gil"]

#: Seconds a replaying thread sleeps after a large batch: long enough for the waiting thread
#: to be scheduled and take the GIL (a Linux sleep lasts at least ~60 us of timer slack).
GIL_PAUSE = 0.0002
#: A batch of at least this many records is a flood's: the thread may pause after it.
FLOOD_BATCH = 64
#: Seconds of replaying between two pauses, at least: the event loop then waits about this
#: long for the GIL at worst, and the flood loses GIL_PAUSE in every SHARE_INTERVAL.
SHARE_INTERVAL = 0.001


def yield_gil() -> None:
    """Give up the GIL long enough for a waiting thread (the event loop's) to take it."""
    time.sleep(GIL_PAUSE)
