"""A test plugin whose setup() asks the host's start.outcome capability how this start goes:
"hang" (it never returns, as a database that does not answer), "fail" (it raises) or
"ready"."""

from __future__ import annotations

import asyncio

import isoplug


class Starter(isoplug.Plugin):
    async def setup(self, ctx: isoplug.PluginContext) -> None:
        outcome = await ctx.call_host("start.outcome")
        if outcome == "fail":
            raise RuntimeError("told to fail this start")
        if outcome == "hang":
            await asyncio.Event().wait()

    @isoplug.method
    async def ping(self) -> str:
        return "pong"
