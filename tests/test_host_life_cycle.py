"""The host's own life cycle with real runners: started once, closed for good, and what each
operation says before the start and after the close; what a caller reads right after its call
lost the runner; a recycle for stuck threads is no crash."""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import logging
import re
import time
import warnings
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from isoplug import Host, PluginState, StateChange
from isoplug.errors import ConnectionBroken, RequestTimeout, TransportError
from isoplug.host import PluginInfo, PluginUnavailable, Unavailability
from isoplug.host.logbridge import LogBridge
from isoplug.testing import watching
from tests.open_resources import socket_dirs
from tests.plugins_fixtures import FAST, copy_plugins, plugins_dir, process_alive, running

NOT_STARTED = "the host has not been started"
CLOSED = "the host is closed"


async def test_a_second_start_raises_and_leaves_the_first_runner_in_charge(tmp_path: Path) -> None:
    host = Host(plugins_dir(tmp_path, "echo"), config=FAST)
    await host.start()
    try:
        await host.wait_ready(20)
        first = host.plugin("echo").pid
        assert first is not None
        with pytest.raises(RuntimeError, match=r"^Host\.start\(\): the host is running already"):
            await host.start()
        with pytest.raises(RuntimeError, match="is running already"):
            async with host:
                pass
        # Nothing else was started: the one runner serves, and it is the host's.
        assert host.plugin("echo").pid == first
        assert await host.call("echo", "pid") == first
    finally:
        await host.aclose()
    assert not process_alive(first)
    with pytest.raises(RuntimeError, match=r"^Host\.start\(\): the host is closed"):
        await host.start()


async def test_before_start_every_operation_says_the_host_has_not_been_started(
    tmp_path: Path,
) -> None:
    host = Host(plugins_dir(tmp_path, "echo"), config=FAST)
    assert host.plugins() == []
    operations: dict[str, Callable[[], Awaitable[object]]] = {
        "call": lambda: host.call("echo", "echo", 1),
        "call_with": lambda: host.call_with("echo", "echo", args=[1]),
        "wait_ready": lambda: host.wait_ready(timeout=5),
        "wait_for": lambda: host.wait_for("echo", lambda i: True, timeout=5),
        "restart": lambda: host.restart("echo"),
        "stop": lambda: host.stop("echo"),
        "set_log_level": lambda: host.set_log_level("echo", "DEBUG"),
        "set_config": lambda: host.set_config("echo", {}),
        "publish": lambda: host.publish("tick"),
    }
    for name, operation in operations.items():
        with pytest.raises(PluginUnavailable, match=NOT_STARTED) as caught:
            await operation()
        assert "plugins: none" not in str(caught.value), name
        assert caught.value.reason is Unavailability.HOST_NOT_RUNNING, name
    with pytest.raises(PluginUnavailable, match=NOT_STARTED):
        host.plugin("echo")
    await host.aclose()  # before a start: closes it for good, starts nothing
    with pytest.raises(PluginUnavailable, match=r"no plugin 'echo' \(plugins: none\); " + CLOSED):
        host.plugin("echo")
    with pytest.raises(RuntimeError, match="the host is closed"):
        await host.start()


async def test_after_close_operations_say_the_host_is_closed_and_start_nothing(
    tmp_path: Path,
) -> None:
    async with running(tmp_path, "echo") as (host, _):
        pid = host.plugin("echo").pid
    assert pid is not None and not process_alive(pid)
    closed: dict[str, Callable[[], Awaitable[object]]] = {
        "call": lambda: host.call("echo", "echo", 1),
        "call_with": lambda: host.call_with("echo", "echo", args=[1]),
        "restart": lambda: host.restart("echo"),
        "set_log_level": lambda: host.set_log_level("echo", "DEBUG"),
        "set_config": lambda: host.set_config("echo", {}),
        "publish": lambda: host.publish("tick"),
        "wait_for": lambda: host.wait_for("echo", lambda i: i.state is PluginState.READY),
    }
    for name, operation in closed.items():
        with pytest.raises(PluginUnavailable, match=CLOSED):
            await asyncio.wait_for(operation(), 5)  # at once: no retries, no crash loop
        info = host.plugin("echo")
        assert info.state is PluginState.STOPPED and info.pid is None, (name, info)
    # What is true already is returned: it stopped. Stopped by the close, it is not ready.
    assert (await host.stop("echo")).state is PluginState.STOPPED
    with pytest.raises(PluginUnavailable, match=f"wait for plugins to be ready: {CLOSED}"):
        await host.wait_ready(5)
    assert (await host.wait_for("echo", lambda i: i.state is PluginState.STOPPED)).restarts == 0
    await host.aclose()  # still idempotent


