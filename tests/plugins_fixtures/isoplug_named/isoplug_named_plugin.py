"""A test plugin whose id, ``isoplug``, is what the console calls the host: it says what the
host says when a plugin is ready."""

from __future__ import annotations

import logging

import isoplug


class Named(isoplug.Plugin):
    async def setup(self, ctx: isoplug.PluginContext) -> None:
        logging.getLogger().info("plugin mimic: ready: runner mimic (pid 1) in 0.01 s")
