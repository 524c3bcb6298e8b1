"""Health checks with real runners: a blocked loop, a held GIL, worker threads left running."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import re
import sys
import time
from collections.abc import Iterator
from contextlib import AbstractAsyncContextManager
from pathlib import Path

import pytest

from isoplug import Host, PluginState, SupervisorConfig
from isoplug.errors import ConnectionBroken, RequestTimeout
from isoplug.host import PluginInfo
from isoplug.runner.output_wait import syscall_numbers
from isoplug.testing import busy_cpu, eventually
from tests import plugins_fixtures
from tests.plugins_fixtures import FAST
from tests.record_waiter import RecordWaiter

#: Health checks every 0.1 s; a loop blocked for 1 s is hung; a held GIL may add 2 s more.
#: Runners at the host's CPU priority: these tests give calls wall-clock timeouts (0.3 s),
#: which a runner far below the host misses on a busy test machine.
CONFIG = dataclasses.replace(
    FAST,
    health_interval=0.1,
    health_timeout=1.0,
    health_grace=2.0,
    max_stuck_threads=2,
    runner_nice=0,
)

#: Shorter limits and runners below the host, as by default: for runners starved on purpose.
STARVED_CONFIG = dataclasses.replace(
    CONFIG, health_timeout=0.5, health_grace=1.0, runner_nice=SupervisorConfig().runner_nice
)


def running(
    tmp_path: Path, config: SupervisorConfig = CONFIG
) -> AbstractAsyncContextManager[tuple[Host, RecordWaiter]]:
    """A started host over the ``laggard`` plugin, and a waiter on the root logger (the
    host's own records are what these tests read)."""
    return plugins_fixtures.running(tmp_path, "laggard", config=config, logger=None)


def restarted(info: PluginInfo) -> bool:
    return info.state is PluginState.READY and info.restarts >= 1


async def test_a_timed_out_sync_call_says_its_thread_runs_on_and_stuck_threads_recycle(
    tmp_path: Path,
) -> None:
    """A sync method outliving its call's timeout: the error says the worker thread is still
    running it and how many are stuck; past max_stuck_threads (2) the runner is recycled."""
    async with running(tmp_path) as (host, waiter):
        first = host.plugin("laggard").pid
        where = r", in \S+laggard_plugin\.py:\d+ in sleep_in_thread\)"
        for stuck in (1, 2):
            with pytest.raises(RequestTimeout) as caught:
                await host.call_with(
                    "laggard", "sleep_in_thread", kwargs={"seconds": 60}, timeout=0.3
                )
            assert re.fullmatch(
                r"plugin 'laggard' did not answer 'sleep_in_thread': the call timed out after "
                rf"0\.3 s; its worker thread is still running laggard\.sleep_in_thread "
                rf"\({stuck} threads? stuck{where}",
                str(caught.value),
            ), str(caught.value)
        # An async method's call is cancelled for real (the runner answers the cancel so): the
        # error says so, and counts nothing.
        with pytest.raises(
            RequestTimeout,
            match=r"after 0\.3 s; a cancel was sent, and it was cancelled in the plugin$",
        ):
            await host.call_with("laggard", "await_sleep", kwargs={"seconds": 60}, timeout=0.3)
        assert host.plugin("laggard").pid == first
        with pytest.raises(RequestTimeout) as caught:
            await host.call_with("laggard", "sleep_in_thread", kwargs={"seconds": 60}, timeout=0.3)
        assert str(caught.value).endswith("; past max_stuck_threads (2) the runner is recycled"), (
            str(caught.value)
        )
        assert "(3 threads stuck" in str(caught.value)
        info = await host.wait_for("laggard", restarted, timeout=20)
        assert info.pid != first
        assert info.last_exit is not None
        # Recycled gracefully: the stuck threads did not keep the runner from exiting.
        assert info.last_exit.exit_code == 0
        assert re.search(
            r"recycled by the host: 3 worker threads still run calls that timed out or were "
            r"cancelled \(max_stuck_threads 2\): laggard\.sleep_in_thread for \d+\.\d s, ",
            info.last_exit.describe(),
        ), info.last_exit.describe()
        await waiter.wait_for("isoplug.host", "is recycled by the host: 3 worker threads")
        assert await host.call("laggard", "sleep_in_thread", 0) == "slept"


async def test_the_health_check_counts_threads_left_by_cancelled_calls(tmp_path: Path) -> None:
    """Calls the caller cancelled (no timeout of isoplug's) leave threads running too: the
    periodic health check finds them in the worker pool and recycles the runner."""
    async with running(tmp_path) as (host, _):
        first = host.plugin("laggard").pid
        for _ in range(3):
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.3):
                    await host.call("laggard", "sleep_in_thread", 60)
        info = await host.wait_for("laggard", restarted, timeout=20)
        assert info.pid != first and info.last_exit is not None
        assert "recycled by the host: 3 worker threads still run calls" in info.last_exit.reason


