"""How fast ``host.call`` is, against the socket it runs on, in one run.

Measured between two processes on this machine, over a unix socket:

- *floor*: a bare asyncio ping-pong of a small frame (``asyncio.Protocol`` on both sides, the
  caller awaiting a future per round trip, as ``await host.call`` does), with no protocol;
- the same written with asyncio streams (``StreamReader``/``StreamWriter``) on both sides, as
  most asyncio code is (and as ``benchmarks/rpc_roundtrip.py`` measured its floor);
- *the least asyncio RPC in Python*: length-prefixed msgpack frames, a future per call found by
  its id, each request run as a task in the callee, and nothing else (no authentication,
  timeouts, errors or supervision): the lower bound of any RPC written in Python on this loop,
  and so of what ``host.call`` can reach without a C path;
- the same RPC calling a plain function in a worker thread (the loop's default executor), the
  least a sync method's hand-off to a thread and back costs in Python;
- *multiprocessing.connection*: the standard library's blocking ``send``/``recv`` (pickle);
- ``await host.call(plugin, "ping")`` to an ``async def`` method, p50 and p99;
- the same to a plain ``def`` method (run in a worker thread of the runner);
- *pipelined*: 1,000 concurrent ``host.call``\\ s (``asyncio.gather``), calls per second;
- the CPU time per call of each process (host and runner), for the sequential async calls.

Each with its ratio to the floor. With uvloop installed, everything is measured twice: on the
standard asyncio loop (host, runner and floor), and on uvloop (all of them), so that each loop
is compared with its own floor. Rounds are interleaved; medians (and ranges) are printed.

Run: ``python benchmarks/call_speed.py [--quick] [--loop asyncio|uvloop|both]``.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import logging
import multiprocessing.connection
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar, cast

import msgspec
from _helpers import percentile

from isoplug import Host, SupervisorConfig

#: isoplug.runner.eventloop.EVENT_LOOP_VARIABLE, spelled out so that this script also measures
#: an isoplug from before it (whose runners ignore it and run on asyncio).
EVENT_LOOP_VARIABLE = "ISOPLUG_EVENT_LOOP"


def loop_name(loop: asyncio.AbstractEventLoop) -> str:
    return "uvloop" if type(loop).__module__.startswith("uvloop") else "asyncio"


TOKEN_ENV = "ISOPLUG_BENCH_TOKEN"
FRAME = b"\x00\x00\x00\x0c" + b"x" * 12

PLUGIN_TOML = 'id = "pinger"\nversion = "1.0.0"\nentry = "pinger:Pinger"\n'
PLUGIN_CODE = textwrap.dedent(
    '''
    import os
    import time

    import isoplug


    class Pinger(isoplug.Plugin):
        @isoplug.method
        async def ping(self) -> None:
            return None

        @isoplug.method
        def ping_sync(self) -> None:
            return None

        @isoplug.method
        async def cpu(self) -> float:
            """This process's CPU time so far, in seconds."""
            return time.process_time()
    '''
)


def loop_factory(kind: str) -> Callable[[], asyncio.AbstractEventLoop]:
    if kind == "uvloop":
        import uvloop

        return uvloop.new_event_loop
    return asyncio.new_event_loop


def run(kind: str, coroutine: Coroutine[Any, Any, Any]) -> Any:
    with asyncio.Runner(loop_factory=loop_factory(kind)) as runner:
        return runner.run(coroutine)


# -- child side ------------------------------------------------------------------------------


class _Echo(asyncio.Protocol):
    def __init__(self, done: asyncio.Future[None]) -> None:
        self.done = done
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_result(None)


async def _child_streams(address: str) -> None:
    reader, writer = await asyncio.open_unix_connection(address)
    while True:
        data = await reader.read(65536)
        if not data:
            break
        writer.write(data)
    writer.close()


async def _child_raw(address: str) -> None:
    done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    await asyncio.get_running_loop().create_unix_connection(lambda: _Echo(done), address)
    await done


class _MinimalServer(asyncio.Protocol):
    """The least an asyncio RPC callee does: length-prefixed msgpack frames, each request
    ``[id, method, args]`` run as a task (so that a slow method never holds up the others),
    its result sent back as ``[id, result]``. No authentication, timeouts or errors."""

    def __init__(self, done: asyncio.Future[None]) -> None:
        self.done = done
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.decoder = msgspec.msgpack.Decoder()
        self.encoder = msgspec.msgpack.Encoder()
        self.methods: dict[str, Callable[..., Awaitable[Any]]] = {
            "ping": self.ping,
            "ping_sync": self.ping_sync,
        }
        self.loop = asyncio.get_running_loop()

    async def ping(self) -> None:
        return None

    def ping_sync(self) -> Awaitable[None]:
        # A plain function, run where a blocking one must be: in a worker thread (the loop's
        # default executor, as ``run_in_executor`` and ``to_thread`` use).
        return self.loop.run_in_executor(None, _nothing)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer
        buffer += data
        while len(buffer) >= 4:
            size = int.from_bytes(buffer[:4], "big")
            if len(buffer) < 4 + size:
                break
            call_id, name, args = self.decoder.decode(buffer[4 : 4 + size])
            del buffer[: 4 + size]
            self.loop.create_task(self.run(call_id, self.methods[name], args))

    async def run(self, call_id: int, method: Callable[..., Any], args: list[Any]) -> None:
        result = await method(*args)
        body = self.encoder.encode((call_id, result))
        assert self.transport is not None
        self.transport.write(len(body).to_bytes(4, "big") + body)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_result(None)


def _nothing() -> None:
    return None


async def _child_minimal(address: str) -> None:
    done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    await asyncio.get_running_loop().create_unix_connection(lambda: _MinimalServer(done), address)
    await done


def _child_mp(address: str) -> None:
    authkey = os.environ[TOKEN_ENV].encode()
    with multiprocessing.connection.Client(address, authkey=authkey) as connection:
        while True:
            message = connection.recv()
            if message is None:
                break
            connection.send(message)


# -- parent side -----------------------------------------------------------------------------


def _spawn(kind: str, address: str, loop: str, token: str = "") -> subprocess.Popen[bytes]:
    env = dict(os.environ, **{TOKEN_ENV: token})
    return subprocess.Popen([sys.executable, __file__, "--child", kind, address, loop], env=env)


class _Caller(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.waiter: asyncio.Future[None] | None = None
        self.connected: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.received = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.connected.set_result(None)

    def data_received(self, data: bytes) -> None:
        self.received += len(data)
        if self.received >= len(FRAME) and self.waiter is not None:
            self.received -= len(FRAME)
            self.waiter.set_result(None)


class _MinimalClient(asyncio.Protocol):
    """The caller's half of the least asyncio RPC (see :class:`_MinimalServer`): a future per
    call, found by its id when the answer comes."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.connected: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.pending: dict[int, asyncio.Future[Any]] = {}
        self.next_id = 0
        self.buffer = bytearray()
        self.decoder = msgspec.msgpack.Decoder()
        self.encoder = msgspec.msgpack.Encoder()
        self.loop = asyncio.get_running_loop()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.connected.set_result(None)

    async def call(self, name: str, *args: Any) -> Any:
        self.next_id = call_id = self.next_id + 1
        future = self.loop.create_future()
        self.pending[call_id] = future
        body = self.encoder.encode((call_id, name, args))
        assert self.transport is not None
        self.transport.write(len(body).to_bytes(4, "big") + body)
        return await future

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer
        buffer += data
        while len(buffer) >= 4:
            size = int.from_bytes(buffer[:4], "big")
            if len(buffer) < 4 + size:
                break
            call_id, result = self.decoder.decode(buffer[4 : 4 + size])
            del buffer[: 4 + size]
            self.pending.pop(call_id).set_result(result)


_P = TypeVar("_P", _Caller, _MinimalClient)


async def _time_round_trips(
    round_trips: int,
    kind: str,
    make: Callable[[], _P],
    call: Callable[[_P], Awaitable[object]],
) -> list[float]:
    """Per-call times (s) of ``call`` on the protocol a child of ``kind`` connects to, after
    200 warm-up calls; the caller's CPU per call last."""
    loop = asyncio.get_running_loop()
    directory = tempfile.mkdtemp(prefix="isoplug-bench-")
    path = os.path.join(directory, "sock")
    protocol: _P | None = None

    def made() -> _P:
        nonlocal protocol
        protocol = make()
        return protocol

    server = await loop.create_unix_server(made, path)
    child = _spawn(kind, path, _loop_name())
    samples: list[float] = []
    try:
        while protocol is None:
            await asyncio.sleep(0.005)
        await protocol.connected
        clock = time.perf_counter
        cpu_before = 0.0
        for index in range(round_trips + 200):
            if index == 200:
                cpu_before = time.process_time()
            start = clock()
            await call(protocol)
            if index >= 200:
                samples.append(clock() - start)
        samples.append((time.process_time() - cpu_before) / round_trips)  # CPU per call, last
        assert protocol.transport is not None
        protocol.transport.close()
    finally:
        server.close()
        # The loop must run for the close to reach the child.
        await asyncio.to_thread(child.wait, 30)
        # Python 3.13's server.close() removes the socket file itself.
        Path(path).unlink(missing_ok=True)
        os.rmdir(directory)
    return samples


async def _ping(protocol: _Caller) -> None:
    assert protocol.transport is not None
    protocol.waiter = asyncio.get_running_loop().create_future()
    protocol.transport.write(FRAME)
    await protocol.waiter


async def bench_floor(round_trips: int) -> list[float]:
    """Per-call times (s) of a bare asyncio ping-pong; the caller's CPU per call last."""
    return await _time_round_trips(round_trips, "raw", _Caller, _ping)


async def bench_minimal_rpc(round_trips: int, method: str = "ping") -> list[float]:
    """Per-call times (s) of the least asyncio RPC in Python (:class:`_MinimalClient`) calling
    ``method`` (``ping_sync``: a plain function in a worker thread); the caller's CPU per call
    last."""
    return await _time_round_trips(
        round_trips, "minimal", _MinimalClient, lambda protocol: protocol.call(method)
    )


async def bench_streams(round_trips: int) -> list[float]:
    """Per-call times (s) of a ping-pong written with asyncio streams on both sides (the floor
    the issue measured with benchmarks/rpc_roundtrip.py)."""
    directory = tempfile.mkdtemp(prefix="isoplug-bench-")
    path = os.path.join(directory, "sock")
    connected: asyncio.Future[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = (
        asyncio.get_running_loop().create_future()
    )

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connected.set_result((reader, writer))

    server = await asyncio.start_unix_server(on_connect, path)
    child = _spawn("streams", path, _loop_name())
    samples: list[float] = []
    try:
        reader, writer = await asyncio.wait_for(connected, 30)
        clock = time.perf_counter
        for index in range(round_trips + 200):
            start = clock()
            writer.write(FRAME)
            await reader.readexactly(len(FRAME))
            if index >= 200:
                samples.append(clock() - start)
        writer.close()
    finally:
        server.close()
        await asyncio.to_thread(child.wait, 30)
        # Python 3.13's server.close() removes the socket file itself.
        Path(path).unlink(missing_ok=True)
        os.rmdir(directory)
    return samples


def bench_mp(round_trips: int) -> list[float]:
    token = secrets.token_urlsafe(32)
    directory = tempfile.mkdtemp(prefix="isoplug-bench-")
    address = os.path.join(directory, "sock")
    samples: list[float] = []
    clock = time.perf_counter
    with multiprocessing.connection.Listener(address, authkey=token.encode()) as listener:
        child = _spawn("mp", address, "asyncio", token)
        with listener.accept() as connection:
            for index in range(round_trips + 200):
                start = clock()
                connection.send(index)
                connection.recv()
                if index >= 200:
                    samples.append(clock() - start)
            connection.send(None)
        child.wait(30)
    os.rmdir(directory)
    return samples


def _loop_name() -> str:
    return loop_name(asyncio.get_running_loop())


async def bench_host(plugins: Path, calls: int, pipelined: int) -> dict[str, Any]:
    """host.call async and sync per-call times, pipelined calls/s, CPU per call."""
    os.environ[EVENT_LOOP_VARIABLE] = _loop_name()
    clock = time.perf_counter
    async with Host(plugins, config=SupervisorConfig()) as host:
        await host.wait_ready(60)
        for _ in range(300):
            await host.call("pinger", "ping")
            await host.call("pinger", "ping_sync")
        async_samples: list[float] = []
        runner_before = await host.call("pinger", "cpu")
        host_before = time.process_time()
        for _ in range(calls):
            start = clock()
            await host.call("pinger", "ping")
            async_samples.append(clock() - start)
        host_cpu = (time.process_time() - host_before) / calls
        runner_cpu = (await host.call("pinger", "cpu") - runner_before) / calls
        sync_samples: list[float] = []
        for _ in range(calls):
            start = clock()
            await host.call("pinger", "ping_sync")
            sync_samples.append(clock() - start)
        rates: list[float] = []
        for _ in range(3):
            start = clock()
            await asyncio.gather(*(host.call("pinger", "ping") for _ in range(pipelined)))
            rates.append(pipelined / (clock() - start))
    return {
        "async": async_samples,
        "sync": sync_samples,
        "pipelined": max(rates),
        "host_cpu": host_cpu,
        "runner_cpu": runner_cpu,
    }


def _write_plugin(directory: Path) -> Path:
    plugin = directory / "pinger"
    plugin.mkdir(parents=True)
    (plugin / "plugin.toml").write_text(PLUGIN_TOML)
    (plugin / "pinger.py").write_text(PLUGIN_CODE)
    return directory


def _us(seconds: float) -> str:
    return f"{seconds * 1e6:8.1f}"


def report(kind: str, rounds: list[dict[str, Any]], mp: list[float]) -> None:
    def med(key: str, fn: Callable[[list[float]], float]) -> tuple[float, float, float]:
        values = [fn(r[key]) for r in rounds]
        return statistics.median(values), min(values), max(values)

    floor = med("floor", statistics.median)[0]
    print(f"\n== {kind} loop (host, runner and floor); {len(rounds)} rounds, median [min-max]")
    print(f"{'':44}{'us':>8}  {'x floor':>8}   range (us)")

    def line(name: str, value: tuple[float, float, float], note: str = "") -> None:
        mid, low, high = value
        print(
            f"{name:<44}{_us(mid)}  {mid / floor:8.2f}   [{low * 1e6:.1f}-{high * 1e6:.1f}]{note}"
        )

    p50 = lambda s: percentile(s, 0.5)  # noqa: E731
    p99 = lambda s: percentile(s, 0.99)  # noqa: E731
    line("asyncio ping-pong, p50 (the floor)", med("floor", p50))
    line("asyncio ping-pong, p99", med("floor", p99))
    streams = med("streams", p50)
    line("asyncio streams ping-pong, p50", streams)
    minimal = med("minimal", p50)
    line("least asyncio RPC in Python, p50", minimal, "   msgpack frames, a task per call")
    mp_p50 = percentile(mp, 0.5)
    line("multiprocessing.connection, p50", (mp_p50, mp_p50, mp_p50))
    a50 = med("async", p50)
    a99 = med("async", p99)
    s50 = med("sync", p50)
    s99 = med("sync", p99)
    line("host.call async method, p50", a50, "   target <= 1.3x floor")
    line("host.call async method, p99", a99, f"   {a99[0] / a50[0]:.2f}x its p50 (target <= 3)")
    line("host.call sync method (thread), p50", s50, f"   {s50[0] / a50[0]:.2f}x async (<= 1.5)")
    line("host.call sync method (thread), p99", s99)
    minimal_sync = med("minimal_sync", p50)
    line(
        "least Python RPC, sync method (thread), p50",
        minimal_sync,
        f"   {minimal_sync[0] / minimal[0]:.2f}x its async",
    )
    print(f"{'host.call async p50 / multiprocessing p50':<44}{'':8}  {a50[0] / mp_p50:8.2f}")
    print(f"{'host.call async p50 / streams ping-pong p50':<44}{'':8}  {a50[0] / streams[0]:8.2f}")
    print(f"{'host.call async p50 / least Python RPC p50':<44}{'':8}  {a50[0] / minimal[0]:8.2f}")
    rates = [r["pipelined"] for r in rounds]
    print(
        f"{'pipelined 1,000 concurrent host.call':<44}{statistics.median(rates):8,.0f}/s"
        f" [{min(rates):,.0f}-{max(rates):,.0f}]  target >= 40,000/s"
    )
    host_cpu = statistics.median(r["host_cpu"] for r in rounds)
    runner_cpu = statistics.median(r["runner_cpu"] for r in rounds)
    floor_cpu = statistics.median(r["floor_cpu"] for r in rounds)
    minimal_cpu = statistics.median(r["minimal_cpu"] for r in rounds)
    print(
        f"CPU per sequential async call: host {host_cpu * 1e6:.1f} us, runner "
        f"{runner_cpu * 1e6:.1f} us (the floor's caller: {floor_cpu * 1e6:.1f} us; the least "
        f"RPC's caller: {minimal_cpu * 1e6:.1f} us)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="fewer calls (a smoke run)")
    have_uvloop = importlib.util.find_spec("uvloop") is not None
    parser.add_argument(
        "--loop",
        choices=["asyncio", "uvloop", "both"],
        default="both" if have_uvloop else "asyncio",
    )
    parser.add_argument("--rounds", type=int, default=0, help="rounds (default 5, quick 2)")
    parser.add_argument(
        "--child", nargs=3, metavar=("KIND", "ADDRESS", "LOOP"), help=argparse.SUPPRESS
    )
    arguments = parser.parse_args()
    if arguments.child:
        kind, address, loop = arguments.child
        if kind == "raw":
            run(loop, _child_raw(address))
        elif kind == "streams":
            run(loop, _child_streams(address))
        elif kind == "minimal":
            run(loop, _child_minimal(address))
        else:
            _child_mp(address)
        return
    logging.basicConfig(level=logging.WARNING)
    calls = 1_000 if arguments.quick else 5_000
    rounds = arguments.rounds or (2 if arguments.quick else 5)
    kinds = ["asyncio", "uvloop"] if arguments.loop == "both" else [arguments.loop]
    results: dict[str, list[dict[str, Any]]] = {kind: [] for kind in kinds}
    mp: list[float] = []
    with tempfile.TemporaryDirectory(prefix="isoplug-bench-plugins-") as directory:
        plugins = _write_plugin(Path(directory))
        for _ in range(rounds):
            mp.extend(bench_mp(calls))
            for kind in kinds:
                outcome = run(kind, bench_host(plugins, calls, 1_000))
                floor = run(kind, bench_floor(calls))
                outcome["floor_cpu"] = floor.pop()
                outcome["floor"] = floor
                outcome["streams"] = run(kind, bench_streams(calls))
                minimal = run(kind, bench_minimal_rpc(calls))
                outcome["minimal_cpu"] = minimal.pop()
                outcome["minimal"] = minimal
                outcome["minimal_sync"] = run(kind, bench_minimal_rpc(calls, "ping_sync"))[:-1]
                results[kind].append(outcome)
    load = os.getloadavg()[0]
    print(
        f"machine: {os.cpu_count()} CPUs, load average {load:.2f}, Python "
        f"{sys.version.split()[0]}; {calls:,} calls per measurement, {rounds} rounds, interleaved"
    )
    for kind in kinds:
        report(kind, results[kind], mp)


if __name__ == "__main__":
    main()
