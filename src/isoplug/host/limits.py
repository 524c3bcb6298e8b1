"""The host's side of a runner's ``[limits]``: its RSS watched, and its end accounted for.

The runner sets its rlimits itself (:mod:`isoplug.runner.limits`). Memory is the host's: a
cgroup v2 ``memory.max`` needs a delegated, writable cgroup, which many machines (cgroup v1,
containers) do not give; so the host reads each limited runner's ``/proc/<pid>/stat`` every
:data:`FAST_INTERVAL` (its RSS and CPU time, in one read of some 1.5 KB) and:

- **memory**: past it, SIGKILLs the runner and its process group at once, and again until it
  is gone (:meth:`~isoplug.host.process.RunnerProcess.kill_and_wait`); the exit account says
  "was killed by SIGKILL from the host: its memory (RSS 530.1 MiB) passed its limit memory =
  512.0 MiB". Only
  the runner process's own RSS is counted (not processes its plugins start), and memory
  allocated and touched faster than one interval passes the limit until the next check: the
  runner's address-space backstop (``RLIMIT_AS``) stops single huge allocations.
- **recycle_rss**: above it for :data:`RECYCLE_CHECKS` checks in a row, the runner is recycled:
  stopped gracefully and started again at once, which the supervisor does not count as a
  crash (see :meth:`LimitWatch.recycle`).
- **cpu_seconds**: the last CPU time seen, so that a SIGKILL at the hard CPU limit (which the
  host did not send) is accounted for with that evidence; a SIGXCPU too, and only when the
  CPU time at the exit (or last seen) reached the limit: anyone may send either signal.

Runners without these limits get no watch at all. The cost of one check is measured by
``benchmarks/limits_watch.py`` (``docs/benchmarks.md``, "Resource limits").
"""

from __future__ import annotations

import asyncio
import contextlib
import signal

from isoplug.control import CPU_LIMIT_GRACE, ResourceLimits
from isoplug.host.process import RunnerProcess
from isoplug.host.status import KILLED_BY_HOST
from isoplug.host.usage import Usage, read_usage
from isoplug.log_guard import guarded_logger
from isoplug.sizes import format_size

__all__ = [
    "FAST_INTERVAL",
    "RECYCLE_CHECKS",
    "SLOW_INTERVAL",
    "LimitWatch",
    "Usage",
    "read_usage",
]

_log = guarded_logger("isoplug.host")

#: How often a runner with ``memory`` or ``recycle_rss`` is checked.
FAST_INTERVAL = 0.1
#: How often a runner with only ``cpu_seconds`` is checked (for the account's evidence only).
SLOW_INTERVAL = 1.0
#: Checks in a row above ``recycle_rss`` before a recycle: a short peak is no leak.
RECYCLE_CHECKS = 3


class LimitWatch:
    """Watches one runner process against ``limits`` from its spawn to its exit: create it,
    :meth:`start` it with the process, :meth:`close` it after the exit, then ask
    :meth:`account` what the exit had to do with a limit."""

    def __init__(self, runner_id: str, limits: ResourceLimits) -> None:
        self.runner_id = runner_id
        self.limits = limits
        #: Resolves with the reason when the runner should be recycled (``recycle_rss``).
        self.recycle: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        #: The limit the watch enforced ("memory", "recycle_rss"), if any.
        self.hit: str | None = None
        #: Why it killed the runner at ``memory``: the words of its log line, of the SIGKILL's
        #: reason (``sent_by_host``) and of the exit account's reason (None: it did not).
        self.killed_for: str | None = None
        self.last: Usage | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def active(self) -> bool:
        """Whether these limits need watching at all."""
        limits = self.limits
        return any(v is not None for v in (limits.memory, limits.recycle_rss, limits.cpu_seconds))

    def start(self, process: RunnerProcess) -> None:
        if not self.active:
            return
        self._task = asyncio.get_running_loop().create_task(
            self._run(process), name=f"isoplug-limits:{self.runner_id}"
        )

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self, process: RunnerProcess) -> None:
        limits = self.limits
        fast = limits.memory is not None or limits.recycle_rss is not None
        interval = FAST_INTERVAL if fast else SLOW_INTERVAL
        above = 0
        while process.running:
            usage = read_usage(process.pid)
            if usage is None:
                return  # gone: its exit is on its way
            self.last = usage
            if limits.memory is not None and usage.rss > limits.memory:
                await self._kill(process, usage.rss, limits.memory)
                return
            recycle = limits.recycle_rss
            if recycle is not None and not self.recycle.done():
                above = above + 1 if usage.rss > recycle else 0
                if above >= RECYCLE_CHECKS:
                    self._recycle(process, usage.rss, recycle)
            await asyncio.sleep(interval)

    async def _kill(self, process: RunnerProcess, rss: int, memory: int) -> None:
        self.hit = "memory"
        why = f"its memory (RSS {format_size(rss)}) passed its limit memory = {format_size(memory)}"
        self.killed_for = why
        _log.error("runner %s (pid %d): %s; killing it", self.runner_id, process.pid, why)
        # Until it is gone: a kill that did not land is sent again, and logged.
        await process.kill_and_wait(why, self.runner_id)

    def _recycle(self, process: RunnerProcess, rss: int, recycle: int) -> None:
        self.hit = "recycle_rss"
        why = (
            f"recycled: RSS {format_size(rss)} above recycle_rss {format_size(recycle)} for "
            f"{RECYCLE_CHECKS} checks in a row"
        )
        _log.info("runner %s (pid %d) is %s", self.runner_id, process.pid, why)
        self.recycle.set_result(why)

    def account(
        self,
        returncode: int,
        sent_by_host: str | None,
        status_known: bool,
        cpu_at_exit: float | None = None,
    ) -> tuple[str | None, str]:
        """Which limit ended the runner (None: none), and what its account should add to say
        so (``""``: nothing; the host's own reason says it already). ``cpu_at_exit``: its CPU
        time when it exited, where known.

        A SIGXCPU or SIGKILL is blamed on ``cpu_seconds`` only when that is set and the
        runner's CPU time had reached it: anyone with the right may send either signal."""
        if self.killed_for is not None:
            # As any runner the host killed: its reason says so, and why.
            return self.hit, f"{KILLED_BY_HOST}{self.killed_for}"
        if self.hit is not None:
            return self.hit, ""  # recycled: the recycle's reason says it
        cpu = self.limits.cpu_seconds
        if cpu is None or not status_known or sent_by_host is not None:
            return None, ""
        if returncode not in (-signal.SIGXCPU, -signal.SIGKILL):
            return None, ""
        seen = self.last
        if cpu_at_exit is not None:
            used, when = cpu_at_exit, "at its exit"
        elif seen is not None:
            used, when = seen.cpu, "when last seen"
        else:
            return None, ""
        if returncode == -signal.SIGXCPU:
            # The runner's soft limit is cpu_seconds past the CPU time it took to start, so at
            # the kernel's SIGXCPU its CPU time is at least cpu_seconds.
            if used < cpu:
                return None, ""
            return "cpu_seconds", (
                f"its CPU time ({used:.1f} s {when}) reached its limit cpu_seconds = {cpu} (the "
                "kernel sends SIGXCPU at it)"
            )
        if used < cpu:
            return None, ""
        return "cpu_seconds", (
            f"its CPU time was {used:.1f} s {when}, past its limit "
            f"cpu_seconds = {cpu}: the kernel sends SIGKILL at the hard limit, "
            f"{CPU_LIMIT_GRACE} s of CPU later"
        )
