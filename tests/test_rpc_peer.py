"""Specification of isoplug.rpc.Peer: requests, events, errors, cancellation, closing."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import msgspec
import pytest

from isoplug.errors import (
    ConnectionBroken,
    ConnectionClosed,
    InvalidParams,
    LocalProtocolError,
    MethodNotFound,
    RemoteError,
    RequestCancelled,
    RequestTimeout,
)
from isoplug.rpc import Handler, Peer
from isoplug.rpc.admission import NOT_STARTED_TYPE, AdmissionLimits
from isoplug.wire import Cancel, ErrorResponse, LogBatch, LogRecordData, Request
from isoplug.wire.logframes import log_batch
from tests.record_waiter import eventually
from tests.rpc_helpers import memory_peers, socket_peers

PeerFactory = Callable[..., AbstractAsyncContextManager[tuple[Peer, Peer]]]


@pytest.fixture(params=["memory", "unix", "tcp"])
def peers(request: pytest.FixtureRequest) -> PeerFactory:
    """Every behaviour below holds over the in-memory pair and over real sockets."""
    if request.param == "memory":
        return memory_peers

    def factory(
        client_handlers: dict[str, Handler] | None = None,
        server_handlers: dict[str, Handler] | None = None,
    ) -> AbstractAsyncContextManager[tuple[Peer, Peer]]:
        address = "unix:" if request.param == "unix" else "tcp://127.0.0.1:0"
        return socket_peers(client_handlers, server_handlers, address=address)

    return factory


async def test_request_returns_the_handlers_result(peers: PeerFactory) -> None:
    """A request runs the remote handler with the params and returns what it returned."""

    async def add(params: dict[str, int]) -> int:
        return params["a"] + params["b"]

    async with peers(server_handlers={"add": add, "echo": lambda p: p}) as (client, _):
        assert await client.request("add", {"a": 2, "b": 40}) == 42
        value = {"list": [1, 2.5, "x", None, True], "bytes": b"\x00\xff", "nested": {"k": [[]]}}
        assert await client.request("echo", value) == value


async def test_both_sides_call_each_other_concurrently(peers: PeerFactory) -> None:
    """Requests flow in both directions at once, and a handler may call back into the caller."""

    async def server_side(params: int) -> int:
        # Calls back into the client while the client's request is still open.
        doubled: int = await server_peer_box[0].request("double", params)
        return doubled + 1

    server_peer_box: list[Peer] = []
    async with peers(
        client_handlers={"double": lambda p: p * 2}, server_handlers={"compute": server_side}
    ) as (client, server):
        server_peer_box.append(server)
        results = await asyncio.gather(*(client.request("compute", n) for n in range(50)))
        assert results == [n * 2 + 1 for n in range(50)]
        assert await server.request("double", 21) == 42


async def test_events_arrive_in_order(peers: PeerFactory) -> None:
    """Events are delivered to their handler in the order they were sent, sync or async."""
    sync_seen: list[int] = []
    async_seen: list[int] = []
    all_arrived = asyncio.Event()

    async def slow_handler(value: int) -> None:
        await asyncio.sleep(0)
        async_seen.append(value)
        if len(async_seen) == 500:
            all_arrived.set()

    async with peers() as (client, server):
        server.on_event("sync", sync_seen.append)
        server.on_event("async", slow_handler)
        for index in range(500):
            await client.notify("sync", index)
            client.notify_nowait("async", index)
        await asyncio.wait_for(all_arrived.wait(), 10)
        assert async_seen == list(range(500))
        assert sync_seen == list(range(500))


async def test_async_event_handler_may_wait_for_a_request_on_the_same_peer(
    peers: PeerFactory,
) -> None:
    """An async event handler can await a request on the same peer without deadlocking."""
    answered = asyncio.Event()

    async def on_ping(_: Any) -> None:
        assert await server_box[0].request("answer") == "yes"
        answered.set()

    server_box: list[Peer] = []
    async with peers(client_handlers={"answer": lambda _: "yes"}) as (client, server):
        server_box.append(server)
        server.on_event("ping", on_ping)
        await client.notify("ping")
        await asyncio.wait_for(answered.wait(), 10)


async def test_remote_exception_carries_type_message_and_traceback(peers: PeerFactory) -> None:
    """A handler's exception reaches the caller as RemoteError with type, message, traceback."""

    def fail(_: Any) -> None:
        raise KeyError("missing-thing")

    async with peers(server_handlers={"fail": fail}) as (client, _):
        with pytest.raises(RemoteError) as caught:
            await client.request("fail")
        error = caught.value
        assert type(error) is RemoteError
        assert error.remote_type == "builtins.KeyError"
        assert "missing-thing" in error.remote_message
        assert "raise KeyError" in error.remote_traceback
        assert "'fail' failed on the remote side: builtins.KeyError" in str(error)