async def test_one_long_c_call_holding_the_gil_gets_its_grace(tmp_path: Path) -> None:
    """The GIL held for 1.6 s by one call on the loop's thread (as a 1 GiB allocation does),
    under a 1 s health timeout: not hung; a warning says what happened; the call returns."""
    async with running(tmp_path) as (host, waiter):
        first = host.plugin("laggard").pid
        assert await host.call("laggard", "hold_gil", 1.6) == "held"
        # The warning comes with the runner's first health answer after the GIL is free: from
        # then on the second hold starts a new silence (back to back, on a loaded machine, the
        # two silences could add up to more than the grace before any answer got through).
        record = await waiter.wait_for("isoplug.host", "no thread could run Python for")
        assert await host.call("laggard", "hold_gil_in_thread", 1.6) == "held"
        assert re.search(
            r"runner laggard \(pid \d+\): no thread could run Python for \d+\.\d s \(the GIL was "
            r"held, as by one long call in C code, or the process was not scheduled\); its "
            r"health checks allow that for up to health_grace \(2 s\) beyond health_timeout "
            r"\(1 s\)",
            record.getMessage(),
        ), record.getMessage()
        info = host.plugin("laggard")
        assert info.pid == first and info.restarts == 0 and info.state is PluginState.READY


def stall_reports(waiter: RecordWaiter) -> list[str]:
    return [
        r.getMessage()
        for r in waiter.records
        if r.name == "isoplug.host" and "no thread could run Python for" in r.getMessage()
    ]


async def test_one_gil_stall_is_reported_once_and_a_second_one_is_summed_up(
    tmp_path: Path,
) -> None:
    """A stall spans the health query sent during it: the checks after the one that reported
    it must not count it again (the summary said "1 more time(s)" with no second stall). A
    real second stall still goes into the summary, which the runner's end sends."""
    async with running(tmp_path) as (host, waiter):
        watch = host._supervisor("laggard")._life.health  # type: ignore[union-attr]
        assert await host.call("laggard", "hold_gil", 1.6) == "held"
        await waiter.wait_for("isoplug.host", "no thread could run Python for")
        # Checks go on every 0.1 s: the next two would have counted the stall again.
        seen = watch.reports
        await eventually(lambda: watch.reports >= seen + 3, timeout=20)
        assert len(stall_reports(waiter)) == 1, stall_reports(waiter)
        assert await host.call("laggard", "hold_gil_in_thread", 1.6) == "held"
        seen = watch.reports
        await eventually(lambda: watch.reports >= seen + 3, timeout=20)
        await host.stop("laggard")
    reports = stall_reports(waiter)
    assert len(reports) == 2, reports
    assert re.fullmatch(
        r"runner laggard: 1 more time\(s\) in \d+ s, no thread could run Python for longer "
        r"than health_timeout \(latest \d+\.\d s\)",
        reports[1],
    ), reports


