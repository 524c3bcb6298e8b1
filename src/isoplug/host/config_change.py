"""A plugin's new configuration, given to its runner's supervisor: checked first, in every
state, then taken live, by a restart, or kept for the next start.

Which of those depends on the state (see :meth:`isoplug.Host.set_config`): a plugin loaded
in a ready runner is offered it (its runner checks it; ``on_config`` takes it live, or the
runner restarts with it); any other is checked in a process of its own
(:func:`~isoplug.host.config_check.check_in_process`), then a runner starting now (with the
old one) or a failed one (it could not load, or crashed) restarts with it, while a stopped
plugin (or one whose stop a user asked for, still under way) only keeps it for its next
start.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, Protocol

from isoplug.host.commands import RESTARTED_FOR_CONFIG
from isoplug.host.config import SupervisorConfig
from isoplug.host.config_check import check_in_process
from isoplug.host.live_settings import offer_config
from isoplug.host.manifest import Manifest
from isoplug.host.status import PluginState
from isoplug.log_guard import guarded_logger
from isoplug.rpc import Peer

__all__ = ["ConfigTarget", "apply_config"]

_log = guarded_logger("isoplug.host")


class ConfigTarget(Protocol):
    """What :func:`apply_config` needs of a :class:`~isoplug.host.supervisor.RunnerSupervisor`."""

    manifests: dict[str, Manifest]
    state: PluginState
    broken: dict[str, str]

    @property
    def generation(self) -> int: ...

    @property
    def stopped_by_user(self) -> bool: ...

    def ready_peer(self, plugin_id: str) -> Peer | None: ...

    async def restart(
        self, *, unless_since: int | None = None, by_user: bool = True, words: str | None = None
    ) -> bool: ...


def _taking_peer(target: ConfigTarget, plugin_id: str) -> Peer | None:
    """The connection of the ready runner to offer the change to (None: none may take it).
    A runner whose stop a user asked for may still read ready while it stops: it is offered
    nothing (its plugin only keeps the configuration), and a process of its own checks it."""
    return None if target.stopped_by_user else target.ready_peer(plugin_id)


async def apply_config(
    target: ConfigTarget,
    plugin_id: str,
    config: Mapping[str, Any],
    settings: SupervisorConfig,
    cause: str,
) -> bool:
    """See :meth:`isoplug.host.supervisor.RunnerSupervisor.set_config`. Its restarts are the
    host's own: a user's stop, asked before or while this runs, holds over them; the exit
    account of the runner they replace names ``cause`` (what changed the configuration)."""
    words = f"{RESTARTED_FOR_CONFIG} ({cause})"
    new = dataclasses.replace(target.manifests[plugin_id], config=MappingProxyType(dict(config)))
    if _taking_peer(target, plugin_id) is None:
        unchecked = await check_in_process(
            new, settings.inherit_environment, settings.ready_timeout
        )
        if unchecked is not None:
            _log.warning(
                "plugin %s: its new configuration could not be checked (%s); it is kept for "
                "its next start, which checks it",
                plugin_id,
                unchecked,  # sanitized: check_in_process cleans what the process said
            )
    # Looked at again: the state may have changed while the check ran.
    peer = _taking_peer(target, plugin_id)
    if peer is not None:
        generation = target.generation
        old = target.manifests[plugin_id]
        # Taken before on_config runs: should it end its runner, the restart after that crash
        # (whichever of the crash and this change's failure the host hears of first) starts
        # the plugin with the configuration it was handed.
        target.manifests[plugin_id] = new
        try:
            live = await offer_config(peer, plugin_id, config, settings.call_timeout)
        except BaseException:
            if target.manifests[plugin_id] is new:
                target.manifests[plugin_id] = old
            raise
        if live:
            return True
        # One restart: not a second one when the crash restarted the runner already; none
        # when a user asked for a stop meanwhile.
        await target.restart(unless_since=generation, by_user=False, words=words)
        return False
    target.manifests[plugin_id] = new
    if target.state is PluginState.STOPPED or target.stopped_by_user:
        return False
    if (
        plugin_id in target.broken
        or target.state is PluginState.STARTING
        or target.state is PluginState.FAILED
    ):
        # It failed to load or crashed (perhaps for its configuration: a new one is how a
        # user fixes that), or the runner starting now has the old one: start again with it.
        await target.restart(by_user=False, words=words)
    return False
