"""``isoplug run --tui``: a live, full-screen view of a running host, built on Textual.

One table row per plugin (state, log level, pid, uptime, restarts, last exit, records/s,
log records and events dropped, RSS, CPU) above a log pane that follows every plugin or one,
filtered by level and by text (see :mod:`isoplug.tui.log_pane`). Keys act on the plugin
selected in the table: restart it, change its log level (in its runner), pause its lines in
the pane.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import ClassVar

from rich.text import Text
from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.widgets import DataTable, Footer, Header, Input, Static

from isoplug.errors import IsoplugError
from isoplug.host.host import Host
from isoplug.log_guard import guarded_logger
from isoplug.tui.log_feed import LogFeed, LogFilter
from isoplug.tui.log_pane import LogPane
from isoplug.tui.process_stats import ProcessSampler
from isoplug.tui.rows import COLUMNS, PluginRow

__all__ = ["PluginDashboard"]

_log = guarded_logger("isoplug.tui")

#: The levels ``l`` (a plugin's level) and ``v`` (the pane's lowest level) cycle through.
LEVELS = (logging.DEBUG, logging.INFO, logging.WARNING, logging.ERROR)
#: How often the table is refreshed, and the log pane looks for new records, in seconds.
TABLE_INTERVAL = 1.0
LOG_INTERVAL = 0.1
#: After a look that wrote lines, the next waits this long: lines that keep coming are shown
#: three or four times a second rather than ten. Each write moves every row on screen, and
#: repainting the whole pane costs the host's loop a few milliseconds; a line after a quiet
#: spell still shows within LOG_INTERVAL.
BUSY_LOG_INTERVAL = 0.3


class PluginDashboard(App[None]):
    """The dashboard of one running :class:`~isoplug.Host`; ``feed`` must be attached to the
    host's logging (the root logger) for the log pane to show anything."""

    TITLE = "isoplug"
    CSS = """
    #plugins { height: auto; max-height: 45%; }
    #status { height: 1; background: $boost; color: $text-muted; }
    #log { height: 1fr; border-top: solid $primary; }
    #filter { height: 3; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("r", "restart", "restart"),
        Binding("l", "cycle_plugin_level", "plugin's log level"),
        Binding("p", "toggle_pause", "pause its lines"),
        Binding("f", "toggle_follow", "follow it / all"),
        Binding("v", "cycle_pane_level", "pane level"),
        Binding("slash", "focus_filter", "filter"),
        Binding("escape", "focus_table", "table", show=False),
        Binding("q", "quit", "quit"),
        Binding("ctrl+c", "quit", "quit", show=False, priority=True),
    ]

    def __init__(
        self,
        host: Host,
        feed: LogFeed,
        *,
        title: str | None = None,
        stop: asyncio.Event | None = None,
    ) -> None:
        super().__init__()
        self.host = host
        self._stop = stop
        self.feed = feed
        self.filter = LogFilter()
        self.sampler = ProcessSampler()
        if title is not None:
            self.sub_title = title
        #: Levels set from this view and not yet taken by the host (``l`` pressed again
        #: before the first press reached it cycles on from the pressed level).
        self._pending_levels: dict[str, int] = {}
        self._received: dict[str, tuple[int, float]] = {}
        self.rows: dict[str, PluginRow] = {}
        # Held, not queried: a timer or worker that runs while the app shuts down (its screen
        # already gone) then works on detached widgets instead of failing.
        self.table: DataTable[str] = DataTable(id="plugins", cursor_type="row", zebra_stripes=True)
        self.pane = LogPane(feed, self.filter, id="log")
        self._status = Static(id="status")
        #: When the log pane last wrote lines (monotonic), if it has.
        self._lines_written_at: float | None = None
        self.busy_log_interval = BUSY_LOG_INTERVAL

    # -- layout and timers ------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        yield Header()
        table = self.table
        for key, heading, width in COLUMNS:
            # A heading as wide as the column's usual values keeps the column from narrowing
            # (an auto-width column is as wide as its heading at least); longer values widen it.
            table.add_column(heading.ljust(width), key=key)
        yield table
        yield self._status
        yield self.pane
        yield Input(placeholder="filter the log pane by text (/, then Enter)", id="filter")
        yield Footer()

    def on_mount(self) -> None:
        self.refresh_table()
        self.show_new_lines()
        self._update_status()
        self.set_interval(TABLE_INTERVAL, self.refresh_table)
        self.set_interval(LOG_INTERVAL, self.look_for_new_lines)
        self.table.focus()
        if self._stop is not None:
            self.run_worker(self._exit_when_stopped(self._stop), group="stop")

    async def _exit_when_stopped(self, stop: asyncio.Event) -> None:
        # SIGTERM (or the first Ctrl-C outside the terminal's raw mode) ends the view too.
        await stop.wait()
        self.exit()

    # -- the table ------------------------------------------------------------------------

    def refresh_table(self) -> None:
        table = self.table
        now = time.monotonic()
        pids: set[int] = set()
        seen: set[str] = set()
        for info in self.host.plugins():
            seen.add(info.id)
            process = None
            if info.pid is not None:
                pids.add(info.pid)
                process = self.sampler.sample(info.pid)
            metrics = None
            rate = None
            try:
                metrics = self.host.log_metrics(info.id)
            except IsoplugError:
                metrics = None
            if metrics is not None:
                before = self._received.get(info.id)
                if before is not None and now > before[1]:
                    rate = (metrics.received - before[0]) / (now - before[1])
                self._received[info.id] = (metrics.received, now)
            row = PluginRow.build(
                info,
                metrics=metrics,
                records_per_second=rate,
                process=process,
                level=self._level_of(info.id),
            )
            if info.id not in self.rows:
                table.add_row(*row.cells(), key=info.id)
            elif row != self.rows[info.id]:
                for (key, _, _), value in zip(COLUMNS, row.cells(), strict=True):
                    # update_width: a value longer than the column's (a pid of 7 digits where
                    # the first row had "-") widens it rather than being cut short.
                    table.update_cell(info.id, key, value, update_width=True)
            self.rows[info.id] = row
        # Plugins removed by a hot reload leave the table.
        for gone in set(self.rows) - seen:
            table.remove_row(gone)
            del self.rows[gone]
            self._received.pop(gone, None)
        self.sampler.forget_except(pids)
        self._update_status()

    def selected_plugin(self) -> str | None:
        table = self.table
        if table.row_count == 0:
            return None
        row_key, _ = table.coordinate_to_cell_key(table.cursor_coordinate)
        return row_key.value

    # -- the log pane ---------------------------------------------------------------------

    def show_new_lines(self) -> None:
        if self.pane.show_new():
            self._lines_written_at = time.monotonic()

    def look_for_new_lines(self) -> None:
        written_at = self._lines_written_at
        if written_at is not None and time.monotonic() - written_at < self.busy_log_interval:
            return
        self.show_new_lines()

    def _rerender(self, notes: tuple[str, ...] = ()) -> None:
        self.pane.rerender(notes)
        self._update_status()

    def pane_lines(self) -> list[str]:
        """The lines the log pane holds now (as wrapped on screen)."""
        return self.pane.texts()

    def _update_status(self) -> None:
        text = " " + self.filter.describe()
        lost = {
            plugin: self.feed.lost_after(serial) for plugin, serial in self.filter.paused.items()
        }
        if any(lost.values()):
            text += (
                " ("
                + ", ".join(
                    f"{count} records since {plugin}'s pause no longer kept"
                    for plugin, count in sorted(lost.items())
                    if count
                )
                + f": the pane keeps the last {self.feed.capacity})"
            )
        self._status.update(Text(text))

    # -- actions ----------------------------------------------------------------------------

    async def action_restart(self) -> None:
        plugin = self.selected_plugin()
        if plugin is None:
            return
        _log.info("restarting %s (from the dashboard)", plugin)
        self.run_worker(self._restart(plugin), group="restart")

    async def _restart(self, plugin: str) -> None:
        try:
            info = await self.host.restart(plugin)
        except (TimeoutError, IsoplugError) as exc:
            _log.error("restarting %s failed: %s", plugin, exc)
            return
        _log.info("%s is %s after the restart", plugin, info.state.value)
        self.refresh_table()

    async def action_cycle_plugin_level(self) -> None:
        plugin = self.selected_plugin()
        if plugin is None:
            return
        current = self._level_of(plugin)
        if current is None:
            return
        level = _next_level(current)
        self._pending_levels[plugin] = level
        self.run_worker(self._set_level(plugin, level), group="level")

    async def _set_level(self, plugin: str, level: int) -> None:
        try:
            await self.host.set_log_level(plugin, level)
        except (TimeoutError, IsoplugError) as exc:
            _log.error("setting %s's log level failed: %s", plugin, exc)
            return
        finally:
            if self._pending_levels.get(plugin) == level:
                del self._pending_levels[plugin]
        _log.info("%s now logs at %s and above", plugin, logging.getLevelName(level))
        self.refresh_table()

    def _level_of(self, plugin: str) -> int | None:
        """The level ``plugin`` runs at (its manifest's, or what the host was told last)."""
        pending = self._pending_levels.get(plugin)
        if pending is not None:
            return pending
        try:
            return self.host.log_level(plugin)
        except IsoplugError:
            return None  # removed by a hot reload meanwhile

    def action_toggle_pause(self) -> None:
        plugin = self.selected_plugin()
        if plugin is None:
            return
        if plugin in self.filter.paused:
            lost = self.feed.lost_after(self.filter.paused.pop(plugin))
            notes: tuple[str, ...] = ()
            if lost:
                notes = (
                    f"… {lost} records that came while {plugin} was paused are no longer kept "
                    f"(the pane keeps the last {self.feed.capacity}): its lines among them "
                    "are not shown",
                )
            self._rerender(notes)
        else:
            self.filter.paused[plugin] = self.pane.shown_serial
            self._update_status()

    def action_toggle_follow(self) -> None:
        plugin = self.selected_plugin()
        self.filter.plugin = None if self.filter.plugin is not None else plugin
        self._rerender()

    def action_cycle_pane_level(self) -> None:
        current = self.filter.level
        self.filter.level = _next_level(current)
        self._rerender()

    def action_focus_filter(self) -> None:
        self.query_one(Input).focus()

    def action_focus_table(self) -> None:
        self.table.focus()

    def on_input_submitted(self, message: Input.Submitted) -> None:
        self.filter.text = message.value.strip()
        self._rerender()
        self.table.focus()


def _next_level(level: int) -> int:
    following = [candidate for candidate in LEVELS if candidate > level]
    return following[0] if following else LEVELS[0]
