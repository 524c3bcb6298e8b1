"""What a host's runners keep of its listeners whoever else connects: handshake places of their
own, which local strangers holding every place cannot take, and log connections capped per
runner, so that one plugin opening them without end cannot take the others' places.

Real hosts, real runners, raw sockets for the strangers (see also ``test_listener_limits``).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from isoplug import Host, PluginState
from isoplug.host.lineage import family_of
from isoplug.transport.process_tree import tree_under
from isoplug.wire import FrameDecoder, Reject, RejectCode, decode_message
from tests.log_helpers import receiver
from tests.plugins_fixtures import FAST, FIXTURES, plugins_dir, running
from tests.record_waiter import RecordWaiter, eventually, watching

WAIT = 20.0
#: A handshake deadline no test reaches: strangers hold their places as long as they like.
LONG = 60.0


@contextlib.contextmanager
def strangers(address: str, count: int) -> Iterator[list[socket.socket]]:
    """``count`` connections to ``address`` that say nothing: each holds a place if one is
    free. Closed at the end."""
    socks: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_UNIX)
            sock.connect(address.removeprefix("unix:"))
            socks.append(sock)
        yield socks
    finally:
        for sock in socks:
            sock.close()


def busy_at_once(address: str) -> bool:
    """Whether a new stranger is turned away at once (a busy reject, then closed)."""
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(WAIT)
        sock.connect(address.removeprefix("unix:"))
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    replies = [decode_message(f) for f in FrameDecoder().receive_data(data)]
    return len(replies) == 1 and isinstance(replies[0], Reject) and replies[0].code == "busy"


def lines(waiter: RecordWaiter, text: str, logger: str = "isoplug.rpc") -> list[str]:
    return [
        r.getMessage() for r in list(waiter.records) if r.name == logger and text in r.getMessage()
    ]


async def test_strangers_holding_every_place_cannot_keep_a_crashed_runner_from_restarting(
    tmp_path: Path,
) -> None:
    """Local processes with no token hold every handshake place of both listeners, and more
    of them are refused at once. The runner is killed (a crash): its successor still connects
    on both listeners (its log records arrive whole, not as stderr text) and is ready; each
    listener warns once that it refuses strangers."""
    config = dataclasses.replace(FAST, max_handshakes=2, handshake_timeout=LONG)
    with watching("isoplug.rpc") as rpc:
        async with running(tmp_path, "chronicler", config=config) as (host, records):
            assert host._listener is not None
            control, logs = str(host._listener.address), host._log_bridge.address
            with strangers(control, 2), strangers(logs, 2):
                for address in (control, logs):
                    assert await asyncio.to_thread(busy_at_once, address)
                before = host.plugin("chronicler").pid
                assert before is not None
                os.kill(before, signal.SIGKILL)
                info = await host.wait_for(
                    "chronicler",
                    lambda i: i.state is PluginState.READY and i.pid not in (None, before),
                    timeout=WAIT,
                )
                assert info.restarts == 1
                await host.call("chronicler", "log_numbered", count=1)
                record = await records.wait_for_record(
                    plugin="chronicler", text="record 0", timeout=WAIT
                )
                # Over the log connection: structure and extras kept (stderr text has none).
                assert record.__dict__["user"] == "ann" and record.levelno == logging.INFO
                for address in (control, logs):  # strangers are still kept out
                    assert await asyncio.to_thread(busy_at_once, address)
    refusing = lines(rpc, "refusing new connections")
    assert sorted(line.split(" on ")[0] for line in refusing) == [
        "isoplug-host",
        "isoplug-host-logs",
    ], refusing
    assert not lines(rpc, "accepting connections again")


def test_a_runners_family_is_found_in_one_walk() -> None:
    """``family_of`` names the runner a pid is, or descends from (this process stands for
    the runner), and nobody's for an unrelated or gone process."""
    import subprocess
    import sys

    child = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=-1)
    try:
        assert family_of(child.pid, {os.getpid(): "me"}) == "me"
        assert family_of(child.pid, {os.getppid(): "my parent"}) == "my parent"
        assert family_of(os.getpid(), {os.getpid(): "me", 1: "init"}) == "me"
        assert family_of(os.getpid(), {child.pid: "child"}) is None
        assert family_of(child.pid, {}) is None
    finally:
        assert child.stdin is not None
        child.communicate(b"")
    assert family_of(child.pid, {os.getpid(): "me"}) is None  # reaped: gone


