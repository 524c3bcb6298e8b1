"""Waiting on the states of a host's plugins (:meth:`isoplug.Host.wait_ready` and
:meth:`~isoplug.Host.wait_for`): every change wakes the waiters, who look again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from isoplug.errors import PluginFailed, hidden_from_pytest
from isoplug.host.status import PluginInfo, PluginState, PluginUnavailable

__all__ = ["PluginWaits"]

#: Left out of a failing test's report (see isoplug.errors.hidden_from_pytest).
__tracebackhide__ = hidden_from_pytest

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
        setup_where: Callable[[str], Awaitable[str]],
    ) -> None:
        self._plugins = plugins
        self._plugin = plugin
        self._still_running = still_running
        self._setup_where = setup_where
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
            where = await self._where(waiting)
            raise TimeoutError(
                f"plugins not ready within {timeout:g} s: "
                + "; ".join(
                    f"{info.id} {info.summary()}"
                    + (f": {where[info.runner_id]}" if where.get(info.runner_id) else "")
                    for info in waiting
                )
            ) from None

    async def _where(self, waiting: list[PluginInfo]) -> dict[str, str]:
        """Where the setup() of each runner of ``waiting`` waits, by runner id (asked of each
        runner once, together: a group's plugins share it)."""
        first = {info.runner_id: info.id for info in reversed(waiting)}
        said = await asyncio.gather(*(self._where_of(plugin_id) for plugin_id in first.values()))
        return dict(zip(first, said, strict=True))

    async def _where_of(self, plugin_id: str) -> str:
        try:
            return await self._setup_where(plugin_id)
        except PluginUnavailable:
            return ""  # gone meanwhile (a hot reload removed its folder): nothing to say

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