async def test_exception_whose_str_raises_is_still_reported(peers: PeerFactory) -> None:
    """An exception whose __str__ raises still produces a readable remote error."""

    class Nasty(Exception):
        def __str__(self) -> str:
            raise RuntimeError("no str for you")

    def fail(_: Any) -> None:
        raise Nasty

    async with peers(server_handlers={"fail": fail}) as (client, _):
        with pytest.raises(RemoteError, match=r"<str\(\) of Nasty raised RuntimeError: no str"):
            await client.request("fail")


async def test_unknown_method_gives_method_not_found(peers: PeerFactory) -> None:
    """Calling a method nobody registered raises MethodNotFound naming it; the session lives on."""
    async with peers(server_handlers={"echo": lambda p: p}) as (client, _):
        with pytest.raises(MethodNotFound, match="no handler for method 'nope'"):
            await client.request("nope")
        assert await client.request("echo", 1) == 1


async def test_params_that_do_not_fit_give_invalid_params(peers: PeerFactory) -> None:
    """Params that fail the handler's declared type raise InvalidParams with the reason."""

    class Point(msgspec.Struct):
        x: int
        y: int

    async with peers() as (client, server):
        server.register("norm", lambda p: abs(p.x) + abs(p.y), params_type=Point)
        assert await client.request("norm", {"x": 3, "y": -4}) == 7
        with pytest.raises(InvalidParams, match="Expected `int`"):
            await client.request("norm", {"x": "three", "y": 4})


async def test_unencodable_params_fail_locally(peers: PeerFactory) -> None:
    """Params msgpack cannot carry raise LocalProtocolError before anything is sent."""
    async with peers(server_handlers={"echo": lambda p: p}) as (client, _):
        with pytest.raises(LocalProtocolError, match="cannot send a value of type object"):
            await client.request("echo", object())
        assert await client.request("echo", "still fine") == "still fine"


async def test_unencodable_result_gives_a_remote_error(peers: PeerFactory) -> None:
    """A handler returning something msgpack cannot carry makes the caller get an error."""
    async with peers(server_handlers={"bad": lambda _: object()}) as (client, _):
        with pytest.raises(RemoteError, match="cannot send a value of type object"):
            await client.request("bad")


async def test_timeout_raises_and_cancels_the_remote_handler(peers: PeerFactory) -> None:
    """A request that times out raises RequestTimeout and the remote handler is cancelled."""
    started = asyncio.Event()
    cancelled = asyncio.Event()

    async def forever(_: Any) -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    async with peers(server_handlers={"forever": forever, "echo": lambda p: p}) as (client, _):
        with pytest.raises(RequestTimeout, match=r"'forever' got no response .* within 0\.1 s"):
            await client.request("forever", timeout=0.1)
        await asyncio.wait_for(cancelled.wait(), 10)
        # The late "cancelled" answer is absorbed; the session keeps working.
        assert await client.request("echo", 5) == 5


async def test_cancelling_the_caller_cancels_the_remote_handler(peers: PeerFactory) -> None:
    """Cancelling the task awaiting a request sends a cancel that stops the remote handler."""
    started = asyncio.Event()
    cancelled = asyncio.Event()

    async def forever(_: Any) -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    async with peers(server_handlers={"forever": forever}) as (client, _):
        call = asyncio.create_task(client.request("forever", timeout=None))
        await asyncio.wait_for(started.wait(), 10)
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        await asyncio.wait_for(cancelled.wait(), 10)


async def test_handler_cancelled_remotely_reports_request_cancelled(peers: PeerFactory) -> None:
    """A handler that is cancelled on its own side answers with RequestCancelled."""

    async def gives_up(_: Any) -> None:
        raise asyncio.CancelledError

    async with peers(server_handlers={"gives_up": gives_up}) as (client, _):
        with pytest.raises(RequestCancelled):
            await client.request("gives_up")


async def test_pending_requests_fail_when_the_peer_closes(peers: PeerFactory) -> None:
    """Requests in flight when the other side closes fail with ConnectionClosed, not a hang."""
    started = asyncio.Event()

    async def forever(_: Any) -> None:
        started.set()
        await asyncio.Event().wait()

    async with peers(server_handlers={"forever": forever}) as (client, server):
        call = asyncio.create_task(client.request("forever", timeout=None))
        await asyncio.wait_for(started.wait(), 10)
        await server.aclose("server going away")
        with pytest.raises(ConnectionClosed, match="server going away"):
            await call
        await asyncio.wait_for(client.wait_closed(), 10)
        assert not client.is_open
        with pytest.raises(ConnectionClosed):
            await client.request("forever")


