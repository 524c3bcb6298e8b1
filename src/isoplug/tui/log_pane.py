"""The dashboard's log pane: what a :class:`LogFeed` holds, through a :class:`LogFilter`, with
a bounded amount of work per refresh.

The dashboard runs on the host's event loop, and rendering a line (Rich, wrapped) costs a few
hundred microseconds there. A plugin logging tens of thousands of lines a second would then
hold the loop, and with it the host's calls and supervision, for most of every second. So a
refresh renders at most what the pane shows at once (more would scroll off before anyone
could read it) and says how many lines it skipped; a re-render (a filter changed) shows at
most :data:`RERENDER_LINES`. Appending to the feed stays cheap whatever the pane does.
"""

from __future__ import annotations

import collections
import logging
from collections.abc import Sequence

from rich.text import Text
from textual.widgets import RichLog

from isoplug.tui.log_feed import LogEntry, LogFeed, LogFilter

__all__ = ["MAX_LINES_PER_REFRESH", "RERENDER_LINES", "LogPane"]

#: Bounds of the lines one refresh renders: the pane's height, within these.
MIN_LINES_PER_REFRESH = 20
MAX_LINES_PER_REFRESH = 100
#: At most this many of the kept lines are shown again when a filter changes.
RERENDER_LINES = 300

_LEVEL_STYLES = {
    logging.DEBUG: "dim",
    logging.WARNING: "yellow",
    logging.ERROR: "red",
    logging.CRITICAL: "bold red",
}
_MARKER_STYLE = "bold cyan"


class LogPane(RichLog):
    """Shows ``feed`` through ``log_filter``; :meth:`show_new` takes what is new."""

    def __init__(self, feed: LogFeed, log_filter: LogFilter, *, id: str | None = None) -> None:
        super().__init__(id=id, wrap=True, max_lines=feed.capacity, markup=False)
        self.feed = feed
        self.filter = log_filter
        #: The serial of the newest entry the pane has looked at.
        self.shown_serial = 0
        #: Lines written by each of the recent refreshes (a view of its work, for tests).
        self.recent_writes: collections.deque[int] = collections.deque(maxlen=1000)

    def lines_per_refresh(self) -> int:
        return min(MAX_LINES_PER_REFRESH, max(MIN_LINES_PER_REFRESH, self.size.height))

    def show_new(self) -> None:
        """Write the entries that came since the last look, at most
        :meth:`lines_per_refresh` lines (a marker counts the rest)."""
        fresh = self.feed.since(self.shown_serial)
        self.shown_serial = fresh.last_serial
        accepted = [entry for entry in fresh.entries if self.filter.accepts(entry)]
        bound = self.lines_per_refresh()
        notes = []
        if len(accepted) > bound or fresh.lost:
            accepted, skipped = _newest(accepted, bound - 1)
            parts = []
            if skipped:
                parts.append(f"{skipped} lines skipped")
            if fresh.lost:
                parts.append(f"{fresh.lost} more gone from the buffer")
            notes.append(
                f"… {', '.join(parts)} (too many to show: p pauses a plugin, f follows one, "
                "/ filters)"
            )
        self.recent_writes.append(self._write(notes, accepted))

    def rerender(self, notes: Sequence[str] = ()) -> None:
        """Show the kept entries again under the current filter (the newest
        :data:`RERENDER_LINES` of them), after ``notes``."""
        self.clear()
        kept = self.feed.since(0)
        self.shown_serial = kept.last_serial
        accepted, older = _newest(
            [entry for entry in kept.entries if self.filter.accepts(entry)], RERENDER_LINES
        )
        notes = list(notes)
        if older:
            notes.append(f"… {older} older lines kept but not shown again")
        self._write(notes, accepted)

    def _write(self, notes: Sequence[str], entries: Sequence[LogEntry]) -> int:
        for note in notes:
            self.write(Text(note, style=_MARKER_STYLE))
        for entry in entries:
            # Text, never markup: a plugin's "[bold]" is shown as it was written.
            self.write(Text(entry.line(), style=_LEVEL_STYLES.get(entry.levelno, "")))
        return len(notes) + len(entries)


def _newest(entries: list[LogEntry], count: int) -> tuple[list[LogEntry], int]:
    """The newest ``count`` of ``entries``, and how many older ones were left out."""
    if len(entries) <= count:
        return entries, 0
    return entries[len(entries) - count :], len(entries) - count
