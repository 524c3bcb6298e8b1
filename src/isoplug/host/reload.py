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

What to do is decided by :func:`plan_reload` (no I/O: tested without files); watching is
`watchfiles <https://watchfiles.helpmanual.io>`_ (inotify on Linux), with a short debounce,
so that a save reaches a restarted plugin in well under a second, in a thread the host owns
(see :mod:`isoplug.host.reload_watch`).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
from collections.abc import Awaitable, Callable, Iterable, Mapping, Set
from pathlib import Path

from isoplug.host.manifest import MANIFEST_NAME
from isoplug.host.plugin_folders import manifest_may_exist
from isoplug.host.registry import Discovery, RunnerPlan, is_scratch_dir
from isoplug.host.reload_groups import (
    moved_plugins,
    plan_keeping_members,
    problem_prefix,
    replacement_cause,
)
from isoplug.host.reload_paths import (
    code_change,
    in_any,
    in_plan,
    real_folder,
    relative_to_folder,
    shown_path,
)
from isoplug.host.reload_watch import FolderWatch
from isoplug.log_guard import guarded_logger
from isoplug.off_loop import off_loop
from isoplug.wire.sanitize import clean_path, clean_text

__all__ = [
    "PluginReloader",
    "ReloadPlan",
    "plan_reload",
    "plugin_folders",
    "reload_unavailable",
    "report_reloader_end",
]

_log = guarded_logger("isoplug.host")


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
    #: Runners whose code changed. One in ``replace`` too restarts only when its new plan
    #: changed no more than ``[config]`` tables (so it was reconfigured, not replaced).
    restart: tuple[str, ...] = ()
    #: Plugins kept as they run because their manifest no longer validates: plugin id -> path.
    kept: Mapping[str, Path] = dataclasses.field(default_factory=dict)
    #: Plugins whose folder holds one of the changes, by id (a problem with one is told
    #: again).
    touched: frozenset[str] = frozenset()
    #: Why, by runner id, for the host's log: a stopped runner's ("its plugin folder is
    #: gone"), a started one's ("new plugin folder"), a restarted one's ("alpha/alpha.py
    #: changed"). A runner without one gets the general words.
    why: Mapping[str, str] = dataclasses.field(default_factory=dict)
    #: The problem of each of ``kept``, by plugin id (one of the problems found).
    kept_problems: Mapping[str, str] = dataclasses.field(default_factory=dict)
    #: Runners not restarted for their code because a changed Python file of theirs does not
    #: compile (a save in the middle of an edit): runner id -> where and why. Each keeps
    #: running the code it loaded; the file saved again is tried again.
    uncompiled: Mapping[str, str] = dataclasses.field(default_factory=dict)
    #: Runners stopped because their folder's ``plugin.toml`` now names another id -> the
    #: runner started for that id: it takes their place (their share of loggers, see
    #: :mod:`isoplug.host.runner_logs`).
    successors: Mapping[str, str] = dataclasses.field(default_factory=dict)
    #: Runners of ``restart`` with changed Python files: runner id -> the plan it restarts
    #: with, and those files. Each is compiled first, with the interpreter that will run it,
    #: and a runner whose files do not compile moves to ``uncompiled`` (see
    #: :mod:`isoplug.host.reload_compile`).
    compile_first: Mapping[str, tuple[RunnerPlan, tuple[Path, ...]]] = dataclasses.field(
        default_factory=dict
    )
    #: Runners of ``replace`` whose members changed: runner id -> why ("plugin c joins
    #: group g"; see :mod:`isoplug.host.reload_groups`).
    members_changed: Mapping[str, str] = dataclasses.field(default_factory=dict)
    #: Runners stopped or started because a plugin moved to another runner (its ``group``
    #: changed): runner id -> the moves, in words (a stopped one's exit account says it was
    #: replaced by hot reload for them).
    moved: Mapping[str, str] = dataclasses.field(default_factory=dict)
    #: Plugins held back from a move across a user's stop (see
    #: :mod:`isoplug.host.reload_groups`): plugin id -> why.
    deferred: Mapping[str, str] = dataclasses.field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.start or self.stop or self.replace or self.restart or self.uncompiled)


