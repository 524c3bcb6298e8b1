"""A test plugin whose calls and event handlers last until cancelled: work that piles up; and
an event handler that fails every time."""

from __future__ import annotations

import asyncio
from typing import Any

import isoplug


class Backlogged(isoplug.Plugin):
    async def setup(self, ctx: isoplug.PluginContext) -> None:
        self.ctx = ctx
        self.started = 0
        self.cancelled = 0
        self.handled = 0

    @isoplug.method
    async def hold(self, say_at: int = 0) -> None:
        """Runs until cancelled (the host's cancel, or the runner's shutdown); the
        ``say_at``-th call started says so."""
        self.started += 1
        if self.started == say_at:
            self.ctx.logger.warning("%d calls started", say_at)
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.cancelled += 1
            raise

    @isoplug.method
    async def shrug_off_cancel(self) -> str:
        """Catches the first cancellation and runs on: cancelled, yet not ended."""
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.ctx.logger.warning("shrugging off a cancel")
        await asyncio.Event().wait()
        return "never"

    @isoplug.method
    async def counts(self) -> dict[str, int]:
        return {"started": self.started, "cancelled": self.cancelled, "handled": self.handled}

    @isoplug.on_event("tick")
    async def on_tick(self, payload: Any) -> None:
        """Slower than any publisher: the first one waits until cancelled."""
        self.handled += 1
        await asyncio.Event().wait()

    @isoplug.on_event("fault")
    async def on_fault(self, payload: Any) -> None:
        raise ValueError(f"no good: {payload}")

    async def teardown(self) -> None:
        self.ctx.logger.warning("teardown ran after %d cancelled calls", self.cancelled)
