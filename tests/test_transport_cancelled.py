"""A listener whose start or close is cancelled (or whose start fails) leaves no socket
listening, no file behind."""

from __future__ import annotations

import asyncio
import os
import threading

import pytest

from isoplug.rpc.blocking import serve_blocking
from isoplug.testing import eventually
from isoplug.transport import Stream, connect, listen
from tests.open_resources import (
    cancelled_once_its_socket_dir_appears,
    listening_unix_paths,
    socket_dirs,
)


async def silent(stream: Stream) -> None:
    """A connection handler that only reads."""
    while await stream.receive_some():
        pass


async def test_a_listen_cancelled_while_its_server_starts_leaves_nothing_open() -> None:
    """asyncio's server start yields once, after the server took the bound socket: a cancel
    there (the host's start cancelled) closes that socket and removes its private directory,
    and reaches the caller."""
    made = await cancelled_once_its_socket_dir_appears(listen("unix:", silent))
    assert not os.path.exists(made)
    assert os.path.join(made, "sock") not in listening_unix_paths()


async def test_a_cancelled_listener_close_still_removes_its_files_and_tells_on_close() -> None:
    """Cancelled while it waits for a handler to end, ``aclose()`` has closed the socket and
    still removes its file and directory and calls ``on_close``: a ``close_now()`` after it
    finds nothing left to do."""
    handling = asyncio.Event()
    handler_cancelled = asyncio.Event()
    release = asyncio.Event()

    async def lingering(stream: Stream) -> None:
        handling.set()
        try:
            await stream.receive_some()  # the client never sends
        except asyncio.CancelledError:
            handler_cancelled.set()
            await release.wait()  # what a handler's cleanup may take
            raise

    listener = await listen("unix:", lingering)
    path = listener.address.path
    told: list[str] = []
    listener.on_close.append(lambda: told.append("closed"))
    client = await connect(listener.address)
    try:
        await handling.wait()
        closing = asyncio.create_task(listener.aclose())
        await handler_cancelled.wait()  # the close waits for the handler now
        closing.cancel()
        with pytest.raises(asyncio.CancelledError):
            await closing
        assert not os.path.exists(os.path.dirname(path))
        assert path not in listening_unix_paths()
        assert told == ["closed"]
        listener.close_now()
        assert told == ["closed"]
    finally:
        release.set()
        await client.aclose()
        await eventually(lambda: not listener._tasks)


def test_a_blocking_server_whose_accepting_thread_cannot_start_leaves_nothing_open(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The log bridge's listener (threads) fails at its last step, out of threads: its
    socket is closed and its directory removed, not left to the collector."""
    real_start = threading.Thread.start

    def start(thread: threading.Thread) -> None:
        if thread.name.endswith("-accept"):
            raise RuntimeError("can't start new thread")
        real_start(thread)

    dirs_before, listening_before = socket_dirs(), listening_unix_paths()
    monkeypatch.setattr(threading.Thread, "start", start)
    with pytest.raises(RuntimeError, match="can't start new thread"):
        serve_blocking("unix:", "token", lambda channel: None, name="doomed")
    monkeypatch.undo()
    assert socket_dirs() == dirs_before
    assert listening_unix_paths() <= listening_before
