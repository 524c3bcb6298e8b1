"""Where a plugin's own code is in a chain of frames: what a report of a ``setup()`` or a
``teardown()`` that does not finish names.

A hook that waits usually waits in a library (a driver's socket read, ``asyncio.sleep``); the
line worth naming is the plugin's call of it: the innermost frame whose file is in the
plugin's folder. The chain is that of the coroutines a task awaits (a hook that awaits), or
the stack of a thread (a hook that blocks the event loop's thread).
"""

from __future__ import annotations

import asyncio
import os
from types import FrameType
from typing import Any

from isoplug.stdlib_paths import in_stdlib

__all__ = ["awaited_frames", "describe_in_folder", "plugin_frame", "thread_frames"]

#: Frames followed at most: a chain deeper than this is a recursion, not a wait.
_MAX_FRAMES = 256


def awaited_frames(task: asyncio.Task[Any]) -> list[FrameType]:
    """The frames of the coroutines ``task`` awaits, outermost first."""
    frames: list[FrameType] = []
    awaited: Any = task.get_coro()
    while awaited is not None and len(frames) < _MAX_FRAMES:
        frame = getattr(awaited, "cr_frame", None) or getattr(awaited, "gi_frame", None)
        if frame is not None:
            frames.append(frame)
        awaited = getattr(awaited, "cr_await", None) or getattr(awaited, "gi_yieldfrom", None)
    return frames


def thread_frames(innermost: FrameType | None) -> list[FrameType]:
    """The stack ending in ``innermost`` (a thread's current frame), outermost first."""
    frames: list[FrameType] = []
    frame = innermost
    while frame is not None and len(frames) < _MAX_FRAMES:
        frames.append(frame)
        frame = frame.f_back
    frames.reverse()
    return frames


def plugin_frame(frames: list[FrameType], folder: str) -> FrameType | None:
    """The innermost of ``frames`` (outermost first) whose file is in ``folder``."""
    home = os.path.join(os.path.realpath(folder), "")
    for frame in reversed(frames):
        if os.path.realpath(frame.f_code.co_filename).startswith(home):
            return frame
    return None


def describe_in_folder(frames: list[FrameType], folder: str) -> str:
    """``path:line in function`` of the plugin's innermost frame (see :func:`plugin_frame`);
    without one (a hook inherited from a library's class), of the innermost frame outside the
    standard library, else of the innermost; "" for no frames."""
    frame = plugin_frame(frames, folder)
    if frame is None:
        outside = [f for f in frames if not in_stdlib(f.f_code.co_filename)]
        if not (outside or frames):
            return ""
        frame = (outside or frames)[-1]
    return f"{frame.f_code.co_filename}:{frame.f_lineno} in {frame.f_code.co_name}"
