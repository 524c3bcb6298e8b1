"""The host and real runner processes: calls, crashes, hangs, bad plugins, stdio, shutdown."""

from __future__ import annotations

import asyncio
import enum
import logging
import re
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import pytest

from isoplug import Host, PluginState, PluginUnavailable, SupervisorConfig, Unavailability
from isoplug.control import CONTROL_ROLE, EXIT_NOTHING_LOADED, LOGS_ROLE
from isoplug.errors import (
    AuthenticationFailed,
    CapabilityFailed,
    ConnectionBroken,
    InvalidParams,
    MethodNotFound,
    RemoteError,
)
from isoplug.host import PluginInfo
from isoplug.host.capabilities import CapabilityRegistry
from isoplug.host.stdio_lines import MAX_LINE_BYTES
from isoplug.rpc import Peer
from isoplug.rpc.remote_errors import error_info
from tests import plugins_fixtures
from tests.plugins_fixtures import (
    FAST,
    QUICK_DRAIN,
    assert_printed_traceback,
    plugins_dir,
    process_alive,
)
from tests.record_waiter import RecordWaiter, watching


def running(
    tmp_path: Path,
    *names: str,
    config: SupervisorConfig = FAST,
    raise_on_failure: bool = True,
) -> AbstractAsyncContextManager[tuple[Host, RecordWaiter]]:
    """A started host over the fixture plugins ``names``, and a waiter on the root logger: these
    tests read the host's own records (``isoplug.host``) too."""
    return plugins_fixtures.running(
        tmp_path, *names, config=config, logger=None, raise_on_failure=raise_on_failure
    )


def restarted_and_ready(times: int = 1) -> Any:
    def check(info: PluginInfo) -> bool:
        return info.state is PluginState.READY and info.restarts >= times

    return check


async def test_calls_reach_the_plugin_and_sync_methods_run_in_a_worker_thread(
    tmp_path: Path,
) -> None:
    """A host calls async and sync plugin methods with keyword arguments."""
    async with running(tmp_path, "echo") as (host, _):
        assert await host.call("echo", "echo", value={"a": [1, 2]}) == {"a": [1, 2]}
        assert await host.call("echo", "add", a=2, b=3) == 5
        assert await host.call("echo", "thread_is_main") is False
        info = host.plugin("echo")
        assert info.state is PluginState.READY
        assert info.pid == await host.call("echo", "pid")
        assert "add" in info.methods and "note" in info.events


async def test_unknown_method_names_the_plugin_and_lists_its_methods(tmp_path: Path) -> None:
    """Calling a method that does not exist raises MethodNotFound listing the real ones."""
    async with running(tmp_path, "echo") as (host, _):
        with pytest.raises(
            MethodNotFound,
            match=r"plugin 'echo' has no method 'nope'; "
            r"available methods: add, call_host",
        ):
            await host.call("echo", "nope")
        # Defined by its class, not marked: what is missing is said.
        with pytest.raises(
            MethodNotFound,
            match=r"plugin 'echo' has no method 'on_note' \(its class defines it, but without "
            r"@isoplug.method: only marked methods can be called\); available methods: add",
        ):
            await host.call("echo", "on_note")
        with pytest.raises(PluginUnavailable, match=r"no plugin 'ghost' \(plugins: echo\)") as no:
            await host.call("ghost", "echo")
        assert (no.value.reason, no.value.plugin_id) == (Unavailability.UNKNOWN, "ghost")


async def test_arguments_that_do_not_fit_the_signature_give_invalid_params(
    tmp_path: Path,
) -> None:
    """Missing or unexpected keyword arguments raise InvalidParams quoting the signature."""
    async with running(tmp_path, "echo") as (host, _):
        with pytest.raises(
            InvalidParams,
            match=r"echo\.add\(a: 'int', b: 'int'\).*missing a "
            r"required argument: 'b'",
        ):
            await host.call("echo", "add", a=1)
        with pytest.raises(InvalidParams, match="unexpected keyword argument 'c'"):
            await host.call("echo", "add", a=1, b=2, c=3)
        assert await host.call("echo", "add", a=1, b=2) == 3


