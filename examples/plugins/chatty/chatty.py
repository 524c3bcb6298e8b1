"""A plugin that talks: print() lines (stdout), warnings on stderr, and answers calls."""

from __future__ import annotations

import asyncio
import sys

import isoplug


class Chatty(isoplug.Plugin):
    async def setup(self, ctx: isoplug.PluginContext) -> None:
        self.ctx = ctx
        self.lines = 0
        self.ticks = 0
        self._task = asyncio.create_task(self._talk())
        ctx.logger.info("chatty is set up")

    async def _talk(self) -> None:
        phrases = ["hello from a runner process", "still here", "printing is captured too"]
        while True:
            self.lines += 1
            print(f"line {self.lines}: {phrases[self.lines % len(phrases)]}")
            if self.lines % 4 == 0:
                print(f"warning {self.lines // 4}: stderr lines are attributed", file=sys.stderr)
            await asyncio.sleep(0.7)

    @isoplug.method
    async def stats(self) -> dict[str, int]:
        return {"lines": self.lines, "ticks": self.ticks}

    @isoplug.method
    def shout(self, text: str) -> str:
        """A sync method: runs in a worker thread of the runner."""
        return text.upper() + "!"

    @isoplug.on_event("tick")
    async def on_tick(self, payload: dict[str, int]) -> None:
        self.ticks += 1
        self.ctx.logger.debug("got tick %s", payload)

    async def teardown(self) -> None:
        self._task.cancel()
        print(f"chatty: goodbye after {self.lines} lines")