async def test_aclose_fails_own_pending_requests_and_is_idempotent(peers: PeerFactory) -> None:
    """Closing a peer fails its own pending requests with ConnectionClosed; twice is fine."""
    started = asyncio.Event()

    async def forever(_: Any) -> None:
        started.set()
        await asyncio.Event().wait()

    async with peers(server_handlers={"forever": forever}) as (client, _):
        call = asyncio.create_task(client.request("forever", timeout=None))
        await asyncio.wait_for(started.wait(), 10)
        await client.aclose("done here")
        await client.aclose()
        with pytest.raises(ConnectionClosed):
            await call


async def test_unknown_event_is_reported_once(
    peers: PeerFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """An event nobody handles is logged once per method name and otherwise ignored."""
    caplog.set_level(logging.WARNING, logger="isoplug.rpc")
    async with peers(server_handlers={"echo": lambda p: p}) as (client, _):
        for _ in range(3):
            await client.notify("mystery", 1)
        # A request after the events proves they were all processed (same ordered stream).
        assert await client.request("echo", 0) == 0
    reports = [r for r in caplog.records if "mystery" in r.getMessage()]
    assert len(reports) == 1


async def test_failing_event_handler_is_logged_and_the_session_continues(
    peers: PeerFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """An event handler that raises is logged with its traceback; later messages still flow."""

    def broken(_: Any) -> None:
        raise ValueError("event handler bug")

    async with peers(server_handlers={"echo": lambda p: p}) as (client, server):
        server.on_event("broken", broken)
        await client.notify("broken")
        assert await client.request("echo", "after") == "after"
    failures = [
        r for r in caplog.records if r.exc_info and "event handler bug" in str(r.exc_info[1])
    ]
    assert failures


async def test_log_batches_reach_the_log_batch_handler(peers: PeerFactory) -> None:
    """A LogBatch sent by one side is handed to the other side's log batch handler."""
    batches: list[LogBatch] = []
    record = LogRecordData(name="x", levelno=20, levelname="INFO", created=1.5, seq=1, message="hi")
    async with peers(server_handlers={"echo": lambda p: p}) as (client, server):
        server.on_log_batch(batches.append)
        await client.send_log_batch(log_batch([record], {10: 3}))
        assert await client.request("echo", 0) == 0
    assert len(batches) == 1
    assert batches[0].dropped == {10: 3}
    assert msgspec.msgpack.decode(batches[0].records, type=list[LogRecordData]) == [record]


async def test_an_awaitable_left_by_the_log_batch_handler_holds_back_later_messages(
    peers: PeerFactory,
) -> None:
    """When the log batch handler returns an awaitable, nothing after that batch is handled
    until it completes; then everything is handled once, in order."""
    handled: list[str] = []
    release = asyncio.Event()
    first_handled = asyncio.Event()

    async def rest_of_first_batch() -> None:
        await release.wait()
        handled.append("first batch finished")

    def handler(batch: LogBatch) -> Awaitable[None] | None:
        (record,) = msgspec.msgpack.decode(batch.records, type=list[LogRecordData])
        handled.append(record.message)
        if record.message != "first":
            return None
        first_handled.set()
        return rest_of_first_batch()

    def echo(value: str) -> str:
        handled.append(value)
        return value

    def record(message: str) -> LogRecordData:
        return LogRecordData(name="x", levelno=20, levelname="INFO", created=1.0, message=message)

    async with peers(server_handlers={"echo": echo}) as (client, server):
        server.on_log_batch(handler)
        await client.send_log_batch(log_batch([record("first")]))
        await client.send_log_batch(log_batch([record("second")]))
        answer = asyncio.create_task(client.request("echo", "request"))
        await asyncio.wait_for(first_handled.wait(), 10)
        await asyncio.sleep(0.05)  # time in which a wrong peer would handle the others
        assert handled == ["first"]
        release.set()
        assert await answer == "request"
    assert handled == ["first", "first batch finished", "second", "request"]


async def test_many_concurrent_incoming_requests_are_bounded(peers: PeerFactory) -> None:
    """More concurrent requests than the serving limit all complete (back-pressure, no loss)."""
    release = asyncio.Event()

    async def wait_then_echo(value: int) -> int:
        await release.wait()
        return value

    async with peers(server_handlers={"wait": wait_then_echo}) as (client, _):
        calls = [asyncio.create_task(client.request("wait", n)) for n in range(600)]
        await asyncio.sleep(0)
        release.set()
        assert await asyncio.gather(*calls) == list(range(600))


async def test_answers_sent_together_keep_the_order_of_everything_sent(
    peers: PeerFactory,
) -> None:
    """Pipelined requests are all answered; an event a handler sends before answering arrives
    before that answer: answers held for one write never overtake, nor are overtaken."""
    seen: list[Any] = []

    async with peers() as (client, server):
        client.on_event("before", lambda n: seen.append(("event", n)))

        async def answer(n: int) -> int:
            if n % 7 == 0:
                server.notify_nowait("before", n)
            return n

        server.register("answer", answer)

        async def call(n: int) -> None:
            seen.append(("answer", await client.request("answer", n)))

        await asyncio.gather(*(call(n) for n in range(300)))
        assert sorted(n for kind, n in seen if kind == "answer") == list(range(300))
        for n in range(0, 300, 7):
            assert seen.index(("event", n)) < seen.index(("answer", n))


async def test_the_answers_to_the_requests_of_one_read_go_out_in_one_write() -> None:
    """Pipelined requests that arrive in one read are answered in one write (by the tasks'
    first steps in the loop's next round, or on Python 3.12+ by eagerly started tasks as
    the read is handled), and a lone request's answer in one write of its own."""
    async with socket_peers() as (client, server):

        async def answer(n: int) -> int:
            return n

        server.register("answer", answer)
        stream = server.stream
        writes: list[int] = []
        write = stream.write

        def counted(data: bytes) -> None:
            writes.append(len(data))
            write(data)

        stream.write = counted  # type: ignore[method-assign]
        assert await client.request("answer", -1) == -1
        assert len(writes) == 1
        writes.clear()
        # The requests are written in one loop round; the server reads them in a few reads
        # (24 here on Python 3.11, one on 3.12), each answered by one write.
        results = await asyncio.gather(*(client.request("answer", n) for n in range(300)))
        assert results == list(range(300))
        assert len(writes) < 100, f"{len(writes)} writes for 300 answers"


async def test_peer_vanishing_fails_pending_requests_with_connection_broken() -> None:
    """When the stream breaks under a pending request, the caller gets ConnectionBroken."""
    started = asyncio.Event()

    async def forever(_: Any) -> None:
        started.set()
        await asyncio.Event().wait()

    async with memory_peers(server_handlers={"forever": forever}) as (client, server):
        call = asyncio.create_task(client.request("forever", timeout=None))
        await asyncio.wait_for(started.wait(), 10)
        stream = server.stream
        assert hasattr(stream, "abort")
        stream.abort()
        with pytest.raises(ConnectionBroken):
            await call


async def test_requests_with_large_params_run_only_as_many_as_fit_at_once(
    peers: PeerFactory,
) -> None:
    """Past ``max_running_bytes`` of params running, a request waits its turn (then runs):
    a peer sending many large requests at once is held to that much, however many places."""
    running: list[int] = []
    most = 0
    release = asyncio.Event()

    async def hold(params: bytes) -> int:
        nonlocal most
        running.append(len(params))
        most = max(most, len(running))
        await release.wait()
        running.pop()
        return len(params)

    async with peers(server_handlers={"hold": hold}) as (client, server):
        server.set_limits(AdmissionLimits(max_running=100, max_running_bytes=3_500_000))
        calls = [
            asyncio.ensure_future(client.request("hold", b"x" * 1_000_000, timeout=30))
            for _ in range(6)
        ]
        await eventually(lambda: len(server._dispatcher.admission.queued) == 3, 10)
        assert len(running) == 3
        release.set()
        assert await asyncio.gather(*calls) == [1_000_000] * 6
    assert most == 3


async def test_a_request_cancelled_in_the_read_that_brought_it_is_answered_and_freed() -> None:
    """A request and its cancel in one read: its task never takes a step (so never runs its
    handler); it is still answered as cancelled before it started, and its place is free.
    (With a task factory, as a runner has, tasks start in the loop's next round, not eagerly
    as Python 3.12+ may start them: the case where the cancel comes first.)"""
    ran = asyncio.Event()

    async def handler(_: Any) -> None:
        ran.set()

    loop = asyncio.get_running_loop()
    loop.set_task_factory(lambda loop, coro, **options: asyncio.Task(coro, loop=loop, **options))
    try:
        async with memory_peers(server_handlers={"work": handler}) as (_, server):
            answers: list[Any] = []
            requests = server._dispatcher._requests
            requests._send = answers.append
            server._dispatcher.dispatch(
                [Request(id=7, method="work", params=msgspec.Raw(b"\xc0")), Cancel(id=7)]
            )
            await eventually(lambda: bool(answers), 10)
            assert not requests.serving and requests.serving_bytes == 0
    finally:
        loop.set_task_factory(None)
    assert not ran.is_set()
    (answer,) = answers
    assert isinstance(answer, ErrorResponse) and answer.id == 7
    assert (answer.error.code, answer.error.type) == ("cancelled", NOT_STARTED_TYPE)