async def test_an_exception_in_a_method_arrives_with_its_traceback(tmp_path: Path) -> None:
    """A method that raises gives RemoteError with the remote type, message and traceback."""
    async with running(tmp_path, "echo") as (host, _):
        with pytest.raises(RemoteError) as caught:
            await host.call("echo", "fail", message="bad input")
        assert caught.value.remote_type == "builtins.ValueError"
        assert caught.value.remote_message == "bad input"
        # From the plugin's frame on: the runner's frames that called it are not its story.
        first_frame = caught.value.remote_traceback.splitlines()[1]
        assert first_frame.strip().startswith('File "') and "echo_plugin.py" in first_frame
        assert host.plugin("echo").state is PluginState.READY


@pytest.mark.parametrize("code", [7, EXIT_NOTHING_LOADED])
async def test_a_crash_during_a_call_fails_the_call_clearly_and_the_runner_restarts(
    tmp_path: Path, code: int
) -> None:
    """os._exit in a method: the caller gets ConnectionBroken saying how; the plugin comes back.
    So with the code a runner that loaded nothing exits with: the plugin had loaded."""
    async with running(tmp_path, "echo") as (host, waiter):
        first_pid = host.plugin("echo").pid
        with pytest.raises(
            ConnectionBroken,
            match=r"plugin 'echo' crashed during 'crash': its "
            rf"runner \(pid \d+\) exited with code {code}",
        ):
            await host.call("echo", "crash", code=code)
        info = await host.wait_for("echo", restarted_and_ready(), timeout=20)
        assert info.pid != first_pid
        assert info.last_exit is not None and info.last_exit.exit_code == code
        assert f"exited with code {code}" in info.last_exit.describe()
        assert "no plugin could be loaded" not in info.last_exit.describe()
        assert await host.call("echo", "echo", value="back") == "back"
        await waiter.wait_for("plugin.echo.stderr", "echo: crashing now")


async def test_a_segfault_is_accounted_with_a_hint_and_the_faulthandler_stack(
    tmp_path: Path,
) -> None:
    """A crash in native code: SIGSEGV with its hint, and the fatal-error stack on stderr."""
    async with running(tmp_path, "echo") as (host, waiter):
        with pytest.raises(ConnectionBroken, match="was killed by SIGSEGV"):
            await host.call("echo", "segfault")
        info = await host.wait_for("echo", restarted_and_ready(), timeout=20)
        assert info.last_exit is not None and info.last_exit.signal_name == "SIGSEGV"
        assert "segmentation fault: a crash in native code" in info.last_exit.describe()
        await waiter.wait_for("plugin.echo.stderr", "Fatal Python error: Segmentation fault")


async def test_a_hung_runner_is_detected_by_the_health_check_and_restarted(
    tmp_path: Path,
) -> None:
    """A plugin blocking its event loop is killed once the loop has not run for the health
    timeout, then restarted."""
    async with running(tmp_path, "echo") as (host, waiter):
        with pytest.raises(ConnectionBroken, match="crashed during 'hang'"):
            await host.call_with("echo", "hang", timeout=None)
        info = await host.wait_for("echo", restarted_and_ready(), timeout=20)
        assert info.last_exit is not None
        assert info.last_exit.signal_name == "SIGKILL"
        assert "its event loop did not run for 1." in info.last_exit.reason
        assert "echo_plugin.py" in info.last_exit.reason  # where it was blocked
        # The host killed it: no misleading out-of-memory hint.
        assert "out-of-memory" not in info.last_exit.describe()
        await waiter.wait_for("isoplug.host", "is hung: its event loop has not run for")


async def test_a_crash_in_setup_is_retried_then_a_crash_loop_marks_the_plugin_failed(
    tmp_path: Path,
) -> None:
    """setup() raising restarts the runner with backoff until the limit; others are unaffected."""
    async with running(tmp_path, "setup_crash", "echo", raise_on_failure=False) as (host, _):
        info = await host.wait_for(
            "setup_crash", lambda i: i.state is PluginState.FAILED, timeout=20
        )
        assert info.restarts == 2  # max_restarts = 2 in its manifest
        assert info.error is not None
        assert "crash loop: 3 crashes within 60 s (limit 2)" in info.error
        assert "setup() raised RuntimeError: database unreachable" in info.error
        assert "Traceback (most recent call last)" in info.error
        assert info.last_exit is not None and info.last_exit.exit_code == 3
        with pytest.raises(PluginUnavailable, match="the plugin is failed") as failed:
            await host.call("setup_crash", "anything")
        assert failed.value.reason is Unavailability.FAILED
        assert not failed.value.reason.transient
        assert await host.call("echo", "echo", value=1) == 1


