"""The failures of a runner's event handlers, said without flooding the log.

A handler that fails on every event used to log an ERROR with its traceback per event: 500
events, 500 tracebacks (half a megabyte), in the runner's log and the host's. As for a host
capability that fails, the first failure of each handler for each event is said at once, with
its traceback; further ones are counted and said in one summary per
:data:`REPORT_INTERVAL` seconds, with the latest error in one line (``ValueError: bad``).
Kinds are a plugin's subscriptions (plugin, handler, event): as many as it declared, bounded.
"""

from __future__ import annotations

from typing import Final

from isoplug.log_guard import guarded_logger
from isoplug.logs.loop_reports import LoopReports
from isoplug.logs.report_throttle import Tally
from isoplug.logs.sources import attributed_to
from isoplug.rpc.remote_errors import exception_message, exit_request_text
from isoplug.wire.sanitize import clean_text

__all__ = ["REPORT_INTERVAL", "HandlerFailures"]

_log = guarded_logger("isoplug.runner")

#: After a handler's first failure for an event, at most one summary per this many seconds.
REPORT_INTERVAL: Final = 1.0
#: The latest error of a summary, at most this long (its message may be anything).
_MAX_LATEST_CHARS = 300


class HandlerFailures:
    """Says each event handler's failures: the first with its traceback, then summaries."""

    __slots__ = ("_reports",)

    def __init__(self) -> None:
        self._reports = LoopReports(REPORT_INTERVAL)

    def failed(
        self, plugin_id: str, source: str, handler: str, event: str, exc: BaseException
    ) -> None:
        """``handler`` of ``plugin_id`` (whose records are attributed to ``source``) raised
        ``exc`` for ``event``; call it on the event loop, where the exception was caught."""
        exiting = not isinstance(exc, Exception)
        if exiting:
            # As for a method (see PluginTable.call): not the end of the runner.
            first = (
                f"plugin {plugin_id!r}: handler {handler} for event {event!r} raised "
                f"{exit_request_text(exc)}; an event handler cannot end its runner: the runner "
                "kept running"
            )
            latest = exit_request_text(exc, _MAX_LATEST_CHARS)
        else:
            first = f"plugin {plugin_id!r}: handler {handler} for event {event!r} failed"
            message = exception_message(exc, _MAX_LATEST_CHARS)
            latest = f"{type(exc).__name__}: {message}" if message else type(exc).__name__
        first += (
            f" (further failures of it are counted and said at most every {REPORT_INTERVAL:g} s)"
        )

        def emit(text: str) -> None:
            with attributed_to(source):
                _log.error(text, exc_info=exc if text is first else None)

        def summary(tally: Tally) -> str:
            return (
                f"plugin {plugin_id!r}: handler {handler} for event {event!r} failed "
                f"{tally.events:,} more time(s) in {tally.seconds:.0f} s (the latest: "
                f"{tally.detail})"
            )

        self._reports.report(
            f"{plugin_id}\0{handler}\0{event}\0{exiting}",
            first,
            summary=summary,
            emit=emit,
            detail=clean_text(latest, _MAX_LATEST_CHARS),
        )

    def close(self) -> None:
        """Say the failures not said yet (the runner is stopping)."""
        self._reports.close()
