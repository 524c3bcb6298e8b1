"""A plugin with a fatal bug: it dies with a traceback a little after every start."""

from __future__ import annotations

import asyncio
import os
import sys
import traceback

import isoplug


def parse_config(text: str) -> int:
    return int(text) // len(text.strip())


class Crasher(isoplug.Plugin):
    async def setup(self, ctx: isoplug.PluginContext) -> None:
        self.ctx = ctx
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        await asyncio.sleep(1.5)
        self.ctx.logger.warning("about to parse an empty config...")
        try:
            parse_config("   ")
        except Exception:
            # What an unhandled error in a plugin's own thread or loop looks like to the user.
            traceback.print_exc()
            sys.stderr.flush()
            os._exit(1)

    @isoplug.method
    async def ping(self) -> str:
        return "pong"
