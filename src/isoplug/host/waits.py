"""Waiting on the states of a host's plugins (:meth:`isoplug.Host.wait_ready` and
:meth:`~isoplug.Host.wait_for`): every change wakes the waiters, who look again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from isoplug.errors import PluginFailed
from isoplug.host.status import PluginInfo, PluginState

__all__ = ["PluginWaits"]

#: States in which a plugin will not change any more without someone asking.
_SETTLED = frozenset({PluginState.READY, PluginState.FAILED, PluginState.STOPPED})


class PluginWaits:
    """Waits on ``plugins()`` (every plugin's snapshot) and ``plugin(id)`` (one's); call
    :meth:`changed` on every change. ``still_running(what)`` raises when the host does not
    run any more: what is waited for then will not come."""

    def __init__(
        self,
        plugins: Callable[[], list[PluginInfo]],
        plugin: Callable[[str], PluginInfo],
        still_running: Callable[[str], None],
    ) -> None:
        self._plugins = plugins
        self._plugin = plugin
        self._still_running = still_running
        self._changed = asyncio.Event()

    def changed(self) -> None:
        """Wake every waiter."""
        self._changed.set()
        self._changed = asyncio.Event()

    async def ready(self, timeout: float | None, raise_on_failure: bool) -> list[PluginInfo]:
        """See :meth:`isoplug.Host.wait_ready`."""
        try:
            async with asyncio.timeout(timeout):
                while True:
                    changed = self._changed
                    infos = self._plugins()
                    failed = {
                        i.id: i.error or "failed" for i in infos if i.state is PluginState.FAILED
                    }
                    if failed and raise_on_failure:
                        raise PluginFailed(failed)
                    if all(info.state in _SETTLED for info in infos):
                        return infos
                    self._still_running("wait for plugins to be ready")
                    await changed.wait()
        except TimeoutError:
            waiting = [i for i in self._plugins() if i.state not in _SETTLED]
            raise TimeoutError(
                f"plugins not ready within {timeout:g} s: "
                + "; ".join(f"{info.id} {info.summary()}" for info in waiting)
            ) from None

    async def until(
        self, plugin_id: str, predicate: Callable[[PluginInfo], bool], timeout: float | None
    ) -> PluginInfo:
        """See :meth:`isoplug.Host.wait_for`."""
        try:
            async with asyncio.timeout(timeout):
                while True:
                    changed = self._changed
                    info = self._plugin(plugin_id)
                    if predicate(info):
                        return info
                    self._still_running(f"wait for plugin {plugin_id!r} ({info.state.value})")
                    await changed.wait()
        except TimeoutError:
            if timeout is None:
                raise  # the predicate's own
            raise TimeoutError(
                f"plugin {plugin_id!r} did not reach the state waited for within {timeout:g} s: "
                + self._plugin(plugin_id).summary()
            ) from None
