"""A standalone LogReceiver keeps bounded state whatever its senders do: connections that
ended keep only their final metrics, and refused connections are reported rate limited."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import sys

import pytest

from isoplug.logs import ForwardingHandler, LogReceiver, ReplayLimits, connection_ends
from isoplug.wire import MAX_PROTOCOL_VERSION, MIN_PROTOCOL_VERSION, Hello
from isoplug.wire.framing import encode_frame
from tests.greedy_sender import greedy_tree_off_loop
from tests.log_helpers import receiver
from tests.record_waiter import eventually, watching

WAIT = 20.0
#: A report interval no test reaches.
LONG_INTERVAL = 600.0
PREFIX = "bounded"


async def child_logs(log_receiver: LogReceiver, name: str, text: str) -> None:
    """A child of this process forwards one WARNING saying ``text`` on logger ``o``."""
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        "import logging; from isoplug.logs import forward_logs; "
        f"forward_logs(name={name!r}); logging.getLogger('o').warning({text!r})",
        env={**os.environ, **log_receiver.child_env()},
    )
    assert await asyncio.wait_for(child.wait(), WAIT) == 0


def record(message: str) -> logging.LogRecord:
    return logging.getLogger("sender").makeRecord(
        "sender", logging.WARNING, __file__, 1, message, (), None
    )


@pytest.mark.parametrize("mode", ["async", "threads"])
async def test_ended_connections_keep_their_metrics_up_to_a_cap_then_are_summed(
    mode: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(connection_ends, "MAX_ENDED_KEPT", 3)
    with watching(PREFIX) as records:
        async with receiver(mode, prefix=PREFIX) as log_receiver:
            for number in range(5):
                handler = ForwardingHandler(
                    log_receiver.address, log_receiver.token, name=f"s{number}"
                )
                # Off the loop, as close: a first record waits (first_record_wait, 0.5 s) for
                # the async receiver's handshake, which needs this loop.
                await asyncio.to_thread(handler.handle, record(f"from sender {number}"))
                await asyncio.to_thread(handler.close)
                await records.wait_for(f"{PREFIX}.sender", f"from sender {number}", WAIT)
            await eventually(lambda: not log_receiver._replayers, WAIT)
            metrics = log_receiver.metrics()
    assert sorted(metrics) == ["(2 earlier connections)", "s2 #3", "s3 #4", "s4 #5"]
    assert metrics["(2 earlier connections)"].received == 2
    assert sum(m.received for m in metrics.values()) == 5
    assert len(log_receiver._ends.metrics_by_number) == 3


async def test_connections_that_are_not_log_senders_are_refused_with_few_warnings() -> None:
    """A token holder that keeps opening connections of another role gets one warning, then
    summaries, not one warning per connection."""
    with watching("isoplug.logs") as warnings:
        async with receiver("threads", prefix=PREFIX) as log_receiver:
            hello = Hello(
                min_version=MIN_PROTOCOL_VERSION,
                max_version=MAX_PROTOCOL_VERSION,
                token=log_receiver.token,
                role="\x1b[2Jcontrol",
                name="intruder",
            )
            for _ in range(30):
                await asyncio.to_thread(_say_hello, log_receiver.address, encode_frame(hello))
        messages = [r.getMessage() for r in warnings.records if "refused" in r.getMessage()]
    assert messages[0] == (
        f"refused a '\\x1b[2Jcontrol' connection from pid {os.getpid()} (the client says it is "
        "'intruder'): this receiver only takes logs"
    )
    assert 1 < len(messages) <= 3
    assert messages[-1].startswith("refused 29 more connection(s) in the last")


def _say_hello(address: str, frame: bytes) -> None:
    path = address.removeprefix("unix:")
    with socket.socket(socket.AF_UNIX) as sock:
        sock.connect(path)
        sock.sendall(frame)
        sock.settimeout(WAIT)
        while sock.recv(65536):
            pass


@pytest.mark.parametrize("mode", ["async", "threads"])
async def test_one_sender_process_tree_cannot_take_every_place(mode: str) -> None:
    """A receiver with two places per sender process tree (and, in threads, four in all:
    ``max_senders``): a tree of five processes, each opening a connection, holds two (the
    others are refused, and one warning here names the tree); a sender of another tree still
    gets in and its records arrive. On an event loop as in threads."""
    with watching("isoplug.logs") as warnings, watching(PREFIX) as records:
        async with (
            receiver(
                mode,
                prefix=PREFIX,
                max_senders=4,
                max_senders_per_tree=2,
                # Refused at once: the places are what is counted here, not a wait for one.
                max_waiting_per_tree=0,
                # However slowly the machine forks: all but the first refusal summed at close.
                limits=ReplayLimits(rate=None, report_interval=LONG_INTERVAL),
            ) as log_receiver,
            greedy_tree_off_loop(log_receiver.address, log_receiver.token, 5) as greedy,
        ):
            assert (greedy.accepted, greedy.refused) == (2, 3)
            await child_logs(log_receiver, "other", "from another")
            await records.wait_for(f"{PREFIX}.o", "from another", WAIT)
        refused = [r.getMessage() for r in warnings.records if "refused" in r.getMessage()]
    assert refused[0] == (
        f"refused a log sender from pid {refused[0].split('pid ')[1].split(':')[0]}: sender "
        f"process tree of pid {greedy.pid}: at its limit of 2 open log connections "
        "(max_senders_per_tree), and none may wait for one (max_waiting_per_tree=0); it tries "
        "again, and what it logs meanwhile is lost, uncounted, if it ends before it is let "
        "in: raise max_senders_per_tree or max_waiting_per_tree for a program that runs more "
        "of its processes at once"
    ), refused
    # The others are summed up when the receiver closes, not said one by one.
    assert len(refused) == 2, refused
    assert refused[1].startswith("refused 2 more log sender(s) in the last"), refused


@pytest.mark.parametrize("mode", ["async", "threads"])
@pytest.mark.parametrize("new_session", [False, True], ids=["shared-group", "own-session"])
async def test_double_forked_orphans_still_count_in_a_tree(mode: str, new_session: bool) -> None:
    """Five orphans (each double-forked: its parent exited, so the kernel re-parented it)
    connect: they keep the process group and session of the tree they came from, so they
    hold two places between them, not one each. Started in the receiver's own group (as
    ``subprocess`` does by default) they count in the receiver's own tree; started in a
    session of its own, in the tree of the child that leads it."""
    with watching("isoplug.logs") as warnings:
        async with (
            receiver(
                mode,
                prefix=PREFIX,
                max_senders_per_tree=2,
                max_waiting_per_tree=0,
                limits=ReplayLimits(rate=None, report_interval=LONG_INTERVAL),
            ) as log_receiver,
            greedy_tree_off_loop(
                log_receiver.address,
                log_receiver.token,
                5,
                orphans=True,
                new_session=new_session,
            ) as greedy,
        ):
            assert (greedy.accepted, greedy.refused) == (2, 3)
        refused = [r.getMessage() for r in warnings.records if "refused a log" in r.getMessage()]
    tree = greedy.pid if new_session else os.getpid()
    assert refused and f": sender process tree of pid {tree}" in refused[0], refused


def test_max_senders_per_tree_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_senders_per_tree must be at least 1"):
        LogReceiver(max_senders_per_tree=0)


#: A stranger: a process in a session of its own whose child, re-parented away from its
#: parent, opens ``argv[2]`` connections to the socket ``argv[1]`` and says nothing on them.
SILENT_STRANGER = """
import os, socket, sys, time
parent = os.getpid()
if os.fork():
    os._exit(0)
