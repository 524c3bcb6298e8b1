"""Forks, at setup, a process that would outlive the runner if nobody killed it."""

from __future__ import annotations

import os
import time

import isoplug


class Forker(isoplug.Plugin):
    async def setup(self, ctx: isoplug.PluginContext) -> None:
        child = os.fork()
        if child == 0:
            try:
                time.sleep(3600)
            finally:
                os._exit(0)
        print(f"forker: grandchild pid {child}", flush=True)
