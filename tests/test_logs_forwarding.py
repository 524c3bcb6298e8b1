"""Standalone log forwarding between real processes: fidelity, crash durability, safety."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import logging
import multiprocessing
import os
import signal
import ssl
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from msgspec.msgpack import decode

from isoplug.errors import (
    ConnectionBroken,
    ConnectionClosed,
    IsoplugError,
    RemoteProtocolError,
)
from isoplug.logs import (
    LEVEL_ENV,
    DropReason,
    ForwardingHandler,
    LogMetrics,
    LogReceiver,
    forward_logs,
)
from isoplug.logs import handler as handler_module
from isoplug.logs import sender as sender_module
from isoplug.logs.capture import capture_record
from isoplug.logs.ledger import ReceiverLedger
from isoplug.logs.ring_budget import DEFAULT_MAX_RINGS
from isoplug.rpc import BlockingChannel
from isoplug.rpc.blocking import serve_blocking
from isoplug.testing import eventually
from isoplug.transport import AddressLike, tls_client_context, tls_server_context
from isoplug.transport.stream import peer_credentials_of
from isoplug.wire import DEFAULT_MAX_FRAME_SIZE, Event, LogBatch
from isoplug.wire.logframes import log_batch_frame
from tests.log_helpers import reports
from tests.record_waiter import RecordWaiter
from tests.test_transport_sockets import make_certs

CHILD = str(Path(__file__).with_name("logs_child.py"))
PREFIX = "kids"
#: A child forwarding over TLS: forward_logs() given the client context of CA file argv[1].
TLS_CHILD = """
import logging, sys
from isoplug.logs import forward_logs
from isoplug.transport import tls_client_context

forward_logs(ssl_context=tls_client_context(sys.argv[1]))
logging.getLogger("tls").warning("forwarded over tls")
"""
#: A fresh child (its logging configured by nobody) that prints its root logger's level after
#: forward_logs(), or first why forward_logs() refused.
LEVEL_CHILD = """
import logging
from isoplug.errors import IsoplugError
from isoplug.logs import forward_logs

try:
    forward_logs()
except IsoplugError as exc:
    print(exc)
print(logging.getLogger().level)
"""


#: The receiver's two ways of running: on the test's event loop (``async with``), or in
#: threads of its own, as a synchronous program uses it (``with``).
BOTH_MODES = pytest.mark.parametrize("mode", ["loop", "threads"])


@asynccontextmanager
async def receiving(
    mode: str = "loop",
    drain_timeout: float = 10,
    address: AddressLike = "unix:",
    ssl_context: ssl.SSLContext | None = None,
    max_senders: int = 1024,
    *,
    token: str | None = None,
    max_senders_per_tree: int = 64,
    max_rings: int = DEFAULT_MAX_RINGS,
) -> AsyncIterator[tuple[LogReceiver, RecordWaiter]]:
    collector = RecordWaiter()
    logger = logging.getLogger(PREFIX)
    logger.setLevel(logging.DEBUG)
    logger.addHandler(collector)
    receiver = LogReceiver(
        address,
        prefix=PREFIX,
        drain_timeout=drain_timeout,
        ssl_context=ssl_context,
        max_senders=max_senders,
        token=token,
        max_senders_per_tree=max_senders_per_tree,
        max_rings=max_rings,
    )
    try:
        if mode == "loop":
            async with receiver:
                yield receiver, collector
        else:
            await asyncio.to_thread(receiver.open)
            try:
                yield receiver, collector
            finally:
                await asyncio.to_thread(receiver.close)
    finally:
        logger.removeHandler(collector)
        logger.setLevel(logging.NOTSET)


def combined_metrics(receiver: LogReceiver) -> LogMetrics:
    return LogMetrics.combined(receiver.metrics().values())


async def run_child(
    receiver: LogReceiver, *args: str, env: dict[str, str] | None = None
) -> asyncio.subprocess.Process:
    """tests/logs_child.py ``args``, forwarding to ``receiver``."""
    return await run_script(receiver, "", CHILD, *args, env=env)


async def run_script(
    receiver: LogReceiver, script: str, *args: str, env: dict[str, str] | None = None
) -> asyncio.subprocess.Process:
    """``python -c script args`` (no script: ``python args``), given ``receiver``'s
    environment."""
    return await asyncio.create_subprocess_exec(
        sys.executable,
        *(("-c", script) if script else ()),
        *args,
        env={**os.environ, **receiver.child_env(), **(env or {})},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


async def finish(child: asyncio.subprocess.Process) -> tuple[int, str]:
    _, stderr = await asyncio.wait_for(child.communicate(), 30)
    assert child.returncode is not None
    return child.returncode, stderr.decode(errors="replace")


@BOTH_MODES
async def test_records_arrive_with_every_field(mode: str, tmp_path: Path) -> None:
    """A forwarded record keeps its fields, extras, exception and the child's identity."""
    async with receiving(mode) as (receiver, collector):
        child = await run_child(receiver, "clean-exit", "3")
        code, _ = await finish(child)
        await collector.wait_until(lambda: len(collector.numbers()) == 3)
    assert code == 0
    record = collector.records[0]
    assert record.name == "kids.child.work"
    assert record.getMessage() == "record 0"
    assert record.levelno == logging.INFO and record.levelname == "INFO"
    assert record.n == 0  # type: ignore[attr-defined]
    assert record.process == child.pid and record.sender_pid == child.pid  # type: ignore[attr-defined]
    assert record.pathname == CHILD and record.filename == "logs_child.py"
    assert record.module == "logs_child" and record.funcName == "numbered"
    assert record.threadName == "MainThread" and record.processName == "MainProcess"
    assert [r.seq for r in collector.records] == [1, 2, 3]  # type: ignore[attr-defined]


