"""A test plugin whose child holds log rings through pending ends (tests/ring_bomb_child.py
``hoard``), as the outside check's ring_host_exhaust.py plugin did."""

from __future__ import annotations

import os
import subprocess
import sys

import isoplug


class Hoarder(isoplug.Plugin):
    async def setup(self, ctx: isoplug.PluginContext) -> None:
        self.ctx = ctx

    @isoplug.method
    def hoard(self, script: str, count: int) -> int:
        """``python script hoard count`` given the plugin's log environment, once it has
        dropped all its connections (it lives on, until killed); its pid."""
        child = subprocess.Popen(
            [sys.executable, script, "hoard", str(count)],
            env={**os.environ, **self.ctx.log_child_env()},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert child.stdout is not None
        line = child.stdout.readline()
        if line != "hoarding\n":
            child.kill()
            child.wait()
            raise RuntimeError(f"the hoarder did not start: {line!r}")
        return child.pid
