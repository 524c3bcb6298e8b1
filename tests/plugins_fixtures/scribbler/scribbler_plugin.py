"""A test plugin whose output bypasses Python: ``os.write`` to fd 1 and fd 2, on its own loop.

Every write happens on the plugin's event loop: if the host stopped draining the pipes, the
write would block the loop, and the host's health checks would find the runner hung.
"""

from __future__ import annotations

import fcntl
import logging
import os
import subprocess
import sys
import traceback
from typing import Any

import isoplug

#: A child that waits for the runner (its parent, pid in argv) to die, then writes to the fd 1
#: it inherited, a line every 20 ms, until it is killed.
ORPHAN = """
import os, sys, time
parent = int(sys.argv[1])
while os.getppid() == parent:
    time.sleep(0.01)
count = 0
while True:
    os.write(1, f"orphan after exit {count}\\n".encode())
    count += 1
    time.sleep(0.02)
"""


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


class Scribbler(isoplug.Plugin):
    async def setup(self, ctx: isoplug.PluginContext) -> None:
        self.children: list[subprocess.Popen[bytes]] = []

    @isoplug.method
    async def pid(self) -> int:
        return os.getpid()

    @isoplug.method
    async def pipe_size(self, fd: int = 1) -> int:
        """The size of the pipe ``fd`` is (Linux)."""
        return fcntl.fcntl(fd, fcntl.F_GETPIPE_SZ)

    @isoplug.method
    async def write(self, fd: int, text: str) -> None:
        write_all(fd, text.encode())

    @isoplug.method
    async def write_bytes(self, fd: int, data: bytes) -> None:
        write_all(fd, data)

    @isoplug.method
    async def flood(self, count: int, per_write: int = 1000) -> int:
        """``count`` lines ``flood <n>`` on fd 1, ``per_write`` lines per write."""
        for first in range(0, count, per_write):
            lines = range(first, min(count, first + per_write))
            write_all(1, "".join(f"flood {n}\n" for n in lines).encode())
        return count

    @isoplug.method
    async def garbage(self, megabytes: int, carriage_returns: bool = False) -> None:
        """``megabytes`` MiB of bytes that are no UTF-8 and end no line (no LF; no CR either,
        unless ``carriage_returns``: then one in 255 bytes), then a line."""
        line_ends = b"\n" if carriage_returns else b"\n\r"
        block = bytes(b for b in range(256) if b not in line_ends) * 4200
        block = block[: 1024 * 1024]
        for _ in range(megabytes):
            write_all(1, block)
        write_all(1, b"\nafter the garbage\n")

    @isoplug.method
    async def long_line(self, size: int) -> None:
        """Invalid UTF-8, then a ``size``-byte line, then a line, then a partial last line."""
        write_all(1, b"bad \xff\xfe bytes\n")
        chunk = b"x" * (1024 * 1024)
        left = size
        while left > 0:
            write_all(1, chunk[:left])
            left -= len(chunk)
        write_all(1, b"\nafter the long line\nno newline at the end")

    @isoplug.method
    async def close_stdio(self) -> None:
        """Close fd 1 and fd 2 (nothing Python-level is left unflushed first)."""
        sys.stdout.flush()
        sys.stderr.flush()
        os.close(1)
        os.close(2)

    @isoplug.method
    async def log(self, message: str) -> None:
        logging.getLogger("scribbler").warning("%s", message)

    @isoplug.method
    async def spawn_orphan(self) -> int:
        """Start a child that writes to the inherited fd 1 once this runner has died."""
        child = subprocess.Popen([sys.executable, "-c", ORPHAN, str(os.getpid())])
        self.children.append(child)
        return child.pid

    @isoplug.method
    async def abort_after_writing(self, text: str) -> None:
        """Write ``text`` to fd 2 (no newline: a line left unfinished), then abort: the crash
        dump faulthandler writes follows it on the same line."""
        os.write(2, text.encode())
        os.abort()

    @isoplug.method
    def run_python(self, code: str) -> int:
        """Run ``code`` in a Python child that inherits the runner's fds; its exit code."""
        return subprocess.run([sys.executable, "-c", code], check=False).returncode

    @isoplug.method
    async def crash(self, code: int = 3) -> Any:
        os._exit(code)

    @isoplug.method
    async def die_after_last_words(self, how: str) -> None:
        """Print a traceback and a line without its newline, then die at once: ``os._exit``
        or ``os.abort``, which run no exit hooks."""
        try:
            raise ValueError("last words")
        except ValueError:
            traceback.print_exc()
        if how == "segfault":
            import ctypes

            ctypes.string_at(0)  # the traceback was flushed; nothing else can be
        sys.stdout.write("no newline yet")
        if how == "abort":
            os.abort()
        os._exit(2)