@BOTH_MODES
@pytest.mark.parametrize(
    "scenario", ["clean-exit", "uncaught", "os-exit", "sigkill-self", "segfault"]
)
async def test_no_record_is_lost_when_the_child_dies(mode: str, scenario: str) -> None:
    """At 10,000 records/s, the top of the "moderate" rates, every record emitted before the
    child dies arrives, however it dies."""
    count = 500
    async with receiving(mode) as (receiver, collector):
        child = await run_child(receiver, scenario, str(count), env={"RATE": "10000"})
        code, stderr = await finish(child)
        await collector.wait_until(lambda: len(collector.numbers()) >= count)
    assert collector.numbers() == list(range(count))
    if scenario == "uncaught":
        assert code == 1
        crash = [r for r in collector.records if r.getMessage() == "uncaught"]
        assert crash and crash[0].exc_type == "builtins.RuntimeError"  # type: ignore[attr-defined]
        # A real exc_info, with the child's own frame in its traceback.
        assert crash[0].exc_info is not None
        assert isinstance(crash[0].exc_info[1], RuntimeError)
        text = logging.Formatter().formatException(crash[0].exc_info)
        assert "the plugin blew up" in text and "logs_child.py" in text
    elif scenario == "sigkill-self":
        assert code == -signal.SIGKILL
    elif scenario == "segfault":
        assert code == -signal.SIGSEGV
        assert "Fatal Python error: Segmentation fault" in stderr


@BOTH_MODES
@pytest.mark.parametrize("scenario", ["os-exit", "sigkill-self", "segfault"])
async def test_a_crash_at_full_speed_loses_nothing(mode: str, scenario: str) -> None:
    """At full speed records are batched, but each is in the sender's shared-memory ring before
    logger.info() returns: what a crash leaves unsent, the receiver recovers from the ring and
    replays, in order, and says how many; no record is lost or reported lost."""
    count = 10_000
    ended = "log connection ended without a goodbye"
    async with receiving(mode) as (receiver, collector):
        child = await run_child(receiver, scenario, str(count))
        await finish(child)
        await collector.wait_until(lambda: any(ended in m for m in collector.messages()))
        metrics = combined_metrics(receiver)
    numbers = collector.numbers()
    (report,) = [m for m in collector.messages() if ended in m]
    assert numbers == list(range(count))
    assert "lost" not in report
    assert "every record it had accepted arrived" in report
    recovered = metrics.recovered
    if recovered:
        assert report.endswith(f"{recovered:,} of them recovered from its shared-memory ring")
        assert f"after record #{count - recovered};" in report
    assert metrics.received == count and not metrics.dropped


@BOTH_MODES
@pytest.mark.parametrize("scenario", ["os-exit", "sigkill-self"])
async def test_without_a_ring_a_crash_at_full_speed_reports_exactly_what_it_lost(
    mode: str, scenario: str
) -> None:
    """Where there is no ring (no memfd), records are batched in memory, so a crash at full
    speed may take the last few along; the receiver counts them from the sender's sequence
    ledger: every record either arrived or is in the report's range, and none arrived out of
    order."""
    count = 3000
    ended = "log connection ended without a goodbye"
    async with receiving(mode) as (receiver, collector):
        child = await run_child(receiver, scenario, str(count), env={"NO_RING": "1"})
        await finish(child)
        await collector.wait_until(lambda: any(ended in m for m in collector.messages()))
    numbers = collector.numbers()
    (report,) = [m for m in collector.messages() if ended in m]
    arrived = len(numbers)
    assert numbers == list(range(arrived))
    if arrived == count:
        assert report.endswith(f"after record #{count}; every record it had accepted arrived")
    else:
        assert report.endswith(
            f"after record #{arrived}; {count - arrived:,} records it had accepted "
            f"(#{arrived + 1} to #{count}) are lost"
        )


