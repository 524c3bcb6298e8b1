"""The dashboard's log pane on its own, driven headless by Textual's harness: it shows the
newest lines, holds a bounded number of them, and taking new lines repaints the pane without
laying out the screen (the layout pass, ten times a second, was what the host's loop paid
for under a flood)."""

from __future__ import annotations

import logging

import pytest

pytest.importorskip("textual")

from textual.app import App, ComposeResult
from textual.screen import Screen

from isoplug.tui.log_feed import LogFeed, LogFilter
from isoplug.tui.log_pane import LogPane

CAPACITY = 60


class PaneApp(App[None]):
    def __init__(self, feed: LogFeed) -> None:
        super().__init__()
        self.pane = LogPane(feed, LogFilter())

    def compose(self) -> ComposeResult:
        yield self.pane


def log(feed: LogFeed, *messages: str, level: int = logging.INFO) -> None:
    for message in messages:
        feed.handle(
            logging.makeLogRecord(
                {"name": "plugin.chatty", "msg": message, "levelno": level, "levelname": "INFO"}
            )
        )


def on_screen(pane: LogPane) -> list[str]:
    """The pane's rows as drawn, top to bottom."""
    return [pane.render_line(y).text.rstrip() for y in range(pane.size.height)]


async def test_pane_shows_the_newest_lines_keeps_a_bounded_number_and_lays_nothing_out() -> None:
    feed = LogFeed(capacity=CAPACITY)
    app = PaneApp(feed)
    async with app.run_test(size=(100, 20)) as pilot:
        pane = app.pane
        log(feed, "first")
        pane.show_new()
        await pilot.pause()
        assert on_screen(pane)[0].endswith("first")

        layouts: list[Screen[object]] = []
        app.screen.screen_layout_refresh_signal.subscribe(app.screen, layouts.append)
        await pilot.pause()
        layouts.clear()
        serial = 0
        for _ in range(8):  # 8 x 15 lines: twice the pane's capacity
            lines = [f"line {serial + n}" for n in range(15)]
            serial += 15
            log(feed, *lines)
            pane.show_new()
            await pilot.pause()
            drawn = on_screen(pane)
            if len(pane.texts()) >= len(drawn):
                # Following the newest: the last line written is the pane's bottom row.
                assert drawn[-1].endswith(lines[-1]), drawn
            written = [row for row in drawn if row]
            assert written[-1].endswith(lines[-1]), drawn
            assert written[-15].endswith(lines[0]), drawn
        assert layouts == []
        # Bounded: the oldest rows left, the newest are kept in order.
        held = pane.texts()
        assert len(held) == CAPACITY
        assert held[-1].endswith(f"line {serial - 1}")
        assert held[0].endswith(f"line {serial - CAPACITY}")
        assert pane.virtual_size.height == CAPACITY
        assert pane.scroll_offset.y == pane.max_scroll_y > 0

        # The observation works: a layout, when there is one, is seen.
        pane.refresh(layout=True)
        await pilot.pause()
        await pilot.pause()
        assert layouts


async def test_a_long_line_wraps_and_a_resize_keeps_the_rows() -> None:
    feed = LogFeed(capacity=CAPACITY)
    app = PaneApp(feed)
    async with app.run_test(size=(60, 20)) as pilot:
        pane = app.pane
        await pilot.pause()
        width = pane.scrollable_content_region.width
        long = " ".join(f"word{n}" for n in range(40))
        log(feed, long, "short\tafter a tab", "two\nlines", level=logging.WARNING)
        pane.show_new()
        await pilot.pause()
        held = pane.texts()
        assert all(len(row) <= width for row in held), held
        # Every word is there once, in order, across the wrapped rows.
        wrapped = " ".join(held).split()
        assert [word for word in wrapped if word.startswith("word")] == long.split()
        assert any("short" in row and "\t" not in row for row in held)
        assert held[-2].endswith("two") and held[-1] == "lines"
        drawn = on_screen(pane)
        assert drawn[len(held) - 1] == "lines"

        await pilot.resize_terminal(100, 30)
        await pilot.pause()
        log(feed, "after the resize")
        pane.show_new()
        await pilot.pause()
        drawn = on_screen(pane)
        assert drawn[len(held)].endswith("after the resize"), drawn
