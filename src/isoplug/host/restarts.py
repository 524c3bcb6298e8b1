"""What comes after a runner's unrequested exit: a restart now, one after a backoff, or giving
up. Sans-IO: :class:`RestartDecider` is told each exit and the time, and decides; the
supervisor (:mod:`isoplug.host.supervisor`) acts on it.

- Restarting cannot help (the plugins cannot be imported): give up.
- Ended by the death of the zygote that forked it (:attr:`ExitAccount.zygote_died`): start
  again at once, whatever the policy, and count nothing: the plugin did nothing wrong, and the
  host bounds its zygote's deaths itself (it spawns runners once the zygote keeps dying: see
  :mod:`isoplug.host.zygote`).
- Recycled by the host, for its RSS (``recycle_rss``) or for worker threads stuck in calls
  that timed out (``max_stuck_threads``): start again at once, whatever the policy (it did not
  crash), unless that happened more than ``max_restarts`` times within ``window`` (the cause
  comes back right after each start): give up rather than loop. Recycles and crashes are
  counted apart: neither makes the other's limit come sooner.
- ``policy = "never"``: give up at the first crash.
- Otherwise back off (``backoff_initial``, doubled per crash within ``window``, at most
  ``backoff_max``), and give up past ``max_restarts`` crashes within ``window``, or past
  ``max_restarts`` starts in a row that ended before the plugin was ready, however long they
  took: a setup() that hangs until ``ready_timeout`` kills it takes longer per start than a
  window of crashes can hold (15 s each, with the defaults), and would otherwise be restarted
  forever, never failed, and a ``wait_ready()`` without a timeout would never return (as
  systemd's start limit and supervisord's ``startretries``). Any start that reached ready ends
  such a run of failed starts.
"""

from __future__ import annotations

import collections
import dataclasses
import enum
import logging

from isoplug.host.manifest import RestartPolicy
from isoplug.host.status import ExitAccount

__all__ = ["RECYCLE_RSS", "STUCK_THREADS", "Decision", "Next", "RestartDecider"]

#: What a recycle was for (the setting whose threshold was passed).
RECYCLE_RSS = "recycle_rss"
STUCK_THREADS = "max_stuck_threads"

#: Why a recycle loop happens, and what to change, by what the recycles were for.
_LOOP_HINTS = {
    RECYCLE_RSS: "its RSS passes recycle_rss soon after it starts; raise recycle_rss",
    STUCK_THREADS: "calls to its def methods keep outliving their timeouts soon after it "
    "starts; make those methods return sooner, or give the calls longer timeouts",
}


class Next(enum.Enum):
    #: Start it again at once.
    RESTART = "restart"
    #: Wait ``delay`` seconds (RESTARTING), then start it again.
    BACK_OFF = "back off"
    FAIL = "fail"


@dataclasses.dataclass(frozen=True)
class Decision:
    next: Next
    #: What to tell (the state change's message).
    message: str
    #: Seconds to wait before the restart.
    delay: float = 0.0
    level: int = logging.INFO


class RestartDecider:
    """The restart policy of one runner, applied to its exits one after another."""

    def __init__(self, policy: RestartPolicy) -> None:
        self.policy = policy
        self._crashes: collections.deque[float] = collections.deque()
        self._recycles: collections.deque[float] = collections.deque()
        #: Starts in a row that ended before the plugin was ready (see the module docstring).
        self._failed_starts = 0

    def after_exit(
        self,
        account: ExitAccount,
        permanent: str | None,
        now: float,
        *,
        recycled: str | None = None,
        reached_ready: bool = False,
    ) -> Decision:
        """Decide after ``account``, an exit nobody asked for, at monotonic time ``now``;
        ``permanent`` says why restarting cannot help, when it cannot; ``recycled`` says what
        the host recycled the runner for (:data:`RECYCLE_RSS`, :data:`STUCK_THREADS`), when it
        did (a ``recycle_rss`` limit in the account says so too); ``reached_ready``, whether
        the runner that exited had been ready."""
        policy = self.policy
        described = account.describe()
        if reached_ready:
            # Before any other verdict: a ready start ends a run of failed ones, whatever
            # ended it (a zygote's death and a recycle too).
            self._failed_starts = 0
        if permanent is not None:
            return Decision(Next.FAIL, f"{described}; {permanent}", level=logging.ERROR)
        if account.zygote_died:
            return Decision(
                Next.RESTART,
                f"restarting, not counted as a crash (its zygote died): {described}",
                level=logging.WARNING,
            )
        if recycled is None and account.limit == RECYCLE_RSS:
            recycled = RECYCLE_RSS
        if recycled is not None:
            if self._count(self._recycles, now) > policy.max_restarts:
                return Decision(
                    Next.FAIL,
                    f"{described}; recycle loop: {len(self._recycles)} recycles within "
                    f"{policy.window:g} s (limit {policy.max_restarts}): "
                    f"{_LOOP_HINTS.get(recycled, recycled)}",
                    level=logging.ERROR,
                )
            return Decision(Next.RESTART, f"restarting: {described}")
        if policy.policy == "never":
            return Decision(
                Next.FAIL, f"{described}; restart policy is 'never'", level=logging.ERROR
            )
        crashes = self._count(self._crashes, now)
        if crashes > policy.max_restarts:
            return Decision(
                Next.FAIL,
                f"{described}; crash loop: {crashes} crashes within {policy.window:g} s "
                f"(limit {policy.max_restarts}), giving up",
                level=logging.ERROR,
            )
        if not reached_ready:
            self._failed_starts += 1
            if self._failed_starts > policy.max_restarts:
                return Decision(
                    Next.FAIL,
                    f"{described}; crash loop: never became ready in {self._failed_starts} "
                    f"starts in a row (limit {policy.max_restarts}), giving up",
                    level=logging.ERROR,
                )
        delay = policy.delay(crashes)
        return Decision(
            Next.BACK_OFF,
            f"crashed: {described}; restarting in {delay:.2g} s",
            delay=delay,
            level=logging.WARNING,
        )

    def _count(self, times: collections.deque[float], now: float) -> int:
        """Add ``now`` to ``times``; how many of them lie within the policy's window."""
        times.append(now)
        while times and times[0] < now - self.policy.window:
            times.popleft()
        return len(times)
