"""Round trips and one-way events between two processes over a unix socket.

Compares, in one run on the same machine:

- isoplug ``Peer.request`` round trips (the parent calls, a child process answers);
- the floor for that: a bare asyncio unix-socket ping-pong of a small frame, with no protocol;
- ``multiprocessing.connection`` (``Pipe``-style ``send``/``recv`` with pickle), the stdlib way;
- isoplug one-way events per second (the child sends, the parent counts).

Run: ``python benchmarks/rpc_roundtrip.py [--quick]``. Prints medians of several rounds and the
ratios to the floor.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing.connection
import os
import secrets
import statistics
import subprocess
import sys
import time
from typing import Any

from isoplug.rpc import Peer, serve
from isoplug.transport import listen
from isoplug.transport.stream import Stream

TOKEN_ENV = "ISOPLUG_BENCH_TOKEN"


# -- child side ------------------------------------------------------------------------------


async def _child_isoplug(address: str, events: int) -> None:
    token = os.environ[TOKEN_ENV]

    def echo(params: Any) -> Any:
        return params

    async with await Peer.connect(
        address, token, name="bench-child", handlers={"echo": echo}
    ) as peer:

        async def blast(count: int) -> int:
            for index in range(count):
                peer.notify_nowait("tick", index)
                if index % 256 == 0:
                    await peer.stream.drain()
            await peer.stream.drain()
            return count

        peer.register("blast", blast)
        await peer.wait_closed()


async def _child_raw(address: str) -> None:
    reader, writer = await asyncio.open_unix_connection(address.removeprefix("unix:"))
    while True:
        data = await reader.read(65536)
        if not data:
            break
        writer.write(data)
    writer.close()


def _child_mp(address: str) -> None:
    authkey = os.environ[TOKEN_ENV].encode()
    with multiprocessing.connection.Client(address, authkey=authkey) as connection:
        while True:
            message = connection.recv()
            if message is None:
                break
            connection.send(message)


# -- parent side -----------------------------------------------------------------------------


def _spawn(kind: str, address: str, token: str) -> subprocess.Popen[bytes]:
    env = dict(os.environ, **{TOKEN_ENV: token})
    return subprocess.Popen([sys.executable, __file__, "--child", kind, address], env=env)


async def bench_isoplug(
    round_trips: int, events: int, rounds: int
) -> tuple[list[float], list[float]]:
    token = secrets.token_urlsafe(32)
    connected: asyncio.Future[Peer] = asyncio.get_running_loop().create_future()
    received = 0
    target = 0
    done = asyncio.Event()

    def tick(_: Any) -> None:
        nonlocal received
        received += 1
        if received == target:
            done.set()

    async def on_peer(peer: Peer) -> None:
        peer.on_event("tick", tick)
        connected.set_result(peer)
        await peer.wait_closed()

    listener = await serve("unix:", token, on_peer)
    child = _spawn("isoplug", str(listener.address), token)
    rt_us: list[float] = []
    events_per_s: list[float] = []
    try:
        peer = await asyncio.wait_for(connected, 30)
        for _ in range(200):
            await peer.request("echo", "warm-up")
        for _ in range(rounds):
            start = time.perf_counter()
            for index in range(round_trips):
                await peer.request("echo", index)
            rt_us.append((time.perf_counter() - start) / round_trips * 1e6)
        for _ in range(rounds):
            received, target = 0, events
            done.clear()
            start = time.perf_counter()
            await peer.request("blast", events, timeout=120)
            await asyncio.wait_for(done.wait(), 120)
            events_per_s.append(events / (time.perf_counter() - start))
        await peer.aclose()
    finally:
        await listener.aclose()
        child.wait(30)
    return rt_us, events_per_s


async def bench_raw(round_trips: int, rounds: int) -> list[float]:
    connected: asyncio.Future[Stream] = asyncio.get_running_loop().create_future()
    finished = asyncio.Event()

    async def handler(stream: Stream) -> None:
        connected.set_result(stream)
        await finished.wait()

    listener = await listen("unix:", handler)
    child = _spawn("raw", str(listener.address), "")
    results: list[float] = []
    try:
        stream = await asyncio.wait_for(connected, 30)
        frame = b"\x00\x00\x00\x0c" + b"x" * 12
        for _ in range(rounds + 1):
            start = time.perf_counter()
            for _ in range(round_trips):
                stream.write(frame)
                received = 0
                while received < len(frame):
                    received += len(await stream.receive_some())
            results.append((time.perf_counter() - start) / round_trips * 1e6)
        finished.set()
    finally:
        await listener.aclose()
        child.wait(30)
    return results[1:]


def bench_mp(round_trips: int, rounds: int) -> list[float]:
    token = secrets.token_urlsafe(32)
    directory = f"/tmp/isoplug-bench-{os.getpid()}"
    os.mkdir(directory, 0o700)
    address = os.path.join(directory, "sock")
    results: list[float] = []
    with multiprocessing.connection.Listener(address, authkey=token.encode()) as listener:
        child = _spawn("mp", address, token)
        with listener.accept() as connection:
            for _ in range(rounds + 1):
                start = time.perf_counter()
                for index in range(round_trips):
                    connection.send(index)
                    connection.recv()
                results.append((time.perf_counter() - start) / round_trips * 1e6)
            connection.send(None)
        child.wait(30)
    os.rmdir(directory)
    return results[1:]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="fewer iterations (a smoke run)")
    parser.add_argument("--child", nargs=2, metavar=("KIND", "ADDRESS"), help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    if arguments.child:
        kind, address = arguments.child
        if kind == "isoplug":
            asyncio.run(_child_isoplug(address, 0))
        elif kind == "raw":
            asyncio.run(_child_raw(address))
        else:
            _child_mp(address)
        return
    round_trips, events, rounds = (2_000, 20_000, 3) if arguments.quick else (20_000, 200_000, 5)
    rt, ev = asyncio.run(bench_isoplug(round_trips, events, rounds))
    raw = asyncio.run(bench_raw(round_trips, rounds))
    mp = bench_mp(round_trips, rounds)
    floor = statistics.median(raw)
    print(
        f"machine: {os.cpu_count()} CPUs, Python {sys.version.split()[0]}; "
        f"medians of {rounds} rounds"
    )
    print(f"{'round trip (unix socket)':<44}{'median us':>10}{'x floor':>9}")
    for name, values in (
        ("asyncio raw ping-pong (floor)", raw),
        ("multiprocessing.connection send/recv", mp),
        ("isoplug Peer.request", rt),
    ):
        value = statistics.median(values)
        print(f"{name:<44}{value:>10.1f}{value / floor:>9.2f}")
    print(f"{'isoplug one-way events':<44}{statistics.median(ev):>10,.0f} /s")


if __name__ == "__main__":
    main()
