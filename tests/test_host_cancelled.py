"""A host whose start or close is cancelled (a Ctrl-C, a second one, a supervisor's timeout),
once or at every step, leaves nothing open, and the cancellation reaches its caller.

Each cancel lands at a well-defined point: a step of the close is wrapped so that reaching it
cancels the closing task, which the step's first wait then raises; the start is cancelled the
moment its socket directory appears. Each host has a zygote of its own, as outside a test
session: its close waits for it to exit, and no process of it may be left."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import signal
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from isoplug import Host
from isoplug.host.logbridge import LogBridge
from isoplug.host.reload import PluginReloader
from isoplug.host.supervisor import RunnerSupervisor
from isoplug.host.zygote import Zygote, fork_supported
from isoplug.testing import eventually
from isoplug.transport import Listener, Stream, connect, parse_address
from tests.open_resources import (
    cancelled_once_its_socket_dir_appears,
    isoplug_threads_since,
    listening_unix_paths,
)
from tests.plugins_fixtures import FAST, plugins_dir, process_alive
from tests.record_waiter import watching

pytestmark = [
    pytest.mark.skipif(not fork_supported(), reason="runners are spawned here: no zygote"),
    pytest.mark.usefixtures("isoplug_own_zygotes"),
]


@dataclasses.dataclass
class Opened:
    """What a started host holds that its close must release."""

    paths: set[str]
    pids: set[int]
    threads_before: set[threading.Thread]

    @property
    def dirs(self) -> set[str]:
        return {os.path.dirname(path) for path in self.paths}


def opened_by(host: Host, threads_before: set[threading.Thread]) -> Opened:
    """The socket files of a started host, and the pids of its runners and zygote."""
    assert host._listener is not None and host._zygote is not None
    paths = {host._listener.address.path, parse_address(host._log_bridge.address).path}
    pids = {info.pid for info in host.plugins() if info.pid is not None}
    pids.add(host._zygote.pid or 0)
    assert len(paths) == 2 and len(pids) == 2 and 0 not in pids
    assert paths <= listening_unix_paths()
    return Opened(paths, pids, threads_before)


async def assert_nothing_left(host: Host, opened: Opened) -> None:
    """The host is closed, and what it held is released: its socket files and directories
    at once, its sockets, threads and processes as soon as they end (killed, woken)."""
    assert repr(host).endswith(" closed>")
    assert not [d for d in opened.dirs if os.path.exists(d)]
    await eventually(lambda: not listening_unix_paths() & opened.paths)
    await eventually(lambda: not isoplug_threads_since(opened.threads_before))
    await eventually(lambda: not [pid for pid in opened.pids if process_alive(pid)])


class CancelAtSteps:
    """Cancels the closing task when the close reaches each wrapped step; says which steps
    it reached."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self._monkeypatch = monkeypatch
        self.closing: asyncio.Task[None] | None = None
        self.reached: list[str] = []

    def _cancel(self, step: str) -> None:
        if step not in self.reached:
            self.reached.append(step)
        assert self.closing is not None
        self.closing.cancel()

    def at(self, step: str) -> None:
        if step == "log bridge":
            self._at_log_bridge()
            return
        owner, name = AWAITED_STEPS[step]
        original: Callable[..., Awaitable[None]] = getattr(owner, name)

        async def cancelling(*args: Any, **kwargs: Any) -> None:
            self._cancel(step)
            await original(*args, **kwargs)

        self._monkeypatch.setattr(owner, name, cancelling)

    def _at_log_bridge(self) -> None:
        """Its close runs in a thread, which the close awaits: cancel the close from there,
        and let the thread close the bridge only once the cancelled close has returned (a
        drain that outlasts its caller)."""
        original = LogBridge.close
        loop = asyncio.get_running_loop()

        def cancelling(bridge: LogBridge, *args: Any, **kwargs: Any) -> None:
            returned = threading.Event()
            loop.call_soon_threadsafe(self._cancel_until_returned, returned)
            returned.wait()
            original(bridge, *args, **kwargs)

        self._monkeypatch.setattr(LogBridge, "close", cancelling)

    def _cancel_until_returned(self, returned: threading.Event) -> None:
        assert self.closing is not None
        if not self.closing.done():
            self._cancel("log bridge")
        self.closing.add_done_callback(lambda _: returned.set())


#: The steps of a close that await, but the log bridge's: the runners' stop (each
#: supervisor's), then letting the zygote go, and the control listener's close.
AWAITED_STEPS: dict[str, tuple[type, str]] = {
    "runners": (RunnerSupervisor, "aclose"),
    "zygote": (Zygote, "aclose"),
    "listener": (Listener, "aclose"),
}


@pytest.fixture
def cancel_at(monkeypatch: pytest.MonkeyPatch) -> CancelAtSteps:
    return CancelAtSteps(monkeypatch)


async def connected_stranger(host: Host) -> Stream:
    """A connection to the control listener that says nothing: its handler waits in the
    handshake, and the listener's close waits for that handler to end."""
    assert host._listener is not None
    return await connect(host._listener.address)


