"""What a test does to its plugins through a harness beyond calls and events: stop, restart,
configure, set the log level of, and call with options one plugin (the only one, unless
``plugin`` names it), as the :class:`~isoplug.Host` methods of those names do.

:class:`HarnessOperations` is a base class of :class:`~isoplug.testing.PluginHarness` (its
coroutines), :class:`BlockingOperations` of :class:`~isoplug.testing.BlockingHarness` (the same
methods, with the same signatures, blocking until done on the harness's loop).
"""

from __future__ import annotations

import enum
from collections.abc import Coroutine, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from isoplug import Host, PluginInfo

if TYPE_CHECKING:
    from isoplug.testing.harness import PluginHarness

__all__ = ["BlockingOperations", "HarnessOperations"]

T = TypeVar("T")


class _Default(enum.Enum):
    """``call_with``'s timeout when none is given: the host's, as ``Host.call_with`` takes."""

    CALL_TIMEOUT = "config.call_timeout"


class HarnessOperations:
    """The host's operations on one plugin, as coroutines of the harness's loop."""

    if TYPE_CHECKING:

        @property
        def host(self) -> Host: ...

        def _id(self, plugin_id: str | None) -> str: ...

    async def stop(self, plugin: str | None = None) -> PluginInfo:
        """Stop the plugin's runner gracefully (its ``teardown`` runs), as
        :meth:`~isoplug.Host.stop`: returns its state once what it logged and printed has
        reached the harness's records. It stays stopped until :meth:`restart`."""
        return await self.host.stop(self._id(plugin))

    async def restart(self, plugin: str | None = None) -> PluginInfo:
        """Restart the plugin's runner (a stopped one too), as :meth:`~isoplug.Host.restart`:
        returns its state once it is ready or failed again."""
        return await self.host.restart(self._id(plugin))

    async def set_config(self, config: Mapping[str, Any], *, plugin: str | None = None) -> bool:
        """Give the plugin a new configuration (merged over its manifest's ``[config]``), as
        :meth:`~isoplug.Host.set_config`: True when its ``on_config`` took it live, False when
        it restarted with it (this returns once it is ready or failed again)."""
        return await self.host.set_config(self._id(plugin), config)

    async def set_log_level(
        self, level: int | str, logger: str | None = None, *, plugin: str | None = None
    ) -> None:
        """Set the plugin's log level (``logger``: one of its loggers only), as
        :meth:`~isoplug.Host.set_log_level`; it holds across restarts."""
        await self.host.set_log_level(self._id(plugin), level, logger)

    async def call_with(
        self,
        method: str,
        /,
        *,
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        timeout: float | _Default | None = _Default.CALL_TIMEOUT,
        plugin: str | None = None,
    ) -> Any:
        """Call ``method(*args, **kwargs)`` of the plugin with isoplug's options, as
        :meth:`~isoplug.Host.call_with`: answered within ``timeout`` seconds (None: no limit;
        by default the harness's ``config.call_timeout``)."""
        if timeout is _Default.CALL_TIMEOUT:
            return await self.host.call_with(self._id(plugin), method, args=args, kwargs=kwargs)
        return await self.host.call_with(
            self._id(plugin), method, args=args, kwargs=kwargs, timeout=timeout
        )


class BlockingOperations:
    """:class:`HarnessOperations` for synchronous tests: each blocks until done."""

    _harness: PluginHarness

    if TYPE_CHECKING:

        def run(self, coroutine: Coroutine[Any, Any, T], timeout: float | None = None) -> T: ...

    def stop(self, plugin: str | None = None) -> PluginInfo:
        """See :meth:`PluginHarness.stop`."""
        return self.run(self._harness.stop(plugin))

    def restart(self, plugin: str | None = None) -> PluginInfo:
        """See :meth:`PluginHarness.restart`."""
        return self.run(self._harness.restart(plugin))

    def set_config(self, config: Mapping[str, Any], *, plugin: str | None = None) -> bool:
        """See :meth:`PluginHarness.set_config`."""
        return self.run(self._harness.set_config(config, plugin=plugin))

    def set_log_level(
        self, level: int | str, logger: str | None = None, *, plugin: str | None = None
    ) -> None:
        """See :meth:`PluginHarness.set_log_level`."""
        self.run(self._harness.set_log_level(level, logger, plugin=plugin))

    def call_with(
        self,
        method: str,
        /,
        *,
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        timeout: float | _Default | None = _Default.CALL_TIMEOUT,
        plugin: str | None = None,
    ) -> Any:
        """See :meth:`PluginHarness.call_with`."""
        return self.run(
            self._harness.call_with(
                method, args=args, kwargs=kwargs, timeout=timeout, plugin=plugin
            )
        )