@BOTH_MODES
async def test_sigkill_from_outside_loses_nothing_emitted(mode: str, tmp_path: Path) -> None:
    """Killing a child logging at 10,000/s loses no record whose logger call had returned."""
    progress = tmp_path / "progress"
    progress.write_bytes(b"\xff" * 8)
    async with receiving(mode) as (receiver, collector):
        child = await run_child(
            receiver, "until-killed", env={"RATE": "10000", "PROGRESS_FILE": str(progress)}
        )
        await collector.wait_until(lambda: len(collector.numbers()) >= 1000)
        child.send_signal(signal.SIGKILL)
        await finish(child)
        last_emitted = int.from_bytes(progress.read_bytes(), "little")
        with contextlib.suppress(TimeoutError):  # the assertion below says what is missing
            await collector.wait_until(lambda: len(collector.numbers()) > last_emitted, 10)
    numbers = collector.numbers()
    missing = sorted(set(range(last_emitted + 1)) - set(numbers))
    assert not missing, f"{len(missing)} emitted records never arrived: {missing[:10]}..."
    assert numbers[: last_emitted + 1] == list(range(last_emitted + 1))


@BOTH_MODES
async def test_logs_flow_while_the_child_blocks_its_event_loop(mode: str, tmp_path: Path) -> None:
    """A child that blocks its event loop still gets its records delivered meanwhile."""
    release = tmp_path / "release"
    async with receiving(mode) as (receiver, collector):
        child = await run_child(receiver, "blocked-loop", env={"RELEASE_FILE": str(release)})
        await collector.wait_until(lambda: "about to block the event loop" in collector.messages())
        assert child.returncode is None  # still blocked
        release.touch()
        await collector.wait_until(lambda: "unblocked" in collector.messages())
        code, _ = await finish(child)
    assert code == 0


@BOTH_MODES
async def test_a_forked_child_forwards_on_its_own_connection(mode: str) -> None:
    """After os.fork() the child's records arrive too, stamped with the child's own pid."""
    async with receiving(mode) as (receiver, collector):
        child = await run_child(receiver, "fork")
        code, stderr = await finish(child)
        await collector.wait_until(lambda: "parent after fork" in collector.messages())
        await collector.wait_until(lambda: "hello from the forked child" in collector.messages())
    assert code == 0, stderr
    by_message = {r.getMessage(): r for r in collector.records}
    forked = by_message["hello from the forked child"]
    assert forked.sender_pid != child.pid  # type: ignore[attr-defined]
    assert forked.process == forked.sender_pid  # type: ignore[attr-defined]
    assert by_message["parent after fork"].sender_pid == child.pid  # type: ignore[attr-defined]


@BOTH_MODES
async def test_records_logged_during_interpreter_shutdown_are_not_lost(mode: str) -> None:
    """A record logged at exit is forwarded, or written to stderr once forwarding has closed."""
    async with receiving(mode) as (receiver, collector):
        child = await run_child(receiver, "shutdown-logging")
        code, stderr = await finish(child)
        await collector.wait_until(
            lambda: "logged during interpreter shutdown" in collector.messages()
        )
    assert code == 0
    assert "logged after the forwarder closed (log handler closed)" in stderr


@BOTH_MODES
async def test_wrong_token_is_refused_with_a_clear_error(mode: str) -> None:
    """forward_logs with a wrong token raises an error that says the token was wrong."""
    async with receiving(mode) as (receiver, _):
        with pytest.raises(IsoplugError, match="wrong session token"):
            await asyncio.to_thread(forward_logs, receiver.address, "not-the-token")


