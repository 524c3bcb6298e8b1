"""A test plugin with a configuration schema and no on_config."""

from __future__ import annotations

import os
from typing import Any

import msgspec

import isoplug


class Settings(msgspec.Struct, forbid_unknown_fields=True):
    greeting: str
    shout: bool = False


class ConfiguredStatic(isoplug.Plugin):
    config_schema = Settings

    async def setup(self, ctx: isoplug.PluginContext) -> None:
        self.ctx = ctx

    @isoplug.method
    async def state(self) -> dict[str, Any]:
        return {"pid": os.getpid(), "config": msgspec.to_builtins(self.ctx.config)}
