"""The restart policy, without processes: what comes after each unrequested exit."""

from __future__ import annotations

import signal

from isoplug.host.manifest import RestartPolicy
from isoplug.host.restarts import STUCK_THREADS, Next, RestartDecider
from isoplug.host.status import ExitAccount


def crash(code: int = 1, limit: str | None = None) -> ExitAccount:
    return ExitAccount("r", 10, code, 1.0, 0, limit=limit)


def test_crashes_back_off_doubling_then_a_crash_loop_fails() -> None:
    decider = RestartDecider(RestartPolicy(max_restarts=3, window=60, backoff_initial=0.5))
    decisions = [decider.after_exit(crash(), None, now=float(t)) for t in range(4)]
    assert [d.next for d in decisions] == [Next.BACK_OFF] * 3 + [Next.FAIL]
    assert [d.delay for d in decisions[:3]] == [0.5, 1.0, 2.0]
    assert "crash loop: 4 crashes within 60 s (limit 3)" in decisions[3].message


def test_crashes_outside_the_window_are_forgotten() -> None:
    decider = RestartDecider(RestartPolicy(max_restarts=1, window=10, backoff_initial=1))
    # Crashes of runners that had been ready: the starts never ready are counted in a row.
    assert decider.after_exit(crash(), None, now=0, reached_ready=True).next is Next.BACK_OFF
    # 11 s later the first crash has left the window: this is a first crash again.
    later = decider.after_exit(crash(), None, now=11, reached_ready=True)
    assert later.next is Next.BACK_OFF and later.delay == 1


def test_never_and_permanent_failures_fail_at_once() -> None:
    never = RestartDecider(RestartPolicy(policy="never"))
    assert never.after_exit(crash(), None, now=0).next is Next.FAIL
    decider = RestartDecider(RestartPolicy())
    failed = decider.after_exit(crash(4), "none of its plugins can be loaded", now=0)
    assert failed.next is Next.FAIL and failed.message.endswith("can be loaded")


def test_recycling_restarts_at_once_even_with_never_but_not_in_a_loop() -> None:
    decider = RestartDecider(RestartPolicy(policy="never", max_restarts=2, window=60))
    recycled = ExitAccount("r", 10, -signal.SIGTERM, 1.0, 0, limit="recycle_rss")
    decisions = [decider.after_exit(recycled, None, now=float(t)) for t in range(3)]
    assert [d.next for d in decisions] == [Next.RESTART, Next.RESTART, Next.FAIL]
    assert "recycle loop" in decisions[2].message


def test_a_recycle_for_stuck_threads_is_a_recycle_with_its_own_loop_hint() -> None:
    decider = RestartDecider(RestartPolicy(policy="never", max_restarts=2, window=60))
    clean = ExitAccount("r", 10, 0, 1.0, 0, "recycled by the host: 4 worker threads ...")
    decisions = [
        decider.after_exit(clean, None, now=float(t), recycled=STUCK_THREADS) for t in range(3)
    ]
    assert [d.next for d in decisions] == [Next.RESTART, Next.RESTART, Next.FAIL]
    assert decisions[0].message.startswith("restarting: ")
    assert "recycle loop: 3 recycles within 60 s (limit 2)" in decisions[2].message
    assert "def methods keep outliving their timeouts" in decisions[2].message
    # Recycles leave the crash count alone: a crash after them backs off as a first one.
    crashes = RestartDecider(RestartPolicy(max_restarts=1, window=60, backoff_initial=0.5))
    for t in range(2):
        crashes.after_exit(clean, None, now=float(t), recycled=STUCK_THREADS)
    first_crash = crashes.after_exit(crash(), None, now=3)
    assert first_crash.next is Next.BACK_OFF and first_crash.delay == 0.5


def test_starts_never_ready_fail_in_a_row_however_far_apart() -> None:
    """Each start killed at ready_timeout (15 s by default) outlasts what a window of crashes
    can hold: counted in a row instead, none ready in between."""
    decider = RestartDecider(RestartPolicy(max_restarts=2, window=10, backoff_initial=0.5))
    decisions = [decider.after_exit(crash(), None, now=20.0 * t) for t in range(3)]
    assert [d.next for d in decisions] == [Next.BACK_OFF] * 2 + [Next.FAIL]
    assert [d.delay for d in decisions[:2]] == [0.5, 0.5]  # the window's first crash each time
    assert decisions[2].message == (
        "runner r (pid 10) exited with code 1; uptime 1.0 s; crash loop: never became ready "
        "in 3 starts in a row (limit 2), giving up"
    ), decisions[2].message


def test_a_start_that_was_ready_ends_the_run_of_starts_never_ready() -> None:
    decider = RestartDecider(RestartPolicy(max_restarts=1, window=10))
    assert decider.after_exit(crash(), None, now=0).next is Next.BACK_OFF
    assert decider.after_exit(crash(), None, now=20, reached_ready=True).next is Next.BACK_OFF
    assert decider.after_exit(crash(), None, now=40).next is Next.BACK_OFF
    assert decider.after_exit(crash(), None, now=60).next is Next.FAIL
    # Crashes close together still fail by the window, ready or not in between.
    window = RestartDecider(RestartPolicy(max_restarts=1, window=10))
    assert window.after_exit(crash(), None, now=0, reached_ready=True).next is Next.BACK_OFF
    failed = window.after_exit(crash(), None, now=1, reached_ready=True)
    assert failed.next is Next.FAIL and "crash loop: 2 crashes within 10 s" in failed.message
