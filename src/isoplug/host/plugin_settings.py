"""A host's settings of each plugin at runtime: its log level, its configuration, and what its
log pipeline received.

A base class of :class:`~isoplug.Host` (the methods are the host's public API, documented
there), whose state it reads (declared below).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from isoplug.host.host_stage import HostStage
from isoplug.host.levels import level_number
from isoplug.host.logbridge import LogBridge
from isoplug.host.runner_set import RunnerSet
from isoplug.logs import LogMetrics

if TYPE_CHECKING:
    from isoplug.host.supervisor import RunnerSupervisor

__all__ = ["PluginSettings"]


class PluginSettings:
    """The settings half of :class:`~isoplug.Host`."""

    _life: HostStage
    _runners: RunnerSet
    _log_bridge: LogBridge

    if TYPE_CHECKING:

        def _check_here(self, what: str, *, awaited: bool = False) -> None: ...

        def _supervisor(self, plugin_id: str) -> RunnerSupervisor: ...

    def log_level(self, plugin_id: str) -> int:
        """The level ``plugin_id`` runs at (its whole plugin, as a number): the one
        :meth:`set_log_level` gave it last, else ``config.log_level``, else its manifest's
        ``log_level``. Raises :class:`PluginUnavailable` for an unknown plugin."""
        self._check_here(f"read the log level of plugin {plugin_id!r}")
        return self._supervisor(plugin_id).log_level(plugin_id)

    async def set_log_level(
        self, plugin_id: str, level: int | str, logger: str | None = None
    ) -> None:
        """Set a plugin's log level, in its runner (filtered at the source).

        ``logger=None`` means the whole plugin: its ``ctx.logger``, its own modules' loggers
        and the third-party loggers it uses (in a group, those it shares with the group's other
        plugins follow the most verbose of their levels). This beats its manifest's
        ``log_level`` and ``config.log_level``, even where its code set a level on those
        loggers itself. Otherwise ``logger`` is a logger name as the plugin uses it (in a
        group: for the whole group), which keeps that level when the plugin's level changes
        later. The level survives restarts, and holds from the plugin's import on. Raises
        :class:`PluginUnavailable` for an unknown plugin or when the host is not running, and
        ``ValueError`` for an unknown level name.
        """
        numeric = level_number(level)
        self._check_here(f"set the log level of plugin {plugin_id!r}", awaited=True)
        self._life.check_running(f"set the log level of plugin {plugin_id!r}")
        supervisor = self._supervisor(plugin_id)
        if logger is None:
            await supervisor.set_log_level(numeric, plugin=plugin_id)
        else:
            await supervisor.set_log_level(numeric, logger=logger)

    async def set_config(self, plugin_id: str, config: Mapping[str, Any]) -> bool:
        """Override ``plugin_id``'s configuration with ``config`` (merged over its manifest's
        ``[config]`` key by key, nested tables too; it replaces the overrides given before).

        The plugin's schema checks it first, in every state: its ready runner does, else the
        host imports the plugin in a short-lived process of its own to ask its schema. A
        plugin with ``on_config`` takes it live (returns True). Otherwise returns False: a
        ready plugin (its ``on_config`` raised, gave no answer within
        ``config.call_timeout``, or ended its runner, included), a starting or a failed one
        restarts with it (this returns once it is ready or failed again); a stopped plugin,
        or one whose :meth:`stop` was asked (also while this runs), keeps it for its next
        start. The configuration holds for every later restart.

        Raises, changing nothing: :class:`~isoplug.errors.ConfigInvalid` naming the plugin
        and the field when the schema refuses it, or when ``config`` is not a table with
        string keys; :class:`~isoplug.errors.UnencodableValue` naming where a value is that
        cannot be sent to a runner; :class:`PluginUnavailable` for an unknown plugin or when
        the host is not running. A plugin whose code cannot be imported, or not within
        ``ready_timeout``, cannot check it: the configuration is kept, with a warning, and its
        next start (at once, for a failed plugin) checks it.
        """
        self._check_here(f"configure plugin {plugin_id!r}", awaited=True)
        self._life.check_running(f"configure plugin {plugin_id!r}")
        return await self._runners.set_config(plugin_id, config)

    def log_metrics(self, plugin_id: str) -> LogMetrics:
        """What the log pipeline received from the runner of ``plugin_id`` (for a group: the
        group's runner): records received, replayed, filtered, dropped by reason, bytes, last
        record time. Kept across restarts."""
        self._check_here(f"read the log metrics of plugin {plugin_id!r}")
        return self._log_bridge.metrics(self._supervisor(plugin_id).runner_id)

    def runner_pids(self) -> frozenset[int]:
        """The pid of every runner process this host has started so far (restarts included):
        its plugins' records, and their printed lines, carry theirs as ``runner_pid``. Several
        hosts in one process share the loggers ``plugin.<id>``; this tells whose a record is
        (``record.runner_pid in host.runner_pids()``). A pid is known here before the first
        record that carries it is replayed."""
        return frozenset(self._log_bridge.runner_pids)
