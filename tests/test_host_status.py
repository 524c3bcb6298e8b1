"""The account of a runner's exit: what a user reads when a plugin dies."""

from __future__ import annotations

import signal

from isoplug.host.status import ExitAccount


def account(returncode: int, reason: str = "") -> ExitAccount:
    return ExitAccount("weather", 4242, returncode, 12.34, 2, reason)


def test_an_exit_code_is_reported_with_uptime_and_restarts() -> None:
    """A plain exit says the code, how long it ran and how often it was restarted."""
    text = account(3).describe()
    assert text == "runner weather (pid 4242) exited with code 3; uptime 12.3 s, restarts so far 2"
    assert account(3).exit_code == 3 and account(3).signal_name is None


def test_sigkill_from_outside_hints_at_the_oom_killer() -> None:
    """An unexplained SIGKILL points at the out-of-memory killer."""
    text = account(-signal.SIGKILL).describe()
    assert "was killed by SIGKILL (likely killed by the kernel's out-of-memory killer" in text


def test_sigkill_by_the_host_does_not_blame_memory() -> None:
    """When the host killed it, the reason says so and the OOM hint is left out."""
    text = account(-signal.SIGKILL, "killed by the host: hung").describe()
    assert "out-of-memory" not in text and "killed by the host: hung" in text


def test_sigsegv_hints_at_native_code() -> None:
    """A segfault is explained as a crash in native code."""
    assert "segmentation fault: a crash in native code" in account(-signal.SIGSEGV).describe()
    assert account(-signal.SIGSEGV).signal_name == "SIGSEGV"


def test_an_unknown_signal_number_is_still_described() -> None:
    """A signal Python has no name for is shown by number."""
    assert "was killed by signal 77" in account(-77).describe()