@pytest.mark.parametrize(
    "steps",
    [
        ["runners"],
        ["zygote"],
        ["listener"],
        ["log bridge"],
        # Cancelled again: at the runners' stop (they are killed), then at the zygote's close
        # (the rest is closed without waiting, so no later step is reached).
        ["runners", "zygote", "listener", "log bridge"],
    ],
    ids="+".join,
)
async def test_a_close_cancelled_at_a_step_closes_everything_and_raises(
    tmp_path: Path, cancel_at: CancelAtSteps, steps: list[str]
) -> None:
    threads_before = set(threading.enumerate())
    host = Host(plugins_dir(tmp_path, "echo"), config=FAST)
    await host.start()
    await host.wait_ready(20)
    opened = opened_by(host, threads_before)
    stranger = await connected_stranger(host)
    try:
        for step in steps:
            cancel_at.at(step)
        cancel_at.closing = asyncio.create_task(host.aclose())
        with pytest.raises(asyncio.CancelledError):
            await cancel_at.closing
        assert cancel_at.reached == (steps if len(steps) == 1 else ["runners", "zygote"])
        await assert_nothing_left(host, opened)
        await host.aclose()  # closed: nothing more to do
    finally:
        await stranger.aclose()


async def test_a_zygote_stopped_when_a_close_is_cancelled_is_killed_and_said_so(
    tmp_path: Path,
) -> None:
    """A zygote stopped (SIGSTOP) as the close lets it go, a close then cancelled (a second
    Ctrl-C): it does not exit, and left so it would hold its runners unreaped for ever: it is
    killed once 2 s have passed, from a thread of isoplug's, and the host says so. (Stopped
    earlier, while the runners stop, the host may continue it first: not this test's case.)"""
    threads_before = set(threading.enumerate())
    host = Host(plugins_dir(tmp_path, "echo"), config=FAST)
    await host.start()
    await host.wait_ready(20)
    opened = opened_by(host, threads_before)
    zygote = host._zygote.pid if host._zygote is not None else None
    assert zygote is not None
    owner, name = AWAITED_STEPS["zygote"]
    original: Callable[..., Awaitable[None]] = getattr(owner, name)
    closing: list[asyncio.Task[None]] = []

    async def stopped_then_cancelled(*args: Any, **kwargs: Any) -> None:
        os.kill(zygote, signal.SIGSTOP)
        closing[0].cancel()
        await original(*args, **kwargs)

    with pytest.MonkeyPatch.context() as patch, watching("isoplug.host") as waiter:
        patch.setattr(owner, name, stopped_then_cancelled)
        try:
            closing.append(asyncio.create_task(host.aclose()))
            with pytest.raises(asyncio.CancelledError):
                await closing[0]
            await waiter.wait_for(
                "isoplug.host", f"the runner zygote (pid {zygote}) had not exited"
            )
            await assert_nothing_left(host, opened)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.kill(zygote, signal.SIGCONT)


async def test_a_block_left_by_a_cancel_and_cancelled_in_its_close_closes_everything(
    tmp_path: Path, cancel_at: CancelAtSteps
) -> None:
    """The application's task cancelled while it serves inside ``async with Host(...)``, and
    again while the block's close lets the zygote go (a second Ctrl-C)."""
    threads_before = set(threading.enumerate())
    serving = asyncio.Event()
    hosts: list[Host] = []

    async def application() -> None:
        async with Host(plugins_dir(tmp_path, "echo"), config=FAST) as host:
            hosts.append(host)
            await host.wait_ready(20)
            serving.set()
            await asyncio.Event().wait()

    task = asyncio.create_task(application())
    await serving.wait()
    opened = opened_by(hosts[0], threads_before)
    cancel_at.at("zygote")
    cancel_at.closing = task
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert cancel_at.reached == ["zygote"]
    await assert_nothing_left(hosts[0], opened)


async def test_a_close_cancelled_while_hot_reload_stops_still_stops_the_runners(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Hot reload stops first; a cancel while the close waits for it kills the runners at
    once and closes the rest, as a cancel during their stop does."""
    closing: list[asyncio.Task[None]] = []
    original = PluginReloader.run

    async def run(reloader: PluginReloader) -> None:
        try:
            await original(reloader)
        finally:
            closing[0].cancel()  # the close cancelled this, and waits for it to end now

    monkeypatch.setattr(PluginReloader, "run", run)
    threads_before = set(threading.enumerate())
    host = Host(plugins_dir(tmp_path, "echo"), config=FAST, reload=True)
    await host.start()
    await host.wait_ready(20)
    assert host.reloader is not None
    await host.reloader.watching.wait()
    opened = opened_by(host, threads_before)
    closing.append(asyncio.create_task(host.aclose()))
    with pytest.raises(asyncio.CancelledError):
        await closing[0]
    await assert_nothing_left(host, opened)
    last_exit = host.plugin("echo").last_exit
    assert last_exit is not None and "shutdown was cancelled" in str(last_exit), last_exit


async def test_a_start_cancelled_while_its_listener_starts_leaves_nothing_open(
    tmp_path: Path,
) -> None:
    """Cancelled the moment the control listener's socket directory appears (inside
    asyncio's server start, before the listener is the host's): the start raises the
    cancellation, and the host is closed with nothing open."""
    threads_before = set(threading.enumerate())
    host = Host(plugins_dir(tmp_path, "echo"), config=FAST)
    made = await cancelled_once_its_socket_dir_appears(host.start())
    assert host._listener is None  # the cancel landed in the listener's start
    await assert_nothing_left(host, Opened({os.path.join(made, "sock")}, set(), threads_before))
    with pytest.raises(RuntimeError, match="the host is closed"):
        await host.start()
