"""Waiting on the states of a host's plugins (:meth:`isoplug.Host.wait_ready` and
:meth:`~isoplug.Host.wait_for`): every change wakes the waiters, who look again.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable

from isoplug.arguments import is_async_function
from isoplug.errors import PluginFailed, WaitTimeout, hidden_from_pytest
from isoplug.host.status import PluginInfo, PluginState, PluginUnavailable, Unavailability

__all__ = ["PluginWaits", "check_predicate"]

#: Left out of a failing test's report (see isoplug.errors.hidden_from_pytest).
__tracebackhide__ = hidden_from_pytest

#: States in which a plugin will not change any more without someone asking.
_SETTLED = frozenset({PluginState.READY, PluginState.FAILED, PluginState.STOPPED})
#: The states a wait for readiness ends on while the host closes: its plugins stop then,
#: and a plugin stopped by the close is not ready (the wait raises once the close is over).
_SETTLED_WHILE_CLOSING = frozenset({PluginState.READY, PluginState.FAILED})
_PLAIN_PREDICATE = (
    "the predicate must be a plain function of a PluginInfo returning a bool: it is called "
    "on the host's loop at every change of the plugin (to wait for something else too, "
    "await that, then wait_for)"
)


def check_predicate(predicate: object) -> None:
    """Raise :class:`TypeError` for a ``wait_for`` predicate that is not callable, or that is
    an ``async def`` function: its coroutine, never awaited, is true at once."""
    if not callable(predicate):
        raise TypeError(f"wait_for(): {predicate!r:.60} is not callable; {_PLAIN_PREDICATE}")
    if is_async_function(predicate):
        raise TypeError(
            f"wait_for(): the predicate {_named(predicate)} is an async function, whose "
            f"coroutine (never awaited) would count as true at once; {_PLAIN_PREDICATE}"
        )


def _named(function: object) -> str:
    return getattr(function, "__qualname__", None) or f"{function!r:.60}"


class PluginWaits:
    """Waits on ``plugins()`` (every plugin's snapshot) and ``plugin(id)`` (one's); call
    :meth:`changed` on every change. ``still_running(what)`` raises when the host does not
    run any more: what is waited for then will not come; ``host_running()`` says whether the
    host runs (started, its close not begun)."""

    def __init__(
        self,
        plugins: Callable[[], list[PluginInfo]],
        plugin: Callable[[str], PluginInfo],
        still_running: Callable[[str], None],
        setup_where: Callable[[str], Awaitable[str]],
        host_running: Callable[[], bool],
    ) -> None:
        self._plugins = plugins
        self._host_running = host_running
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
                    settled = _SETTLED if self._host_running() else _SETTLED_WHILE_CLOSING
                    stopped = [i.id for i in infos if i.state is PluginState.STOPPED]
                    if stopped and raise_on_failure and settled is _SETTLED:
                        # Someone stopped it while this waited: a wait_ready() that returns
                        # says every plugin is ready, and this one will not be on its own.
                        raise _stopped(stopped)
                    if all(info.state in settled for info in infos):
                        return infos
                    self._still_running("wait for plugins to be ready")
                    await changed.wait()
        except TimeoutError:
            waiting = [i for i in self._plugins() if i.state not in _SETTLED]
            where = await self._where(waiting)
            raise WaitTimeout(
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
                    if _holds(predicate, info):
                        return info
                    self._still_running(f"wait for plugin {plugin_id!r} ({info.state.value})")
                    await changed.wait()
        except TimeoutError:
            if timeout is None:
                raise  # the predicate's own
            raise WaitTimeout(
                f"plugin {plugin_id!r} did not reach the state waited for within {timeout:g} s: "
                + self._plugin(plugin_id).summary()
            ) from None


def _stopped(plugin_ids: list[str]) -> PluginUnavailable:
    """What :meth:`PluginWaits.ready` raises for plugins stopped on request."""
    named = ", ".join(repr(plugin_id) for plugin_id in plugin_ids)
    if len(plugin_ids) == 1:
        said = f"plugin {named} is stopped (host.restart({named}) starts it again)"
    else:
        said = f"plugins {named} are stopped (host.restart(id) starts one again)"
    return PluginUnavailable(
        f"cannot wait for plugins to be ready: {said}",
        reason=Unavailability.STOPPED,
        plugin_id=plugin_ids[0] if len(plugin_ids) == 1 else None,
    )


def _holds(predicate: Callable[[PluginInfo], bool], info: PluginInfo) -> bool:
    """``predicate(info)``; what :func:`check_predicate` cannot see, a plain function that
    returns an awaitable (``lambda info: check(info)`` of an async ``check``), raises."""
    result: object = predicate(info)
    if inspect.isawaitable(result):
        if inspect.iscoroutine(result):
            result.close()  # never awaited: no RuntimeWarning besides this error
        raise TypeError(
            f"wait_for(): the predicate {_named(predicate)} returned a "
            f"{type(result).__name__}, an awaitable, which would count as true at once; "
            f"{_PLAIN_PREDICATE}"
        )
    return bool(result)
