"""A test plugin whose schema refuses ``n = 13`` with a RuntimeError (not a ValueError), and
whose ``setup`` waits while the file named by ``hold`` is missing (it stays STARTING)."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import msgspec

import isoplug


class Settings(msgspec.Struct, forbid_unknown_fields=True):
    n: int
    hold: str = ""

    def __post_init__(self) -> None:
        if self.n == 13:
            raise RuntimeError("13 is unlucky")


class ConfigGate(isoplug.Plugin):
    config_schema = Settings

    async def setup(self, ctx: isoplug.PluginContext) -> None:
        self.ctx = ctx
        while ctx.config.hold and not Path(ctx.config.hold).exists():
            await asyncio.sleep(0.01)

    async def on_config(self, config: Settings) -> None:
        pass

    @isoplug.method
    async def state(self) -> dict[str, Any]:
        return {"pid": os.getpid(), "n": self.ctx.config.n}
