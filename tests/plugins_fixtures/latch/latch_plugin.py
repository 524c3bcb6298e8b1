"""A test plugin whose one method a test holds open: ``held(started, gate, answered)`` creates
the file ``started``, waits for the file ``gate``, returns ``"through"``, and creates the file
``answered`` once its answer was written to the host (two loop rounds after its return: the
answer goes out in the step that returns)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import isoplug


class Latch(isoplug.Plugin):
    @isoplug.method
    async def held(self, started: str, gate: str, answered: str) -> str:
        Path(started).touch()
        while not Path(gate).exists():
            await asyncio.sleep(0.01)
        loop = asyncio.get_running_loop()

        def touch() -> None:
            Path(answered).touch()

        loop.call_soon(loop.call_soon, touch)
        return "through"

    @isoplug.method
    async def ping(self) -> str:
        return "pong"
