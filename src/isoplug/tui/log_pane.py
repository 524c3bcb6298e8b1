"""The dashboard's log pane: what a :class:`LogFeed` holds, through a :class:`LogFilter`, with
a bounded amount of work per refresh.

The dashboard runs on the host's event loop, so under a flood every refresh is paid for by
the host's calls and supervision. Three costs, each bounded here:

- *Rendering lines.* A refresh takes at most what the pane shows at once (more would scroll
  off before anyone could read it) and says how many lines it skipped; a re-render (a filter
  changed) shows at most :data:`RERENDER_LINES`.
- *Keeping them.* The pane holds each screen row as a plain string and a shared style, and
  draws strips only for the rows on screen (a small cache). A ``RichLog`` keeps every line
  it was given as a rendered strip, each some 40 objects with its caches: 5,000 of them made
  the host's heap so large that a full garbage collection took 50-250 ms, several a second
  under a flood, each a stall of the whole loop.
- *Layout.* New rows change only the pane's virtual height, its own scroll range: the pane
  updates that and its scrollbar in place (a repaint of the pane) rather than through the
  layout-triggering ``virtual_size`` reactive, which laid out the whole screen ten times a
  second. Only a change of width (a resize, which lays out anyway) goes through layout.
"""

from __future__ import annotations

import collections
import logging
from collections.abc import Iterable, Sequence

from rich.cells import cell_len
from rich.console import Console
from rich.control import strip_control_codes
from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual.cache import LRUCache
from textual.events import Resize
from textual.geometry import Region, Size
from textual.scroll_view import ScrollView
from textual.strip import Strip

from isoplug.tui.log_feed import LogEntry, LogFeed, LogFilter

__all__ = ["MAX_LINES_PER_REFRESH", "RERENDER_LINES", "LogPane"]

#: Bounds of the lines one refresh renders: the pane's height, within these.
MIN_LINES_PER_REFRESH = 20
MAX_LINES_PER_REFRESH = 100
#: At most this many of the kept lines are shown again when a filter changes.
RERENDER_LINES = 300
#: Strips kept for rows already drawn: more than a tall pane shows, so that a refresh draws
#: only its new rows (a row keeps its key as it scrolls up).
STRIP_CACHE = 256

_LEVEL_STYLES = {
    logging.DEBUG: Style.parse("dim"),
    logging.WARNING: Style.parse("yellow"),
    logging.ERROR: Style.parse("red"),
    logging.CRITICAL: Style.parse("bold red"),
}
_PLAIN = Style()
_MARKER_STYLE = Style.parse("bold cyan")

#: One screen row: its text (already wrapped to the pane's width) and its style.
_Row = tuple[str, Style]


