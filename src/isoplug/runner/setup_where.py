"""Where a plugin's ``setup()`` waits, for the host's account of a runner not ready in time.

The host gives a runner ``ready_timeout`` to load and set up its plugins; one whose setup
never returns (a connection that never answers, an event never set) is killed. Before it
kills, the host asks (:data:`~isoplug.control.SETUP_WHERE`) and this says which plugin's
``setup()`` is running and where in the plugin's code it waits: the innermost frame of the
chain of coroutines the runner's task awaits that is in the plugin's folder. A setup that
blocks the event loop (a sync call) cannot answer; the host then says so.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from typing import Any

from isoplug.runner.plugin_frames import awaited_frames, plugin_frame

__all__ = ["SetupWatch"]


class SetupWatch:
    """The plugin whose ``setup()`` the runner's task is awaiting, if any."""

    def __init__(self) -> None:
        self._plugin: str | None = None
        self._folder = ""
        self._task: asyncio.Task[Any] | None = None

    @contextlib.contextmanager
    def running(self, plugin_id: str, folder: str) -> Iterator[None]:
        """Around the ``setup()`` of ``plugin_id``, whose code is in ``folder``."""
        self._plugin, self._task = plugin_id, asyncio.current_task()
        self._folder = folder
        try:
            yield
        finally:
            self._plugin = self._task = None

    def where(self, _params: object = None) -> str:
        """``plugin 'p': setup() waits at /path/p.py:12 in connect``; "" when no setup runs."""
        plugin, task = self._plugin, self._task
        if plugin is None or task is None:
            return ""
        frame = plugin_frame(awaited_frames(task), self._folder)
        if frame is None:
            return f"plugin {plugin!r}: setup() has not returned"
        return (
            f"plugin {plugin!r}: setup() waits at {frame.f_code.co_filename}:{frame.f_lineno} "
            f"in {frame.f_code.co_name}"
        )
