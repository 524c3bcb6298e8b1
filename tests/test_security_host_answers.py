"""What the host answers a runner, and what it makes of what a runner declares.

Each test runs a real host and real runners of fixture plugins: nothing the host sends a runner
carries the host's traceback (whatever failed: a capability, its arguments, its result, a
cancellation); a capability cannot end the host; and a plugin's method and event names reach
the host's messages escaped and few, and are refused past the limits.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from isoplug import Host, PluginState
from isoplug.control import MAX_OFFERED_NAME_CHARS, MAX_OFFERED_NAMES
from isoplug.errors import MethodNotFound, RemoteError
from isoplug.host.capabilities import MAX_RESULT_BYTES
from isoplug.host.offers import MAX_LISTED_METHODS
from isoplug.rpc.dispatch import private_errors
from tests.plugins_fixtures import FAST, plugins_dir, running
from tests.plugins_fixtures.namer.namer_plugin import HOSTILE, ORDINARY
from tests.record_waiter import watching
from tests.rpc_helpers import memory_peers

#: What shows that host code reached the plugin: a frame of this file (where the test's host
#: capabilities live), of isoplug's host side, or a traceback forwarded from the host.
HOST_MARKS = ("test_security_host_answers.py", "isoplug/host/", "--- remote traceback ---")


def host_marks(failure: RemoteError) -> list[str]:
    """The host marks in what the plugin received, as its error (raised by its call_host) shows
    it: its message (the host's answer) and its traceback (ending in that message again)."""
    text = failure.remote_message + failure.remote_traceback
    return [mark for mark in HOST_MARKS if mark in text]


def raw_plugin_text(text: str) -> list[str]:
    """What of a plugin's hostile names appears raw in ``text``."""
    return [piece for piece in ("\x1b", "\u202e", "\nCRITICAL app.db") if piece in text]


async def test_a_cancelled_capability_sends_the_plugin_no_traceback(tmp_path: Path) -> None:
    """A plugin that cancels its own capability request learns that it was cancelled, not
    where the host application's capability was when it was."""
    started = asyncio.Event()

    async def slow_capability_of_the_application() -> None:
        started.set()
        await asyncio.Event().wait()

    async with running(tmp_path, "hostile") as (host, _):
        host.register_capability("test.granted", slow_capability_of_the_application)
        request_id = await host.call("hostile", "start_capability", capability="test.granted")
        await asyncio.wait_for(started.wait(), 20)
        answer = await host.call("hostile", "cancel_capability", request_id=request_id)
    assert answer["code"] == "cancelled"
    assert answer["type"] == "asyncio.exceptions.CancelledError"
    assert answer["traceback"] == ""
    assert "slow_capability_of_the_application" not in repr(answer)


def take_x(x: int = 1) -> int:
    return x


def raise_error() -> None:
    raise ValueError("the application's own words")


#: A capability, how it is called, and what the plugin's error must say.
FAILURES: dict[str, tuple[Callable[..., Any], dict[str, Any], str]] = {
    "bad argument": (take_x, {"y": 1}, "got an unexpected keyword argument 'y'"),
    "unencodable result": (object, {}, "returned a value that cannot be sent"),
    "too large a result": (
        lambda: "y" * (MAX_RESULT_BYTES + 1),
        {},
        f"returned {MAX_RESULT_BYTES + 6:,} bytes, more than the {MAX_RESULT_BYTES:,} ",
    ),
    "raised": (raise_error, {}, "raised ValueError: the application's own words"),
}


@pytest.mark.parametrize("failure", list(FAILURES))
async def test_a_failing_capability_tells_the_plugin_type_and_message_only(
    tmp_path: Path, failure: str
) -> None:
    """Whatever fails while the host serves a capability, the plugin's exception carries its
    type and message, never a frame of the host's (its application's or isoplug's)."""
    function, kwargs, said = FAILURES[failure]
    async with running(tmp_path, "echo") as (host, _):
        host.register_capability("test.add", function)
        with pytest.raises(RemoteError) as failed:
            await host.call("echo", "call_host", name="test.add", kwargs=kwargs)
        # The plugin's own traceback (its call_host) comes along, holding what it received.
        assert "call_host" in failed.value.remote_traceback
        assert said in failed.value.remote_message, failed.value.remote_message
        assert not host_marks(failed.value), str(failed.value)


async def test_a_host_failure_the_plugin_sees_without_traceback_is_logged_with_it() -> None:
    """The peer gets the type and message of a failure of the host's own code in a handler of
    the host's (as every route a runner may ask is); the host's log has it whole, traceback
    included."""

    async def host_code(_: Any) -> None:
        raise TypeError("the host's own bug at /srv/app/secret.py")

    with watching("isoplug.rpc") as said:
        async with memory_peers(server_handlers={"route": private_errors(host_code)}) as (
            runner,
            _,
        ):
            with pytest.raises(RemoteError, match="the host's own bug") as told:
                await runner.request("route", None, timeout=10)
            record = await said.wait_for_record(text="failed here")
    assert told.value.remote_traceback == ""
    assert "(it is told the type and message only)" in record.getMessage()
    assert record.exc_info is not None and record.exc_info[0] is TypeError


async def test_arguments_a_capability_cannot_take_fail_the_call_as_its_failure(
    tmp_path: Path,
) -> None:
    """No host code ran: the plugin gets a CapabilityFailed saying what does not fit, and the
    host says it once, on isoplug.host, with no traceback."""
    with watching("isoplug.host") as said:
        async with running(tmp_path, "echo") as (host, _):
            host.register_capability("test.add", take_x)
            with pytest.raises(RemoteError, match="unexpected keyword argument 'y'") as told:
                await host.call("echo", "call_host", name="test.add", kwargs={"y": 1})
            record = await said.wait_for_record(text="was called with arguments that do not fit")
    assert told.value.remote_type == "isoplug.errors.CapabilityFailed"
    assert record.exc_info is None


@pytest.mark.parametrize("failure", ["unencodable result", "too large a result"])
async def test_a_result_the_plugin_cannot_get_is_reported_on_the_host(
    tmp_path: Path, failure: str
) -> None:
    """A result that cannot reach the plugin is the host's to know: a warning naming the
    plugin and the capability, once however often the plugin asks."""
    function, kwargs, said = FAILURES[failure]
    with watching("isoplug.host") as records:
        async with running(tmp_path, "echo") as (host, _):
            host.register_capability("test.add", function)
            for _ in range(3):
                with pytest.raises(RemoteError):
                    await host.call("echo", "call_host", name="test.add", kwargs=kwargs)
            report = await records.wait_for_record(
                level=logging.WARNING, text="host capability 'test.add' returned"
            )
    assert "called by plugin 'echo'" in report.getMessage()
    assert said.removeprefix("returned ")[:20] in report.getMessage()
    assert len(records.select(text="host capability 'test.add' returned")) == 1


async def test_a_capability_raising_system_exit_does_not_end_the_host(tmp_path: Path) -> None:
    """SystemExit from a capability is a capability failure: the plugin gets its type and
    message, the host an ERROR saying it was not allowed to end the host, and goes on."""

    def exit_the_host() -> None:
        raise SystemExit(3)

    with watching("isoplug.host") as records:
        async with running(tmp_path, "echo") as (host, _):
            host.register_capability("test.add", exit_the_host)
            host.register_capability("test.fail", lambda: "still here")
            with pytest.raises(RemoteError) as failed:
                await host.call("echo", "call_host", name="test.add", kwargs={})
            assert failed.value.remote_type == "isoplug.errors.CapabilityFailed"
            assert "raised SystemExit: 3" in failed.value.remote_message
            assert not host_marks(failed.value)
            report = await records.wait_for_record(level=logging.ERROR, text="SystemExit")
            assert "not allowed to end the host" in report.getMessage()
            assert "called by plugin 'echo'" in report.getMessage()
            assert report.exc_info is not None
            assert await host.call("echo", "call_host", name="test.fail", kwargs={}) == (
                "still here"
            )


async def test_method_names_reach_the_hosts_messages_escaped_and_few(tmp_path: Path) -> None:
    """An unknown method's error lists the plugin's method names escaped (no raw escape, bidi
    control or forged line), the first few only; events with such names are routed."""
    with watching(None) as records:
        async with running(tmp_path, "namer") as (host, _):
            weird = host.plugin("namer").methods[0]
            assert weird.endswith(HOSTILE)  # the application gets the names as they are
            assert await host.call("namer", weird) == "weird"
            with pytest.raises(MethodNotFound) as missing:
                await host.call("namer", "nope")
            assert await host.publish("ev" + HOSTILE, 1) == 1
            assert await host.publish("no such event", 1) == 0
    for text in (str(missing.value), missing.value.remote_message):
        assert not raw_plugin_text(text), text
        assert "\\x1b[31mRED" in text
        assert f"and {ORDINARY + 1 - MAX_LISTED_METHODS} more" in text
        assert "op00" in text and f"op{ORDINARY - 1}" not in text
    logged = "\n".join(records.messages())
    assert not raw_plugin_text(logged)


async def test_a_plugin_declaring_more_than_the_host_accepts_is_refused(tmp_path: Path) -> None:
    """A plugin declaring more method names, or longer event names, than the host accepts
    fails as one that cannot be loaded, its error naming it and what it declared; the other
    plugins of the host are served."""
    async with Host(plugins_dir(tmp_path, "crowded", "echo"), config=FAST) as host:
        await host.wait_ready(30, raise_on_failure=False)
        crowded = host.plugin("crowded")
        assert crowded.state is PluginState.FAILED
        assert crowded.methods == () and crowded.events == ()
        assert await host.call("echo", "echo", value=1) == 1
        # Its runner loaded it and would serve: the host asks it to stop, and it exits so,
        # not killed at the shutdown deadline (FAST's 3 s) as a runner that would not go.
        ended = await host.wait_for("crowded", lambda info: info.last_exit is not None, 10)
        assert ended.last_exit is not None
        assert ended.last_exit.returncode == 0, ended.last_exit
        assert ended.last_exit.sent_by_host is None, ended.last_exit
    error = crowded.error or ""
    assert "plugin 'crowded' declares more than the host accepts" in error
    assert f"{MAX_OFFERED_NAMES + 1:,} methods (at most {MAX_OFFERED_NAMES:,})" in error
    assert f"an event name of {MAX_OFFERED_NAME_CHARS + 50} characters" in error