async def test_a_gil_held_past_the_grace_is_hung(tmp_path: Path) -> None:
    """A C call that keeps the GIL: no answer within health_timeout + health_grace (3 s),
    the runner is killed as hung, and the account says no thread could run Python."""
    async with running(tmp_path) as (host, waiter):
        call = asyncio.ensure_future(host.call("laggard", "hold_gil", 60))
        info = await host.wait_for("laggard", restarted, timeout=20)
        assert info.last_exit is not None and info.last_exit.signal_name == "SIGKILL"
        # On a loaded machine the time waited includes CPU wait, which the account says.
        within = r"(3 s|\d+\.\d s, \d+\.\d s of it waiting for a CPU)"
        assert re.fullmatch(
            rf"killed by the host: no answer to a health check within {within} \(hung: no "
            r"thread could run Python\)",
            info.last_exit.reason,
        ), info.last_exit.reason
        # The state line says who killed it once, in the call error's words.
        described = info.last_exit.describe()
        assert re.search(
            r"was killed by SIGKILL from the host: no answer to a health check within "
            rf"{within} \(hung: no thread could run Python\); uptime ",
            described,
        ), described
        assert "killed by the host" not in described, described
        await waiter.wait_for("isoplug.host", "did not answer a health check within")
        with pytest.raises(ConnectionBroken, match="crashed during 'hold_gil'") as broken:
            await call
        # Who killed it is said once: "from the host: <why>", not "... from the host: killed
        # by the host: <why>".
        assert re.search(
            r"its runner \(pid \d+\) was killed by SIGKILL from the host: no answer to a health "
            rf"check within {within} \(hung: no thread could run Python\)$",
            str(broken.value),
        ), str(broken.value)


@pytest.mark.parametrize("method", ["sleep_on_loop", "spin_on_loop"])
async def test_a_loop_blocked_while_python_can_run_is_hung_and_says_where(
    tmp_path: Path, method: str
) -> None:
    """The loop blocked for good, in time.sleep or in a busy loop: killed about
    health_timeout later, the account naming the plugin's line; no grace, since the GIL was
    free (a busy loop hands it over every 5 ms)."""
    async with running(tmp_path) as (host, waiter):
        call = asyncio.ensure_future(host.call("laggard", method, 60))
        info = await host.wait_for("laggard", restarted, timeout=20)
        assert info.last_exit is not None and info.last_exit.signal_name == "SIGKILL"
        assert re.fullmatch(
            # On a loaded machine, the account also says how much of it was CPU wait.
            r"killed by the host: its event loop did not run for \d+\.\d s"
            r"(, \d+\.\d s of it waiting for a CPU)? \(hung, in "
            rf"\S+laggard_plugin\.py:\d+ in {method}\)",
            info.last_exit.reason,
        ), info.last_exit.reason
        record = await waiter.wait_for("isoplug.host", "is hung: its event loop has not run")
        assert re.search(
            r"of it while Python could run \(health_timeout 1 s\)"
            r"(, \d+\.\d s of it waiting for a CPU)?, in \S+laggard_plugin\.py:\d+ "
            rf"in {method}; killing it$",
            record.getMessage(),
        ), record.getMessage()
        with pytest.raises(ConnectionBroken, match=f"crashed during '{method}'") as broken:
            await call
        assert "from the host: its event loop did not run for " in str(broken.value)
        described = info.last_exit.describe()
        assert "was killed by SIGKILL from the host: its event loop did not run for " in (
            described
        ), described
        assert "killed by the host" not in described, described
        assert "killed by the host" not in str(broken.value)


@pytest.mark.skipif(not Path("/proc/thread-self/schedstat").exists(), reason="no schedstat")
@pytest.mark.parametrize("method", ["spin_on_loop_on_cpu", "hold_gil_on_cpu"])
async def test_a_runner_starved_of_cpu_is_not_taken_for_a_hung_one(
    tmp_path: Path, method: str
) -> None:
    """50 ms of work on the loop's thread (Python, or C holding the GIL with the whole
    runner starved) on a CPU another process keeps busy takes seconds by the clock, past
    health_timeout + health_grace (1.5 s): the time spent waiting for a CPU is not held
    against the runner, which is not killed, and the call returns."""
    async with running(tmp_path, STARVED_CONFIG) as (host, _):
        first = host.plugin("laggard").pid
        with busy_cpu() as cpu:
            took = await host.call_with(
                "laggard", method, kwargs={"cpu": cpu, "cpu_seconds": 0.05}, timeout=120
            )
        # Starved for real: by the clock alone, it would have been hung.
        assert took > STARVED_CONFIG.health_timeout + STARVED_CONFIG.health_grace, took
        info = host.plugin("laggard")
        assert info.pid == first and info.restarts == 0 and info.state is PluginState.READY


