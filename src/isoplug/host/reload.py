"""Hot reload: watch the plugins folder and apply each batch of changes to the running host.

- code changed in a plugin's folder: that plugin's runner restarts (in a group, the group's);
- a new plugin folder (a ``plugin.toml`` appears): its runner starts;
- a plugin folder removed (or its ``plugin.toml``): its runner stops, and it is forgotten;
- a ``plugin.toml`` changed: it is read again, and the runner is replaced by one started from
  the new manifest (its restart count starts again);
- a ``plugin.toml`` that no longer validates (a half-saved edit): the problem is logged, and
  the plugin keeps running as it was until the file is fixed;
- a Python file changed outside every plugin's folder (shared code beside them): every runner
  restarts, since any plugin may import it.

What to do is decided by :func:`plan_reload` (no I/O: tested without files); watching is
`watchfiles <https://watchfiles.helpmanual.io>`_ (inotify on Linux), with a short debounce,
so that a save reaches a restarted plugin in well under a second.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from pathlib import Path

from isoplug.host.registry import Discovery, RunnerPlan, plan_runners

__all__ = ["PluginReloader", "ReloadPlan", "plan_reload", "reload_unavailable"]

_log = logging.getLogger("isoplug.host")

#: watchfiles groups the changes of this many milliseconds into one batch: an editor's save
#: (write, rename, chmod) is one batch, and a save still reaches the runner quickly.
DEBOUNCE_MS = 50
#: How often watchfiles checks for the end of a batch, in milliseconds.
STEP_MS = 10


def reload_unavailable() -> str | None:
    """Why hot reload cannot run here (None: it can)."""
    try:
        import watchfiles  # noqa: F401
    except ImportError:
        return "hot reload needs watchfiles: pip install 'isoplug[reload]'"
    return None


@dataclasses.dataclass(frozen=True)
class ReloadPlan:
    """What one batch of changes asks of the host, by runner id."""

    start: tuple[RunnerPlan, ...] = ()
    stop: tuple[str, ...] = ()
    #: Runners whose manifests changed: stopped, then started from the new plan.
    replace: tuple[RunnerPlan, ...] = ()
    restart: tuple[str, ...] = ()
    #: Plugins kept as they run because their manifest no longer validates: plugin id -> path.
    kept: Mapping[str, Path] = dataclasses.field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.start or self.stop or self.replace or self.restart)


def plan_reload(
    running: Mapping[str, RunnerPlan],
    discovery: Discovery,
    changed: Iterable[Path],
    manifest_exists: Callable[[Path], bool],
) -> tuple[ReloadPlan, list[str]]:
    """What to do about ``changed`` paths, given the ``running`` plans and a fresh
    ``discovery`` of the plugins folder; also the problems to report (invalid manifests,
    grouping clashes). ``manifest_exists(path)`` tells a removed manifest from an invalid one.
    """
    kept: dict[str, Path] = {}
    manifests = list(discovery.manifests)
    found = {m.id for m in manifests}
    for plan in running.values():
        for manifest in plan.manifests:
            if manifest.id not in found and manifest_exists(manifest.path):
                # Still there but no longer valid: keep the running plugin as it was.
                kept[manifest.id] = manifest.path
                manifests.append(manifest)
    plans, grouping_problems = plan_runners(manifests)
    wanted = {plan.runner_id: plan for plan in plans}
    changed = [Path(path) for path in changed]
    start = [plan for runner_id, plan in wanted.items() if runner_id not in running]
    stop = [runner_id for runner_id in running if runner_id not in wanted]
    replace = [
        plan
        for runner_id, plan in wanted.items()
        if runner_id in running and plan != running[runner_id]
    ]
    # A runner with a kept plugin is left alone until its manifest is fixed.
    held = {plan.runner_id for plan in plans if any(m.id in kept for m in plan.manifests)}
    settled = {plan.runner_id for plan in (*start, *replace)} | set(stop) | held
    restart: list[str] = []
    outside = [path for path in changed if not _in_any(path, wanted.values())]
    shared_code = any(path.suffix == ".py" for path in outside)
    for runner_id, plan in wanted.items():
        if runner_id in settled or runner_id not in running:
            continue
        if shared_code or any(_in_plan(path, plan) for path in changed):
            restart.append(runner_id)
    problems = [*discovery.problems, *grouping_problems]
    return (
        ReloadPlan(tuple(start), tuple(stop), tuple(replace), tuple(restart), kept),
        problems,
    )


def _in_plan(path: Path, plan: RunnerPlan) -> bool:
    return any(_within(path, manifest.directory) for manifest in plan.manifests)


def _in_any(path: Path, plans: Iterable[RunnerPlan]) -> bool:
    return any(_in_plan(path, plan) for plan in plans)


def _within(path: Path, directory: Path) -> bool:
    # The folder may be a link (isoplug run PLUGIN_DIR links it into a scratch folder): a
    # change is reported under whichever of the two paths was watched.
    for candidate in {directory, directory.resolve()}:
        if path == candidate or candidate in path.parents:
            return True
    return False


class PluginReloader:
    """Watches ``plugins_dir`` (and the real folders of linked plugins) and applies
    :func:`plan_reload`'s plan through ``apply`` after each batch of changes."""

    def __init__(
        self,
        plugins_dir: Path,
        running: Callable[[], Mapping[str, RunnerPlan]],
        discover: Callable[[], Discovery],
        apply: Callable[[ReloadPlan], Awaitable[None]],
    ) -> None:
        self._plugins_dir = plugins_dir
        self._running = running
        self._discover = discover
        self._apply = apply
        #: Set by the watcher once it watches (a test edits files only after that).
        self.watching = asyncio.Event()

    async def run(self) -> None:
        import watchfiles

        while True:
            roots = self._roots()
            stop_watching = asyncio.Event()
            async for changes in watchfiles.awatch(
                *roots,
                watch_filter=watchfiles.DefaultFilter(),
                debounce=DEBOUNCE_MS,
                step=STEP_MS,
                stop_event=stop_watching,
                # An empty batch now and then: the first one says the watcher is up.
                yield_on_timeout=True,
                rust_timeout=500,
            ):
                if not self.watching.is_set():
                    _log.info("reload: watching %s for changes", ", ".join(map(str, roots)))
                    self.watching.set()
                if changes:
                    await self._changed({Path(path) for _, path in changes})
                if self._roots() != roots:
                    # A linked plugin came or went: watch its real folder (or stop).
                    stop_watching.set()
                    break

    def _roots(self) -> tuple[Path, ...]:
        roots = {self._plugins_dir.resolve()}
        for plan in self._running().values():
            for manifest in plan.manifests:
                real = manifest.directory.resolve()
                if self._plugins_dir.resolve() not in (real, *real.parents):
                    roots.add(real)
        return tuple(sorted(roots))

    async def _changed(self, paths: set[Path]) -> None:
        try:
            discovery = await asyncio.to_thread(self._discover)
        except OSError as exc:
            _log.error("reload: cannot read the plugins folder %s: %s", self._plugins_dir, exc)
            return
        plan, problems = plan_reload(self._running(), discovery, paths, Path.is_file)
        for problem in problems:
            _log.error("reload: %s", problem)
        for plugin_id, path in plan.kept.items():
            _log.warning(
                "reload: %s no longer validates; plugin %s keeps running as it was until it "
                "is fixed",
                path,
                plugin_id,
            )
        if plan:
            await self._apply(plan)