# A stranger only once its parent is reaped: until then (a zombie too) it is the receiver's
# grandchild, and its group's leader a child of the receiver's.
while os.path.exists(f"/proc/{parent}"):
    time.sleep(0.001)
held = []
for _ in range(int(sys.argv[2])):
    sock = socket.socket(socket.AF_UNIX)
    sock.connect(sys.argv[1])
    held.append(sock)
os.write(1, b"holding\\n")
os.close(1)
for sock in held:
    sock.settimeout(60)
    sock.recv(1)  # until the receiver closes it
"""


@pytest.mark.parametrize("mode", ["async", "threads"])
async def test_a_strangers_silent_connections_keep_no_child_of_the_receiver_out(
    mode: str,
) -> None:
    """A process of the same user that is no sender of the receiver's (not below it, not in
    its group or session) takes every handshake seat strangers have: the receiver's own
    child still connects, on seats of its own, and its record arrives."""
    with watching(PREFIX) as records:
        async with receiver(
            mode, prefix=PREFIX, max_handshakes=4, handshake_timeout=30.0
        ) as log_receiver:
            path = log_receiver.address.removeprefix("unix:")
            stranger = await asyncio.create_subprocess_exec(
                sys.executable,
                "-c",
                SILENT_STRANGER,
                path,
                "6",
                stdout=asyncio.subprocess.PIPE,
                start_new_session=True,
            )
            assert stranger.stdout is not None
            try:
                assert await asyncio.wait_for(stranger.stdout.readline(), WAIT) == b"holding\n"
                await child_logs(log_receiver, "own", "from my child")
                await records.wait_for(f"{PREFIX}.o", "from my child", WAIT)
            finally:
                # Its child holds the connections until the receiver closes them, below.
                await asyncio.wait_for(stranger.wait(), WAIT)
