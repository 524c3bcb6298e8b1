"""What a runner leaves behind when it exits: processes of its tree that outlived it (found by
/proc and by the runner's process group, see :mod:`isoplug.host.descendants`), killed so that
none becomes an orphan holding the runner's pipes, and said in the runner's exit account.

Who started them is said as far as the host can tell. The runner's ready report names the
processes it already had when its own code started (:mod:`isoplug.runner.inherited`): those
its interpreter command started, such as a wrapper script's background helper. Those, and what
they started, are its interpreter's; they are ended as soon as the runner has exited (they
would only hold its output open), and said as such. The rest of a runner that reported ready
came after its own code started: its plugins'. Without a report (the runner ended before it),
the account names neither. The report only sorts what the host found itself: a runner cannot
name a process for the host to kill."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Mapping

from isoplug.host import descendants
from isoplug.host.descendants import ProcessStat
from isoplug.off_loop import off_loop

__all__ = ["Leftovers", "end_interpreters", "end_leftovers", "interpreters"]

#: How many pids a report of leftover processes names.
_PIDS_SHOWN = 10


class Leftovers:
    """Processes of a runner's tree that outlived it, and were killed. ``inherited``: what the
    runner's ready report named as its interpreter command's (pid -> start time), None when it
    sent none."""

    def __init__(self, runner_pid: int, inherited: Mapping[int, int] | None = None) -> None:
        self.runner_pid = runner_pid
        self.inherited = inherited
        self.killed: dict[int, ProcessStat] = {}
        #: Those of :attr:`killed` that its interpreter command started (see the module).
        self.interpreter: dict[int, ProcessStat] = {}
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
        others = {pid: stat for pid, stat in self.killed.items() if pid not in self.interpreter}
        parts = []
        if self.interpreter:
            parts.append(
                "processes its interpreter command started (before the runner's own code ran, "
                f"not its plugins) outlived it; killed them: {self._describe(self.interpreter)}"
            )
        if others or self.group or not self.interpreter:
            killed = self._describe(others)
            parts.append(
                f"processes of its process tree outlived it; killed them: {killed}"
                if self.inherited is None
                else f"processes forked by its plugins outlived it; killed them: {killed}"
            )
        text = "; ".join(parts)
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
        return self._describe(self.killed)

    def _describe(self, killed: Mapping[int, ProcessStat]) -> str:
        if not killed:
            return "its process group"
        pids = sorted(killed)
        many = len(pids) > 1
        text = f"{len(pids)} process{'es' if many else ''} (pid{'s' if many else ''} "
        text += _pid_list(pids)
        escaped = [p for p in pids if killed[p].pgid != self.runner_pid]
        if escaped:
            text += (
                f"; {len(escaped)} of them had left its process group: "
                f"pid{'s' if len(escaped) > 1 else ''} {_pid_list(escaped)}"
            )
        return text + ")"


def _pid_list(pids: list[int]) -> str:
    shown = ", ".join(str(p) for p in pids[:_PIDS_SHOWN])
    return shown + (f" and {len(pids) - _PIDS_SHOWN} more" if len(pids) > _PIDS_SHOWN else "")


def interpreters(found: list[ProcessStat], inherited: Mapping[int, int]) -> list[ProcessStat]:
    """Those of ``found`` (what the host found of a runner's tree) that its interpreter command
    started: named in ``inherited`` (same pid and start time), or started by one that was."""
    chosen = {stat.pid for stat in found if inherited.get(stat.pid) == stat.start}
    grew = bool(chosen)
    while grew:
        more = {stat.pid for stat in found if stat.ppid in chosen} - chosen
        chosen |= more
        grew = bool(more)
    return [stat for stat in found if stat.pid in chosen]


async def end_interpreters(
    leftovers: Leftovers, tag: str | None, recorded: Mapping[int, int]
) -> None:
    """Kill at once what the exited runner of ``leftovers`` left of its interpreter command's
    processes (see the module), adding them to ``leftovers``: they would hold its output open
    until the drain's deadline."""
    if not leftovers.inherited:
        return
    found = await off_loop(descendants.find_descendants, leftovers.runner_pid, tag, recorded)
    chosen = interpreters(found, leftovers.inherited)
    if not chosen:
        return
    for stat in await off_loop(descendants.end_processes, chosen):
        leftovers.killed.setdefault(stat.pid, stat)
        leftovers.interpreter.setdefault(stat.pid, stat)


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
    found = await off_loop(descendants.find_descendants, pid, tag, recorded)
    for stat in await off_loop(descendants.end_processes, found):
        leftovers.killed.setdefault(stat.pid, stat)
    if signal_group(signal.SIGKILL) and not os.path.isdir("/proc/self"):
        # Without /proc the group's word is all there is (with it, members the scan did not
        # kill can only be exited ones, waiting to be reaped).
        leftovers.group = True