async def test_bad_plugins_are_reported_and_skipped_while_the_others_run(tmp_path: Path) -> None:
    """Unknown manifest field, missing module, import error: clear reasons, no retries."""
    async with running(
        tmp_path,
        "unknown_field",
        "missing_module",
        "import_raises",
        "echo",
        raise_on_failure=False,
    ) as (host, _):
        assert len(host.problems) == 1
        assert "unknown_field/plugin.toml: unknown field 'captabilities'" in host.problems[0]
        assert [i.id for i in host.plugins()] == ["echo", "import_raises", "missing_module"]
        missing = host.plugin("missing_module")
        assert missing.state is PluginState.FAILED and missing.restarts == 0
        assert missing.error is not None
        assert "entry module 'not_there' not found in" in missing.error
        assert "looked for not_there.py and not_there/__init__.py" in missing.error
        broken = host.plugin("import_raises")
        assert broken.state is PluginState.FAILED and broken.restarts == 0
        assert broken.error is not None
        assert "raised ImportError: this plugin needs libfoo 2.0" in broken.error
        assert 'import_raises_plugin.py", line 1' in broken.error
        assert await host.call("echo", "add", a=1, b=1) == 2
        # A call to the skipped one says why there is none.
        with pytest.raises(PluginUnavailable, match=r"no plugin 'unknown_field' \(plugins: ") as no:
            await host.call("unknown_field", "anything")
        assert "; skipped: " in str(no.value) and "'captabilities'" in str(no.value)


async def test_graceful_stop_runs_teardown_and_exits_zero(tmp_path: Path) -> None:
    """host.stop() asks the runner to shut down: teardown runs, exit code 0, state stopped."""
    async with running(tmp_path, "echo") as (host, waiter):
        info = await host.stop("echo")
        assert info.state is PluginState.STOPPED and info.pid is None
        assert info.last_exit is not None and info.last_exit.exit_code == 0
        assert info.last_exit.reason == "stopped on request"
        assert waiter.matching("plugin.echo.stdout", "echo: teardown ran")
        with pytest.raises(PluginUnavailable, match="the plugin is stopped") as stopped:
            await host.call("echo", "echo", value=1)
        assert (stopped.value.reason, stopped.value.plugin_id) == (Unavailability.STOPPED, "echo")
        info = await host.restart("echo")
        assert info.state is PluginState.READY
        assert await host.call("echo", "echo", value=2) == 2


async def test_restart_replaces_the_runner(tmp_path: Path) -> None:
    """host.restart() stops the runner gracefully and starts a new one."""
    async with running(tmp_path, "echo") as (host, _):
        before = host.plugin("echo")
        after = await host.restart("echo")
        assert after.state is PluginState.READY and after.restarts == before.restarts + 1
        assert after.pid != before.pid
        assert after.last_exit is not None and after.last_exit.reason == "restarted on request"


async def test_a_runner_that_ignores_shutdown_and_sigterm_is_killed(tmp_path: Path) -> None:
    """Shutdown request, then SIGTERM, then SIGKILL: stopping always finishes."""
    config = SupervisorConfig(shutdown_timeout=0.5, teardown_timeout=0.2, terminate_timeout=0.5)
    async with running(tmp_path, "stubborn", config=config) as (host, waiter):
        info = await host.stop("stubborn")
        assert info.state is PluginState.STOPPED
        assert info.last_exit is not None and info.last_exit.signal_name == "SIGKILL"
        assert waiter.matching("isoplug.host", "of the shutdown request; sending SIGTERM")
        # The time printed is the time measured: 0.5 s and the loop's latency.
        assert any(
            re.search(r"ignored SIGTERM for 0\.[5-9] s; sending SIGKILL", message)
            for message in waiter.messages()
        )


