"""A test plugin that notes each event it handles, first thing in its handler, in the file its
configuration names (``file``): what reached a handler, across its runners. A negative payload
holds its queue (the events after it wait); ``freeze_then_exit`` ends its runner while its
event loop reads nothing."""

from __future__ import annotations

import asyncio
import os
import time

import isoplug


class Tally(isoplug.Plugin):
    async def setup(self, ctx: isoplug.PluginContext) -> None:
        self.ctx = ctx

    @isoplug.on_event("tick")
    async def on_tick(self, payload: int) -> None:
        # Before any await: a handler that took the event has noted it, cancelled or not.
        with open(self.ctx.config["file"], "a") as handled:
            handled.write(f"{payload}\n")
        if payload < 0:
            await asyncio.Event().wait()

    @isoplug.method
    async def freeze_then_exit(self, frozen: str, go: str) -> None:
        """Create ``frozen``, block the event loop until ``go`` exists, then end the process
        at once: what the host sent meanwhile is never read, nor answered."""
        open(frozen, "w").close()
        while not os.path.exists(go):
            time.sleep(0.002)  # the loop blocked on purpose: it must not read its connection
        os._exit(9)

    @isoplug.method
    async def say_debug(self, tag: str) -> None:
        self.ctx.logger.debug("debug %s", tag)
        self.ctx.logger.error("done %s", tag)
