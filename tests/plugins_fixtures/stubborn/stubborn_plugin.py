"""Ignores SIGTERM and blocks its loop in teardown: only SIGKILL stops it."""

from __future__ import annotations

import signal
import time

import isoplug


class Stubborn(isoplug.Plugin):
    async def setup(self, ctx: isoplug.PluginContext) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)

    async def teardown(self) -> None:
        time.sleep(3600)
