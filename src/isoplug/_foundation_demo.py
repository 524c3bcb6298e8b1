"""``isoplug demo`` (foundation stage): a host and a runner process talking over the protocol.

The host listens on a private unix socket, starts a child process, and hands it the address
and the session token on its standard input (never on the command line, where any local user
could read it). Then both sides exercise the protocol: requests in both directions, a remote
error with its traceback, a timeout whose cancel reaches the child, a stream of events, and a
log record that lands in the host's own ``logging``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
import signal
import subprocess
import sys
import time
from typing import Any

from isoplug.errors import RemoteError, RequestTimeout
from isoplug.log_guard import guarded_logger
from isoplug.logs import LogReplayer
from isoplug.rpc import Handler, Peer, serve
from isoplug.wire import LogRecordData
from isoplug.wire.logframes import log_batch

_log = guarded_logger("isoplug.demo")


# -- the child (runner) side -----------------------------------------------------------------


async def _child_main() -> None:
    bootstrap = json.loads(sys.stdin.readline())
    cancelled = asyncio.Event()

    def add(params: dict[str, int]) -> int:
        return params["a"] + params["b"]

    def divide(params: dict[str, float]) -> float:
        return params["a"] / params["b"]

    async def slow(seconds: float) -> str:
        try:
            await asyncio.sleep(seconds)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return "finished"

    async def was_cancelled(_: Any) -> bool:
        await asyncio.wait_for(cancelled.wait(), 5)
        return True

    async def work(steps: int) -> str:
        for step in range(1, steps + 1):
            await peer.notify("progress", {"step": step, "of": steps})
        now = await peer.request("host.time")
        record = LogRecordData(
            seq=1,
            name="demo.worker",
            levelno=logging.WARNING,
            levelname="WARNING",
            message=f"finished {steps} steps; the host's clock says {now:.3f}",
            created=time.time(),
            process=os.getpid(),
        )
        await peer.send_log_batch(log_batch([record]))
        return "done"

    handlers: dict[str, Handler] = {
        "add": add,
        "divide": divide,
        "slow": slow,
        "was_cancelled": was_cancelled,
        "work": work,
    }
    peer = await Peer.connect(
        bootstrap["address"], bootstrap["token"], name="demo-runner", handlers=handlers
    )
    async with peer:
        await peer.wait_closed()


# -- the host side ---------------------------------------------------------------------------


def _say(text: str) -> None:
    print(text, flush=True)


async def run_demo_host(stop: asyncio.Event | None = None) -> int:
    """The demo's host, to its end or until ``stop`` is set (a stop signal: the runner is
    ended with it, exit code 0)."""
    token = secrets.token_urlsafe(32)
    connected: asyncio.Future[Peer] = asyncio.get_running_loop().create_future()

    def host_time(_: Any) -> float:
        return time.time()

    def progress(params: dict[str, int]) -> None:
        _say(f"  runner -> host  event 'progress' {params['step']}/{params['of']}")

    async def on_peer(peer: Peer) -> None:
        peer.on_event("progress", progress)
        replayer = LogReplayer(
            "plugin.demo", identity={"plugin_id": "demo"}, description="demo runner"
        )
        peer.on_log_batch(replayer.receive)
        connected.set_result(peer)
        await peer.wait_closed()

    listener = await serve(
        "unix:", token, on_peer, handlers={"host.time": host_time}, name="demo-host"
    )
    _say(f"host: listening on {listener.address} (private directory, mode 0700)")
    # In a process group of its own, as a real runner: a Ctrl-C at the terminal (SIGINT to
    # the foreground group) reaches the host alone, which decides the runner's end.
    child = subprocess.Popen(
        [sys.executable, "-m", "isoplug._foundation_demo", "--child"],
        stdin=subprocess.PIPE,
        process_group=0,
    )
    assert child.stdin is not None
    child.stdin.write(
        json.dumps({"address": str(listener.address), "token": token}).encode() + b"\n"
    )
    child.stdin.close()
    talk = asyncio.ensure_future(_talk(connected, child))
    try:
        if stop is None:
            return await talk
        stopping = asyncio.ensure_future(stop.wait())
        try:
            await asyncio.wait((talk, stopping), return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping.cancel()
        if talk.done():
            return talk.result()
        _say("host: stopped on request; the runner ends with it")
        return 0
    finally:
        talk.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await talk
        await listener.aclose()
        if child.poll() is None:
            child.kill()
            child.wait()


async def _talk(connected: asyncio.Future[Peer], child: subprocess.Popen[bytes]) -> int:
    """The host's side of the conversation, once the runner is started; its exit code."""
    peer = await asyncio.wait_for(connected, 20)
    # The kernel's word on who connected (SO_PEERCRED), not the pid the hello claims.
    credentials = peer.stream.peer_credentials
    who = "the runner" if credentials is None else f"runner pid {credentials.pid}"
    _say(f"host: {who} connected and presented the session token")

    start = time.perf_counter()
    total = await peer.request("add", {"a": 2, "b": 3})
    _say(f"  host -> runner  add(2, 3) = {total}   ({(time.perf_counter() - start) * 1e3:.2f} ms)")

    try:
        await peer.request("divide", {"a": 1, "b": 0})
    except RemoteError as exc:
        last_line = exc.remote_traceback.strip().splitlines()[-1]
        _say(f"  host -> runner  divide(1, 0) raised remotely: {last_line}")

    try:
        await peer.request("slow", 30, timeout=0.2)
    except RequestTimeout as exc:
        _say(f"  host -> runner  slow(30): {exc}")
    if await peer.request("was_cancelled"):
        _say("  host -> runner  ...and the runner's handler was cancelled")

    result = await peer.request("work", 3)
    _say(f"  host -> runner  work(3) = {result!r} (it called host.time and logged a line)")
    await peer.aclose("demo finished")
    code = await asyncio.to_thread(child.wait, 20)
    _say(f"host: runner exited with code {code}")
    return 0 if code == 0 else 1


def configure_demo_logging() -> None:
    """The demo's records (the runner's, replayed; the command's own) on stdout."""
    logging.basicConfig(
        level=logging.INFO, stream=sys.stdout, format="  %(name)s [%(levelname)s] %(message)s"
    )


def run_demo() -> int:
    """Run the foundation demo in the foreground; returns the process exit code."""
    configure_demo_logging()
    return asyncio.run(run_demo_host())


if __name__ == "__main__":
    if sys.argv[1:] == ["--child"]:
        # Its end is the host's to decide (it closes the connection, or kills it): a SIGINT
        # sent to it (the host's whole group, in a script) changes nothing.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        asyncio.run(_child_main())
    else:
        sys.exit(run_demo())
