"""A plugin that calls the host: the granted capability works, an ungranted one is refused."""

from __future__ import annotations

import asyncio
import time

import isoplug


class ClockReader(isoplug.Plugin):
    async def setup(self, ctx: isoplug.PluginContext) -> None:
        self.ctx = ctx
        self._task = asyncio.create_task(self._read_clock())

    async def _read_clock(self) -> None:
        try:
            await self.ctx.call_host("files.delete", path="/")
        except isoplug.CapabilityDenied as exc:
            print(f"refused as expected: {exc}")
        while True:
            host_time = await self.ctx.call_host("clock.now")
            skew_ms = (time.time() - host_time) * 1000
            print(
                f"host clock says {time.strftime('%H:%M:%S', time.localtime(host_time))}"
                f" (skew {skew_ms:+.2f} ms)"
            )
            await asyncio.sleep(2.0)

    @isoplug.method
    async def host_time(self) -> float:
        result: float = await self.ctx.call_host("clock.now")
        return result

    async def teardown(self) -> None:
        self._task.cancel()
