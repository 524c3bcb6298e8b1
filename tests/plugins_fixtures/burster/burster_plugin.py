"""Forks, on request, a burst of children that log and end at once, as a plugin's fork pool
does, while other children of its hold every log connection its runner may open."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time

import isoplug
from isoplug.logs import ForwardingHandler

log = logging.getLogger("burster.work")

#: How long a holder waits for its log connection, and the plugin for the test's release.
WAIT = 60.0


class Burster(isoplug.Plugin):
    async def setup(self, ctx: isoplug.PluginContext) -> None:
        self.ctx = ctx

    @isoplug.method
    async def squat(self, count: int) -> int:
        """Open ``count`` silent connections (no hello) to the host's log listener from this
        runner, each connected once this returns, and keep them; return this runner's pid."""
        handler = next(h for h in logging.getLogger().handlers if isinstance(h, ForwardingHandler))
        held: list[socket.socket] = self.__dict__.setdefault("held", [])
        for _ in range(count):
            sock = socket.socket(socket.AF_UNIX)
            sock.connect(handler.address.removeprefix("unix:"))
            held.append(sock)
        return os.getpid()

    @isoplug.method
    def squatters_closed(self) -> int:
        """How many of the connections :meth:`squat` opened the host has closed (a refused
        one: read to its end, the host's reject and all)."""
        closed = 0
        for sock in self.__dict__.get("held", []):
            try:
                while sock.recv(65536, socket.MSG_DONTWAIT):
                    pass
            except BlockingIOError:
                continue  # open, and nothing more to read: accepted, or waiting for a place
            except OSError:
                pass  # reset by the host's close: closed as well
            closed += 1
        return closed

    @isoplug.method
    async def burst(self, holders: int, count: int, records: int, release_file: str) -> int:
        """Fork ``holders`` children that connect (welcomed) and hold their log connection;
        then ``count`` children forked at once, each logging ``records`` numbered records
        (``n``: 0 to ``count * records - 1``) and ending at once with ``os._exit``. The
        holders let go once every burst child has ended and ``release_file`` exists; returns
        how many burst children ended."""
        return await asyncio.to_thread(self._burst, holders, count, records, release_file)

    def _burst(self, holders: int, count: int, records: int, release_file: str) -> int:
        handler = next(h for h in logging.getLogger().handlers if isinstance(h, ForwardingHandler))
        ready_r, ready_w = os.pipe()
        release_r, release_w = os.pipe()
        held = []
        for _ in range(holders):
            pid = os.fork()
            if pid == 0:
                try:
                    os.write(ready_w, b"1" if handler.start(timeout=WAIT) else b"0")
                    os.read(release_r, 1)
                    handler.close()
                finally:
                    os._exit(0)
            held.append(pid)
        answers = b"".join(os.read(ready_r, 1) for _ in range(holders))
        if answers != b"1" * holders:
            raise RuntimeError(f"holders could not connect: {answers!r}")
        burst = []
        for child in range(count):
            pid = os.fork()
            if pid == 0:
                try:
                    for index in range(records):
                        number = child * records + index
                        log.info("burst %d", number, extra={"n": number})
                finally:
                    os._exit(0)
            burst.append(pid)
        for pid in burst:
            os.waitpid(pid, 0)
        deadline = time.monotonic() + WAIT
        while not os.path.exists(release_file) and time.monotonic() < deadline:
            time.sleep(0.01)  # the test's release, a file: no other way to be told
        os.write(release_w, b"x" * holders)
        for pid in held:
            os.waitpid(pid, 0)
        for fd in (ready_r, ready_w, release_r, release_w):
            os.close(fd)
        return len(burst)
