"""What a plugin's method or event handler raises that would end the runner, or that cannot be
sent as it is, with real runners: it fails that call only, and the host learns what it was."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import pytest

from isoplug.errors import RemoteError
from isoplug.rpc.remote_errors import (
    MAX_SENT_MESSAGE_CHARS,
    exception_message,
    exit_request_text,
    traceback_text,
)
from isoplug.wire.sanitize import IN_EMITTING_PROCESS, cut_mark
from tests.plugins_fixtures import running
from tests.record_waiter import eventually

#: Larger than a frame (16 MiB): sent whole, the answer could not be.
HUGE = 17_000_000


@pytest.mark.parametrize(
    ("method", "remote_type", "said"),
    [
        ("sync_exit", "builtins.SystemExit", "raised SystemExit: bye from a def method"),
        ("async_exit", "builtins.SystemExit", "raised SystemExit: 2"),
        ("interrupt", "builtins.KeyboardInterrupt", "raised KeyboardInterrupt;"),
        ("sync_interrupt", "builtins.KeyboardInterrupt", "raised KeyboardInterrupt;"),
    ],
)
async def test_sys_exit_in_a_method_fails_that_call_only(
    tmp_path: Path, method: str, remote_type: str, said: str
) -> None:
    """sys.exit() (argparse on bad input) or KeyboardInterrupt in a method, async or run in a
    worker thread, is a RemoteError for that call: the runner goes on (same process, no
    restart), and a call in flight meanwhile is answered."""
    async with running(tmp_path, "quitter") as (host, _):
        pid = await host.call("quitter", "pid")
        held = asyncio.ensure_future(host.call("quitter", "hold"))
        await host.call("quitter", "wait_held")
        with pytest.raises(RemoteError) as raised:
            await host.call("quitter", method)
        error = raised.value
        assert (error.method, error.remote_type) == (f"quitter.{method}", remote_type)
        assert error.remote_message.startswith(f"quitter.{method} {said}")
        assert "the runner kept running" in error.remote_message
        assert f"in {method}" in error.remote_traceback
        await host.call("quitter", "release")
        assert await held == "held"
        assert await host.call("quitter", "pid") == pid
        assert host.plugin("quitter").restarts == 0


async def test_sys_exit_in_an_event_handler_is_logged_and_the_next_handler_runs(
    tmp_path: Path,
) -> None:
    """An event handler's SystemExit or KeyboardInterrupt is an ERROR naming it, as any
    exception of a handler; the handlers after it still get the event."""
    noted: list[Any] = []
    async with running(tmp_path, "quitter") as (host, records):
        host.register_capability("noted", lambda payload: noted.append(payload))  # noqa: PLW0108 (called by keyword)
        pid = await host.call("quitter", "pid")
        assert await host.publish("quit", "now") == 1
        first = await records.wait_for_record(
            level=logging.ERROR, text="raised SystemExit: event handler quits: now"
        )
        assert "the runner kept running" in first.getMessage()
        await records.wait_for_record(level=logging.ERROR, text="raised KeyboardInterrupt")
        await eventually(lambda: noted == ["now"])
        assert await host.call("quitter", "pid") == pid
        assert host.plugin("quitter").restarts == 0


async def test_a_huge_exception_message_is_cut_and_keeps_its_type(tmp_path: Path) -> None:
    """A message too large for a frame arrived as a LocalProtocolError of 'plugin.call': the
    method and the exception's type were lost. Now it is cut, and the cut counted."""
    async with running(tmp_path, "quitter") as (host, _):
        with pytest.raises(RemoteError) as raised:
            await host.call("quitter", "huge", HUGE)
        error = raised.value
        assert (error.method, error.remote_type) == ("quitter.huge", "builtins.ValueError")
        mark = cut_mark(HUGE - MAX_SENT_MESSAGE_CHARS, where=IN_EMITTING_PROCESS)
        assert error.remote_message == "x" * MAX_SENT_MESSAGE_CHARS + mark
        assert "in huge" in error.remote_traceback
        assert IN_EMITTING_PROCESS in error.remote_traceback
        with pytest.raises(RemoteError) as raised:
            await host.call("quitter", "huge_note", HUGE)
        assert raised.value.remote_type == "builtins.ValueError"
        assert raised.value.remote_message == "noted"
        assert len(raised.value.remote_traceback) < 100_000


async def test_an_exception_whose_str_fails_keeps_its_type(tmp_path: Path) -> None:
    """A failing __str__ was reported as the RuntimeError of isoplug's own code, of
    'plugin.call'; now the method's exception, saying what its str() raised."""
    async with running(tmp_path, "quitter") as (host, _):
        with pytest.raises(RemoteError) as raised:
            await host.call("quitter", "bad_str")
        error = raised.value
        assert error.method == "quitter.bad_str"
        assert error.remote_type == "quitter_plugin.BadStr"
        assert error.remote_message == "<str() of BadStr raised RuntimeError: str exploded>"
        assert "isoplug/rpc/dispatch.py" not in error.remote_traceback


# -- sans-IO: the texts sent about an exception ---------------------------------------------------


class _Unprintable(Exception):
    def __str__(self) -> str:
        raise _Unprintable()  # and so is what its str() raised


def test_exception_message_never_raises_and_can_always_be_sent() -> None:
    assert exception_message(_Unprintable()) == "<str() of _Unprintable raised _Unprintable>"
    # A file name that is not UTF-8: its lone surrogate made the whole answer unencodable.
    message = exception_message(FileNotFoundError(2, "No such file", "caf\udce9"))
    assert "caf\\udce9" in message
    message.encode("utf-8")
    assert exception_message(ValueError("y" * 10), limit=4) == "yyyy" + cut_mark(
        6, where=IN_EMITTING_PROCESS
    )


def test_exit_requests_are_named_with_their_code() -> None:
    assert exit_request_text(SystemExit(2)) == "SystemExit: 2"
    assert exit_request_text(SystemExit()) == "SystemExit"
    assert exit_request_text(KeyboardInterrupt()) == "KeyboardInterrupt"


def test_a_long_traceback_is_cut_in_the_middle_with_the_count() -> None:
    try:
        raise ValueError("z" * 1000)
    except ValueError as exc:
        text = traceback_text(exc, limit=200)
    assert text.startswith("Traceback (most recent call last):")
    assert text.endswith("z" * 50 + "\n")
    assert IN_EMITTING_PROCESS in text
    assert len(text) < 300
