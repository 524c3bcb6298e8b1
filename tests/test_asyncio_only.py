"""A Host, and a PluginHarness, run on asyncio only (docs/host.md, "One loop, one process"):
started or awaited where no asyncio loop runs (trio, anyio's trio backend), they refuse at
once saying so and how to run them on asyncio, not with asyncio's bare "no running event
loop"; and a harness used from the wrong loop names what the test asked it to do.

Another async library's loop is stood in for by driving the coroutine by hand
(``coroutine.send(None)``), as trio's loop drives it: no asyncio loop runs in the thread, and
no dependency on trio is needed to show it."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from isoplug import Host, PluginState
from isoplug.testing import PluginHarness
from tests.plugins_fixtures import FAST, FIXTURES, plugins_dir

T = TypeVar("T")


def _refusal_outside_asyncio(coroutine: Coroutine[Any, Any, Any]) -> str:
    """What ``coroutine`` raises at its first step, driven with no asyncio loop running."""
    with pytest.raises(RuntimeError) as refused:
        coroutine.send(None)
    coroutine.close()
    return str(refused.value)


def _says_asyncio_and_the_fix(text: str) -> bool:
    return all(
        part in text
        for part in (
            "no asyncio event loop is running here",
            "runs on asyncio (any asyncio loop, uvloop included)",
            'anyio.run(main, backend="asyncio")',
            '`anyio_backend` fixture returning "asyncio"',
        )
    )


class _LoopInAThread:
    """An asyncio loop of its own, in a thread: where the host runs, while the test's
    thread has no loop (or another)."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="host-loop")
        self._thread.start()

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(60)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join()
        self.loop.close()


@pytest.fixture
def host_loop() -> Iterator[_LoopInAThread]:
    loop = _LoopInAThread()
    try:
        yield loop
    finally:
        loop.close()


def test_a_host_started_outside_asyncio_says_it_needs_asyncio_and_stays_new(
    tmp_path: Path,
) -> None:
    host = Host(plugins_dir(tmp_path, "echo"), config=FAST)
    refusal = _refusal_outside_asyncio(host.start())
    assert refusal.startswith("cannot start the host: "), refusal
    assert _says_asyncio_and_the_fix(refusal), refusal
    # Nothing was started: on asyncio, the same host starts as any other.

    async def on_asyncio() -> PluginState:
        async with host:
            return (await host.wait_ready(20))[0].state

    assert asyncio.run(on_asyncio()) is PluginState.READY


def test_a_harness_entered_outside_asyncio_says_it_needs_asyncio() -> None:
    harness = PluginHarness(FIXTURES / "echo")
    refusal = _refusal_outside_asyncio(harness.__aenter__())
    assert refusal.startswith("cannot start PluginHarness (it runs an isoplug Host): "), refusal
    assert _says_asyncio_and_the_fix(refusal), refusal


def test_a_running_hosts_coroutines_awaited_outside_asyncio_say_it_needs_asyncio(
    tmp_path: Path, host_loop: _LoopInAThread
) -> None:
    host = Host(plugins_dir(tmp_path, "echo"), config=FAST)
    host_loop.run(host.start())
    try:
        host_loop.run(host.wait_ready(20))
        for attempt, what in (
            (host.call("echo", "echo", 1), "call echo.echo"),
            (host.stop("echo"), "stop plugin 'echo'"),
            (host.aclose(), "close the host"),
        ):
            refusal = _refusal_outside_asyncio(attempt)
            assert refusal.startswith(f"cannot {what}: "), refusal
            assert _says_asyncio_and_the_fix(refusal), refusal
        # Nothing reached the host: its runner serves on, never restarted.
        assert host_loop.run(host.call("echo", "echo", 2)) == 2
        assert host.plugin("echo").restarts == 0
    finally:
        host_loop.run(host.aclose())


def test_a_harness_called_from_the_wrong_loop_names_the_call(host_loop: _LoopInAThread) -> None:
    """Not "cannot read the plugins' states": the harness finds its only plugin without
    asking the host, whose refusal then names the call."""
    harness = PluginHarness(FIXTURES / "echo")
    host_loop.run(harness.__aenter__())
    try:

        async def elsewhere() -> str:
            with pytest.raises(RuntimeError) as refused:
                await harness.call("echo", 1)
            return str(refused.value)

        refusal = asyncio.run(elsewhere())
        assert refusal.startswith("cannot call echo.echo: this Host was started on another "), (
            refusal
        )
        assert host_loop.run(harness.call("echo", 2)) == 2
    finally:
        host_loop.run(harness.__aexit__(None, None, None))
