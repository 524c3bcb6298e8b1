"""A test plugin that leaves tasks running at stop: one started in setup that logs as it is
cancelled, and on request one that raises as it is cancelled, one that ignores it and one
started from a bare thread.

``lingerer_b/lingerer_b_plugin.py`` is a link to this file (a second member of a group,
imported under its own module name); each plugin says which one it is by its id.
"""

from __future__ import annotations

import asyncio
import logging
import threading

import isoplug

#: The plugin's module logger: ``plugin.<id>.<module>`` on the host.
_log = logging.getLogger(__name__)


class Lingerer(isoplug.Plugin):
    async def setup(self, ctx: isoplug.PluginContext) -> None:
        self.name = ctx.plugin_id
        self.ctx = ctx
        #: Kept, never awaited: the runner ends them at stop.
        self.tasks: set[asyncio.Task[None]] = set()
        self.tasks.add(asyncio.create_task(self._worker(), name=f"{self.name}-worker"))

    async def teardown(self) -> None:
        _log.info("%s torn down", self.name)

    async def _worker(self) -> None:
        try:
            while True:
                await asyncio.sleep(3600)
        except asyncio.CancelledError:
            _log.info("%s worker stopping", self.name)
            raise
        finally:
            self.ctx.logger.warning("%s worker finally", self.name)

    @isoplug.method
    async def start_raiser(self) -> None:
        """A task, started in a call, that raises as it is cancelled."""

        async def raiser() -> None:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                raise LookupError(f"{self.name} raised on cancel") from None

        loop = asyncio.get_running_loop()
        self.tasks.add(loop.create_task(raiser(), name=f"{self.name}-raiser"))

    @isoplug.method
    async def start_deaf(self) -> None:
        """A task, started in a call, that ignores cancellation for good."""

        async def deaf_forever() -> None:
            while True:
                try:
                    await asyncio.sleep(3600)
                except asyncio.CancelledError:
                    _log.info("%s deaf task ignores cancellation", self.name)

        self.tasks.add(asyncio.create_task(deaf_forever(), name=f"{self.name}-deaf"))

    @isoplug.method
    async def start_from_bare_thread(self) -> None:
        """A task started from a bare thread: it carries no plugin's source."""

        async def unattributed() -> None:
            try:
                await asyncio.sleep(3600)
            finally:
                _log.info("%s unattributed task stopping", self.name)

        loop = asyncio.get_running_loop()
        started = threading.Event()

        def start() -> None:
            self.tasks.add(loop.create_task(unattributed(), name=f"{self.name}-unattributed"))
            started.set()

        thread = threading.Thread(target=lambda: loop.call_soon_threadsafe(start))
        thread.start()
        await asyncio.to_thread(started.wait)
        await asyncio.to_thread(thread.join)
