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
from collections.abc import Awaitable, Callable, Mapping, Set
from pathlib import Path
from types import MappingProxyType
from typing import Any

from isoplug.host.commands import REPLACED_BY_RELOAD, STOPPED_BY_RELOAD
from isoplug.host.config import SupervisorConfig
from isoplug.host.config_check import check_overrides
from isoplug.host.manifest import Manifest, merge_config
from isoplug.host.registry import Discovery, RunnerPlan, discover
from isoplug.host.reload import PluginReloader
from isoplug.host.reload_compile import hold_uncompiled
from isoplug.host.reload_config import Refused, offer_config, quoted_failure
from isoplug.host.reload_plan import ReloadPlan
from isoplug.host.reload_stopped import (
    say_kept_stopped,
    say_renamed_started,
    say_renamed_stopped,
    say_started_by_restart,
)
from isoplug.host.runner_logs import RunnerLogStates
from isoplug.host.status import ExitAccount, PluginState, PluginUnavailable, Unavailability
from isoplug.host.supervisor import RunnerSupervisor
from isoplug.log_guard import guarded_logger
from isoplug.logs.routing import LoggerBudget

__all__ = ["RunnerSet"]

_log = guarded_logger("isoplug.host")


class RunnerSet:
    """The runners of one host; ``make(plan)`` makes the supervisor of a new runner,
    ``changed()`` is told when a plugin leaves."""

    def __init__(
        self,
        plugins_dir: Path,
        plugin_config: dict[str, dict[str, Any]] | None,
        changed: Callable[[], None],
    ) -> None:
        self.plugins_dir = plugins_dir
        #: By runner id; by plugin id.
        self.supervisors: dict[str, RunnerSupervisor] = {}
        self.runner_of: dict[str, RunnerSupervisor] = {}
        #: What each runner was started from (hot reload compares new plans with these).
        self.plans: dict[str, RunnerPlan] = {}
        #: The host's configuration overrides, by plugin id (merged over each ``[config]``),
        #: checked where the host was made (see isoplug.host.config.split_host_config).
        self.config_overrides: dict[str, dict[str, Any]] = dict(plugin_config or {})
        #: Each plugin's ``[config]`` as its plugin.toml has it, before the overrides.
        self._toml_configs: dict[str, Mapping[str, Any]] = {}
        self._changed = changed
        #: A ``[config]`` a plugin refused at a hot reload, by plugin id, with the problem:
        #: offered again (and its refusal logged again) only once its folder changes.
        self._refused: Refused = {}
        #: The plugins folder's problems, as the host started or as the last batch of hot
        #: reload found them (see :meth:`problems`).
        self.folder_problems: list[str] = []
        self._reloader: PluginReloader | None = None
        #: Restarts hot reload asked for, until each runner has settled: the reloader goes on
        #: to the next batch meanwhile (a fix saved while a runner waits out its backoff after
        #: a crash restarts it at once).
        self._restarting: set[asyncio.Task[None]] = set()
        #: The last task handing a runner its new configurations, by runner id: the next
        #: batch's for that runner waits for it.
        self._configuring: dict[str, asyncio.Task[None]] = {}
        self.make: Callable[[RunnerPlan], RunnerSupervisor] | None = None
        #: What the log bridge keeps per runner: dropped when a runner is removed for good.
        self.log_states: RunnerLogStates | None = None
        #: The plugin a user's restart is for while it applies the plugins folder again (see
        #: restart_by_user): the runner that batch makes for it is started by that restart.
        self._restart_asked: str | None = None

    def supervisor(self, plugin_id: str) -> RunnerSupervisor:
        supervisor = self.runner_of.get(plugin_id)
        if supervisor is None:
            known = ", ".join(sorted(self.runner_of)) or "none"
            skipped = self.folder_problems
            # Its folder may be there, skipped for its plugin.toml (a typo): say so, or the
            # caller looks for a plugin that "does not exist".
            more = (
                f"; skipped: {skipped[0]}"
                + (f" (and {len(skipped) - 1} more)" if len(skipped) > 1 else "")
                if skipped
                else ""
            )
            raise PluginUnavailable(
                f"no plugin {plugin_id!r} (plugins: {known}{more})",
                reason=Unavailability.UNKNOWN,
                plugin_id=plugin_id,
            )
        return supervisor

    def discover(self) -> Discovery:
        """The plugins folder's manifests, with the host's configuration overrides merged."""
        # A plugin that runs keeps its folder: a newcomer naming its id is the one skipped.
        running = {m.id: m.directory for plan in self.plans.values() for m in plan.manifests}
        discovery = discover(self.plugins_dir, running)
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

    async def remove(
        self, runner_id: str, *, for_good: bool = True, words: str | None = None
    ) -> LoggerBudget | None:
        """Stop and forget a runner; ``for_good`` (not replaced under its id): its log state
        too, whose share of loggers is returned (see :mod:`isoplug.host.runner_logs`);
        ``words``: why it stops, as its exit account says (see RunnerSupervisor.stop)."""
        supervisor = self.supervisors[runner_id]
        await supervisor.aclose(words)
        del self.supervisors[runner_id]
        del self.plans[runner_id]
        for plugin_id in supervisor.manifests:
            self._refused.pop(plugin_id, None)
            if self.runner_of.get(plugin_id) is supervisor:
                del self.runner_of[plugin_id]
        # After it left supervisors: a connection thread asking for its state from now on
        # gets one that is kept nowhere.
        share = (
            self.log_states.gone(runner_id) if for_good and self.log_states is not None else None
        )
        self._changed()
        return share

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

    def reloader(self, config: SupervisorConfig) -> PluginReloader:
        """A hot reloader of the plugins folder that applies its batches here, and keeps
        :attr:`folder_problems` as the folder is; a runner's changed files are compiled with
        its interpreter and environment (``config``'s ``inherit_environment``) within
        ``config.ready_timeout``, as long as a runner on it has to start."""
        self._reloader = PluginReloader(
            self.plugins_dir,
            self.plans.copy,
            self.discover,
            self.apply_reload,
            self._found,
            check_compiles=functools.partial(
                hold_uncompiled,
                inherit_environment=config.inherit_environment,
                timeout=config.ready_timeout,
            ),
            held=self._held,
        )
        return self._reloader

    def _held(self) -> set[str]:
        """The plugins stopped with host.stop() (and not restarted since), by id."""
        return {plugin_id for plugin_id, s in self.runner_of.items() if s.stopped_by_user}

    async def restart_by_user(self, plugin_id: str) -> None:
        """A user's restart of ``plugin_id``'s runner (see Host.restart). When hot reload
        held a plugin back from a move across a user's stop (see
        :mod:`isoplug.host.reload_groups`), the stop ends first and the plugins folder is
        applied again, so that the restart runs what is there: in its new runner."""
        supervisor = self.supervisor(plugin_id)
        if self._reloader is None or not self._reloader.deferred:
            await supervisor.restart()
            return
        supervisor.end_user_stop()
        self._restart_asked = plugin_id
        try:
            await self._reloader.replan()
        finally:
            self._restart_asked = None
        # The runner it is in now: a new one the batch made (started, or kept stopped as
        # the runner it replaced was), or the same.
        await self.supervisor(plugin_id).restart_unless_started(since=supervisor)

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
        and new configurations are asked for, not waited for: one plugin's slow restart or
        ``on_config`` holds no other change. A step that fails is logged, naming its runner,
        and the others are still taken."""
        # The shares of loggers of runners stopped for the id their folder now names, by the
        # runner started for it.
        shares: dict[str, LoggerBudget] = {}
        # A plugin a user stopped stays stopped in the runner a move puts it in.
        held = self._held() | set(plan.renamed_stopped)
        #: The exit accounts of the runners stopped for a move, by plugin id: the runner a
        #: plugin moves to starts with it as its last_exit.
        accounts: dict[str, ExitAccount] = {}
        for runner_id in plan.stop:
            why = plan.why.get(runner_id, "its plugin folder is gone")
            _log.info("reload: runner %s: %s; stopping it", runner_id, why)
            successor = plan.successors.get(runner_id)
            move = plan.moved.get(runner_id)
            # Asked by no one: its account says by what, as a replaced runner's does.
            by = REPLACED_BY_RELOAD if move or successor else STOPPED_BY_RELOAD
            words = f"{by} ({move or why})"
            stopping = self._stop(runner_id, successor, shares, words, accounts)
            await self._step(runner_id, "stopping it", stopping)
        replaced: set[str] = set()
        for new in plan.replace:
            replaced.add(new.runner_id)
            if self._config_only(new):
                why = plan.why.get(new.runner_id, "code changed")
                code = why if new.runner_id in plan.restart else None
                self._reconfigure_later(new, plan.touched, code)
                continue
            change = plan.members_changed.get(new.runner_id)
            if change is None:
                _log.info("reload: a plugin.toml of runner %s changed; replacing it", new.runner_id)
            else:
                gone = {m.id for m in self.plans[new.runner_id].manifests} - {
                    m.id for m in new.manifests
                }
                without = "" if not gone else " without it" if len(gone) == 1 else " without them"
                _log.info("reload: %s: replacing runner %s%s", change, new.runner_id, without)
            words = f"{REPLACED_BY_RELOAD} ({change or 'a plugin.toml changed'})"
            replacing = self._replace(new, words, accounts, plan.renamed_stopped)
            await self._step(new.runner_id, "replacing it", replacing)
        for new in plan.start:
            why = plan.why.get(new.runner_id, "new plugin folder")
            share = shares.get(new.runner_id)
            starting = self._start(
                new, why, share=share, held=held, accounts=accounts, renamed=plan.renamed_stopped
            )
            await self._step(new.runner_id, "starting it", starting)
        for runner_id, problem in plan.uncompiled.items():
            _log.warning(
                "reload: runner %s: %s; it keeps running the code it loaded (the file is tried "
                "again once saved again)",
                runner_id,
                problem,
            )
        for runner_id in plan.restart:
            supervisor = self.supervisors.get(runner_id)
            if runner_id in replaced or supervisor is None:
                # Started since the change (it runs the new code already), or reconfigured
                # (the task that hands the new configuration restarts it when it must).
                continue
            why = plan.why.get(runner_id, "code changed")
            self._in_background(runner_id, "restarting it", self._restart(supervisor, why))

    async def _replace(
        self,
        new: RunnerPlan,
        words: str,
        accounts: dict[str, ExitAccount],
        renamed: Mapping[str, str],
    ) -> None:
        """Replace ``new``'s runner by one started from ``new``; ``words``: why, as the old
        runner's exit account says (no one asked for its stop); ``renamed``: the plugins
        renamed while stopped with host.stop(), new id -> old (see ReloadPlan)."""
        old = self.supervisors[new.runner_id]
        # What the host set at runtime holds across the replacement, as across a restart:
        # levels set with set_log_level(), and a stop (it stays stopped until a restart).
        levels, stopped = old.log_levels, old.state is PluginState.STOPPED
        await self.remove(new.runner_id, for_good=False, words=words)
        if old.last_exit is not None:
            # The plugins that left it (moved to another runner) start there with it.
            accounts.update(dict.fromkeys(old.manifests, old.last_exit))
        supervisor = self.add(new)
        supervisor.log_levels = levels
        # Its account ("replaced by hot reload (...)") is the plugin's last exit still.
        supervisor.last_exit = old.last_exit
        if old.stopped_by_user:
            # Also a stop asked while the old runner was stopping for the replacement.
            supervisor.hold_stopped()
        asked = self._restart_asked
        if stopped and not old.stopped_by_user and asked in supervisor.manifests:
            # restart_by_user() ended the stop to replan: it starts this runner next.
            say_started_by_restart(new.runner_id, asked)
        elif stopped or old.stopped_by_user:
            say_kept_stopped(new, renamed)
        else:
            supervisor.start()
            say_renamed_started(new, renamed)

    async def _restart(self, supervisor: RunnerSupervisor, why: str) -> None:
        """Restart ``supervisor``'s runner for a reload (``why``: a file changed), unless it
        was stopped with host.stop(), before the change or since (a stop asked while the
        change was compiled, or this task waited its turn): it stays stopped until restarted,
        and then runs the new code."""
        if supervisor.state is PluginState.STOPPED or supervisor.stopped_by_user:
            _log.info("reload: %s; runner %s stays stopped", why, supervisor.runner_id)
            return
        _log.info("reload: %s; restarting runner %s", why, supervisor.runner_id)
        # Nothing awaited since the look above: restart() refuses for the same reasons.
        await supervisor.restart(by_user=False, words=f"{REPLACED_BY_RELOAD} ({why})")

    async def _stop(
        self,
        runner_id: str,
        successor: str | None,
        shares: dict[str, LoggerBudget],
        words: str | None = None,
        accounts: dict[str, ExitAccount] | None = None,
    ) -> None:
        """Stop runner ``runner_id`` for good; ``words``: why, as its exit account says;
        ``accounts`` is told that account, by each of its plugins."""
        old = self.supervisors[runner_id]
        share = await self.remove(runner_id, words=words)
        if accounts is not None and old.last_exit is not None:
            accounts.update(dict.fromkeys(old.manifests, old.last_exit))
        if successor is None or share is None:
            return
        # Several folders now naming plugins of one new group: it goes on with the share
        # most spent, so that no renaming gives a fresh allowance.
        kept = shares.get(successor)
        if kept is None or share.left < kept.left:
            shares[successor] = share

    async def _start(
        self,
        new: RunnerPlan,
        why: str,
        *,
        share: LoggerBudget | None = None,
        held: Set[str] = frozenset(),
        accounts: Mapping[str, ExitAccount] | None = None,
        renamed: Mapping[str, str] = MappingProxyType({}),
    ) -> None:
        """Start a runner for ``new`` (``why``: for the log); but one that a plugin in
        ``held`` (stopped with host.stop()) moved to, or was renamed into (``renamed``: new
        id -> old), stays stopped until restarted. ``accounts``: the exit accounts of the
        runners its plugins left, by plugin id (its first last_exit)."""
        supervisor = self.add(new)
        if share is not None and self.log_states is not None:
            # Before it starts: its first connection spends what its predecessor left.
            self.log_states.inherit(new.runner_id, share)
        left = [accounts[m.id] for m in new.manifests if accounts and m.id in accounts]
        supervisor.last_exit = left[0] if left else None
        stopped = [m.id for m in new.manifests if m.id in held and m.id not in renamed]
        if stopped:
            _log.info(
                "reload: runner %s stays stopped until restarted: plugin %s was stopped (%s)",
                new.runner_id,
                ", ".join(stopped),
                why,
            )
        if stopped or say_renamed_stopped(new, renamed):
            supervisor.hold_stopped()
            return
        _log.info("reload: %s; starting runner %s", why, new.runner_id)
        supervisor.start()

    async def _step(self, runner_id: str, doing: str, step: Awaitable[None]) -> None:
        try:
            await step
        except Exception as exc:  # one runner's failure must not end the others' changes
            _log.error("reload: runner %s: %s failed: %s", runner_id, doing, quoted_failure(exc))

    def _in_background(self, runner_id: str, doing: str, work: Awaitable[None]) -> None:
        task = asyncio.create_task(
            self._step(runner_id, doing, work), name=f"isoplug-reload:{runner_id}"
        )
        self._restarting.add(task)
        task.add_done_callback(self._restarting.discard)

    async def cancel_restarts(self) -> None:
        """Stop waiting for the restarts and configurations hot reload asked for (the host
        closes)."""
        tasks = list(self._restarting)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _config_only(self, new: RunnerPlan) -> bool:
        """Whether ``new`` changes no more than the ``[config]`` tables of the plugins its
        runner runs (then they are handed over in place)."""
        old = {m.id: m for m in self.plans[new.runner_id].manifests}
        return set(old) == {m.id for m in new.manifests} and all(
            dataclasses.replace(m, config=old[m.id].config) == old[m.id] for m in new.manifests
        )

    def _reconfigure_later(self, new: RunnerPlan, touched: Set[str], code: str | None) -> None:
        """Hand ``new``'s configurations to its runner in a task of its own, after the ones a
        batch before asked for (in order); then restart it for ``code`` (why: a file changed)
        unless handing them over restarted it already."""
        supervisor = self.supervisors[new.runner_id]
        before = self._configuring.get(new.runner_id)
        # Taken, as a later batch sees it: it must not be offered again while it is handed
        # over (what the runner ends up with is remembered then).
        self.plans[new.runner_id] = new

        async def reconfigure() -> None:
            if before is not None:
                await asyncio.gather(before, return_exceptions=True)
            if self.supervisors.get(new.runner_id) is not supervisor:
                return  # replaced or removed since: the new one runs the folder as it is
            restarts = supervisor.restarts
            await self._reconfigure(supervisor, new, touched)
            if code is not None and supervisor.restarts == restarts:
                await self._restart(supervisor, code)

        task = asyncio.create_task(
            self._step(new.runner_id, "handing it its new configuration", reconfigure()),
            name=f"isoplug-reload-config:{new.runner_id}",
        )
        self._configuring[new.runner_id] = task
        self._restarting.add(task)
        task.add_done_callback(functools.partial(self._reconfigured, new.runner_id))

    def _reconfigured(self, runner_id: str, task: asyncio.Task[None]) -> None:
        self._restarting.discard(task)
        if self._configuring.get(runner_id) is task:
            del self._configuring[runner_id]

    async def _reconfigure(
        self, supervisor: RunnerSupervisor, new: RunnerPlan, touched: Set[str]
    ) -> None:
        """Hand each plugin of ``new`` its new ``[config]`` (live where it has ``on_config``).
        A configuration a plugin refused is not offered again until its folder (one of
        ``touched``, by plugin id) changes."""
        try:
            for manifest in new.manifests:
                old = supervisor.manifests.get(manifest.id)
                if old is None or manifest.config == old.config:
                    self._refused.pop(manifest.id, None)
                    continue
                refused = self._refused.get(manifest.id)
                if refused and refused[0] == manifest.config and manifest.id not in touched:
                    continue
                await offer_config(
                    supervisor,
                    manifest,
                    self._refused,
                    lambda: self.supervisors.get(supervisor.runner_id) is supervisor,
                )
        finally:
            if self.supervisors.get(supervisor.runner_id) is supervisor:
                self._remember_plan(supervisor)
