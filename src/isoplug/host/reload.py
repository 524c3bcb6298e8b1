"""Hot reload: watch the plugins folder and apply each batch of changes to the running host.

- code changed in a plugin's folder (a file matching its ``reload_on`` patterns, ``*.py`` by
  default): that plugin's runner restarts (in a group, the group's), with the manifests it
  runs when one of them no longer validates or its ``[config]`` was refused, and at once when
  it waits out a backoff after a crash; other files there (data a plugin writes beside its
  code) restart nothing;
- a new plugin folder (a ``plugin.toml`` appears): its runner starts;
- a plugin folder removed (or its ``plugin.toml``): its runner stops, and it is forgotten;
- a ``plugin.toml`` changed: it is read again, and the runner is replaced by one started from
  the new manifest (its restart count starts again); when it names another ``id``, the old
  plugin stops and the new one starts (a folder holds one plugin);
- a ``plugin.toml`` that no longer validates (a half-saved edit), or that would get its plugin
  skipped for its group (see :mod:`isoplug.host.reload_groups`): the problem is logged, once,
  saying the plugin keeps running as it was until the file is fixed;
- a plugin leaving or joining a group: the group's runner is replaced, saying which;
- a file changed in a folder skipped for its ``plugin.toml`` (invalid, or an id taken), or
  that folder removed: its problem is told again (or, removed, gone); nothing restarts;
- a Python file changed outside every plugin folder (shared code beside them): every runner
  restarts, since any plugin may import it. Files of a removed or skipped plugin folder
  (also once removed), or of a folder that held a ``plugin.toml`` before (until the folder
  is removed: a folder removed in steps), are that folder's, not shared code.

A problem with a folder (an invalid manifest, a ``[config]`` its plugin refuses) is logged
once per change of that folder, not again with every batch of changes elsewhere.

What to do is decided by :func:`~isoplug.host.reload_plan.plan_reload` (tested without a
host); watching is `watchfiles <https://watchfiles.helpmanual.io>`_ (inotify on Linux), with a
short debounce, so that a save reaches a restarted plugin in well under a second, in a thread
the host owns (see :mod:`isoplug.host.reload_watch`).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Awaitable, Callable, Iterable, Mapping, Set
from pathlib import Path

from isoplug.host.manifest import MANIFEST_NAME
from isoplug.host.plugin_folders import folder_may_exist, manifest_may_exist
from isoplug.host.registry import Discovery, RunnerPlan, is_scratch_dir
from isoplug.host.reload_groups import problem_prefix
from isoplug.host.reload_paths import relative_to_folder, shown_path
from isoplug.host.reload_plan import ReloadPlan, plan_reload, plugin_folders
from isoplug.host.reload_watch import FolderWatch
from isoplug.log_guard import guarded_logger
from isoplug.off_loop import off_loop
from isoplug.wire.sanitize import clean_path, clean_text

__all__ = ["PluginReloader", "reload_unavailable", "report_reloader_end"]

_log = guarded_logger("isoplug.host")


def reload_unavailable() -> str | None:
    """Why hot reload cannot run here (None: it can)."""
    try:
        import watchfiles  # noqa: F401
    except ImportError:
        return "hot reload needs watchfiles: pip install 'isoplug[reload]'"
    return None


#: An error quoted in a reload record.
_MAX_PROBLEM_CHARS = 4 * 1024


class PluginReloader:
    """Watches ``plugins_dir`` (and the real folders of linked plugins) and applies
    :func:`plan_reload`'s plan through ``apply`` after each batch of changes."""

    def __init__(
        self,
        plugins_dir: Path,
        running: Callable[[], Mapping[str, RunnerPlan]],
        discover: Callable[[], Discovery],
        apply: Callable[[ReloadPlan], Awaitable[None]],
        problems: Callable[[list[str], Discovery], None] | None = None,
        *,
        check_compiles: Callable[[ReloadPlan], Awaitable[ReloadPlan]] | None = None,
        held: Callable[[], Set[str]] = frozenset,
    ) -> None:
        self._plugins_dir = plugins_dir
        #: The plugins stopped with host.stop() now.
        self._held = held
        #: The plugins a batch held back from a move across a user's stop, by id: why (see
        #: :mod:`isoplug.host.reload_groups`); each moves at the next batch after a restart.
        self.deferred: dict[str, str] = {}
        #: One batch at a time: the watch's, and the one a user's restart asks for.
        self._applying = asyncio.Lock()
        #: Compiles the changed files of the runners a plan restarts (see
        #: ReloadPlan.compile_first); None: they restart as planned.
        self._check_compiles = check_compiles
        #: Told the problems of the plugins folder as it now is, and what was found there,
        #: after each batch.
        self._report_problems = problems
        self._running = running
        self._discover = discover
        self._apply = apply
        #: Set by the watcher once it watches (a test edits files only after that).
        self.watching = asyncio.Event()
        #: The problems of the last batch (each told once until changed).
        self._told: set[str] = set()
        #: The plugins kept running as they were, their ``plugin.toml`` no longer valid, as
        #: the last batch found them: plugin id -> the problem.
        self.kept: dict[str, str] = {}
        #: Every folder that held a ``plugin.toml`` (skipped ones too) since it was made: one
        #: that no longer holds one is a plugin's still, until it is removed.
        self._folders: frozenset[Path] = frozenset()
        #: The folders the last discovery could not read: the watch has none inside them,
        #: and is made again once one may be read.
        self._unreadable: frozenset[Path] = frozenset()
        self._watch: FolderWatch | None = None

    @property
    def polled(self) -> tuple[str, ...]:
        """The folders read for changes now rather than watched (a name in them is not
        UTF-8: see :mod:`isoplug.host.reload_layout`)."""
        return self._watch.polled if self._watch is not None else ()

    async def run(self) -> None:
        with contextlib.suppress(OSError):  # unreadable now: the first batch says so
            # The host told these at its start: a batch tells them again only once changed.
            discovery = await off_loop(self._discover)
            _, problems = plan_reload(self._running(), discovery, (), manifest_may_exist)
            self._told = set(problems)
            self._folders = plugin_folders(discovery)
            self._unreadable = discovery.unreadable
        while True:
            roots = self._roots()
            unreadable = self._unreadable
            async with FolderWatch(roots, self._plugins_dir.resolve()) as watch:
                self._watch = watch
                async for changes in watch.batches():
                    if not self.watching.is_set():
                        # The plugin folder the user named, not the scratch folder linking it.
                        named = [root for root in roots if not is_scratch_dir(root)] or roots
                        _log.info(
                            "reload: watching %s for changes",
                            shown_path(", ".join(map(str, named))),
                        )
                        self.watching.set()
                    if changes:
                        await self._batch({Path(path) for _, path in changes})
                    if self._roots() != roots or not self._unreadable >= unreadable:
                        # A linked plugin came or went: watch its real folder (or stop). Or
                        # a folder may now be read: a new watch looks inside it too.
                        break

    def _roots(self) -> tuple[Path, ...]:
        roots = {self._plugins_dir.resolve()}
        for plan in self._running().values():
            for manifest in plan.manifests:
                real = manifest.directory.resolve()
                if self._plugins_dir.resolve() not in (real, *real.parents):
                    roots.add(real)
        return tuple(sorted(roots))

    async def replan(self) -> None:
        """Apply the plugins folder as it now is, as a batch of no changed files does: a
        user's restart lets the plugins :attr:`deferred` held back move."""
        await self._batch(set())

    async def _batch(self, paths: set[Path]) -> None:
        try:
            async with self._applying:
                await self._changed(paths)
        except Exception as exc:
            # The watch goes on: a later change (a fix) must still reach the plugins. The
            # steps name their runner when they fail; this is what none of them caught.
            _log.error(
                "reload: a batch of changes could not be applied (%s); still watching",
                clean_text(f"{type(exc).__name__}: {exc}", _MAX_PROBLEM_CHARS),
            )

    def _through_links(self, path: Path) -> Path:
        """``path`` in the folder a link in the plugins folder points to, when it was reported
        through that link. inotify watches a folder once, however many paths lead to it, and
        reports its changes under the path watched last: a linked plugin's (the one
        ``isoplug run PLUGIN_DIR`` makes in its scratch folder, or a user's) under the link or
        under its real folder, whichever that was. Discovery may name either (the scratch
        folder's plugin by its real one): the real one is the path every plugin folder is
        known by too (see :func:`relative_to_folder`)."""
        root = self._plugins_dir.resolve()
        if root not in path.parents:
            return path
        top = root / path.relative_to(root).parts[0]
        # os.path's: a path past PATH_MAX is no link (Path.is_symlink raises for it).
        if not os.path.islink(top):
            return path
        return Path(os.path.realpath(top)) / path.relative_to(top)

    async def _changed(self, reported: set[Path]) -> None:
        paths = {self._through_links(path) for path in reported}
        try:
            discovery = await off_loop(self._discover)
        except OSError as exc:
            _log.error(
                "reload: cannot read the plugins folder %s: %s",
                shown_path(self._plugins_dir),
                clean_path(exc, _MAX_PROBLEM_CHARS),
            )
            return
        # Off the loop: it reads the folders of the changed paths.
        plan, problems = await off_loop(
            plan_reload,
            self._running(),
            discovery,
            paths,
            manifest_may_exist,
            self._folders,
            held=self._held(),
        )
        # A folder that was a plugin's stays one while it exists: removed in steps (its
        # plugin.toml first, the rest later), its files are still not shared code.
        self._folders = plugin_folders(discovery) | set(filter(folder_may_exist, self._folders))
        self._unreadable = discovery.unreadable
        # A folder's problem is told once per change of that folder, not again with every
        # batch of changes elsewhere.
        touched = self._touched_manifests(paths)
        for problem in problems:
            if problem not in self._told or any(problem.startswith(m) for m in touched):
                _log.error("reload: %s", problem)
        self._told = set(problems)
        self.kept = dict(plan.kept_problems)
        for plugin_id, why in plan.deferred.items():
            if self.deferred.get(plugin_id) != why:
                _log.info("reload: %s", why)
        self.deferred = dict(plan.deferred)
        if self._report_problems is not None:
            self._report_problems(problems, discovery)
        if plan and self._check_compiles is not None:
            plan = await self._check_compiles(plan)
        if plan:
            await self._apply(plan)

    def _touched_manifests(self, paths: Iterable[Path]) -> set[str]:
        """``"FOLDER/plugin.toml:"`` for each plugin folder that holds one of ``paths``, as a
        problem about that folder starts (its manifest's path, as discovery names it)."""
        folders: set[Path] = set()
        root = self._plugins_dir.resolve()
        for path in paths:
            if root in path.parents:
                folders.add(self._plugins_dir / path.relative_to(root).parts[0])
        running = [m.directory for plan in self._running().values() for m in plan.manifests]
        # A linked folder's changes come by its real path (see _through_links): it is found
        # among the plugin folders, skipped ones too, by the path discovery names it by.
        for folder in [*running, *self._folders]:
            if any(relative_to_folder(path, folder) is not None for path in paths):
                folders.add(folder)
        return {problem_prefix(folder / MANIFEST_NAME) for folder in folders}


def report_reloader_end(task: asyncio.Task[None]) -> None:
    """A done callback of the reloader's task: say why it stopped, when it failed."""
    if not task.cancelled() and (error := task.exception()) is not None:
        _log.error("reload: watching the plugins folder stopped: %r", error, exc_info=error)
