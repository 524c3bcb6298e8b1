"""Messages a peer receives that no handler takes: counted, each kind warned about once.

Made-up event names can neither flood this side's log nor grow its memory: at most
:data:`MAX_UNHANDLED_WARNINGS` kinds are warned about (their names capped and cleaned), and
past them such messages are only counted, the count said at the session's end. Part of the
:class:`~isoplug.rpc.dispatch.Dispatcher`.
"""

from __future__ import annotations

from typing import Final

from isoplug.log_guard import guarded_logger

__all__ = ["MAX_EVENT_NAME_CHARS", "MAX_UNHANDLED_WARNINGS", "Unhandled"]

_log = guarded_logger("isoplug.rpc")

#: Cap for an event's name in this side's records (after clean_text).
MAX_EVENT_NAME_CHARS: Final = 200
#: Distinct messages with no handler (events by name, log batches) a peer warns about, each
#: once; past them such messages are only counted, and the count said at the session's end:
#: made-up event names can neither flood this side's log nor grow its memory.
MAX_UNHANDLED_WARNINGS: Final = 16


class Unhandled:
    """The count of one session's messages that no handler took, and what was warned of."""

    def __init__(self, peer_name: str) -> None:
        self._peer_name = peer_name
        #: Messages received that no handler took.
        self.count = 0
        #: What was warned about (by kind, event name capped): never more than the cap.
        self.warned: set[str] = set()
        self._capped = False

    def add(self, what: str) -> None:
        """Count a message no handler takes; warn about each ``what`` once, up to a cap."""
        self.count += 1
        warned = self.warned
        if what in warned or self._capped:
            return
        if len(warned) == MAX_UNHANDLED_WARNINGS:
            self._capped = True
            _log.warning(
                "%s sends more kinds of messages than this side handles; from now on they are "
                "ignored and counted, not reported one by one",
                self._peer_name or "peer",
            )
            return
        warned.add(what)
        _log.warning(
            "no handler for %s from %s; ignoring it (reported once)",
            what,
            self._peer_name or "peer",
        )

    def report(self) -> None:
        """Say how many messages no handler took, if some went unreported (session's end)."""
        if self.count > len(self.warned):
            _log.warning(
                "ignored %d message(s) from %s in all that no handler takes",
                self.count,
                self._peer_name or "peer",
            )
