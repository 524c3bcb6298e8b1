"""A test plugin with a configuration schema that takes new configurations live."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from typing import Any

import msgspec

import isoplug


class Limits(msgspec.Struct, forbid_unknown_fields=True):
    retries: int = 1
    timeout: float = 1.0


class Settings(msgspec.Struct, forbid_unknown_fields=True):
    greeting: str
    limits: Limits = msgspec.field(default_factory=Limits)


def _chained(where: str) -> None:
    known: dict[str, int] = {}
    try:
        known["missing"]
    except KeyError as exc:
        raise RuntimeError(f"{where} refused it") from exc


class Configured(isoplug.Plugin):
    config_schema = Settings

    async def setup(self, ctx: isoplug.PluginContext) -> None:
        self.ctx = ctx
        if ctx.config.greeting == "chained":
            _chained("setup")
        self.seen: list[Any] = [msgspec.to_builtins(ctx.config)]

    async def on_config(self, config: Settings) -> None:
        if config.greeting == "chained":
            _chained("on_config")
        if config.greeting == "explode":
            raise RuntimeError("on_config refused it")
        if config.greeting == "exit":
            sys.exit("on_config asked to exit")
        if config.greeting == "hang":
            self.ctx.logger.info("on_config hangs")
            await asyncio.sleep(3600)
        if config.greeting == "die":
            os._exit(7)  # the runner ends in on_config (a crash, an OOM kill)
        if config.greeting == "die quietly":
            # The runner ends while a child of its own holds its connections open: the host
            # sees the exit before the connection's end.
            if os.fork() == 0:
                time.sleep(3600)
            os._exit(7)
        self.seen.append(msgspec.to_builtins(config))

    @isoplug.method
    async def state(self) -> dict[str, Any]:
        return {
            "pid": os.getpid(),
            "type": type(self.ctx.config).__name__,
            "config": msgspec.to_builtins(self.ctx.config),
            "seen": self.seen,
        }
