"""Who the exit account says left a runner's leftover processes: its interpreter command (named
in its ready report, and what those started), its plugins (the rest of a runner that reported),
or, without a report, its process tree."""

from __future__ import annotations

from isoplug.host.descendants import ProcessStat
from isoplug.host.leftovers import Leftovers, interpreters

RUNNER = 100


def stat(pid: int, ppid: int, start: int = 7) -> ProcessStat:
    return ProcessStat(pid=pid, ppid=ppid, pgid=RUNNER, sid=RUNNER, start=start, state="S")


def test_what_the_interpreter_command_started_and_what_that_started_are_its() -> None:
    helper, its_child, plugins_child, reused = (
        stat(101, 1),
        stat(102, 101),
        stat(103, 1),
        stat(104, 1, start=9),
    )
    found = [helper, its_child, plugins_child, reused]
    # 104's start time is not the one reported: the pid names another process now.
    assert interpreters(found, {101: 7, 104: 8}) == [helper, its_child]
    assert interpreters(found, {}) == []


def test_the_account_names_whom_it_can_and_no_one_without_a_report() -> None:
    mixed = Leftovers(RUNNER, {101: 7})
    mixed.killed = {101: stat(101, 1), 103: stat(103, 1)}
    mixed.interpreter = {101: mixed.killed[101]}
    assert mixed.account() == (
        "processes its interpreter command started (before the runner's own code ran, not its "
        "plugins) outlived it; killed them: 1 process (pid 101); processes forked by its "
        "plugins outlived it; killed them: 1 process (pid 103)"
    )
    unreported = Leftovers(RUNNER)
    unreported.killed = {103: stat(103, 1)}
    assert unreported.account() == (
        "processes of its process tree outlived it; killed them: 1 process (pid 103)"
    )