def test_nothing_listening_raises_once_naming_the_address_once(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """forward_logs to a socket nobody listens on: one error naming the address once, and
    nothing on stderr besides (the error is the caller's to show)."""
    address = f"unix:{tmp_path}/nobody.sock"
    with pytest.raises(IsoplugError) as raised:
        forward_logs(address, "token")
    assert str(raised.value).count(address) == 1, raised.value
    assert str(raised.value).startswith(f"cannot forward logs: cannot connect to {address}: ")
    assert capfd.readouterr().err == ""


def test_records_dropped_after_forwarding_stopped_are_said_at_the_close(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """No receiver will ever count what a handler drops once it gave up: its close says how
    many, on stderr, as its giving up was."""
    handler = ForwardingHandler(f"unix:{tmp_path}/nobody.sock", "token", name="quitter")
    assert not handler.start(5)
    for number in range(3):
        handler.handle(logging.getLogger("x").makeRecord("x", 30, "f", 1, f"r{number}", (), None))
    handler.close()
    said = capfd.readouterr().err
    assert "log forwarding from quitter to unix:" in said and "stopped: cannot connect" in said
    assert said.rstrip().endswith("3 later log records were dropped"), said


async def test_a_plugin_childs_own_sender_name_is_refused_with_what_to_change(
    tmp_path: Path,
) -> None:
    """A plugin's child (given ``ctx.log_child_env()``) that names itself: the host refuses
    the name it does not know, and the error says to keep the runner's."""
    from tests.plugins_fixtures import running

    async with running(tmp_path, "spawner") as (host, _):
        said = await host.call("spawner", "python_child_named", "worker-1")
    assert "unknown runner" in said, said
    assert "a plugin's child process forwards under its runner's name" in said, said
    assert "call forward_logs() without name=" in said, said


async def test_forward_logs_without_configuration_explains_what_is_missing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """forward_logs() with nothing configured names the environment variables to set."""
    monkeypatch.delenv("ISOPLUG_LOG_ADDRESS", raising=False)
    monkeypatch.delenv("ISOPLUG_LOG_TOKEN", raising=False)
    with pytest.raises(IsoplugError, match="ISOPLUG_LOG_ADDRESS"):
        forward_logs()


async def forward_numbered(
    receiver: LogReceiver, collector: RecordWaiter, created: list[float]
) -> None:
    """Hand records numbered 0, 1, ... with these creation times straight to a
    ForwardingHandler whose write-through rate is 0 (every record is queued), and wait until
    all of them arrived, without flushing."""
    handler = ForwardingHandler(receiver.address, receiver.token, write_through_rate=0.0)
    try:
        assert await asyncio.to_thread(handler.start, 10)
        logger = logging.getLogger("flood")
        for index, when in enumerate(created):
            record = logger.makeRecord("flood", logging.INFO, __file__, 1, "r", (), None)
            record.n = index
            record.created = when
            handler.handle(record)
        await collector.wait_until(lambda: len(collector.numbers()) == len(created))
    finally:
        handler.close()
    assert collector.numbers() == list(range(len(created)))


@pytest.mark.parametrize(
    ("queued", "last_created_after"),
    [
        # The oldest queued record became EMIT_PUSH_INTERVAL old: pushed.
        (10, handler_module.EMIT_PUSH_INTERVAL * 1.5),
        # As many records as EMIT_PUSH_RECORDS, whatever their timestamps: pushed.
        (handler_module.EMIT_PUSH_RECORDS - 1, 0.0),
    ],
)
async def test_in_a_flood_the_emitting_thread_pushes_the_queue_itself(
    monkeypatch: pytest.MonkeyPatch, queued: int, last_created_after: float
) -> None:
    """Batched records reach the kernel without the sender thread (parked here), so what a
    crash can take stays bounded by the push interval and count."""
    monkeypatch.setattr(sender_module, "SENDER_LINGER", 3600.0)
    monkeypatch.setattr(sender_module, "SENDER_LINGER_MAX", 3600.0)
    now = time.time()
    async with receiving() as (receiver, collector):
        await forward_numbered(receiver, collector, [now] * queued + [now + last_created_after])


async def test_the_last_records_of_a_burst_are_sent_without_a_flush() -> None:
    """Records queued at the end of a burst, too few and too young for the emitting thread to
    push, are sent by the sender thread once no more come; no flush() needed."""
    async with receiving() as (receiver, collector):
        await forward_numbered(receiver, collector, [time.time()] * 10)


def park_every_push(monkeypatch: pytest.MonkeyPatch) -> None:
    """Neither the sender thread nor the emitting thread sends queued records: only a flush."""
    for module, name, value in [
        (sender_module, "SENDER_LINGER", 3600.0),
        (sender_module, "SENDER_LINGER_MAX", 3600.0),
        (handler_module, "EMIT_PUSH_INTERVAL", float("inf")),
        (handler_module, "EMIT_PUSH_RECORDS", 10**9),
    ]:
        monkeypatch.setattr(module, name, value)


async def test_a_flush_does_not_spin_the_sender_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    """While a flush waits for the batch the sender thread is sending, and after, the sender
    thread sleeps; it does not take the empty queue again and again until the flushing thread
    gets the GIL back (hundreds of times)."""
    park_every_push(monkeypatch)
    takes = empty_takes = 0
    take_batch = ForwardingHandler._take_batch

    def counted(handler: ForwardingHandler) -> tuple[list[bytes], int]:
        nonlocal takes, empty_takes
        batch, size = take_batch(handler)
        takes += 1
        empty_takes += not batch
        return batch, size

    monkeypatch.setattr(ForwardingHandler, "_take_batch", counted)
    async with receiving() as (receiver, collector):
        handler = ForwardingHandler(receiver.address, receiver.token, write_through_rate=0.0)
        try:
            assert await asyncio.to_thread(handler.start, 10)
            logger = logging.getLogger("flood")
            count = 5_000  # all queued: the write-through rate is 0
            for index in range(count):
                record = logger.makeRecord("flood", logging.INFO, __file__, 1, "r", (), None)
                record.n = index
                handler.handle(record)
            assert takes == 0  # nothing pushed them: the flush below hands them over
            await asyncio.to_thread(handler.flush, 10)
            await collector.wait_until(lambda: len(collector.numbers()) == count)
        finally:
            handler.close()
    # The queue goes in batches of MAX_BATCH_BYTES; an empty one is taken twice at most.
    assert takes >= 1 and empty_takes <= 2


@BOTH_MODES
async def test_receiver_metrics_count_what_arrived(mode: str) -> None:
    """The receiver's per-connection metrics count received and replayed records and bytes."""
    async with receiving(mode) as (receiver, collector):
        child = await run_child(receiver, "levels", "10")
        await finish(child)
        await collector.wait_until(lambda: len(collector.records) >= 30)
        metrics = list(receiver.metrics().values())
    assert len(metrics) == 1
    assert metrics[0].received == 30 and metrics[0].replayed == 30
    assert metrics[0].bytes > 0 and metrics[0].last_record_time is not None


@BOTH_MODES
@pytest.mark.parametrize("start_method", ["spawn", "forkserver"])
async def test_forward_logs_works_as_a_process_pool_initializer(
    mode: str, start_method: str
) -> None:
    """forward_logs as a ProcessPoolExecutor initializer forwards every worker's records."""
    from tests.logs_child import pool_work

    async with receiving(mode) as (receiver, collector):

        def run_pool() -> set[int]:
            context = multiprocessing.get_context(start_method)
            with concurrent.futures.ProcessPoolExecutor(
                2,
                mp_context=context,
                # The workers' root logger would be at WARNING: ask for INFO as well.
                initializer=functools.partial(forward_logs, level=logging.INFO),
                initargs=(receiver.address, receiver.token),
            ) as pool:
                return set(pool.map(pool_work, range(40)))

        worker_pids = await asyncio.to_thread(run_pool)
        await collector.wait_until(lambda: len(collector.numbers()) >= 40)
    assert sorted(collector.numbers()) == list(range(40))
    assert {r.sender_pid for r in collector.records if hasattr(r, "n")} <= worker_pids  # type: ignore[attr-defined]
    # Each worker closed its handler at its normal end (a forkserver's exit runs no atexit).
    assert not [r for r in reports(collector.records) if "without a goodbye" in r.getMessage()]


@BOTH_MODES
@pytest.mark.parametrize(
    ("receiving_level", "address"),
    [(logging.DEBUG, "unix:"), (logging.INFO, "unix:"), (logging.DEBUG, "tcp://127.0.0.1:0")],
)
async def test_a_spawned_worker_logs_at_the_level_the_receiver_handles(
    mode: str, receiving_level: int, address: str
) -> None:
    """forward_logs with no level in a worker nobody configured (spawn: its root logger at
    WARNING) takes the level the receiver's side handles from, as the receiver says when it
    connects (over TCP too, where no shared memory says it): its INFO records arrive, its
    DEBUG ones too when the receiver's logger takes DEBUG, and none is sent only to be
    filtered. A worker that configured its logging keeps its level."""
    from tests.logs_child import configure_then_forward, pool_levels

    async with receiving(mode, address=address) as (receiver, collector):
        logging.getLogger(PREFIX).setLevel(receiving_level)

        def run_pool(initializer: Callable[..., object]) -> None:
            with concurrent.futures.ProcessPoolExecutor(
                2,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=initializer,
                initargs=(receiver.address, receiver.token),
            ) as pool:
                list(pool.map(pool_levels, range(10)))

        await asyncio.to_thread(run_pool, forward_logs)
        expected = 30 if receiving_level == logging.DEBUG else 20
        await collector.wait_until(lambda: len(collector.numbers()) >= expected)
        levels = sorted({r.levelno for r in collector.records if hasattr(r, "n")})
        assert levels == sorted({receiving_level, logging.INFO, logging.ERROR})
        assert sum(m.filtered for m in receiver.metrics().values()) == 0
        assert sorted(collector.numbers()) == sorted(list(range(10)) * (expected // 10))

        collector.records.clear()
        await asyncio.to_thread(run_pool, configure_then_forward)
        await collector.wait_until(lambda: len(collector.numbers()) >= 10)
    assert {r.levelno for r in collector.records if hasattr(r, "n")} == {logging.ERROR}


@BOTH_MODES
async def test_lossless_mode_delivers_a_flood_through_a_tiny_queue(
    mode: str, tmp_path: Path
) -> None:
    """With block_when_full, a burst far larger than the queue arrives without a single drop."""
    async with receiving(mode) as (receiver, collector):
        child = await run_child(receiver, "lossless", "20000")
        code, stderr = await finish(child)
        await collector.wait_until(lambda: len(collector.numbers()) >= 20000, 60)
    assert code == 0, stderr
    assert collector.numbers() == list(range(20000))
    assert not reports(collector.records)


@BOTH_MODES
async def test_a_full_queue_drops_low_levels_first_and_reports_it(mode: str) -> None:
    """Flooding a small queue drops DEBUG first, then INFO, WARNING last, and says so."""
    async with receiving(mode) as (receiver, collector):
        child = await run_child(receiver, "flood", "3000")
        code, stderr = await finish(child)
    # Leaving the receiver waited for the child's connection to close: everything is in.
    assert code == 0, stderr
    by_level = {
        level: sum(1 for r in collector.records if r.levelno == level and hasattr(r, "n"))
        for level in (logging.DEBUG, logging.INFO, logging.WARNING)
    }
    assert by_level[logging.DEBUG] < by_level[logging.INFO] <= by_level[logging.WARNING]
    messages = [r.getMessage() for r in reports(collector.records)]
    assert any("because its log queue was full" in m and "DEBUG" in m for m in messages)
    dropped = 3 * 3000 - sum(by_level.values())
    reported = sum(
        int(part.split(": ")[1].replace(",", ""))
        for m in messages
        if "because its log queue was full" in m
        for part in m[m.index("(") + 1 : m.index(")")].split(", ")
    )
    assert reported == dropped


@BOTH_MODES
async def test_loguru_records_forwarded_through_a_handler_sink(mode: str) -> None:
    """loguru with ForwardingHandler as its sink: message, level, source, bound extras and
    the traceback (once) arrive."""
    async with receiving(mode) as (receiver, collector):
        child = await run_child(receiver, "loguru")
        code, stderr = await finish(child)
    assert code == 0, stderr
    by_message = {r.getMessage().split("\n")[0]: r for r in collector.records}
    hello = by_message["hello loguru"]
    assert hello.levelname == "INFO" and hello.funcName == "main"
    assert hello.extra == {"user": 42}  # type: ignore[attr-defined]
    caught = by_message["loguru caught it"]
    text = logging.Formatter("%(message)s").format(caught)
    assert caught.levelno == logging.ERROR
    assert text.count("ZeroDivisionError: division by zero") == 1


def read_until_it_ends(channel: BlockingChannel, timeout: float = 10) -> None:
    """Read what the receiver sends until it ends the session: what that raises propagates;
    returns if it did not end within ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        channel.receive(0.5)


@BOTH_MODES
async def test_a_connection_that_is_not_a_log_sender_is_refused(
    mode: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A client with the right token but another role is told goodbye and reported."""
    async with receiving(mode) as (receiver, _):
        channel = await asyncio.to_thread(
            BlockingChannel.connect, receiver.address, receiver.token, name="ctl", role="control"
        )
        try:
            with pytest.raises(ConnectionClosed):
                await asyncio.to_thread(read_until_it_ends, channel)
        finally:
            channel.close()
    assert (
        f"refused a 'control' connection from pid {os.getpid()} (the client says it is 'ctl'): "
        "this receiver only takes logs"
    ) in caplog.text


async def test_a_sender_that_sends_other_messages_is_warned_once_and_still_heard(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A log sender that also sends events (a confused or hostile one) gets one warning for
    all of them, not one each; its log batches around them are replayed."""
    record = logging.LogRecord("mixed", logging.INFO, __file__, 1, "after the noise", (), None)
    frame = log_batch_frame([capture_record(record, 1)], {}, DEFAULT_MAX_FRAME_SIZE)
    async with receiving("threads") as (receiver, collector):
        sender = await asyncio.to_thread(
            BlockingChannel.connect, receiver.address, receiver.token, name="noisy", role="logs"
        )
        try:
            for index in range(3):
                await asyncio.to_thread(sender.send, Event(method=f"noise {index}"))
            await asyncio.to_thread(sender.socket.sendall, frame)
            await collector.wait_for(f"{PREFIX}.mixed", "after the noise")
        finally:
            sender.close()
    warnings = [r.getMessage() for r in caplog.records if "ignoring" in r.getMessage()]
    assert warnings == ["ignoring what log sender noisy sends besides log batches (first: Event)"]


async def test_a_sender_past_max_senders_is_refused_and_says_so(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A synchronous receiver serves at most max_senders at once (a thread each); one more is
    refused and told why, and the receiver warns. (forward_logs() raises: it waits for the
    connection, so that a program learns at once that its logs would go nowhere.)"""
    async with receiving("threads", max_senders=1) as (receiver, collector):
        first = ForwardingHandler(receiver.address, receiver.token, name="first")
        try:
            assert await asyncio.to_thread(first.start, 10)
            # Refused, the child tries again a few times before it gives up: 6.4 s by default,
            # a place may free up meanwhile. Two quick retries are refused the same way.
            child = await run_child(receiver, "clean-exit", "3", env={"RECONNECT_DELAYS": "0,0.05"})
            code, stderr = await finish(child)
        finally:
            await asyncio.to_thread(first.close)
    assert code == 1
    assert "refusing new connections: at its limit of 1 open connections" in caplog.text
    assert "cannot forward logs: cannot connect to" in stderr
    assert "at its limit of 1 open connections" in stderr
    assert not collector.numbers()


@BOTH_MODES
async def test_garbage_from_one_sender_ends_only_its_connection(
    mode: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A sender that sends bytes which are no frame is cut off and reported; another sender's
    records keep arriving."""
    async with receiving(mode) as (receiver, collector):
        garbler = await asyncio.to_thread(
            BlockingChannel.connect, receiver.address, receiver.token, name="garbler", role="logs"
        )
        try:
            garbler.socket.sendall(b"\xff" * 64)  # a frame length far over the limit
            with pytest.raises((RemoteProtocolError, ConnectionClosed, ConnectionBroken)):
                await asyncio.to_thread(read_until_it_ends, garbler)
        finally:
            garbler.close()
        child = await run_child(receiver, "clean-exit", "3")
        code, _ = await finish(child)
        await collector.wait_until(lambda: len(collector.numbers()) == 3)
    assert code == 0
    assert "closing session with garbler" in caplog.text


@BOTH_MODES
async def test_a_sender_still_connected_at_close_is_cut_off_after_the_drain_timeout(
    mode: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Leaving the receiver waits drain_timeout for connected senders, then closes them,
    says so, and returns; what they sent before arrived."""
    handler: ForwardingHandler | None = None
    try:
        async with receiving(mode, drain_timeout=0.2) as (receiver, collector):
            handler = ForwardingHandler(receiver.address, receiver.token)
            assert await asyncio.to_thread(handler.start, 10)
            logger = logging.getLogger("lingering")
            record = logger.makeRecord("lingering", logging.INFO, __file__, 1, "sent", (), None)
            record.n = 0
            handler.handle(record)
            await collector.wait_until(lambda: collector.numbers() == [0])
            began = time.monotonic()
    finally:
        if handler is not None:
            handler.close()
    assert time.monotonic() - began < 8  # drain_timeout, plus closing: not the 10 s default
    assert "1 log sender(s) still connected after 0.2 s; closing them" in caplog.text
    assert "crash or kill" not in caplog.text  # we ended it: no crash to report


@pytest.mark.parametrize(
    ("address", "write_through_rate", "batch_sizes"),
    [
        ("tcp://127.0.0.1:0", handler_module.WRITE_THROUGH_RATE, [1, 1, 1, 1, 1]),
        ("tcp://127.0.0.1:0", 0.0, [5]),
        # With a ring (a unix socket) a record is safe before it is sent: only the first of a
        # burst goes alone (for latency), not the first 200 (at 1 record/s, the 2nd is early).
        ("unix:", 1.0, [1, 4]),
    ],
)
async def test_forward_logs_write_through_rate_zero_batches_every_record(
    monkeypatch: pytest.MonkeyPatch, address: str, write_through_rate: float, batch_sizes: list[int]
) -> None:
    """Without a ring, by default each record at a moderate rate goes out alone, at once; with
    write_through_rate=0 not one does (here, with every push parked, they wait for the flush).
    With a ring, the rest of a burst goes out together: the sender thread, woken by its second
    record, gets to send once the burst let go of the GIL (here, in the flush)."""
    park_every_push(monkeypatch)
    sizes: list[int] = []
    ledgers: list[ReceiverLedger] = []

    def count_batches(channel: BlockingChannel) -> None:
        with contextlib.suppress(ConnectionClosed, ConnectionBroken):  # the sender is done
            while True:
                for message in channel.receive():
                    if isinstance(message, LogBatch) and message.ledger_fd is not None:
                        # As a LogReceiver does: opening the ledger acknowledges it.
                        credentials = peer_credentials_of(channel.socket)
                        assert credentials is not None
                        ledgers.append(ReceiverLedger.open(credentials.pid, message.ledger_fd))
                    if isinstance(message, LogBatch) and (size := len(decode(message.records))):
                        sizes.append(size)

    server = serve_blocking(address, "token", count_batches)
    root = logging.getLogger()
    level = root.level
    handler: ForwardingHandler | None = None
    try:
        handler = await asyncio.to_thread(
            forward_logs,
            str(server.address),
            "token",
            level=logging.INFO,
            replace_handlers=False,
            write_through_rate=write_through_rate,
        )
        if address == "unix:":
            await eventually(lambda: bool(ledgers))
        for index in range(5):
            logging.getLogger("batching").info("record %d", index)
        await asyncio.to_thread(handler.flush, 10)
        await asyncio.to_thread(handler.close)
        assert await asyncio.to_thread(server.wait_idle, 10) == 0
    finally:
        if handler is not None:
            root.removeHandler(handler)
            handler.close()
        root.setLevel(level)
        server.close()
        for ledger in ledgers:
            ledger.close()
    assert sizes == batch_sizes


@BOTH_MODES
async def test_records_arrive_over_tls(mode: str, tmp_path: Path) -> None:
    """A receiver on tls:// takes a sender that trusts its CA; its records arrive in order."""
    certs = make_certs(tmp_path)
    async with receiving(
        mode, address="tls://127.0.0.1:0", ssl_context=tls_server_context(certs.server)
    ) as (receiver, collector):
        handler = ForwardingHandler(
            receiver.address, receiver.token, ssl_context=tls_client_context(certs.ca)
        )
        try:
            assert await asyncio.to_thread(handler.start, 10)
            for index in range(3):
                record = logging.getLogger("tls").makeRecord(
                    "tls", logging.INFO, __file__, 1, "over tls %d", (index,), None
                )
                record.n = index
                handler.handle(record)
            await collector.wait_until(lambda: collector.numbers() == [0, 1, 2])
        finally:
            await asyncio.to_thread(handler.close)
        # forward_logs() takes the client context too (a private CA's receiver); in a child:
        # in the receiver's own process it is refused (its records would come back to it).
        child = await run_script(receiver, TLS_CHILD, certs.ca)
        code, stderr = await finish(child)
        assert code == 0, stderr
        await collector.wait_until(lambda: "forwarded over tls" in collector.messages())
    assert collector.messages()[:3] == ["over tls 0", "over tls 1", "over tls 2"]


@BOTH_MODES
async def test_a_sender_whose_receiver_comes_back_reconnects_and_says_what_it_lost(
    mode: str, tmp_path: Path
) -> None:
    """The receiver closes (cutting the child's connection off) and comes back at the same
    address: the child, which logged a burst meanwhile into a queue too small for it,
    reconnects; the new receiver reports the reconnection with the count the queue dropped,
    sees no gap in the sequence, and gets every record the child still held, then the later
    ones. The old receiver reports no loss: nothing it had been sent was lost."""
    burst = 60
    steps = tmp_path / "steps"
    steps.mkdir()
    with tempfile.TemporaryDirectory(prefix="isoplug-test-") as short:  # a short socket path
        address, token = f"unix:{short}/logs.sock", "shared-token"
        async with receiving(mode, drain_timeout=0.2, address=address, token=token) as (
            first,
            before,
        ):
            child = await run_child(first, "reconnect", str(burst), env={"STEP_DIR": str(steps)})
            await before.wait_until(lambda: before.numbers() == [0, 1, 2])
        (steps / "receiver-gone").touch()
        assert child.stdout is not None
        # Logged while nothing listens: the child keeps trying to reconnect meanwhile.
        assert await asyncio.wait_for(child.stdout.readline(), 30) == b"burst logged\n"
        async with receiving(mode, address=address, token=token) as (second, after):
            reconnected = await after.wait_for(PREFIX, "reconnected")
            (steps / "receiver-back").touch()
            code, stderr = await finish(child)
            await after.wait_until(lambda: 3 + burst + 2 in after.numbers())
            (metrics,) = second.metrics().values()
    assert code == 0, stderr
    assert not reports(before.records), "the old receiver lost nothing it had been sent"
    lost = metrics.dropped.get(DropReason.SENDER_QUEUE_FULL, 0)
    arrived = [n for n in after.numbers() if n < 3 + burst]
    assert arrived == list(range(3, 3 + len(arrived))) and len(arrived) + lost == burst
    # Dropped records took no sequence number: the new connection's continue the old one's.
    sequence = [r.seq for r in after.records if hasattr(r, "n")]  # type: ignore[attr-defined]
    assert sequence == list(range(4, 4 + len(sequence)))
    assert lost > 0  # the queue holds a few records of the burst, not all of them
    assert reconnected.getMessage() == (
        "log sender child-reconnect reconnected after its log connection broke; it lost "
        f"{lost:,} log records meanwhile, and its records continue after #3"
    )
    assert after.numbers()[-3:] == [3 + burst, 4 + burst, 5 + burst]
    assert not [r for r in reports(after.records) if "never arrived" in r.getMessage()]
    assert "stopped" not in stderr


@pytest.mark.parametrize(
    ("told", "level"), [("10", logging.DEBUG), ("info", logging.INFO), ("loud", logging.WARNING)]
)
async def test_forward_logs_takes_an_unconfigured_roots_level_from_the_environment(
    told: str, level: int
) -> None:
    """ISOPLUG_LOG_LEVEL (a number or a name) sets a root logger nobody configured (a fresh
    child's); a name that is no level is a clear error, and nothing is changed."""
    async with receiving("threads") as (receiver, _):
        child = await run_script(receiver, LEVEL_CHILD, env={LEVEL_ENV: told})
        stdout, stderr = await asyncio.wait_for(child.communicate(), 30)
    assert child.returncode == 0, stderr
    said = stdout.decode().splitlines()
    assert said[-1] == str(level)
    if told == "loud":
        assert said[0].startswith("ISOPLUG_LOG_LEVEL='loud' names no logging level")