async def test_a_wait_for_a_state_that_cannot_come_ends_once_the_host_is_closed(
    tmp_path: Path,
) -> None:
    async with running(tmp_path, "echo") as (host, _):
        waiting = asyncio.ensure_future(
            host.wait_for("echo", lambda i: i.restarts == 5, timeout=None)
        )
        stopping = asyncio.ensure_future(
            host.wait_for("echo", lambda i: i.state is PluginState.STOPPED, timeout=None)
        )
        await asyncio.sleep(0)  # they wait now
        assert not waiting.done() and not stopping.done()
    # A state the close reaches is waited for; one it does not, raises once it is over.
    assert (await asyncio.wait_for(stopping, 5)).state is PluginState.STOPPED
    with pytest.raises(PluginUnavailable, match=rf"wait for plugin 'echo' \(stopped\): {CLOSED}"):
        await asyncio.wait_for(waiting, 5)


async def test_a_start_that_fails_leaves_a_closed_host(tmp_path: Path) -> None:
    host = Host(tmp_path / "missing", config=FAST)
    with pytest.raises(FileNotFoundError):
        await host.start()
    with pytest.raises(RuntimeError, match="the host is closed"):
        await host.start()


async def test_a_start_whose_log_listener_fails_closes_the_control_listener(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The log bridge cannot listen (as when the process is out of descriptors) after the
    runners' control listener opened: start() fails, and that listener's socket is closed,
    its file removed, not left to the collector (a ResourceWarning for an unclosed socket at
    the host's shutdown)."""

    def cannot_listen(*_args: object, **_settings: object) -> None:
        raise TransportError("cannot listen on unix:: [Errno 24] Too many open files")

    monkeypatch.setattr(LogBridge, "open", cannot_listen)
    host = Host(plugins_dir(tmp_path, "echo"), config=FAST)
    before = socket_dirs()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        with pytest.raises(TransportError, match="Too many open files") as failed:
            await host.start()
        # The listener's socket file and private directory: gone once it is closed (while
        # the socket is open, this loop keeps it from the collector, which would warn).
        assert socket_dirs() == before
        del host, failed
        gc.collect()
    unclosed = [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]
    assert not unclosed, unclosed


async def test_wait_for_times_out_naming_the_plugin_its_state_and_the_wait(
    tmp_path: Path,
) -> None:
    async with running(tmp_path, "echo") as (host, _):
        with pytest.raises(TimeoutError) as caught:
            await host.wait_for("echo", lambda i: i.restarts == 1, timeout=0.2)
        pid = host.plugin("echo").pid
    assert str(caught.value) == (
        "plugin 'echo' did not reach the state waited for within 0.2 s: "
        f"ready (restarts 0, pid {pid})"
    )


async def test_right_after_a_call_lost_its_runner_the_plugin_is_no_longer_ready(
    tmp_path: Path,
) -> None:
    async with running(tmp_path, "echo") as (host, _):
        pid = host.plugin("echo").pid
        with pytest.raises(ConnectionBroken, match="crashed during 'crash'"):
            await host.call("echo", "crash", 3)
        info = host.plugin("echo")
        assert info.state is not PluginState.READY, info
        assert info.last_exit is not None and info.last_exit.pid == pid
        assert info.last_exit.exit_code == 3
        # So a wait for the plugin to be ready waits for the new runner.
        ready = await host.wait_for("echo", lambda i: i.state is PluginState.READY, timeout=20)
        assert ready.pid not in (None, pid) and ready.restarts == 1


#: Health checks often; two stuck threads at most; runners at the host's priority (the calls'
#: short timeouts are wall-clock ones, as in test_host_health).
STUCK_CONFIG = dataclasses.replace(
    FAST, health_interval=0.1, health_timeout=1.0, max_stuck_threads=2, runner_nice=0
)


async def test_a_recycle_for_stuck_threads_is_not_a_crash_and_calls_in_flight_are_told(
    tmp_path: Path,
) -> None:
    """Restart policy 'never': a crash would fail the plugin; a recycle starts it again at
    once. A call in flight hears that the runner was recycled, not that it crashed."""
    directory = copy_plugins(tmp_path, "laggard")
    toml = directory / "laggard" / "plugin.toml"
    toml.write_text(toml.read_text().replace("[restart]\n", '[restart]\npolicy = "never"\n'))
    changes: list[str] = []
    async with Host(
        directory, config=STUCK_CONFIG, on_change=lambda c: changes.append(c.message)
    ) as host:
        await host.wait_ready(20)
        first = host.plugin("laggard").pid
        in_flight = asyncio.ensure_future(
            host.call_with("laggard", "await_sleep", kwargs={"seconds": 60}, timeout=None)
        )
        for _ in range(3):
            with pytest.raises(RequestTimeout):
                await host.call_with(
                    "laggard", "sleep_in_thread", kwargs={"seconds": 60}, timeout=0.3
                )
        with pytest.raises(PluginUnavailable) as caught:
            await asyncio.wait_for(in_flight, 20)
        assert caught.value.reason is Unavailability.RECYCLED and caught.value.reason.transient
        assert str(caught.value).startswith(
            "plugin 'laggard' was recycled during 'await_sleep' (recycled by the host: 3 worker "
            "threads still run calls that timed out or were cancelled (max_stuck_threads 2): "
        ), str(caught.value)

        def recycled(info: PluginInfo) -> bool:
            return info.restarts == 1 and info.state in (PluginState.READY, PluginState.FAILED)

        info = await host.wait_for("laggard", recycled, timeout=20)
        assert info.state is PluginState.READY and info.pid != first, info
        assert info.last_exit is not None and "recycled by the host" in info.last_exit.reason
        assert not [m for m in changes if m.startswith("crashed")], changes
        assert [m for m in changes if m.startswith("restarting: ")], changes
        assert await host.call("laggard", "sleep_in_thread", 0) == "slept"


async def test_a_runner_stopped_in_its_plugins_async_setup_cancels_it_and_exits(
    tmp_path: Path,
) -> None:
    """A stop that comes while a plugin's setup awaits (here a capability call that never
    returns) cancels the setup: the runner exits on its own at once, its account clean,
    rather than be signalled at the shutdown deadline (FAST's 3 s)."""
    entered = asyncio.Event()

    async def wait() -> None:
        entered.set()
        await asyncio.Event().wait()

    async with Host(plugins_dir(tmp_path, "gated"), config=FAST) as host:
        host.register_capability("gate.wait", wait)
        await asyncio.wait_for(entered.wait(), 30)
        assert host.plugin("gated").state is PluginState.STARTING
        stopped = await host.stop("gated")
    assert stopped.state is PluginState.STOPPED
    assert stopped.last_exit is not None
    assert stopped.last_exit.returncode == 0, stopped.last_exit
    assert stopped.last_exit.sent_by_host is None, stopped.last_exit


async def test_stop_returns_once_the_runners_records_are_replayed(tmp_path: Path) -> None:
    """The records a runner sent before it stopped are replayed, into a handler far slower
    than the runner (1 ms a record), by the time stop() returns, and the metrics say so."""
    seen: list[str] = []

    class SlowHandler(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.getMessage().startswith("record "):
                seen.append(record.getMessage())
                time.sleep(0.001)  # a slow host handler, not a wait of the test's

    handler = SlowHandler()
    logger = logging.getLogger("plugin.chronicler.chronicler")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        async with Host(plugins_dir(tmp_path, "chronicler"), config=FAST) as host:
            await host.wait_ready(30)
            await host.call("chronicler", "log_numbered", count=500)
            await host.stop("chronicler")
            assert len(seen) == 500
            assert host.log_metrics("chronicler").replayed >= 500
    finally:
        logger.removeHandler(handler)
        logger.setLevel(logging.NOTSET)


@pytest.mark.parametrize(
    ("first", "then", "final"),
    [("stop", "restart", PluginState.READY), ("restart", "stop", PluginState.STOPPED)],
)
async def test_a_stop_and_a_restart_asked_together_both_return_the_latest_wins(
    tmp_path: Path, first: str, then: str, final: PluginState
) -> None:
    """A stop and a restart of one plugin asked before either took effect: both return, and
    the plugin ends as the one asked last says (a stop asked last leaves it stopped; a
    restart asked last, ready). Each returns the plugin as it is when the call returns (a
    stop that a restart overrode: not stopped; docs/host.md says so)."""
    async with running(tmp_path, "echo") as (host, _):
        asked = [asyncio.ensure_future(getattr(host, name)("echo")) for name in (first, then)]
        returned = await asyncio.wait_for(asyncio.gather(*asked), 30)
        assert host.plugin("echo").state is final
        assert returned[1].state is final
        if then == "restart":
            assert returned[0].state is not PluginState.STOPPED
        if final is PluginState.READY:
            assert await host.call("echo", "echo", value="back") == "back"


async def test_every_change_told_to_on_change_names_a_plugin(tmp_path: Path) -> None:
    """A plugin that cannot be loaded is told FAILED with why, then again with its runner's
    end (it loaded nothing): each change names it."""
    changes: list[StateChange] = []
    with watching("isoplug.host") as said:
        async with Host(
            plugins_dir(tmp_path, "import_raises", "echo"), config=FAST, on_change=changes.append
        ) as host:
            await host.wait_ready(30, raise_on_failure=False)
            await said.wait_for_record(text="none of its plugins can be loaded")
    assert changes and all(change.plugin_ids for change in changes)
    failed = [
        c for c in changes if c.plugin_ids == ("import_raises",) and c.state.value == "failed"
    ]
    assert [("cannot be loaded" in c.message, "exited" in c.message) for c in failed] == [
        (True, False),
        (False, True),
    ]


BLOCKING_SETUP = """\
import time

import isoplug


class P(isoplug.Plugin):
    async def setup(self, ctx: isoplug.PluginContext) -> None:
        time.sleep(60)  # blocks the event loop
"""


async def test_a_runner_not_ready_in_time_is_said_to_wait_in_its_setup_at_a_line(
    tmp_path: Path,
) -> None:
    """A setup() that awaits what never comes: the kill's account names the plugin and the
    line of its setup it waits at, as a hung call's names its line. One that blocks the event
    loop cannot say; the account says that."""
    folder = plugins_dir(tmp_path, "gated")
    blocking = folder / "blocking"
    blocking.mkdir()
    (blocking / "plugin.toml").write_text(
        'id = "blocking"\nversion = "1"\nentry = "blocking_plugin:P"\n'
    )
    (blocking / "blocking_plugin.py").write_text(BLOCKING_SETUP)
    config = dataclasses.replace(FAST, ready_timeout=2.0)

    async def never() -> None:
        await asyncio.Event().wait()

    async with Host(folder, config=config) as host:
        host.register_capability("gate.wait", never)
        gated = await host.wait_for("gated", lambda info: info.last_exit is not None, 30)
        blocked = await host.wait_for("blocking", lambda info: info.last_exit is not None, 30)
    assert gated.last_exit is not None and blocked.last_exit is not None
    assert re.search(
        r"not ready within 2 s \(plugin 'gated': setup\(\) waits at \S+gated_plugin\.py:10 in "
        r"setup\)",
        gated.last_exit.describe(),
    ), gated.last_exit.describe()
    assert (
        "not ready within 2 s (its event loop did not say which setup() runs: blocked in a "
        "call?)" in blocked.last_exit.describe()
    ), blocked.last_exit.describe()


STALLED_SETUP = """\
import asyncio

import isoplug


class P(isoplug.Plugin):
    async def setup(self, ctx: isoplug.PluginContext) -> None:
        await asyncio.Event().wait()  # a connection that never answers
"""


async def test_wait_ready_timing_out_says_where_a_starting_setup_waits(tmp_path: Path) -> None:
    """It said only "plugins not ready within 0.1 s: gated starting (restarts 0, pid …)",
    though the host can ask a starting runner where its setup() waits."""
    setting_up = asyncio.Event()

    async def never() -> None:
        setting_up.set()
        await asyncio.Event().wait()

    async with Host(plugins_dir(tmp_path, "gated"), config=FAST) as host:
        host.register_capability("gate.wait", never)
        await setting_up.wait()
        with pytest.raises(TimeoutError) as raised:
            await host.wait_ready(0.1)
    assert re.fullmatch(
        r"plugins not ready within 0\.1 s: gated starting \(restarts 0, pid \d+\): plugin "
        r"'gated': setup\(\) waits at \S+gated_plugin\.py:10 in setup",
        str(raised.value),
    ), raised.value


async def test_wait_ready_timing_out_quotes_where_setup_waited_in_the_runner_killed(
    tmp_path: Path,
) -> None:
    """Once a runner was killed for not being ready, the host had logged the line its setup()
    waited at, but a wait_ready() timing out while the plugin restarts did not say it."""
    folder = tmp_path / "plugins"
    stalled = folder / "stalled"
    stalled.mkdir(parents=True)
    # A restart an hour away: the plugin stays RESTARTING, with no runner to ask.
    (stalled / "plugin.toml").write_text(
        'id = "stalled"\nversion = "1"\nentry = "stalled_plugin:P"\n'
        "[restart]\nbackoff_initial = 3600\nbackoff_max = 3600\n"
    )
    (stalled / "stalled_plugin.py").write_text(STALLED_SETUP)
    async with Host(folder, config=dataclasses.replace(FAST, ready_timeout=1.0)) as host:
        await host.wait_for("stalled", lambda info: info.state is PluginState.RESTARTING, 30)
        with pytest.raises(TimeoutError) as raised:
            await host.wait_ready(0.1)
    assert re.fullmatch(
        r"plugins not ready within 0\.1 s: stalled restarting \(restarts 0\): when its last "
        r"runner was killed: plugin 'stalled': setup\(\) waits at \S+stalled_plugin\.py:8 in "
        r"setup",
        str(raised.value),
    ), raised.value
