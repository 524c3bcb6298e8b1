"""A :class:`~isoplug.logs.report_throttle.ReportThrottle` whose pending summaries go out from
the running event loop once their interval is over, even if nothing more happens.

The throttle's own timer is a thread: in a runner, one more thread to attribute and to account
for at the stop (see :mod:`isoplug.runner.own_threads`), while the loop that made the reports
runs anyway. Used where reports are made on an event loop: a runner's dropped events and
failing event handlers, the host's events held back from a runner that reads too slowly.
"""

from __future__ import annotations

import asyncio

from isoplug.logs.report_throttle import Emit, ReportThrottle, Summary

__all__ = ["LoopReports"]


class LoopReports:
    """Reports by kind: the first of each at once, then at most one summary per ``interval``
    seconds (see :class:`ReportThrottle`), sent by the loop of the report that made it due."""

    __slots__ = ("_flush", "throttle")

    def __init__(self, interval: float) -> None:
        self.throttle = ReportThrottle(interval)
        self._flush: asyncio.TimerHandle | None = None

    def report(
        self, kind: str, text: str, *, summary: Summary, emit: Emit, detail: str = ""
    ) -> None:
        """As :meth:`ReportThrottle.report`; call it on the event loop."""
        self.throttle.report(kind, text, summary=summary, emit=emit, detail=detail)
        if self.throttle.waiting and self._flush is None:
            self._flush = asyncio.get_running_loop().call_later(
                self.throttle.interval, self._flush_due
            )

    def close(self) -> None:
        """Send every pending summary now; no timer is left behind."""
        if self._flush is not None:
            self._flush.cancel()
            self._flush = None
        self.throttle.close()

    def _flush_due(self) -> None:
        self._flush = None
        self.throttle.flush()
        if self.throttle.waiting:
            self._flush = asyncio.get_running_loop().call_later(
                self.throttle.interval, self._flush_due
            )
