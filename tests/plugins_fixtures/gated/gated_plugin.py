"""A test plugin that stays STARTING for as long as the test holds its gate closed."""

from __future__ import annotations

import isoplug


class Gated(isoplug.Plugin):
    async def setup(self, ctx: isoplug.PluginContext) -> None:
        await ctx.call_host("gate.wait")

    @isoplug.method
    async def ping(self) -> str:
        return "pong"
