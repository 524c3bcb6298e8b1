"""Signals a runner or the zygote gets from outside the host: a SIGTERM the host did not send
stops a runner gracefully; one that comes while the host stops it, or the zygote's death
then, is told as such (never as a crash to restart); stop signals blocked in the mask a runner
inherits are unblocked."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from isoplug import Host
from isoplug.host.zygote import fork_supported
from isoplug.testing import Records, eventually
from tests.plugins_fixtures import FAST, plugins_dir, process_alive
from tests.process_memory import blocked_signals, parent_of
from tests.record_waiter import watching
from tests.test_cli_exits import write_plugin

STOP = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP}

#: A teardown that lasts until the runner is killed: the host's stop is under way meanwhile.
HELD_TEARDOWN = """
    import asyncio

    import isoplug


    class P(isoplug.Plugin):
        async def teardown(self) -> None:
            print("teardown started", flush=True)
            await asyncio.Event().wait()
"""

#: The same, saying so every 20 ms: its main thread runs Python meanwhile.
TICKING_TEARDOWN = """
    import asyncio

    import isoplug


    class P(isoplug.Plugin):
        async def teardown(self) -> None:
            print("teardown started", flush=True)
            while True:
                await asyncio.sleep(0.02)
                print("tick", flush=True)
"""

#: Deadlines far longer than any test: only what the test does ends a held teardown.
PATIENT = dataclasses.replace(FAST, teardown_timeout=120.0, shutdown_timeout=180.0)


@asynccontextmanager
async def held_in_teardown(
    tmp_path: Path, records: Records, teardown: str = HELD_TEARDOWN
) -> AsyncIterator[tuple[Host, int]]:
    """A host whose one runner (plugin ``held``, and its pid) is in a teardown that lasts
    until the runner is killed: the host's stop is under way until then, and over once this
    is done."""
    write_plugin(tmp_path / "plugins", "held", teardown)
    async with Host(tmp_path / "plugins", config=PATIENT) as host:
        await host.wait_ready(20)
        runner = host.plugin("held").pid
        assert runner is not None
        closing = asyncio.ensure_future(host.aclose())
        try:
            await records.wait_for_record(plugin="held", stream="stdout", text="teardown started")
            yield host, runner
            await closing
        finally:
            if not closing.done():
                # The test failed before it ended the teardown: nothing else would.
                with contextlib.suppress(ProcessLookupError):
                    os.kill(runner, signal.SIGKILL)
                await closing


@pytest.mark.parametrize("start", ["fork", "spawn"])
async def test_a_sigterm_from_outside_stops_a_runner_gracefully(tmp_path: Path, start: str) -> None:
    """A SIGTERM the host did not send (an operator's kill of one runner): the runner says so,
    runs its plugins' teardown as at the host's request, then ends by SIGTERM, so that the
    host's account names it, and the plugin is restarted as after any end not asked for."""
    with watching(None) as records:
        async with Host(plugins_dir(tmp_path, "echo", start=start), config=FAST) as host:
            await host.wait_ready(20)
            runner = host.plugin("echo").pid
            assert runner is not None
            os.kill(runner, signal.SIGTERM)
            said = await records.wait_for_record(
                plugin="echo", text="SIGTERM, not sent by the host"
            )
            assert said.levelno == logging.WARNING
            assert "stopping as at the host's request, teardown included" in said.getMessage()
            await records.wait_for_record(plugin="echo", stream="stdout", text="teardown ran")
            info = await host.wait_for(
                "echo", lambda i: i.last_exit is not None and i.last_exit.pid == runner, timeout=30
            )
    account = info.last_exit
    assert account is not None and account.signal_name == "SIGTERM"
    assert "was killed by SIGTERM, not sent by the host (sender unknown)" in account.describe()
    assert records.select(logger="isoplug.host", text="plugin echo: crashed: ")


async def test_a_sigterm_from_outside_while_the_host_stops_a_runner_changes_nothing(
    tmp_path: Path,
) -> None:
    """A SIGTERM from outside that comes once the host is stopping the runner (a service
    manager's, which reached the host first: the host's notice read) changes nothing: the
    teardown goes on (it ended the runner at once, teardown lost, when the service manager's
    signal came a moment after the host's notice). Only what stops the host's stop ends it."""
    with watching(None) as records:
        async with held_in_teardown(tmp_path, records, TICKING_TEARDOWN) as (host, runner):

            def ticks() -> int:
                return len(records.select(plugin="held", stream="stdout", text="tick"))

            os.kill(runner, signal.SIGTERM)
            # Its main thread ran Python since (the handler runs between two bytecodes).
            after = ticks() + 3
            await eventually(lambda: ticks() >= after)
            assert process_alive(runner)
            os.kill(runner, signal.SIGKILL)  # what ends the held teardown here
    account = host.plugin("held").last_exit
    assert account is not None and account.pid == runner
    assert account.signal_name == "SIGKILL", account.describe()
    assert not records.select(level=logging.ERROR)


@pytest.mark.skipif(not fork_supported(), reason="runners are spawned here")
@pytest.mark.usefixtures("isoplug_own_zygotes")  # killed here: never one others share
async def test_a_zygote_killed_while_the_host_stops_is_no_error(tmp_path: Path) -> None:
    """The zygote killed while the host stops every runner: said at WARNING, plainly (its
    runners ended with it, none restarted), never as an ERROR about restarting them."""
    with watching(None) as records:
        async with held_in_teardown(tmp_path, records) as (_, runner):
            zygote = parent_of(runner)
            assert zygote != os.getpid(), "not forked"
            os.kill(zygote, signal.SIGKILL)
    said = await records.wait_for_record(
        logger="isoplug.host", text=f"the runner zygote (pid {zygote}) was killed by SIGKILL"
    )
    assert said.levelno == logging.WARNING
    assert "while the host was stopping every runner" in said.getMessage()
    assert "none is restarted" in said.getMessage()
    assert not records.select(level=logging.ERROR)
    assert not records.select(text="restarted at once")
    assert records.select(logger="isoplug.host", text="plugin held: stopped: ")


async def test_a_runner_unblocks_the_stop_signals_its_host_blocked(tmp_path: Path) -> None:
    """An application that blocked the stop signals in the thread running its host passes the
    mask on to the runners it spawns: each unblocks them, so that the host's SIGTERM reaches
    it (blocked, the signal would wait for the SIGKILL after it)."""
    before = signal.pthread_sigmask(signal.SIG_BLOCK, STOP)
    try:
        async with Host(plugins_dir(tmp_path, "echo", start="spawn"), config=FAST) as host:
            await host.wait_ready(20)
            runner = host.plugin("echo").pid
            assert runner is not None
            assert not blocked_signals(runner) & STOP
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, before)
