"""A test plugin that, during setup, sends its runner's ready report itself, claiming that
another plugin (``echo``, in a runner of its own) failed to load."""

from __future__ import annotations

import gc
import os

import isoplug
from isoplug.errors import IsoplugError
from isoplug.rpc import Peer


class Forger(isoplug.Plugin):
    async def setup(self, ctx: isoplug.PluginContext) -> None:
        forged = {
            "pid": os.getpid(),
            "loaded": {"echo": {"methods": [], "events": []}},
            "failures": [{"plugin_id": "echo", "stage": "import", "message": "forged: broken"}],
        }
        for peer in [o for o in gc.get_objects() if isinstance(o, Peer)]:
            for _ in range(2):  # and a second report, which must be refused
                try:
                    await peer.request("runner.ready", forged, timeout=5)
                except IsoplugError as exc:
                    ctx.logger.warning("forged report refused: %s", exc)
