"""A test plugin whose stop a test can hold under way: its teardown writes its ``say``
configuration on stderr (if any), then waits while the file named by its ``gate``
configuration is missing (no wait when it names none). Its ``on_config`` hangs, so that a new
configuration is under way in the runner until the runner ends."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from typing import Any

import isoplug


class Holdout(isoplug.Plugin):
    async def setup(self, ctx: isoplug.PluginContext) -> None:
        self.ctx = ctx

    async def on_config(self, config: Any) -> None:
        self.ctx.logger.info("on_config hangs")
        await asyncio.Event().wait()

    async def teardown(self) -> None:
        gate = self.ctx.config["gate"]
        if self.ctx.config["say"]:
            print(self.ctx.config["say"], file=sys.stderr, flush=True)
        self.ctx.logger.info("teardown waits for its gate")
        while gate and not Path(gate).exists():
            await asyncio.sleep(0.01)

    @isoplug.method
    async def config(self) -> dict[str, Any]:
        return {"pid": os.getpid(), **self.ctx.config}
