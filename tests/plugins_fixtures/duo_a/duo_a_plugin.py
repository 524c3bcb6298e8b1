"""The test plugins of group 'duo': prints in a call, an event and a task it started.

One code serves both: ``duo_b/duo_b_plugin.py`` is a link to this file, imported under its own
module name, and each plugin says which one it is by its id.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import isoplug


class Duo(isoplug.Plugin):
    async def setup(self, ctx: isoplug.PluginContext) -> None:
        self.name = ctx.plugin_id
        self.tasks: set[asyncio.Task[None]] = set()

    @isoplug.method
    async def speak(self) -> None:
        print(f"{self.name} in a call")

        async def later() -> None:
            await asyncio.sleep(0)
            print(f"{self.name} in a task")

        task = asyncio.get_running_loop().create_task(later())
        self.tasks.add(task)
        await task

    @isoplug.method
    def speak_in_thread(self) -> None:
        print(f"{self.name} in a worker thread")

    @isoplug.method
    async def fail_in_task(self) -> None:
        async def fail() -> None:
            raise LookupError(f"{self.name} task failed")

        # Waited for, not awaited: its exception stays unretrieved.
        await asyncio.wait([asyncio.get_running_loop().create_task(fail())])

    @isoplug.on_event("chat")
    async def on_chat(self, payload: Any) -> None:
        print(f"{self.name} in an event", file=sys.stderr)