async def test_an_async_call_timed_out_while_the_loop_is_blocked_says_when_it_is_cancelled(
    tmp_path: Path,
) -> None:
    """The method blocks the loop 0.5 s past its timeout: either its end (its result) reaches
    the host within the second it waits for the runner's word, or the error says the loop is
    blocked and where. Never that it was cancelled: it was not."""
    async with running(tmp_path) as (host, _):
        with pytest.raises(RequestTimeout) as caught:
            await host.call_with("laggard", "sleep_on_loop", kwargs={"seconds": 0.8}, timeout=0.3)
        assert re.fullmatch(
            r"plugin 'laggard' did not answer 'sleep_on_loop': the call timed out after 0\.3 s; "
            r"(the method ended just after the timeout; its outcome was dropped|a cancel was "
            r"sent; the method had not ended when the timeout was raised: the runner's event "
            r"loop has been blocked for \d\.\d s, in \S+laggard_plugin\.py:\d+ in "
            r"sleep_on_loop, and the cancel takes effect only once it runs again)",
            str(caught.value),
        ), str(caught.value)
        assert await host.call("laggard", "pid") == host.plugin("laggard").pid


@contextlib.contextmanager
def host_slow_to_read(logger: str) -> Iterator[None]:
    """A host busy replaying: its handler of ``logger`` spins on the GIL (1 ms a record), and
    hands it over every 50 ms only. The host's stdio reader waits for the GIL after each read,
    so it reads a runner's pipes slowly (and the tests' floods stay small)."""

    class Busy(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            end = time.perf_counter() + 0.001
            while time.perf_counter() < end:
                pass

    handler = Busy()
    logging.getLogger(logger).addHandler(handler)
    interval = sys.getswitchinterval()
    sys.setswitchinterval(0.05)
    try:
        yield
    finally:
        sys.setswitchinterval(interval)
        logging.getLogger(logger).removeHandler(handler)


@pytest.mark.slow
@pytest.mark.skipif(syscall_numbers() is None, reason="no write syscall numbers for this CPU")
async def test_a_loop_waiting_for_the_host_to_read_its_output_is_not_hung(
    tmp_path: Path,
) -> None:
    """Lines written to fd 1 from the event loop for 2.5 s, faster than the host reads: the
    loop waits in its writes past health_timeout (1 s) while Python could run. The host's
    slowness is not the plugin's: it is not killed, the call returns, a warning says why."""
    with host_slow_to_read("plugin.laggard.stdout"):
        async with running(tmp_path) as (host, waiter):
            first = host.plugin("laggard").pid
            written = await host.call_with(
                "laggard", "write_on_loop", kwargs={"seconds": 2.5}, timeout=120
            )
            assert written > 0
            record = await waiter.wait_for("isoplug.host", "for the host to read its stdout")
            assert re.fullmatch(
                r"runner laggard \(pid \d+\): its event loop has waited \d+\.\d s for the host "
                r"to read its stdout or stderr \(a plugin writing to file descriptor 1 or 2 "
                r"faster than the host's log handlers take it\); not counted as hung",
                record.getMessage(),
            ), record.getMessage()
            info = host.plugin("laggard")
            assert info.pid == first and info.restarts == 0 and info.state is PluginState.READY


@pytest.mark.slow
@pytest.mark.skipif(syscall_numbers() is None, reason="no write syscall numbers for this CPU")
async def test_a_loop_that_blocks_for_good_after_waiting_for_the_host_is_hung(
    tmp_path: Path,
) -> None:
    """Only the writes are excused: a loop that then waits on an event nobody sets is hung,
    health_timeout after its last write."""
    with host_slow_to_read("plugin.laggard.stdout"):
        async with running(tmp_path) as (host, _):
            call = asyncio.ensure_future(
                host.call_with(
                    "laggard", "write_on_loop", kwargs={"seconds": 1.5, "then_block": True}
                )
            )
            info = await host.wait_for("laggard", restarted, timeout=60)
            assert info.last_exit is not None and info.last_exit.signal_name == "SIGKILL"
            assert re.search(
                r"\(hung, in \S+laggard_plugin\.py:\d+ in write_on_loop\)$",
                info.last_exit.reason,
            ), info.last_exit.reason
            with pytest.raises(ConnectionBroken):
                await call
