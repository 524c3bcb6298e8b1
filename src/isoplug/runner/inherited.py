"""The processes a runner already has when its own code starts: its interpreter command's.

A plugin's own ``python`` may be a wrapper script that starts a background helper before it
execs the interpreter (the pid stays the runner's): that helper is the runner's child before
any isoplug or plugin code runs, and it keeps the runner's stdout and stderr open after the
runner exits. The runner names these processes in its ready report
(:attr:`~isoplug.control.ReadyReport.inherited`), so that the host, once the runner exited,
ends them at once and says who left them, rather than waiting for them to close the runner's
output and blaming the plugins. Read from ``/proc`` (Linux); elsewhere there are none to name.
"""

from __future__ import annotations

import os

from isoplug.control import MAX_INHERITED

__all__ = ["inherited_processes"]


def inherited_processes() -> dict[int, int]:
    """This process's live descendants now, as pid -> start time (clock ticks after boot, as
    ``/proc/<pid>/stat`` says: with the pid, it names one process for good); at most
    :data:`~isoplug.control.MAX_INHERITED`."""
    found: dict[int, int] = {}
    pending = _children(os.getpid())
    while pending and len(found) < MAX_INHERITED:
        pid = pending.pop()
        start = _start_time(pid)
        if start is None or pid in found:
            continue
        found[pid] = start
        pending.extend(_children(pid))
    return found


def _children(pid: int) -> list[int]:
    found: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return found  # gone, or no /proc
    for task in tasks:
        try:
            with open(f"/proc/{pid}/task/{task}/children", "rb") as children:
                found.extend(int(child) for child in children.read().split())
        except (OSError, ValueError):
            continue  # the task ended meanwhile: its children are read through another
    return found


def _start_time(pid: int) -> int | None:
    """None when ``pid`` is gone or a zombie (nothing left to end)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            text = stat.read()
    except OSError:
        return None
    # The name (field 2) may hold any byte, parentheses too: the fields follow its last ")".
    fields = text[text.rfind(b")") + 2 :].split()
    if len(fields) < 20 or fields[0] in (b"Z", b"X"):
        return None
    try:
        return int(fields[19])
    except ValueError:
        return None