# -- seats freed and taken again: one warning, not one per turn --------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["async", "threads"])
async def test_a_stranger_reconnecting_as_places_free_gets_one_warning(mode: str) -> None:
    """A stranger holds every place and reconnects whenever one is closed (its handshakes
    time out, so places free and fill again and again): the listener says once that it
    refuses connections, not once per turn; the count of those refused is said at close."""
    timeouts = busy = 0
    stop = threading.Event()
    with watching("isoplug.rpc") as rpc:
        async with receiver(
            mode, prefix="forwarded", max_handshakes=2, handshake_timeout=0.2
        ) as log_receiver:
            address = log_receiver.address

            def hold() -> None:
                # Three connections at all times: two hold the places, the third is refused.
                nonlocal timeouts, busy
                while not stop.is_set():
                    with strangers(address, 3) as socks:
                        for sock in socks:
                            sock.settimeout(WAIT)
                            data = sock.recv(65536)
                            for frame in FrameDecoder().receive_data(data):
                                reply = decode_message(frame)
                                assert isinstance(reply, Reject)
                                if reply.code == RejectCode.TIMEOUT:
                                    timeouts += 1
                                elif reply.code == RejectCode.BUSY:
                                    busy += 1

            holder = threading.Thread(target=hold)
            holder.start()
            try:
                await eventually(lambda: timeouts >= 8 and busy >= 4, WAIT)
            finally:
                stop.set()
                await asyncio.to_thread(holder.join)
    assert len(lines(rpc, "refusing new connections")) == 1, rpc.messages()
    assert not lines(rpc, "accepting connections again")
    (said,) = lines(rpc, "more connection(s) refused at once")
    assert int(said.split(": ")[1].split()[0]) == busy - 1


# -- log connections per runner ------------------------------------------------------------------


async def test_one_runner_cannot_take_the_log_connections_of_the_others(tmp_path: Path) -> None:
    """A plugin opens log connections with its own runner's token until it is refused: past
    ``max_log_connections`` (its runner's own included) they are refused, one warning names
    it, and another runner restarted then still gets its log connection (records arrive
    whole). Once the plugin closes them, it may open that many again. (None may wait for a
    place: those past the limit are refused at once, as a waiting one would hold the plugin's
    attempt up.)"""
    config = dataclasses.replace(FAST, max_log_connections=4, max_waiting_log_connections=0)
    with watching("isoplug.host") as host_log:
        async with running(tmp_path, "hostile", "chronicler", config=config) as (host, records):
            bridge = host._log_bridge
            await eventually(lambda: bridge.open_connections("hostile") == 1, WAIT)
            hostile_pid = await host.call("hostile", "pid")
            held = await host.call("hostile", "hold_log_connections", count=10)
            assert held == {"accepted": 3, "refused": 7}
            assert bridge.open_connections("hostile") == 4
            await host.restart("chronicler")
            await host.call("chronicler", "log_numbered", count=1)
            record = await records.wait_for_record(
                plugin="chronicler", text="record 0", timeout=WAIT
            )
            assert record.__dict__["user"] == "ann"
            assert bridge.open_connections("chronicler") == 1
            assert await host.call("hostile", "release_log_connections") == 3
            await eventually(lambda: bridge.open_connections("hostile") == 1, WAIT)
            again = await host.call("hostile", "hold_log_connections", count=3)
            assert again == {"accepted": 3, "refused": 0}
    refused = lines(host_log, "runner hostile: refused", logger="isoplug.host")
    assert refused[0] == (
        f"runner hostile: refused a log connection from pid {hostile_pid}: at its limit of 4 "
        "open log connections (shared by the runner and the processes it started), and none "
        "may wait for one (max_waiting_log_connections=0); it tries again, and what it logs "
        "meanwhile is lost, uncounted, if it ends before it is let in"
    ), refused
    # The others are summed up (at most once per report interval), never one line each.
    assert sum(int(line.split("refused ")[1].split()[0]) for line in refused[1:]) == 6, refused