def plan_reload(
    running: Mapping[str, RunnerPlan],
    discovery: Discovery,
    changed: Iterable[Path],
    manifest_exists: Callable[[Path], bool],
    folders: Iterable[Path] = (),
    *,
    held: Set[str] = frozenset(),
) -> tuple[ReloadPlan, list[str]]:
    """What to do about ``changed`` paths, given the ``running`` plans and a fresh
    ``discovery`` of the plugins folder; also the problems to report (invalid manifests,
    grouping clashes). ``manifest_exists(path)`` tells a removed manifest from an invalid one;
    ``folders`` are the plugin folders before these changes (see :func:`plugin_folders`);
    ``held``: the plugins stopped with ``host.stop()`` (a move does not start them).

    A folder holds one plugin: when its ``plugin.toml`` now names another id, the old plugin
    stops and the new one starts. A changed file restarts the plugin whose folder holds it
    when it matches the plugin's ``reload_on`` patterns (``*.py`` by default), so data a
    plugin writes beside its code does not restart it; a ``.py`` file in no plugin folder
    (running, removed, or skipped for its manifest, now or before these changes) is shared
    code and restarts every runner.
    """
    kept: dict[str, Path] = {}
    why: dict[str, str] = {}
    successors: dict[str, str] = {}
    #: Why each running plugin no longer found left, by id (a group it was in is replaced).
    left: dict[str, str] = {}
    manifests = list(discovery.manifests)
    found = {m.id for m in manifests}
    by_folder = {real_folder(m.directory): m for m in manifests}
    for plan in running.values():
        for manifest in plan.manifests:
            if manifest.id in found:
                continue
            successor = by_folder.get(real_folder(manifest.directory))
            if successor is not None:
                where = shown_path(manifest.path)
                why[plan.runner_id] = f"{where} now names plugin {successor.id!r}"
                why[successor.runner_id] = (
                    f"{where} now names plugin {successor.id!r} (was {manifest.id!r})"
                )
                successors[plan.runner_id] = successor.runner_id
                left[manifest.id] = f"{where} now names plugin {successor.id!r}"
            elif manifest_exists(manifest.path):
                # Still there but no longer valid: keep the running plugin as it was.
                kept[manifest.id] = manifest.path
                manifests.append(manifest)
            else:
                why.setdefault(plan.runner_id, "its plugin folder is gone")
                left[manifest.id] = f"plugin {manifest.id}'s folder was removed"
    runs_on = {m.id: m for plan in running.values() for m in plan.manifests}
    plans, grouping_problems, kept_in_group, deferred = plan_keeping_members(
        manifests, runs_on, held
    )
    kept.update(kept_in_group)
    wanted = {plan.runner_id: plan for plan in plans}
    moves = moved_plugins(plans, runs_on)
    # A runner left or made by a move is said so, not as a plugin folder gone or new.
    moved = {
        plan.runner_id: "; ".join(moves[m.id] for m in plan.manifests if m.id in moves)
        for plan in [*running.values(), *plans]
        if any(m.id in moves for m in plan.manifests)
    }
    changed = [Path(path) for path in changed]
    start = [plan for runner_id, plan in wanted.items() if runner_id not in running]
    stop = [runner_id for runner_id in running if runner_id not in wanted]
    replace = [
        plan
        for runner_id, plan in wanted.items()
        if runner_id in running and plan != running[runner_id]
    ]
    # Only a runner that stops hands its place to one that starts; a runner that goes on
    # keeps its own.
    started = {plan.runner_id for plan in start}
    moved = {runner_id: w for runner_id, w in moved.items() if runner_id in [*stop, *started]}
    for runner_id, words in moved.items():
        why.setdefault(runner_id, words)
    successors = {old: new for old, new in successors.items() if old in stop and new in started}
    # Started, stopped and replaced runners run the newest code anyway. A runner with a kept
    # plugin (its manifest no longer validates), or a replaced one whose only change is a
    # [config] (taken in place: see RunnerSet), still restarts for its code, with the
    # manifests it runs: a sibling's broken plugin.toml must not hold back a group's code.
    settled = {plan.runner_id for plan in start} | set(stop)
    # The folders of removed plugins are plugin folders still: their files went with them.
    # So are skipped ones (an invalid manifest, an id taken), also once removed: a change
    # there is told again as that folder's problem, and restarts no other plugin.
    known = [*wanted.values(), *running.values()]
    skipped = [*discovery.skipped, *folders]
    shared = [
        path
        for path in changed
        if path.suffix == ".py"
        and not in_any(path, known)
        and not any(relative_to_folder(path, folder) is not None for folder in skipped)
        # A folder being made is a plugin's too.
        and not any(manifest_exists(folder / MANIFEST_NAME) for folder in path.parents)
    ]
    restart: list[str] = []
    compile_first: dict[str, tuple[RunnerPlan, tuple[Path, ...]]] = {}
    for runner_id, plan in wanted.items():
        if runner_id in settled or runner_id not in running:
            continue
        # The code of the plugins it runs, and of those its new plan adds.
        cause = shared[0] if shared else code_change(changed, plan, running[runner_id])
        if cause is None:
            continue
        restart.append(runner_id)
        why[runner_id] = f"{shown_path(cause)} changed"
        sources = tuple(
            path
            for path in changed
            if path.suffix == ".py" and (in_plan(path, plan) or path in shared)
        )
        if sources:
            compile_first[runner_id] = (plan, sources)
    touched = frozenset(
        manifest.id
        for plan in known
        for manifest in plan.manifests
        if any(relative_to_folder(path, manifest.directory) is not None for path in changed)
    )
    problems: list[str] = []
    kept_problems: dict[str, str] = {}
    for text in [*discovery.problems, *grouping_problems]:
        plugin_id, problem = _kept_problem(text, kept)
        problems.append(problem)
        if plugin_id is not None:
            kept_problems[plugin_id] = problem
    members_changed = {
        plan.runner_id: members
        for plan in replace
        if (members := replacement_cause(running[plan.runner_id], plan, left, moves)) is not None
    }
    return (
        ReloadPlan(
            tuple(start),
            tuple(stop),
            tuple(replace),
            tuple(restart),
            kept,
            touched,
            why,
            kept_problems,
            {},
            successors,
            compile_first,
            members_changed,
            moved,
            deferred,
        ),
        problems,
    )


def plugin_folders(discovery: Discovery) -> frozenset[Path]:
    """Every folder of ``discovery`` holding a ``plugin.toml``, skipped ones included."""
    return frozenset([*(m.directory for m in discovery.manifests), *discovery.skipped])


#: How discovery ends the problem of a plugin it skips.
_SKIPPED = "; plugin skipped"


def _kept_problem(problem: str, kept: Mapping[str, Path]) -> tuple[str | None, str]:
    """``problem`` as true of a plugin kept running (its ``plugin.toml`` no longer
    validates): it is not skipped, it runs on the manifest it had. With that plugin's id
    (None: the problem is no kept plugin's)."""
    for plugin_id, path in kept.items():
        where = problem_prefix(path)
        if problem.startswith(where) and problem.endswith(_SKIPPED):
            return plugin_id, (
                f"{problem.removesuffix(_SKIPPED)}; plugin {plugin_id} keeps running as it "
                "was until it is fixed"
            )
    return None, problem


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
            async with FolderWatch(roots) as watch:
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
        if not top.is_symlink():
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
        self._folders = plugin_folders(discovery) | {f for f in self._folders if f.is_dir()}
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
