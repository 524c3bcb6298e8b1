"""A test plugin that does, on request, everything a plugin can do wrong (and right)."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from typing import Any

import isoplug


class Echo(isoplug.Plugin):
    async def setup(self, ctx: isoplug.PluginContext) -> None:
        self.ctx = ctx
        self.notes: list[Any] = []

    async def teardown(self) -> None:
        print("echo: teardown ran", flush=True)

    @isoplug.method
    async def echo(self, value: Any) -> Any:
        return value

    @isoplug.method
    def add(self, a: int, b: int) -> int:
        """Sync: runs in a worker thread, not on the loop."""
        return a + b

    @isoplug.method
    def thread_is_main(self) -> bool:
        import threading

        return threading.current_thread() is threading.main_thread()

    @isoplug.method
    async def pid(self) -> int:
        return os.getpid()

    @isoplug.method
    async def fail(self, message: str) -> None:
        raise ValueError(message)

    @isoplug.method
    async def crash(self, code: int = 7) -> None:
        print("echo: crashing now", file=sys.stderr, flush=True)
        os._exit(code)

    @isoplug.method
    async def segfault(self) -> None:
        import ctypes

        ctypes.string_at(0)  # reads address 0: SIGSEGV in native code

    @isoplug.method
    async def hang(self) -> None:
        time.sleep(3600)  # blocks the event loop: the health check must notice

    @isoplug.method
    async def slow(self, seconds: float) -> str:
        await asyncio.sleep(seconds)
        return "done"

    @isoplug.method
    async def say(self, out: list[str], err: list[str]) -> None:
        for line in out:
            print(line)
        for line in err:
            print(line, file=sys.stderr)
        sys.stdout.flush()
        sys.stderr.flush()

    @isoplug.method
    async def traceback_on_stderr(self) -> None:
        import traceback

        empty: dict[str, int] = {}
        try:
            empty["missing"]
        except KeyError:
            traceback.print_exc()
        print("after the traceback", file=sys.stderr, flush=True)

    @isoplug.method
    async def write_raw(self, data: bytes) -> None:
        os.write(1, data)

    @isoplug.method
    async def close_stdout(self) -> None:
        sys.stdout.flush()
        os.close(1)

    @isoplug.method
    async def fork_grandchild(self) -> int:
        """Fork a process that outlives this runner, holding its stdout/stderr open."""
        child = os.fork()
        if child == 0:
            try:
                time.sleep(3600)
            finally:
                os._exit(0)
        return child

    @isoplug.method
    async def call_host(self, name: str, kwargs: dict[str, Any]) -> Any:
        return await self.ctx.call_host(name, **kwargs)

    @isoplug.method
    async def call_host_unchecked(self, name: str, kwargs: dict[str, Any]) -> Any:
        """Bypass the runner-side check, as a compromised runner could: the host must refuse."""
        self.ctx.capabilities = frozenset({name})
        return await self.ctx.call_host(name, **kwargs)

    @isoplug.on_event("note")
    def on_note(self, payload: Any) -> None:
        self.notes.append(payload)

    @isoplug.method
    async def get_notes(self) -> list[Any]:
        return self.notes
