"""A test plugin whose methods and event handlers call sys.exit(), raise KeyboardInterrupt,
or raise exceptions whose text cannot be sent as it is (huge, or a failing __str__)."""

from __future__ import annotations

import asyncio
import os
import sys
from typing import Any

import isoplug


class BadStr(Exception):
    def __str__(self) -> str:
        raise RuntimeError("str exploded")


class Quitter(isoplug.Plugin):
    async def setup(self, ctx: isoplug.PluginContext) -> None:
        self.ctx = ctx
        self.released = asyncio.Event()
        self.held = asyncio.Event()

    @isoplug.method
    def sync_exit(self) -> None:
        sys.exit("bye from a def method")

    @isoplug.method
    async def async_exit(self) -> None:
        sys.exit(2)

    @isoplug.method
    async def interrupt(self) -> None:
        raise KeyboardInterrupt

    @isoplug.method
    def sync_interrupt(self) -> None:
        raise KeyboardInterrupt

    @isoplug.method
    async def hold(self) -> str:
        """In flight until release(): a call that another one's sys.exit() must not fail."""
        self.held.set()
        await self.released.wait()
        return "held"

    @isoplug.method
    async def wait_held(self) -> None:
        await self.held.wait()

    @isoplug.method
    async def release(self) -> None:
        self.released.set()

    @isoplug.method
    async def pid(self) -> int:
        return os.getpid()

    @isoplug.method
    async def huge(self, size: int) -> None:
        raise ValueError("x" * size)

    @isoplug.method
    async def huge_note(self, size: int) -> None:
        error = ValueError("noted")
        error.add_note("n" * size)
        raise error

    @isoplug.method
    async def bad_str(self) -> None:
        raise BadStr()

    @isoplug.on_event("quit")
    async def on_quit(self, payload: Any) -> None:
        sys.exit(f"event handler quits: {payload}")

    @isoplug.on_event("quit")
    def on_quit_in_thread(self, payload: Any) -> None:
        raise KeyboardInterrupt

    @isoplug.on_event("quit")
    async def after_quit(self, payload: Any) -> None:
        await self.ctx.call_host("noted", payload=payload)
