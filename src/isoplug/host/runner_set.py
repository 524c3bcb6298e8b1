"""The host's runners: which plugins there are, which runner each lives in, and changes to
that set while the host runs (hot reload, a new configuration).

:class:`RunnerSet` reads the plugins folder with the host's configuration overrides merged
into each manifest's ``[config]``, and adds, removes, replaces and reconfigures runners; the
:class:`~isoplug.host.Host` makes each supervisor (it knows the listeners) and keeps the
public API.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
from collections.abc import Callable, Mapping, Set
from pathlib import Path
from types import MappingProxyType
from typing import Any

from isoplug.errors import ConfigInvalid
from isoplug.host.config_check import check_overrides
from isoplug.host.manifest import Manifest, merge_config
from isoplug.host.registry import Discovery, RunnerPlan, discover
from isoplug.host.reload import PluginReloader, ReloadPlan
from isoplug.host.status import PluginState, PluginUnavailable
from isoplug.host.supervisor import RunnerSupervisor

__all__ = ["RunnerSet"]

_log = logging.getLogger("isoplug.host")


class RunnerSet:
    """The runners of one host; ``make(plan)`` makes the supervisor of a new runner,
    ``changed()`` is told when a plugin leaves."""

    def __init__(
        self,
        plugins_dir: Path,
        plugin_config: Mapping[str, Mapping[str, Any]] | None,
        changed: Callable[[], None],
    ) -> None:
        self.plugins_dir = plugins_dir
        #: By runner id; by plugin id.
        self.supervisors: dict[str, RunnerSupervisor] = {}
        self.runner_of: dict[str, RunnerSupervisor] = {}
        #: What each runner was started from (hot reload compares new plans with these).
        self.plans: dict[str, RunnerPlan] = {}
        #: The host's configuration overrides, by plugin id (merged over each ``[config]``).
        self.config_overrides: dict[str, dict[str, Any]] = {
            plugin_id: check_overrides(plugin_id, values)
            for plugin_id, values in (plugin_config or {}).items()
        }
        #: Each plugin's ``[config]`` as its plugin.toml has it, before the overrides.
        self._toml_configs: dict[str, Mapping[str, Any]] = {}
        self._changed = changed
        #: A ``[config]`` a plugin refused at a hot reload, by plugin id, with the problem:
        #: offered again (and its refusal logged again) only once its folder changes.
        self._refused: dict[str, tuple[Mapping[str, Any], str]] = {}
        #: The plugins folder's problems, as the host started or as the last batch of hot
        #: reload found them (see :meth:`problems`).
        self.folder_problems: list[str] = []
        self._reloader: PluginReloader | None = None
        #: Restarts hot reload asked for, until each runner has settled: the reloader goes on
        #: to the next batch meanwhile (a fix saved while a runner waits out its backoff after
        #: a crash restarts it at once).
        self._restarting: set[asyncio.Task[None]] = set()
        self.make: Callable[[RunnerPlan], RunnerSupervisor] | None = None

    def supervisor(self, plugin_id: str) -> RunnerSupervisor:
        supervisor = self.runner_of.get(plugin_id)
        if supervisor is None:
            known = ", ".join(sorted(self.runner_of)) or "none"
            raise PluginUnavailable(f"no plugin {plugin_id!r} (plugins: {known})")
        return supervisor

    def discover(self) -> Discovery:
        """The plugins folder's manifests, with the host's configuration overrides merged."""
        discovery = discover(self.plugins_dir)
        self._toml_configs = {m.id: m.config for m in discovery.manifests}
        manifests = tuple(self._configured(m) for m in discovery.manifests)
        return dataclasses.replace(discovery, manifests=manifests)

    def _configured(self, manifest: Manifest) -> Manifest:
        override = self.config_overrides.get(manifest.id)
        if not override:
            return manifest
        merged = merge_config(manifest.config, override)
        return dataclasses.replace(manifest, config=MappingProxyType(merged))

    def add(self, plan: RunnerPlan) -> RunnerSupervisor:
        assert self.make is not None, "the host sets make() before adding runners"
        if plan.runner_id in self.supervisors:
            # A second supervisor would be unreachable, and outlive the host's close.
            raise RuntimeError(f"runner {plan.runner_id} has a supervisor already")
        supervisor = self.make(plan)
        self.supervisors[plan.runner_id] = supervisor
        self.plans[plan.runner_id] = plan
        for manifest in plan.manifests:
            self.runner_of[manifest.id] = supervisor
        return supervisor

    async def remove(self, runner_id: str) -> None:
        supervisor = self.supervisors[runner_id]
        await supervisor.aclose()
        del self.supervisors[runner_id]
        del self.plans[runner_id]
        for plugin_id in supervisor.manifests:
            self._refused.pop(plugin_id, None)
            if self.runner_of.get(plugin_id) is supervisor:
                del self.runner_of[plugin_id]
        self._changed()

    async def set_config(self, plugin_id: str, config: Mapping[str, Any]) -> bool:
        """See :meth:`isoplug.Host.set_config`."""
        supervisor = self.supervisor(plugin_id)
        override = check_overrides(plugin_id, config)
        merged = merge_config(self._toml_configs.get(plugin_id, {}), override)
        live = await supervisor.set_config(plugin_id, merged)
        self.config_overrides[plugin_id] = override
        self._remember_plan(supervisor)
        return live

    def _remember_plan(self, supervisor: RunnerSupervisor) -> None:
        self.plans[supervisor.runner_id] = RunnerPlan(
            supervisor.runner_id, tuple(supervisor.manifests.values())
        )

    def problems(self) -> list[str]:
        """The plugins folder's problems (plugins skipped, or kept running on the manifest
        they had), and the ``[config]`` tables refused at a hot reload."""
        kept = self._reloader.kept if self._reloader is not None else {}
        # A plugin whose plugin.toml no longer validates is told so: not its older refusal.
        refused = (p for plugin_id, (_, p) in self._refused.items() if plugin_id not in kept)
        return [*self.folder_problems, *refused]

    def kept(self) -> dict[str, str]:
        """The plugins hot reload keeps running as they were, their folder's last change
        refused (a ``plugin.toml`` that no longer validates, a ``[config]`` the plugin
        refuses), by id: the problem."""
        kept = {plugin_id: problem for plugin_id, (_, problem) in self._refused.items()}
        if self._reloader is not None:
            kept.update(self._reloader.kept)
        return kept

    def reloader(self) -> PluginReloader:
        """A hot reloader of the plugins folder that applies its batches here, and keeps
        :attr:`folder_problems` as the folder is."""
        self._reloader = PluginReloader(
            self.plugins_dir, self.plans.copy, self.discover, self.apply_reload, self._found
        )
        return self._reloader

    def _found(self, problems: list[str], discovery: Discovery) -> None:
        self.folder_problems = problems
        # A refused [config] changed since (put back as it runs, say) is no longer refused;
        # one changed to another is offered again by this batch (and refused, or taken).
        configs = {manifest.id: manifest.config for manifest in discovery.manifests}
        for plugin_id, (config, _) in list(self._refused.items()):
            if configs.get(plugin_id, config) != config:
                del self._refused[plugin_id]

    async def apply_reload(self, plan: ReloadPlan) -> None:
        """Apply one batch of hot-reload changes (see :mod:`isoplug.host.reload`); restarts
        are asked for, not waited for."""
        for runner_id in plan.stop:
            why = plan.why.get(runner_id, "its plugin folder is gone")
            _log.info("reload: runner %s: %s; stopping it", runner_id, why)
            await self.remove(runner_id)
        replaced: set[str] = set()
        for new in plan.replace:
            restarts = self.supervisors[new.runner_id].restarts
            if await self._reconfigure(new, plan.touched):
                if self.supervisors[new.runner_id].restarts != restarts:
                    # Restarted for a configuration it does not take live: with the new code.
                    replaced.add(new.runner_id)
                continue
            _log.info("reload: a plugin.toml of runner %s changed; replacing it", new.runner_id)
            await self.remove(new.runner_id)
            self.add(new).start()
            replaced.add(new.runner_id)
        for new in plan.start:
            why = plan.why.get(new.runner_id, "new plugin folder")
            _log.info("reload: %s; starting runner %s", why, new.runner_id)
            self.add(new).start()
        for runner_id in plan.restart:
            supervisor = self.supervisors.get(runner_id)
            if runner_id in replaced or supervisor is None:
                continue  # a runner started since the change runs the new code already
            why = plan.why.get(runner_id, "code changed")
            _log.info("reload: %s; restarting runner %s", why, runner_id)
            task = asyncio.create_task(supervisor.restart(), name=f"isoplug-reload:{runner_id}")
            self._restarting.add(task)
            task.add_done_callback(functools.partial(self._restarted, runner_id))

    def _restarted(self, runner_id: str, task: asyncio.Task[None]) -> None:
        self._restarting.discard(task)
        if not task.cancelled() and (error := task.exception()) is not None:
            _log.error("reload: restarting runner %s failed: %s", runner_id, error)

    async def cancel_restarts(self) -> None:
        """Stop waiting for the restarts hot reload asked for (the host closes)."""
        tasks = list(self._restarting)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _reconfigure(self, new: RunnerPlan, touched: Set[str]) -> bool:
        """When only ``[config]`` tables changed in ``new``, hand each plugin its new one
        (live where it has ``on_config``); False when anything else changed. A configuration
        a plugin refused is not offered again until its folder (one of ``touched``, by plugin
        id) changes."""
        supervisor = self.supervisors[new.runner_id]
        old = {m.id: m for m in self.plans[new.runner_id].manifests}
        if set(old) != {m.id for m in new.manifests} or any(
            dataclasses.replace(m, config=old[m.id].config) != old[m.id] for m in new.manifests
        ):
            return False
        for manifest in new.manifests:
            if manifest.config == old[manifest.id].config:
                self._refused.pop(manifest.id, None)
                continue
            refused = self._refused.get(manifest.id)
            if refused and refused[0] == manifest.config and manifest.id not in touched:
                continue
            try:
                live = await supervisor.set_config(manifest.id, manifest.config)
            except ConfigInvalid as exc:
                problem = f"{manifest.path}: {exc}; it keeps the configuration it runs with"
                self._refused[manifest.id] = (manifest.config, problem)
                _log.error("reload: %s", problem)
                continue
            self._refused.pop(manifest.id, None)
            how = (
                "taken live"
                if live
                # set_config() keeps it for the next start of a stopped plugin.
                else "kept for its next start: it is stopped"
                if supervisor.state is PluginState.STOPPED
                else "its runner restarted with it"
            )
            _log.info("reload: plugin %s has a new configuration (%s)", manifest.id, how)
        self._remember_plan(supervisor)
        return True
