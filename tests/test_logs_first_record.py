"""A process's first record: durable (or counted) even when the process ends right after it,
and never a wait past its bound (see "The first record" in :mod:`isoplug.logs.handler`)."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from pathlib import Path
from typing import Any

import pytest

from isoplug.logs import ForwardingHandler, sender_trees
from isoplug.logs.ledger import ReceiverLedger
from isoplug.rpc import blocking_sessions as blocking_sessions_module
from isoplug.rpc import server as server_module
from isoplug.rpc.handshake import blocking_server_handshake, server_handshake
from isoplug.testing import eventually, watching
from isoplug.transport.passed_descriptors import receive_passing
from isoplug.transport.process_tree import parent_group_session, stat_fields
from isoplug.transport.stream import Stream, peer_credentials_of
from tests.record_waiter import wait_blocking
from tests.test_logs_exit import all_connections, delivered, reported
from tests.test_logs_forwarding import BOTH_MODES, finish, receiving, run_child


@BOTH_MODES
@pytest.mark.parametrize("count", [1, 500])
async def test_a_raw_forked_child_that_os_exits_at_once_loses_nothing(
    mode: str, count: int
) -> None:
    """A forwarding process os.fork()s; the child logs and os._exit()s at once, with no flush.
    Its records used to wait in memory for a connection the sender thread had not opened
    yet, and died unseen. Every one arrives now, under the child's own default name."""
    async with receiving(mode) as (receiver, collector):
        child = await run_child(receiver, "raw-fork-exit", str(count))
        assert child.stdout is not None
        line = (await child.stdout.readline()).decode()
        code, stderr = await finish(child)
        assert code == 0, stderr
        await collector.wait_until(lambda: len(collector.numbers()) >= count)
    assert delivered(collector) == list(range(count))
    assert reported(all_connections(receiver)) == 0
    forked_pid = int(line.split()[1])
    records = [r for r in collector.records if hasattr(r, "n")]
    assert {r.sender_pid for r in records} == {forked_pid}  # type: ignore[attr-defined]
    # The default name is the forked child's own, not the forking process's.
    assert {r.sender for r in records} == {f"pid {forked_pid}"}  # type: ignore[attr-defined]
    assert any(key.startswith(f"pid {forked_pid} #") for key in receiver.metrics())


def ended(pid: int) -> bool:
    """Whether process ``pid`` has ended (a zombie too)."""
    fields = stat_fields(pid)
    return fields is None or fields[0] in (b"Z", b"X", b"x")


def zombie(pid: int) -> bool:
    fields = stat_fields(pid)
    return fields is not None and fields[0] == b"Z"


def not_ours(pid: int) -> bool:
    """Whether ``pid`` is no child of this process (gone counts: a forked child reaped)."""
    found = parent_group_session(pid)
    return found is None or found[0] != os.getpid()


