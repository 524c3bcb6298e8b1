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
import os
from collections.abc import Iterator
from types import FrameType
from typing import Any

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
        self._folder = os.path.join(os.path.realpath(folder), "")
        try:
            yield
        finally:
            self._plugin = self._task = None

    def where(self, _params: object = None) -> str:
        """``plugin 'p': setup() waits at /path/p.py:12 in connect``; "" when no setup runs."""
        plugin, task = self._plugin, self._task
        if plugin is None or task is None:
            return ""
        for frame in reversed(list(_awaited_frames(task))):
            filename = frame.f_code.co_filename
            if os.path.realpath(filename).startswith(self._folder):
                return (
                    f"plugin {plugin!r}: setup() waits at {filename}:{frame.f_lineno} in "
                    f"{frame.f_code.co_name}"
                )
        return f"plugin {plugin!r}: setup() has not returned"


def _awaited_frames(task: asyncio.Task[Any]) -> Iterator[FrameType]:
    """The frames of the coroutines ``task`` awaits, outermost first (a bounded walk)."""
    awaited: Any = task.get_coro()
    for _ in range(256):
        if awaited is None:
            return
        frame = getattr(awaited, "cr_frame", None) or getattr(awaited, "gi_frame", None)
        if frame is not None:
            yield frame
        awaited = getattr(awaited, "cr_await", None) or getattr(awaited, "gi_yieldfrom", None)