async def test_stdout_and_stderr_lines_are_attributed_to_the_plugin(tmp_path: Path) -> None:
    """print() lands on plugin.<id>.stdout at INFO, stderr on plugin.<id>.stderr at WARNING."""
    async with running(tmp_path, "echo") as (host, waiter):
        pid = host.plugin("echo").pid
        await host.call("echo", "say", out=["to stdout"], err=["to stderr"])
        out = await waiter.wait_for("plugin.echo.stdout", "to stdout")
        err = await waiter.wait_for("plugin.echo.stderr", "to stderr")
    assert out.levelno == logging.INFO and err.levelno == logging.WARNING
    assert out.getMessage() == "to stdout"
    for record in (out, err):
        assert record.__dict__["plugin_id"] == "echo"
        assert record.__dict__["runner_pid"] == pid


async def test_a_traceback_on_stderr_arrives_as_one_error_record(tmp_path: Path) -> None:
    """The lines of a printed traceback are kept together, from 'Traceback' to the exception."""
    async with running(tmp_path, "echo") as (host, waiter):
        await host.call("echo", "traceback_on_stderr")
        after = await waiter.wait_for("plugin.echo.stderr", "after the traceback")
    tracebacks = waiter.matching("plugin.echo.stderr", "KeyError")
    assert len(tracebacks) == 1
    assert tracebacks[0].levelno == logging.ERROR
    assert_printed_traceback(tracebacks[0], "KeyError", "'missing'")
    assert tracebacks[0].exc_info is not None
    assert "echo_plugin.py" in logging.Formatter().formatException(tracebacks[0].exc_info)
    assert after.levelno == logging.WARNING


async def test_binary_garbage_and_huge_lines_on_stdout_are_delivered_safely(
    tmp_path: Path,
) -> None:
    """Invalid UTF-8 is replaced, an over-long line is cut and marked, the last partial line
    arrives at exit, and the plugin keeps working."""
    async with running(tmp_path, "echo") as (host, waiter):
        garbage = b"bad \xff\xfe\x00 bytes\n" + b"x" * 100_000 + b"\nno newline at the end"
        await host.call("echo", "write_raw", data=garbage)
        bad = await waiter.wait_for("plugin.echo.stdout", "bad ")
        long = await waiter.wait_for("plugin.echo.stdout", "xxxx")
        assert await host.call("echo", "echo", value="alive") == "alive"
        with pytest.raises(ConnectionBroken):
            await host.call("echo", "crash")
        partial = await waiter.wait_for("plugin.echo.stdout", "no newline at the end")
    assert bad.getMessage() == "bad \ufffd\ufffd\\x00 bytes"  # sanitized like any record
    assert long.__dict__["truncated"] is True
    assert (
        long.getMessage()
        == "x" * MAX_LINE_BYTES + f"... [truncated {100_000 - MAX_LINE_BYTES} bytes]"
    )
    assert partial.getMessage() == "no newline at the end"


async def test_a_plugin_that_closes_its_stdout_keeps_working(tmp_path: Path) -> None:
    """Closing fd 1 ends the stdout capture; calls, health checks and stderr go on."""
    async with running(tmp_path, "echo") as (host, waiter):
        await host.call("echo", "close_stdout")
        await host.call("echo", "say", out=[], err=["stderr still works"])
        await waiter.wait_for("plugin.echo.stderr", "stderr still works")
        assert await host.call("echo", "echo", value="ok") == "ok"
        info = await host.stop("echo")
        assert info.last_exit is not None and info.last_exit.exit_code == 0


async def test_a_grandchild_outliving_its_runner_does_not_hide_the_exit(tmp_path: Path) -> None:
    """A forked process holding the pipes open is killed with the runner's process group."""
    async with running(tmp_path, "echo", config=QUICK_DRAIN) as (host, waiter):
        grandchild = await host.call("echo", "fork_grandchild")
        assert process_alive(grandchild)
        with pytest.raises(ConnectionBroken):
            await host.call("echo", "crash", code=9)
        info = await host.wait_for("echo", restarted_and_ready(), timeout=20)
        assert info.last_exit is not None and info.last_exit.exit_code == 9
        await waiter.wait_for("isoplug.host", "outlived it; killed them")
        assert not process_alive(grandchild)


