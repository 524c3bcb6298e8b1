"""A plugin that hangs: it blocks its event loop with a synchronous call that never returns."""

from __future__ import annotations

import asyncio
import time

import isoplug


class Hanger(isoplug.Plugin):
    async def setup(self, ctx: isoplug.PluginContext) -> None:
        self.ctx = ctx
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        await asyncio.sleep(2.5)
        print("hanger: calling a blocking function from async code (a classic bug)...")
        time.sleep(3600)  # blocks the whole event loop: nothing else runs in this runner

    @isoplug.method
    async def ping(self) -> str:
        return "pong"