def two_hostiles_and_chronicler(tmp_path: Path) -> Path:
    """A plugins directory with ``hostile``, a copy of it named ``hostile2``, and
    ``chronicler``."""
    directory = plugins_dir(tmp_path, "hostile", "chronicler")
    second = directory / "hostile2"
    shutil.copytree(FIXTURES / "hostile", second, ignore=shutil.ignore_patterns("__pycache__"))
    manifest = second / "plugin.toml"
    manifest.write_text(manifest.read_text().replace('id = "hostile"', 'id = "hostile2"'))
    return directory


@pytest.mark.slow
async def test_runners_holding_all_they_may_cannot_keep_another_runners_logs_out(
    tmp_path: Path,
) -> None:
    """Two plugins hold every log connection their runners may (512 each: 1,024 together,
    the listener-wide limit that once counted every runner's connections). A third runner,
    started then, still gets its first log connection: its records arrive whole, not as
    stderr text, and no listener-wide refusal is said."""
    config = dataclasses.replace(FAST, max_log_connections=512)
    with watching("isoplug") as isoplug_log, watching("plugin") as records:
        async with Host(two_hostiles_and_chronicler(tmp_path), config=config) as host:
            await host.wait_ready(WAIT)
            bridge = host._log_bridge
            await host.stop("chronicler")
            hostiles = ("hostile", "hostile2")
            await eventually(lambda: all(bridge.open_connections(p) == 1 for p in hostiles), WAIT)
            for plugin in hostiles:
                held = await host.call(plugin, "hold_log_connections", count=511)
                assert held == {"accepted": 511, "refused": 0}, plugin
                assert bridge.open_connections(plugin) == 512
            await host.restart("chronicler")
            await host.call("chronicler", "log_numbered", count=1)
            record = await records.wait_for_record(
                plugin="chronicler", text="record 0", timeout=WAIT
            )
            assert record.__dict__["user"] == "ann"  # over its log connection, not stderr
            assert bridge.open_connections("chronicler") == 1
            for plugin in hostiles:
                assert await host.call(plugin, "release_log_connections") == 511
    assert not lines(isoplug_log, "refusing new connections"), isoplug_log.messages()
    assert not lines(isoplug_log, "refused a log connection", logger="isoplug.host")


async def test_a_senders_process_tree_is_the_child_of_the_root_it_descends_from() -> None:
    """``tree_under`` names a process's tree as a root sees it: the root's child it is or
    descends from; for one that is not the root's, the root's own tree when it shares the
    root's process group, else its oldest ancestor below init; nothing for a process that is
    gone."""
    grandchild = "import subprocess, sys; subprocess.run([sys.executable, '-c', 'input()'])"
    child = subprocess.Popen([sys.executable, "-c", grandchild], stdin=subprocess.PIPE)
    # In a session (and group) of its own: we share nothing with it but our ancestors.
    apart = subprocess.Popen(
        [sys.executable, "-c", "input()"], stdin=subprocess.PIPE, start_new_session=True
    )

    def grandchildren() -> list[int]:
        with open(f"/proc/{child.pid}/task/{child.pid}/children") as listed:
            return [int(pid) for pid in listed.read().split()]

    try:
        await eventually(lambda: bool(grandchildren()), WAIT)
        (pid,) = grandchildren()
        assert tree_under(pid, os.getpid()) == child.pid
        assert tree_under(child.pid, os.getpid()) == child.pid
        assert tree_under(os.getpid(), os.getpid()) == os.getpid()
        # Not below the grandchild, but in its process group (subprocess's default).
        assert tree_under(os.getpid(), pid) == pid
        mine = tree_under(os.getpid(), apart.pid)  # not its: our oldest ancestor
        assert mine is not None and mine != apart.pid
        assert family_of(os.getpid(), {mine: "top"}) == "top"
    finally:
        assert child.stdin is not None and apart.stdin is not None
        await asyncio.to_thread(child.communicate, b"\n")
        await asyncio.to_thread(apart.communicate, b"\n")
    assert tree_under(child.pid, os.getpid()) is None  # reaped: gone