async def test_capabilities_are_granted_by_the_manifest_and_checked_by_the_host(
    tmp_path: Path,
) -> None:
    """A granted capability works; an ungranted one is refused by the runner and the host;
    arguments that do not fit fail the call as a capability's failure, said on the host."""
    async with running(tmp_path, "echo") as (host, waiter):
        host.register_capability("test.add", lambda a, b: a + b)
        host.register_capability("secret", lambda: "leaked")
        assert await host.call("echo", "call_host", name="test.add", kwargs={"a": 1, "b": 2}) == 3
        with pytest.raises(RemoteError, match="may not call host capability 'secret'") as denied:
            await host.call("echo", "call_host", name="secret", kwargs={})
        assert denied.value.remote_type == "isoplug.CapabilityDenied"
        assert "granted: test.add, test.fail" in denied.value.remote_message
        with pytest.raises(RemoteError, match=r"the host has no capability 'test.fail'"):
            await host.call("echo", "call_host", name="test.fail", kwargs={})
        with pytest.raises(
            RemoteError, match=r"'test.add' was called with arguments that do not fit test.add"
        ) as unfit:
            await host.call("echo", "call_host", name="test.add", kwargs={"a": 1})
        assert unfit.value.remote_type == "isoplug.errors.CapabilityFailed"
        assert "missing a required argument: 'b'" in unfit.value.remote_message
        said = await waiter.wait_for("isoplug.host", "was called with arguments that do not fit")
        assert "(called by plugin 'echo')" in said.getMessage() and said.exc_info is None
        # A runner that skips its own check is still refused, by the host.
        with pytest.raises(RemoteError, match="not in 'capabilities' of") as refused:
            await host.call("echo", "call_host_unchecked", name="secret", kwargs={})
        assert refused.value.remote_type == "isoplug.CapabilityDenied"


async def test_published_events_reach_subscribed_plugins_in_order(tmp_path: Path) -> None:
    """host.publish() delivers to subscribers only, in the order published; a name given as a
    str subclass or a StrEnum is its plain value (a subclass failed at the wire)."""

    class EventName(str):
        pass

    class Events(enum.StrEnum):
        NOTE = "note"

    async with running(tmp_path, "echo") as (host, _):
        assert await host.publish("nobody-listens", 1) == 0
        for n, name in enumerate(["note", EventName("note"), Events.NOTE]):
            assert await host.publish(name, {"n": n}) == 1
        # Events and calls travel on one connection but are handled by different tasks:
        # ask until all three were handled.
        notes: list[Any] = []
        async with asyncio.timeout(10):
            while len(notes) < 3:
                notes = await host.call("echo", "get_notes")
        assert notes == [{"n": 0}, {"n": 1}, {"n": 2}]


