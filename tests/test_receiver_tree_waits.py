"""A sender process tree at its limit of log connections (``max_senders_per_tree``): its
further senders wait for a place, unread, and what they log is delivered, never lost
uncounted, however soon they end."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from isoplug.logs import ForwardingHandler, LogReceiver, ReplayLimits
from isoplug.testing import Records, eventually, watching
from tests.log_helpers import receiver
from tests.test_logs_exit import all_connections, delivered, reported
from tests.test_logs_forwarding import BOTH_MODES, finish, receiving, run_child

#: Children forked at once, and the records each logs before it ends.
BURST, RECORDS = 40, 3
PREFIX = "waits"
#: A report interval no test reaches.
LONG_INTERVAL = 600.0
#: Long enough for a burst's children that exit with a close deadline (5 s) on a loaded
#: machine.
WAIT = 60.0


@BOTH_MODES
@pytest.mark.parametrize("exit_with", ["os._exit", "sys.exit"])
async def test_a_fork_burst_past_its_trees_limit_loses_nothing(
    mode: str, exit_with: str, tmp_path: Path
) -> None:
    """A tree of four places, all held (the forwarding process's and three connected
    children's) until the test lets go: forty children forked at once each log three records
    and end at once. Each was refused, and its records, in the ring it passed with its hello,
    were lost with it, neither delivered nor counted. Now each connection waits for a place,
    unread, and is served as soon as its sender ended, the places still held: every record
    arrives, from the ring (a ``sys.exit`` whose close deadline passed while it waited
    leaves them there too, rather than count them dropped)."""
    release = tmp_path / "release"
    children = {
        "HOLDERS": "3",
        "RECORDS": str(RECORDS),
        "EXIT": exit_with,
        "RELEASE_FILE": str(release),
    }
    with watching("isoplug.logs") as said:
        async with receiving(mode, max_senders_per_tree=4) as (receiver, collector):
            burst = await run_child(receiver, "fork-burst", str(BURST), env=children)
            try:
                await collector.wait_until(
                    lambda: len(collector.numbers()) >= BURST * RECORDS, WAIT
                )
            finally:
                release.touch()
            code, stderr = await finish(burst)
            assert code == 0, stderr
    assert delivered(collector) == list(range(BURST * RECORDS))
    assert reported(all_connections(receiver)) == 0
    warnings = [r.getMessage() for r in said.records if r.levelno >= logging.WARNING]
    assert not [w for w in warnings if "refused" in w], warnings
    assert any(
        w.startswith("a log sender from pid ") and "waits for a place" in w for w in warnings
    ), warnings


def sender(log_receiver: LogReceiver, name: str) -> ForwardingHandler:
    """A sender in this process (its tree: the receiver's own) whose first record does not
    wait for the welcome: one that waits for a place would hold the test up."""
    return ForwardingHandler(
        log_receiver.address, log_receiver.token, name=name, first_record_wait=0
    )


def record(text: str) -> logging.LogRecord:
    return logging.getLogger("sender").makeRecord(
        "sender", logging.WARNING, __file__, 1, text, (), None
    )


def waiting(said: Records) -> int:
    return sum("waits for a place" in r.getMessage() for r in said.records)


def refusals(said: Records) -> int:
    return sum(r.getMessage().startswith("refused a log") for r in said.records)


def said_waits(said: Records, count: int) -> Callable[[], bool]:
    return lambda: waiting(said) == count


def said_waits_or_refused(said: Records, count: int) -> Callable[[], bool]:
    return lambda: waiting(said) + refusals(said) == count


@pytest.mark.parametrize("mode", ["async", "threads"])
async def test_a_waiting_sender_takes_the_place_that_frees_before_a_newer_one(mode: str) -> None:
    """One place per tree, held by ``a``: ``b``, then ``c``, connect and wait (no refusal,
    nothing retried). ``a`` closes: its place goes to ``b``, the oldest waiting, whose record
    arrives while ``c`` still waits; ``b`` closes: ``c`` gets in."""
    with watching("isoplug.logs") as said, watching(PREFIX) as records:
        async with receiver(
            mode,
            prefix=PREFIX,
            max_senders_per_tree=1,
            # Every connection that waits said at once, not summed up.
            limits=ReplayLimits(rate=None, report_interval=0.0),
        ) as log_receiver:
            a, b, c = (sender(log_receiver, name) for name in "abc")
            assert await asyncio.to_thread(a.start)
            for later, count in ((b, 1), (c, 2)):
                later.handle(record(f"from {later.sender_name}"))
                await eventually(said_waits(said, count), WAIT)
            await asyncio.to_thread(a.close)
            await records.wait_for(f"{PREFIX}.sender", "from b", WAIT)
            assert not records.matching(f"{PREFIX}.sender", "from c")
            await asyncio.to_thread(b.close)
            await records.wait_for(f"{PREFIX}.sender", "from c", WAIT)
            await asyncio.to_thread(c.close)
    warnings = [r.getMessage() for r in said.records if r.levelno >= logging.WARNING]
    assert not [w for w in warnings if "refused" in w], warnings
    tree = f"sender process tree of pid {os.getpid()} (this process, and orphans of its group)"
    assert warnings[0] == (
        f"a log sender from pid {os.getpid()} waits for a place: {tree}: at its limit of 1 open "
        "log connections (max_senders_per_tree); its connection is served, unread until then, "
        "when one of the tree's ends, or as soon as the sender ends (what it logged comes from "
        "the ring it passed with its hello): raise max_senders_per_tree for a program that "
        "runs more of its processes at once"
    ), warnings


@pytest.mark.parametrize("mode", ["async", "threads"])
@pytest.mark.parametrize(
    ("bounds", "full"),
    [
        ({"max_waiting_per_tree": 1}, "1 more waiting for one (max_waiting_per_tree)"),
        ({"max_waiting": 1}, "all trees' 1 waiting places taken (max_waiting)"),
        ({"max_waiting_per_tree": 0}, "none may wait for one (max_waiting_per_tree=0)"),
    ],
    ids=["per-tree", "in-all", "none"],
)
async def test_past_the_waiting_bounds_a_sender_is_refused_and_told(
    mode: str, bounds: dict[str, int], full: str
) -> None:
    """What may wait is bounded, per tree and in all: past it a connection is refused at
    once, as before, and the warning names the bound and what the refusal may cost. The
    refused sender tries again, and gets in once places free: every record arrives."""
    with watching("isoplug.logs") as said, watching(PREFIX) as records:
        async with receiver(
            mode,
            prefix=PREFIX,
            max_senders_per_tree=1,
            limits=ReplayLimits(rate=None, report_interval=LONG_INTERVAL),
            **bounds,
        ) as log_receiver:
            a, b, c = (sender(log_receiver, name) for name in "abc")
            assert await asyncio.to_thread(a.start)
            handlers = [b, c] if bounds != {"max_waiting_per_tree": 0} else [b]
            for told, later in enumerate(handlers, 1):
                # One after the other: the first waits (unless none may), the next is refused
                # (each kind said once in the interval).
                later.handle(record(f"from {later.sender_name}"))
                await eventually(said_waits_or_refused(said, told), WAIT)
            assert refusals(said) == 1
            for each in (a, *handlers):
                await asyncio.to_thread(each.close)
            for later in handlers:
                await records.wait_for(f"{PREFIX}.sender", f"from {later.sender_name}", WAIT)
    (refused, *_) = [r.getMessage() for r in said.records if "refused a log" in r.getMessage()]
    tree = f"sender process tree of pid {os.getpid()} (this process, and orphans of its group)"
    assert refused == (
        f"refused a log sender from pid {os.getpid()}: {tree}: at its limit of 1 open log "
        f"connections (max_senders_per_tree), and {full}; it tries again, and what it logs "
        "meanwhile is lost, uncounted, if it ends before it is let in: raise "
        "max_senders_per_tree or max_waiting_per_tree for a program that runs more of its "
        "processes at once"
    ), refused


@pytest.mark.parametrize("mode", ["async", "threads"])
async def test_a_receiver_that_closes_says_what_still_waited(mode: str) -> None:
    """A sender still waiting for its tree's place when the receiver closes is closed unread,
    and the receiver says so (its sender, alive, counts what it loses)."""
    with watching("isoplug.logs") as said:
        async with receiver(
            mode, prefix=PREFIX, max_senders_per_tree=1, drain_timeout=0.2
        ) as log_receiver:
            a, b = sender(log_receiver, "a"), sender(log_receiver, "b")
            assert await asyncio.to_thread(a.start)
            b.handle(record("from b"))
            await eventually(lambda: waiting(said) == 1, WAIT)
        for each in (a, b):
            await asyncio.to_thread(each.close, 0)
    closed = [r.getMessage() for r in said.records if r.getMessage().startswith("closed ")]
    assert closed == [
        "closed 1 log connection(s) that still waited for a place of their process tree "
        "(max_senders_per_tree): the receiver closed before one freed, and read nothing of "
        "them; their senders, alive then, count what they lose (each says so on its stderr "
        "when it stops trying to connect)"
    ], closed


def test_waiting_bounds_must_not_be_negative() -> None:
    with pytest.raises(ValueError, match="max_waiting_per_tree and max_waiting must not be"):
        LogReceiver(max_waiting_per_tree=-1)
