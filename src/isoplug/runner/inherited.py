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
from isoplug.transport.process_tree import subtree

__all__ = ["inherited_processes"]


def inherited_processes() -> dict[int, int]:
    """This process's live descendants now, as pid -> start time (clock ticks after boot, as
    ``/proc/<pid>/stat`` says: with the pid, it names one process for good); at most
    :data:`~isoplug.control.MAX_INHERITED`."""
    return subtree(os.getpid(), MAX_INHERITED)