async def test_connections_must_prove_their_runner_and_use_a_known_role(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """An unknown runner name, a wrong token, an unknown role: each refused at the handshake,
    with the reason in the host's log; the real runner is unaffected."""
    caplog.set_level(logging.WARNING)
    async with running(tmp_path, "echo") as (host, _):
        listener = host._listener
        assert listener is not None
        with pytest.raises(AuthenticationFailed, match="unknown runner"):
            await Peer.connect(listener.address, "guess", name="ghost")
        supervisor = host._supervisors["echo"]
        token = supervisor.expected_token()
        assert token is not None
        with pytest.raises(AuthenticationFailed, match="wrong session token"):
            await Peer.connect(listener.address, "guess", name="echo")
        with pytest.raises(AuthenticationFailed):
            await Peer.connect(listener.address, token, name="echo", role="metrics")
        # Log connections go to the log bridge's listener, which takes nothing else.
        with pytest.raises(AuthenticationFailed):
            await Peer.connect(listener.address, token, name="echo", role=LOGS_ROLE)
        log_address = host._log_bridge.address
        with pytest.raises(AuthenticationFailed):
            await Peer.connect(log_address, token, name="echo", role=CONTROL_ROLE)
        with pytest.raises(AuthenticationFailed, match="wrong session token"):
            await Peer.connect(log_address, "guess", name="echo", role=LOGS_ROLE)
        with pytest.raises(AuthenticationFailed, match="unknown runner"):
            await Peer.connect(log_address, token, name="ghost", role=LOGS_ROLE)
        assert await host.call("echo", "echo", value="unaffected") == "unaffected"
    messages = [r.getMessage() for r in caplog.records]
    assert any("unknown connection role 'metrics' (known: control)" in m for m in messages)
    assert any("unknown connection role 'logs' (known: control)" in m for m in messages)
    assert any("refused a 'control' connection from runner 'echo'" in m for m in messages)
    assert any("runner 'ghost' is not expected" in m for m in messages)


async def test_cancelling_the_task_that_runs_a_host_leaves_no_runner_behind(
    tmp_path: Path,
) -> None:
    """A host cancelled while stopping (a second Ctrl-C) kills its runners at once."""
    ready = asyncio.Event()
    hosts: list[Host] = []

    async def application() -> None:
        async with Host(plugins_dir(tmp_path, "echo", "stubborn"), config=FAST) as host:
            hosts.append(host)
            await host.wait_ready(20)
            ready.set()
            await asyncio.Event().wait()

    task = asyncio.create_task(application())
    await asyncio.wait_for(ready.wait(), 20)
    host = hosts[0]
    pids = [i.pid for i in host.plugins() if i.pid is not None]
    assert len(pids) == 2 and all(process_alive(pid) for pid in pids)
    task.cancel()  # the host stops its runners; echo stops at once, stubborn would take 4 s...
    await host.wait_for("echo", lambda i: i.state is PluginState.STOPPED, timeout=10)
    assert host.plugin("stubborn").state is PluginState.READY
    task.cancel()  # ...so cancel again, inside the shutdown: the rest is killed at once
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 2)
    assert not [pid for pid in pids if process_alive(pid)]


async def test_the_host_sends_no_traceback_with_a_capabilitys_failure() -> None:
    """What the plugin's runner receives: the type and message, no traceback."""
    registry = CapabilityRegistry()

    def lookup(key: str) -> str:
        raise KeyError(key)

    registry.register("lookup", lookup)
    try:
        with pytest.raises(CapabilityFailed) as failed:
            await registry.invoke("lookup", {"key": "k"}, "p")
        info = error_info("error", failed.value)
        assert info.type == "isoplug.errors.CapabilityFailed"
        assert info.message == "host capability 'lookup' raised KeyError: 'k'"
        assert not info.traceback
        # Any other instance keeps its traceback (the plugin's, raised in its runner).
        assert error_info("error", CapabilityFailed("the plugin's own")).traceback
    finally:
        registry.close()


async def test_a_failing_capability_keeps_its_traceback_on_the_host(tmp_path: Path) -> None:
    """The plugin learns the type and message of what the capability raised, never the host's
    traceback (its code and paths); the host logs the traceback, and a plugin making it fail
    in a loop costs the host's log one summary per second, not a line per call."""

    def lookup(key: str) -> str:
        secret_path = "/srv/app/credentials.toml"  # a local of the host, seen in tracebacks
        raise KeyError(f"no {key} in {len(secret_path)} entries")

    with watching("isoplug.host") as records:
        async with running(tmp_path, "echo") as (host, _):
            host.register_capability("test.add", lookup)
            with pytest.raises(RemoteError) as failed:
                await host.call("echo", "call_host", name="test.add", kwargs={"key": "k"})
            assert failed.value.remote_type == "isoplug.errors.CapabilityFailed"
            assert "host capability 'test.add' raised KeyError" in failed.value.remote_message
            # The plugin's own traceback (its call_host), without a frame of the host's.
            assert "call_host" in failed.value.remote_traceback
            assert "lookup" not in failed.value.remote_traceback
            report = await records.wait_for_record(text="host capability 'test.add' raised")
            assert report.exc_info is not None and "called by plugin 'echo'" in report.getMessage()
            for _ in range(20):
                with pytest.raises(RemoteError):
                    await host.call("echo", "call_host", name="test.add", kwargs={"key": "k"})

            def summed() -> int:
                found = [
                    re.search(r"failed (\d+) more time", r.getMessage()) for r in records.records
                ]
                return sum(int(match[1]) for match in found if match)

            await records.wait_until(lambda: summed() == 20)
            assert all(r.exc_info is None for r in records.select(text="more time(s) in the last"))
    assert len(records.select(text="host capability 'test.add' raised KeyError")) == 1
