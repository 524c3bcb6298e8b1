from __future__ import annotations

import isoplug


class SetupCrash(isoplug.Plugin):
    async def setup(self, ctx: isoplug.PluginContext) -> None:
        raise RuntimeError("database unreachable")
