"""A standalone LogReceiver as a user meets it, with real child processes that forward: no
silent traps (a receiver opened twice, one that forwards to itself, a malformed address)."""

from __future__ import annotations

import asyncio
import socket

import pytest

from isoplug.errors import IsoplugError, TransportError
from isoplug.logs import LogReceiver
from tests.record_waiter import watching
from tests.test_logs_forwarding import PREFIX, finish, receiving, run_child


async def logged_through(receiver: LogReceiver, count: int) -> list[int]:
    """What a child that logs ``count`` numbered records and exits brings through
    ``receiver`` (a collector on PREFIX sees them)."""
    child = await run_child(receiver, "clean-exit", str(count))
    code, stderr = await finish(child)
    assert code == 0, stderr
    return list(range(count))


async def test_a_receiver_is_opened_once_in_threads_and_says_so_the_second_time() -> None:
    """Its first block replays what a child logs; entering the same receiver again (it used to
    listen at a new address and replay nothing, with no word) raises, naming the fix."""
    async with receiving("threads") as (receiver, collector):
        expected = await logged_through(receiver, 3)
        await collector.wait_until(lambda: collector.numbers() == expected)
        with pytest.raises(IsoplugError, match="open already"):
            receiver.open()
    first_address = receiver.address
    with pytest.raises(IsoplugError) as raised, receiver:
        pass
    assert str(raised.value) == (
        f"this LogReceiver was opened already (at {first_address}) and is closed: a "
        "LogReceiver is opened once; make a new LogReceiver() to listen again (the closed "
        "one's metrics() stay readable)"
    )
    with pytest.raises(IsoplugError, match="opened once"):
        await receiver.start()  # nor the other way
    assert sum(m.replayed for m in receiver.metrics().values()) == 3


async def test_a_receiver_is_opened_once_on_a_loop_and_says_so_the_second_time() -> None:
    """The same with ``async with``: a second entry raises at once, before listening."""
    async with receiving("loop") as (receiver, collector):
        expected = await logged_through(receiver, 3)
        await collector.wait_until(lambda: collector.numbers() == expected)
        with pytest.raises(IsoplugError, match="open already"):
            await receiver.start()
    with pytest.raises(IsoplugError, match="make a new LogReceiver"):
        async with receiver:
            pass
    with pytest.raises(IsoplugError, match="opened once"):
        receiver.open()
    assert sum(m.replayed for m in receiver.metrics().values()) == 3


async def test_a_receiver_whose_opening_failed_may_be_opened_again() -> None:
    """Only a receiver that listened is spent: one whose port was taken opens once it is free,
    and serves a child."""
    taken = socket.create_server(("127.0.0.1", 0))
    port = taken.getsockname()[1]
    receiver = LogReceiver(f"tcp://127.0.0.1:{port}", prefix=PREFIX)
    with pytest.raises(TransportError, match="Address already in use"):
        receiver.open()
    taken.close()
    with watching(PREFIX) as collector:
        await asyncio.to_thread(receiver.open)
        try:
            expected = await logged_through(receiver, 2)
            await collector.wait_until(lambda: collector.numbers() == expected)
        finally:
            await asyncio.to_thread(receiver.close)
