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
    full-screen view owns the terminal, so nothing else may print on it.

    As ``isoplug run`` does, the logger lets INFO through (a program that never configured
    logging has its root at WARNING) and the plugins' loggers (``plugin``, when not set)
    everything their runners send; levels set lower are kept, and all are restored after
    the block."""
    target = logger or logging.getLogger()
    plugins = logging.getLogger("plugin")
    saved_handlers, saved_level, saved_plugins_level = (
        target.handlers[:],
        target.level,
        plugins.level,
    )
    target.handlers[:] = [feed]
    if target.getEffectiveLevel() > logging.INFO:
        target.setLevel(logging.INFO)
    if target is logging.getLogger() and plugins.level == logging.NOTSET:
        # The host drops a replayed record its logger is not enabled for.
        plugins.setLevel(logging.DEBUG)
    try:
        yield feed
    finally:
        target.handlers[:] = saved_handlers
        target.setLevel(saved_level)
        plugins.setLevel(saved_plugins_level)


async def run_dashboard(
    host: Host, *, title: str | None = None, stop: asyncio.Event | None = None
) -> None:
    """Show the dashboard of the running ``host`` until the user quits it (or ``stop`` is
    set)."""
    with feeding(LogFeed()) as feed:
        await PluginDashboard(host, feed, title=title, stop=stop).run_async()
