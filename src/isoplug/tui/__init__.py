"""``isoplug run --tui``: a live, full-screen view of a running host (needs ``isoplug[tui]``,
which brings Textual)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator

from isoplug.host.host import Host
from isoplug.tui.app import PluginDashboard
from isoplug.tui.log_feed import LogFeed

__all__ = ["PluginDashboard", "feeding", "run_dashboard"]


@contextlib.contextmanager
def feeding(feed: LogFeed, logger: logging.Logger | None = None) -> Iterator[LogFeed]:
    """Make ``feed`` the only handler of ``logger`` (the root logger) for the block: a
    full-screen view owns the terminal, so nothing else may print on it."""
    target = logger or logging.getLogger()
    saved = target.handlers[:]
    target.handlers[:] = [feed]
    try:
        yield feed
    finally:
        target.handlers[:] = saved


async def run_dashboard(
    host: Host, *, title: str | None = None, stop: asyncio.Event | None = None
) -> None:
    """Show the dashboard of the running ``host`` until the user quits it (or ``stop`` is
    set)."""
    with feeding(LogFeed()) as feed:
        await PluginDashboard(host, feed, title=title, stop=stop).run_async()
