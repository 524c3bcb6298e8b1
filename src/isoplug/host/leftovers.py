"""What a runner's plugins leave behind when the runner exits: processes they started that
outlived it (found by /proc and by the runner's process group, see
:mod:`isoplug.host.descendants`), killed so that none becomes an orphan holding the runner's
pipes, and said in the runner's exit account."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Callable, Mapping

from isoplug.host import descendants
from isoplug.host.descendants import ProcessStat

__all__ = ["Leftovers", "end_leftovers"]

#: How many pids a report of leftover processes names.
_PIDS_SHOWN = 10


class Leftovers:
    """Processes started by a runner's plugins that outlived it, and were killed."""

    def __init__(self, runner_pid: int) -> None:
        self.runner_pid = runner_pid
        self.killed: dict[int, ProcessStat] = {}
        #: The process group had members left, whoever they were (where /proc cannot say).
        self.group = False
        #: Seconds after the runner's exit its stdout/stderr were still open (held by them),
        #: when they were; and whether they stayed open even after the kill (held by a
        #: process isoplug could not find).
        self.held_output: float | None = None
        self.output_lost = False

    def __bool__(self) -> bool:
        return self.group or bool(self.killed) or self.held_output is not None

    def account(self) -> str:
        """The one line the host says of them (after ``runner <id>: ``): what outlived the
        runner, whether it held its output open, what was killed."""
        text = f"processes forked by its plugins outlived it; killed them: {self.describe()}"
        if self.held_output is not None:
            text += f"; they held its stdout/stderr open {self.held_output:g} s after it exited"
        if self.output_lost:
            text += (
                "; its stdout/stderr stayed open even so (a process isoplug could not find, "
                "outside its process group?): stopped reading them, and anything written to "
                "them from now on is lost"
            )
        return text

    def describe(self) -> str:
        """``"2 processes (pids 10, 11; 1 of them had left its process group: pid 11)"``."""
        if not self.killed:
            return "its process group"
        pids = sorted(self.killed)
        many = len(pids) > 1
        text = f"{len(pids)} process{'es' if many else ''} (pid{'s' if many else ''} "
        text += _pid_list(pids)
        escaped = [p for p in pids if self.killed[p].pgid != self.runner_pid]
        if escaped:
            text += (
                f"; {len(escaped)} of them had left its process group: "
                f"pid{'s' if len(escaped) > 1 else ''} {_pid_list(escaped)}"
            )
        return text + ")"


def _pid_list(pids: list[int]) -> str:
    shown = ", ".join(str(p) for p in pids[:_PIDS_SHOWN])
    return shown + (f" and {len(pids) - _PIDS_SHOWN} more" if len(pids) > _PIDS_SHOWN else "")


async def end_leftovers(
    leftovers: Leftovers,
    tag: str | None,
    recorded: Mapping[int, int],
    signal_group: Callable[[signal.Signals], bool],
) -> None:
    """Kill what the runner of ``leftovers`` left behind, adding it to ``leftovers``; its
    process group (``signal_group``) last, for anything /proc could not show. ``tag`` and
    ``recorded`` are the runner's mark and its process tree as recorded while it lived."""
    pid = leftovers.runner_pid
    found = await asyncio.to_thread(descendants.find_descendants, pid, tag, recorded)
    for stat in await asyncio.to_thread(descendants.end_processes, found):
        leftovers.killed.setdefault(stat.pid, stat)
    if signal_group(signal.SIGKILL) and not os.path.isdir("/proc/self"):
        # Without /proc the group's word is all there is (with it, members the scan did not
        # kill can only be exited ones, waiting to be reaped).
        leftovers.group = True
