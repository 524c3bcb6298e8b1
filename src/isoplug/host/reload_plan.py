"""Hot reload's plan: what one batch of file changes asks of the host, decided from the
plans of the runners that run and a fresh discovery of the plugins folder, before anything is
done (the rules are :mod:`isoplug.host.reload`'s). :func:`plan_reload` reads no file of its
own; it asks ``manifest_exists`` and resolves folders, so that it is tested without a host.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping, Set
from pathlib import Path

from isoplug.host.manifest import MANIFEST_NAME
from isoplug.host.registry import Discovery, RunnerPlan
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

__all__ = ["ReloadPlan", "plan_reload", "plugin_folders"]


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
    #: Plugins whose folder's ``plugin.toml`` now names another id while the plugin was
    #: stopped with ``host.stop()``: new id -> the old one. The stop was of the plugin in
    #: that folder, so the new id stays stopped until ``host.restart()`` of it.
    renamed_stopped: Mapping[str, str] = dataclasses.field(default_factory=dict)

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
    renamed_stopped: dict[str, str] = {}
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
                if manifest.id in held:
                    renamed_stopped[successor.id] = manifest.id
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
            renamed_stopped,
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
