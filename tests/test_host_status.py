"""The account of a runner's exit: what a user reads when a plugin dies."""

from __future__ import annotations

import dataclasses
import signal

from isoplug.host.status import ExitAccount


def account(returncode: int, reason: str = "") -> ExitAccount:
    return ExitAccount("weather", 4242, returncode, 12.34, 2, reason)


def test_an_exit_code_is_reported_with_uptime_and_no_stale_restart_count() -> None:
    """A plain exit says the code and how long it ran; not a restart count, which the next
    restart would make stale (the supervisor's count is the one)."""
    text = account(3).describe()
    assert text == "runner weather (pid 4242) exited with code 3; uptime 12.3 s"
    assert account(3).exit_code == 3 and account(3).signal_name is None


def test_a_sigkill_from_nobody_known_says_the_sender_is_unknown() -> None:
    """No host signal and no evidence: no out-of-memory killer is blamed; what was checked is
    said."""
    text = account(-signal.SIGKILL).describe()
    assert text.startswith(
        "runner weather (pid 4242) was killed by SIGKILL, not sent by the host (sender unknown)"
    )
    checked = dataclasses.replace(account(-signal.SIGKILL), oom_checked=("the kernel log",))
    assert "(sender unknown; the kernel log shows no out-of-memory kill)" in checked.describe()
    assert "out-of-memory killer" not in text + checked.describe()


def test_a_sigkill_with_evidence_names_the_out_of_memory_killer_and_quotes_it() -> None:
    evidence = "memory.events of its cgroup: oom_kill 0 -> 1"
    text = dataclasses.replace(account(-signal.SIGKILL), oom_evidence=evidence).describe()
    assert f"was killed by SIGKILL from the kernel's out-of-memory killer ({evidence})" in text


def test_a_signal_the_host_sent_says_so_and_why_once() -> None:
    """The host's reason is given once, whether the account's reason already says it or not."""
    why = "it ignored SIGTERM for 2.0 s"
    stopped = ExitAccount("weather", 4242, -signal.SIGKILL, 1.0, 0, "stopped on request", why)
    assert "was killed by SIGKILL from the host: it ignored SIGTERM for 2.0 s; stopped on" in (
        stopped.describe()
    )
    hung = ExitAccount("weather", 4242, -signal.SIGKILL, 1.0, 0, "killed by the host: hung", "hung")
    assert hung.describe() == (
        "runner weather (pid 4242) was killed by SIGKILL from the host: hung; uptime 1.0 s"
    )
    # What the account adds after the kill (its zygote's note, say) stays.
    noted = dataclasses.replace(hung, reason="killed by the host: hung; its zygote had died")
    assert noted.describe() == (
        "runner weather (pid 4242) was killed by SIGKILL from the host: hung; its zygote had "
        "died; uptime 1.0 s"
    )


def test_sigsegv_hints_at_native_code() -> None:
    """A segfault is explained as a crash in native code."""
    text = account(-signal.SIGSEGV).describe()
    assert "was killed by SIGSEGV, not sent by the host (a segmentation fault: a crash" in text
    assert account(-signal.SIGSEGV).signal_name == "SIGSEGV"


def test_any_signal_the_host_did_not_send_says_so() -> None:
    """SIGTERM, SIGABRT, SIGINT from someone else: the account says it was not the host, as it
    does for SIGKILL; the kernel does not say who it was."""
    for number in (signal.SIGTERM, signal.SIGABRT, signal.SIGINT, signal.SIGHUP):
        text = account(-number).describe()
        assert f"was killed by {number.name}, not sent by the host (sender unknown); uptime" in (
            text
        ), text
    sent = ExitAccount("weather", 4242, -signal.SIGTERM, 1.0, 0, "recycled", "its RSS grew")
    assert "was killed by SIGTERM from the host: its RSS grew; recycled" in sent.describe()


def test_an_unknown_signal_number_is_still_described() -> None:
    """A signal Python has no name for is shown by number."""
    assert "was killed by signal 77" in account(-77).describe()