def answering_late(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the receiver take up a connection of any process but its own children only once
    that process has ended, as a receiver short of CPU did for a fork burst's children."""

    def late_blocking(sock: socket.socket, *args: Any, **kwargs: Any) -> Any:
        credentials = peer_credentials_of(sock)
        assert credentials is not None
        if not_ours(credentials.pid):
            wait_blocking(lambda: ended(credentials.pid))
        return blocking_server_handshake(sock, *args, **kwargs)

    async def late(stream: Stream, *args: Any, **kwargs: Any) -> Any:
        credentials = stream.peer_credentials
        assert credentials is not None
        if not_ours(credentials.pid):
            await eventually(lambda: ended(credentials.pid))
        return await server_handshake(stream, *args, **kwargs)

    monkeypatch.setattr(blocking_sessions_module, "blocking_server_handshake", late_blocking)
    monkeypatch.setattr(server_module, "server_handshake", late)


@BOTH_MODES
async def test_a_forked_child_that_ends_before_a_late_receiver_answers_loses_nothing(
    mode: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A forwarding process forks a child that logs and os._exit()s at once; the receiver
    takes up the child's connection only once the child has ended. Its first record gave up
    waiting for the welcome, and its records, in its memory alone, were lost uncounted
    (about a third of 300 children forked at once on a loaded machine, found by an outside
    check), the receiver only saying it refused a connection lost during the handshake. Its
    ledger and ring went with its hello now: the receiver replays every record from the
    ring, and says the connection ended, not that it refused one."""
    answering_late(monkeypatch)
    count = 50
    with watching("isoplug.rpc") as listener_said:
        async with receiving(mode) as (receiver, collector):
            child = await run_child(receiver, "raw-fork-exit", str(count))
            code, stderr = await finish(child)
            assert code == 0, stderr
            await collector.wait_until(lambda: len(collector.numbers()) >= count)
            await eventually(lambda: not receiver._replayers)
    metrics = all_connections(receiver)
    assert delivered(collector) == list(range(count))
    assert metrics.recovered == count
    assert reported(metrics) == 0
    warned = [r.getMessage() for r in listener_said.records if r.levelno >= logging.WARNING]
    assert not warned, warned
    (end,) = [m for m in collector.messages() if "ended without a goodbye" in m]
    assert f"every record it had accepted arrived, {count} of them recovered" in end, end


@BOTH_MODES
async def test_a_forked_child_that_ended_counts_for_no_process_tree(
    mode: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A process tree at its limit of connections (max_senders_per_tree=1, the forwarding
    process's own): a forked child that logs and os._exit()s, its connection taken up once it
    is a zombie, used to be refused for its tree's limit. It cannot try again, and its records
    were lost uncounted. An ended sender counts for no tree: its connection is served, its
    records replayed from the ring it passed with its hello."""
    tree_of = sender_trees.tree_of

    def tree_of_the_ended(pid: int) -> str | None:
        if not_ours(pid):
            wait_blocking(lambda: zombie(pid))
        return tree_of(pid)

    # Looked up when the receiver starts: patched before.
    monkeypatch.setattr(sender_trees, "tree_of", tree_of_the_ended)
    count = 50
    reaped = tmp_path / "reap"
    async with receiving(mode, max_senders_per_tree=1) as (receiver, collector):
        child = await run_child(
            receiver, "raw-fork-exit", str(count), env={"REAP_AFTER": str(reaped)}
        )
        try:
            await collector.wait_until(lambda: len(collector.numbers()) >= count)
        finally:
            reaped.touch()
        code, stderr = await finish(child)
        assert code == 0, stderr
    assert delivered(collector) == list(range(count))
    assert reported(all_connections(receiver)) == 0
    assert not [m for m in collector.messages() if "refused" in m]


@BOTH_MODES
@pytest.mark.parametrize("count", [1, 1000])
async def test_a_dictconfig_handler_whose_process_os_exits_at_once_loses_nothing(
    mode: str, count: int
) -> None:
    """A ForwardingHandler placed by dictConfig connects on its first record; a process that
    logs and os._exit()s at once used to lose every record, uncounted."""
    async with receiving(mode) as (receiver, collector):
        child = await run_child(receiver, "dictconfig-exit", str(count))
        code, stderr = await finish(child)
        assert code == 0, stderr
        await collector.wait_until(lambda: len(collector.numbers()) >= count)
    assert delivered(collector) == list(range(count))
    assert reported(all_connections(receiver)) == 0


def test_the_first_record_waits_no_longer_than_its_bound() -> None:
    """A TCP listener that never answers (connect succeeds into its backlog, no welcome comes):
    the first record waits its bound and returns; it is queued, not lost or raised."""
    listener = socket.create_server(("127.0.0.1", 0))
    host, port = listener.getsockname()[:2]
    handler = ForwardingHandler(
        f"tcp://{host}:{port}", "token", first_record_wait=0.2, connect_timeout=30
    )
    try:
        record = logging.LogRecord("first", logging.INFO, __file__, 1, "queued", (), None)
        began = time.monotonic()
        handler.handle(record)
        waited = time.monotonic() - began
        # At least the bound (nothing answered); far less than the connect timeout.
        assert 0.2 <= waited < 10, waited
        assert handler.failure is None
        assert len(handler._queue) == 1
        # A later record does not wait again.
        began = time.monotonic()
        handler.handle(record)
        assert time.monotonic() - began < 0.2
    finally:
        handler.close(timeout=0)
        listener.close()


async def test_a_first_record_is_safe_before_a_unix_listener_answers(tmp_path: Path) -> None:
    """A unix listener that never answers: once the first record's wait gave up, the record is
    safe all the same. Its ledger and ring went with the hello, into the listener's backlog,
    where the kernel holds them for the receiver: the record is in that ring when handle()
    returns, the receiver reading it whenever it gets there. (The record used to wait for
    the receiver to open the ledger through /proc, and with a receiver slower than the wait
    the records of a process that ended at once were lost, uncounted.)"""
    path = tmp_path / "silent.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(8)
    handler = ForwardingHandler(f"unix:{path}", "token", first_record_wait=0.2, connect_timeout=60)
    try:
        record = logging.LogRecord("first", logging.INFO, __file__, 1, "safe", (), None)
        await asyncio.to_thread(handler.handle, record)
        # The hello written (at once, or after the wait gave up on a loaded machine).
        await eventually(lambda: handler._shared_ledger is not None)
        assert handler._sock is None  # never welcomed
        ring = handler._ring
        assert ring is not None
        assert handler._ledger[0] == 1  # counted in the ledger the listener holds
        connection, _ = listener.accept()
        with connection:
            passed: list[int] = []
            receive_passing(connection, 65536, passed)
            try:
                (descriptor,) = passed
                ledger = ReceiverLedger.adopt(descriptor, None)
                try:
                    state = ledger.read()
                    assert state is not None and state.accepted == 1
                    receiver_ring = ledger.ring()
                    assert receiver_ring is not None
                    recovery = receiver_ring.recover(0, 1)
                    receiver_ring.close()
                finally:
                    ledger.close()
            finally:
                for each in passed:
                    os.close(each)
        assert [data.message for data in recovery.records] == ["safe"]
    finally:
        handler.close(timeout=0)
        listener.close()


async def test_a_first_record_with_no_wait_does_not_wait() -> None:
    """``first_record_wait=0`` keeps the old behaviour: the first record only starts the
    sender thread."""
    async with receiving() as (receiver, collector):
        handler = ForwardingHandler(receiver.address, receiver.token, first_record_wait=0)
        try:
            record = logging.LogRecord("first", logging.INFO, __file__, 1, "r", (), None)
            record.n = 0
            handler.handle(record)
            assert handler._sock is None  # not connected yet: it did not wait
            await asyncio.to_thread(handler.flush, 10)
            await collector.wait_until(lambda: collector.numbers() == [0])
        finally:
            await asyncio.to_thread(handler.close)