class LogPane(ScrollView, can_focus=True):
    """Shows ``feed`` through ``log_filter``; :meth:`show_new` takes what is new. Holds at most
    ``feed.capacity`` rows (the oldest leave first) and follows the newest."""

    DEFAULT_CSS = """
    LogPane {
        background: $surface;
        color: $foreground;
        overflow-y: scroll;
        overflow-x: hidden;
        &:focus {
            background-tint: $foreground 5%;
        }
    }
    """

    def __init__(self, feed: LogFeed, log_filter: LogFilter, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.feed = feed
        self.filter = log_filter
        #: The serial of the newest entry the pane has looked at.
        self.shown_serial = 0
        #: Lines written by each of the recent refreshes (a view of its work, for tests).
        self.recent_writes: collections.deque[int] = collections.deque(maxlen=1000)
        self._rows: collections.deque[_Row] = collections.deque(maxlen=feed.capacity)
        #: Rows that have left the front: ``_dropped + i`` names ``_rows[i]`` for good.
        self._dropped = 0
        #: Lines written before the pane's width was known (before its first layout).
        self._unwrapped: collections.deque[_Row] = collections.deque(maxlen=feed.capacity)
        self._strips: LRUCache[tuple[int, int, int, Style], Strip] = LRUCache(STRIP_CACHE)
        #: The widget's own style, read once per paint (it walks every ancestor's styles).
        self._base_style: Style | None = None

    # -- what the pane holds ------------------------------------------------------------

    def texts(self) -> list[str]:
        """The rows the pane holds now (as wrapped on screen), oldest first."""
        return [text for text, _ in self._rows]

    def lines_per_refresh(self) -> int:
        return min(MAX_LINES_PER_REFRESH, max(MIN_LINES_PER_REFRESH, self.size.height))

    def show_new(self) -> int:
        """Write the entries that came since the last look, at most
        :meth:`lines_per_refresh` lines (a marker counts the rest); returns how many lines
        were written."""
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
        written = self._write(notes, accepted)
        self.recent_writes.append(written)
        return written

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

    def clear(self) -> None:
        self._dropped += len(self._rows)
        self._rows.clear()
        self._unwrapped.clear()
        self._strips.clear()
        self._update_extent()

    def _write(self, notes: Sequence[str], entries: Sequence[LogEntry]) -> int:
        lines = [(note, _MARKER_STYLE) for note in notes]
        # Plain text, never markup: a plugin's "[bold]" is shown as it was written.
        lines += [(entry.line(), _LEVEL_STYLES.get(entry.levelno, _PLAIN)) for entry in entries]
        if lines:
            self._append(lines)
        return len(lines)

    def _append(self, lines: Iterable[_Row]) -> None:
        width = self.scrollable_content_region.width
        if width <= 0:
            # Wrapped once the first layout gives the pane its width (see on_resize).
            self._unwrapped.extend(lines)
            return
        before = len(self._rows)
        added = 0
        for text, style in lines:
            rows = _wrap(text, width, self.app.console)
            added += len(rows)
            self._rows.extend((row, style) for row in rows)
        self._dropped += before + added - len(self._rows)
        self._update_extent()

    def on_resize(self, event: Resize) -> None:
        if self._unwrapped and self.scrollable_content_region.width > 0:
            pending = list(self._unwrapped)
            self._unwrapped.clear()
            self._append(pending)

    # -- size and scrolling ---------------------------------------------------------------

    def _update_extent(self) -> None:
        """Follow the rows held: the scroll range, the scrollbar, the newest rows in view."""
        size = Size(self.scrollable_content_region.width, len(self._rows))
        if size.width != self.virtual_size.width:
            # A new width: through the reactive, which lays the screen out (rare: the
            # first rows, a resize).
            self.virtual_size = size
        elif size != self.virtual_size:
            # Only the height: the pane's own business. The scrollbar is told directly what
            # a layout would tell it (ScrollView._size_updated); overflow-y is `scroll`, so
            # the bar is there whatever the height and nothing else on screen moves.
            self.set_reactive(LogPane.virtual_size, size)
            if self.show_vertical_scrollbar and self.styles.scrollbar_size_vertical:
                bar = self.vertical_scrollbar
                bar.window_virtual_size = size.height
                bar.window_size = self.container_size.height - self.scrollbar_size_horizontal
        # Follow the newest rows, as RichLog's auto_scroll did; at once, so that the pane is
        # painted once per refresh, not once before and once after the scroll.
        self.scroll_to(y=self.max_scroll_y, animate=False, immediate=True)
        self.refresh()

    # -- drawing --------------------------------------------------------------------------

    def render_lines(self, crop: Region) -> list[Strip]:
        self._base_style = self.rich_style
        try:
            return super().render_lines(crop)
        finally:
            self._base_style = None

    def render_line(self, y: int) -> Strip:
        scroll_x, scroll_y = self.scroll_offset
        width = self.scrollable_content_region.width
        base = self._base_style if self._base_style is not None else self.rich_style
        index = scroll_y + y
        if not 0 <= index < len(self._rows):
            return Strip.blank(width, base)
        key = (self._dropped + index, scroll_x, width, base)
        strip = self._strips.get(key)
        if strip is None:
            text, style = self._rows[index]
            length = cell_len(text)
            if scroll_x == 0 and length <= width:
                # The usual row (overflow-x is hidden): one strip, not a strip and its crop.
                strip = Strip(
                    [Segment(text, base + style), Segment(" " * (width - length), base)], width
                )
            else:
                strip = Strip([Segment(text, base + style)], length).crop_extend(
                    scroll_x, scroll_x + width, base
                )
            self._strips[key] = strip
        return strip

    def notify_style_update(self) -> None:
        super().notify_style_update()
        self._strips.clear()


def _wrap(line: str, width: int, console: Console) -> list[str]:
    """``line`` as screen rows of at most ``width`` cells: as Rich wraps it (words, tabs,
    newlines), but without asking Rich for the usual line that fits as it is."""
    line = strip_control_codes(line)
    if "\n" not in line and "\t" not in line and cell_len(line) <= width:
        return [line]
    text = Text(line)
    text.expand_tabs()
    return [row.plain for row in text.wrap(console, width)]


def _newest(entries: list[LogEntry], count: int) -> tuple[list[LogEntry], int]:
    """The newest ``count`` of ``entries``, and how many older ones were left out."""
    if len(entries) <= count:
        return entries, 0
    return entries[len(entries) - count :], len(entries) - count
