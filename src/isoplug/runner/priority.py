"""A runner gives up CPU priority to its host, so the embedding application stays responsive.

However much CPU its plugins want, the host must keep running: its event loop answers calls
and health checks, and its threads replay every runner's log records. Measured on 2 cores, 32
runners each logging 2,000 records/s at the host's own priority left the host 7-9 % of a
core: its loop lagged 0.7 s at p99 and records arrived 10-19 s late (``docs/benchmarks.md``,
"Many runners"). So each runner lowers its own priority once at startup
(:func:`lower_priority`), before any plugin is imported; the host needs no privilege for that,
and its own priority stays what the application set.

Three knobs, each applied where it has an effect:

- the **nice value** of every thread of the runner (Linux keeps one per thread; threads started
  later inherit the main thread's): raised by the bootstrap's ``nice``, at most to 19. Against
  a host at nice 0, a runner at nice 19 weighs 15 against the host's 1,024 in the kernel's
  fair scheduler;
- ``SCHED_BATCH`` for those threads: the scheduler treats them as CPU-bound, so a runner that
  wakes never preempts a running host thread; the host's wake-ups still preempt runners;
- the **autogroup** nice, only if the runner leads a session of its own and autogroups are on
  (``/proc/sys/kernel/sched_autogroup_enabled``): each session is then a scheduling group whose
  weight is that nice value, and the threads' own nice values only share the group's. A
  process that does not lead its session shares its autogroup with the session leader's (the
  host's, where the host starts runners in a process group of the host's session): writing it
  would lower the application, so it is left alone. Without ``CAP_SYS_ADMIN`` the kernel takes
  one such write per 100 ms on the whole machine; a runner that is refused for that tries again
  from a thread for a few seconds.

What could not be done (a sandbox that forbids ``setpriority``) is logged as a WARNING on
``isoplug.runner`` (which reaches the host's logging): the runner works on, at the priority it
has.
"""

from __future__ import annotations

import errno
import os
import threading
import time

from isoplug.log_guard import guarded_logger

__all__ = ["MAX_NICE", "lower_priority"]

#: The lowest priority a nice value can say.
MAX_NICE = 19
_AUTOGROUP = "/proc/self/autogroup"
_AUTOGROUP_ENABLED = "/proc/sys/kernel/sched_autogroup_enabled"
#: How long a runner refused by the kernel's rate limit on autogroup writes keeps trying (one
#: write per 100 ms machine-wide: 64 runners starting at once need 6.4 s between them).
_AUTOGROUP_RETRY_FOR = 15.0
_AUTOGROUP_RETRY_EVERY = 0.1

_log = guarded_logger("isoplug.runner")


def lower_priority(nice: int) -> list[str]:
    """Lower this process's CPU priority by ``nice`` (0 or less: leave it as it is).

    Returns what could not be done, one text per failure (empty: all went), each also logged.
    """
    if nice <= 0:
        return []
    problems: list[str] = []
    tids = _thread_ids()
    _batch_scheduling(tids, problems)
    _raise_nice(tids, nice, problems)
    if _leads_session() and _autogroups_enabled():
        _lower_autogroup(nice, problems)
    for problem in problems:
        _warn(problem)
    return problems


def _warn(problem: str) -> None:
    _log.warning("could not lower the runner's CPU priority (%s); it runs on as it is", problem)


def _thread_ids() -> list[int]:
    try:
        return [int(name) for name in os.listdir("/proc/self/task")]
    except OSError:
        return [0]  # no /proc: this thread only (0 names the caller)


def _batch_scheduling(tids: list[int], problems: list[str]) -> None:
    if not hasattr(os, "SCHED_BATCH"):
        return
    for tid in tids:
        try:
            # Only from the default policy: an idle or real-time policy someone chose stays.
            if os.sched_getscheduler(tid) == os.SCHED_OTHER:
                os.sched_setscheduler(tid, os.SCHED_BATCH, os.sched_param(0))
        except ProcessLookupError:
            continue  # the thread ended meanwhile
        except OSError as exc:
            problems.append(f"SCHED_BATCH: {exc}")
            return


def _raise_nice(tids: list[int], nice: int, problems: list[str]) -> None:
    for tid in tids:
        try:
            current = os.getpriority(os.PRIO_PROCESS, tid)
            os.setpriority(os.PRIO_PROCESS, tid, min(MAX_NICE, current + nice))
        except ProcessLookupError:
            continue
        except OSError as exc:
            problems.append(f"nice: {exc}")
            return


def _leads_session() -> bool:
    return os.getsid(0) == os.getpid()


def _autogroups_enabled() -> bool:
    try:
        with open(_AUTOGROUP_ENABLED, encoding="ascii") as file:
            return file.read().strip() == "1"
    except OSError:
        return False  # no autogroups in this kernel


def _lower_autogroup(nice: int, problems: list[str]) -> None:
    try:
        with open(_AUTOGROUP, encoding="ascii", errors="replace") as file:
            shown = file.read()
    except OSError as exc:
        problems.append(f"autogroup: cannot read {_AUTOGROUP}: {exc}")
        return
    if not shown.strip():
        # Some sandboxes (CI's among them) say autogroups are on but show this process none:
        # there is no group weight to lower, and nothing is wrong.
        return
    # "/autogroup-123 nice 0"
    words = shown.split()
    try:
        current = int(words[-1])
    except ValueError:
        problems.append(f"autogroup: {_AUTOGROUP} reads {shown.strip()[:80]!r}, not a nice value")
        return
    target = min(MAX_NICE, current + nice)
    if target == current:
        return
    try:
        _write_autogroup(target)
    except BlockingIOError:
        threading.Thread(
            target=_retry_autogroup,
            args=(target,),
            name="isoplug-autogroup-nice",
            daemon=True,
        ).start()
    except OSError as exc:
        problems.append(f"autogroup: {exc}")


def _write_autogroup(target: int) -> None:
    with open(_AUTOGROUP, "w", encoding="ascii") as file:
        file.write(str(target))


def _retry_autogroup(target: int) -> None:
    deadline = time.monotonic() + _AUTOGROUP_RETRY_FOR
    while True:
        time.sleep(_AUTOGROUP_RETRY_EVERY)
        try:
            _write_autogroup(target)
            return
        except OSError as exc:
            if exc.errno != errno.EAGAIN or time.monotonic() > deadline:
                _warn(f"autogroup: {exc}")
                return
