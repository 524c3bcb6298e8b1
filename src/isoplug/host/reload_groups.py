"""Hot reload and groups: what a batch of changes does to a runner several plugins share.

- A running plugin whose edited ``plugin.toml`` would get it skipped for its group (it now
  disagrees with another member on ``[environment]``, ``[limits]``, ``python`` or
  ``log_write_through_rate``, or names a plugin id as its group) keeps running as it was,
  as one whose ``plugin.toml`` no longer validates does: a half-done edit of a group (one
  member changed, the other not yet) must not stop a plugin. A newcomer that would clash
  with a running group is the one skipped, as at the host's start.
- A member leaving a group (its folder removed, its id or group changed) or joining one
  replaces the group's runner: its members share one process. The log and the old runner's
  exit account say so, in those words, not as a ``plugin.toml`` of theirs changed or a stop
  someone asked for. So does a plugin moving to another runner (its ``group`` changed): the
  words name the move, not a plugin folder gone and a new one.
- A plugin moving while its runner or the one it moves to was stopped with ``host.stop()``:
  a runner is one process, stopped or running for all its members. A stopped plugin moving
  into a runner that holds plugins that run (or start) stays where it was, stopped, on the
  manifest it ran; so does a running plugin moving into a stopped group, running. Each moves
  at the next ``host.restart()`` of the stopped one (see :attr:`PluginReloader.deferred
  <isoplug.host.reload.PluginReloader.deferred>`). A stopped plugin moving to a runner of
  stopped plugins (or of its own) moves, and stays stopped there.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Set
from pathlib import Path

from isoplug.host.manifest import Manifest, ManifestError
from isoplug.host.registry import RunnerPlan, plan_runners

__all__ = [
    "moved_plugins",
    "plan_keeping_members",
    "problem_prefix",
    "replacement_cause",
]


def plan_keeping_members(
    manifests: Iterable[Manifest], running: Mapping[str, Manifest], held: Set[str] = frozenset()
) -> tuple[list[RunnerPlan], list[str], dict[str, Path], dict[str, str]]:
    """:func:`plan_runners` of ``manifests`` (the plugins folder as it now is), but a plugin
    of ``running`` (plugin id -> the manifest it runs on) that its new manifest would get
    skipped for its group is planned on the manifest it runs on; and so is one that would
    move into a runner whose members are not all stopped as it is (``held``: the plugins
    stopped with ``host.stop()``). Returns the plans, the problems (each kept plugin's as
    found with its new manifest), the kept plugins (id -> their ``plugin.toml``) and the
    plugins held back from a move (id -> why, for the log)."""
    current = {manifest.id: manifest for manifest in manifests}
    kept: dict[str, Path] = {}
    kept_problems: list[str] = []
    deferred: dict[str, str] = {}
    # Each round puts back at least one plugin: they are as many as the running plugins.
    while True:
        settled = {plugin_id for plugin_id, m in current.items() if running.get(plugin_id) == m}
        plans, problems = plan_runners(current.values(), settled)
        planned = {m.id for plan in plans for m in plan.manifests}
        back = [
            plugin_id
            for plugin_id in current
            if plugin_id not in planned and plugin_id in running and plugin_id not in settled
        ]
        if not back:
            held_back = _moves_across_a_stop(plans, running, held)
            if not held_back:
                return plans, [*kept_problems, *problems], kept, deferred
            for plugin_id, why in held_back.items():
                current[plugin_id] = running[plugin_id]
                deferred[plugin_id] = why
            continue
        for plugin_id in back:
            where = problem_prefix(current[plugin_id].path)
            kept_problems.extend(problem for problem in problems if problem.startswith(where))
            current[plugin_id] = running[plugin_id]
            kept[plugin_id] = running[plugin_id].path


def _moves_across_a_stop(
    plans: Iterable[RunnerPlan], running: Mapping[str, Manifest], held: Set[str]
) -> dict[str, str]:
    """The plugins of ``running`` that ``plans`` move into a runner where a stopped plugin
    would meet one that runs, by id: why each stays where it is. Stopped ones first: one
    moving with a running one to a new group stays, and the running one then moves."""
    stopped: dict[str, str] = {}
    going_on: dict[str, str] = {}
    for plan in plans:
        for manifest in plan.manifests:
            before = running.get(manifest.id)
            if before is None or before.runner_id == plan.runner_id:
                continue
            others = [m.id for m in plan.manifests if m.id != manifest.id]
            move = _move(manifest.id, before, manifest)
            if manifest.id in held and any(other not in held for other in others):
                stopped[manifest.id] = (
                    f"{move}, whose runner runs other plugins, but it was stopped with "
                    f"host.stop(): it stays stopped in runner {before.runner_id} (on the "
                    f"plugin.toml it ran) until host.restart({manifest.id!r}) moves it"
                )
            elif manifest.id not in held and any(other in held for other in others):
                going_on[manifest.id] = (
                    f"{move}, which was stopped with host.stop(): it keeps running in runner "
                    f"{before.runner_id} (on the plugin.toml it ran) until host.restart() of "
                    f"a plugin of {_runner_words(manifest)} moves it"
                )
    return stopped or going_on


def moved_plugins(plans: Iterable[RunnerPlan], running: Mapping[str, Manifest]) -> dict[str, str]:
    """The plugins of ``running`` that ``plans`` put in another runner (their ``group``
    changed), by id: the move, in words ("plugin b moved from group g to group h")."""
    return {
        manifest.id: _move(manifest.id, before, manifest)
        for plan in plans
        for manifest in plan.manifests
        if (before := running.get(manifest.id)) is not None and before.runner_id != plan.runner_id
    }


def _move(plugin_id: str, before: Manifest, after: Manifest) -> str:
    return f"plugin {plugin_id} moved from {_runner_words(before)} to {_runner_words(after)}"


def _runner_words(manifest: Manifest) -> str:
    return f"group {manifest.group}" if manifest.group else f"its own runner {manifest.id}"


def problem_prefix(manifest: Path) -> str:
    """How discovery's problems with ``manifest`` start: as a ManifestError of that path
    does (sanitized)."""
    return str(ManifestError(manifest, None, "-")).removesuffix("-")


def replacement_cause(
    old: RunnerPlan, new: RunnerPlan, left: Mapping[str, str], moved: Mapping[str, str]
) -> str | None:
    """Why runner ``old`` is replaced by ``new`` when its members changed (None: they did
    not; only their manifests did). ``left``: why a plugin that is no longer found left, by
    id ("plugin b's folder was removed"); ``moved``: the plugins that moved between runners,
    by id (see :func:`moved_plugins`)."""
    old_ids = [manifest.id for manifest in old.manifests]
    new_ids = [manifest.id for manifest in new.manifests]
    runner = new.runner_id
    causes = [
        left.get(plugin_id) or moved.get(plugin_id, f"plugin {plugin_id} leaves group {runner}")
        for plugin_id in old_ids
        if plugin_id not in new_ids
    ]
    causes += [
        moved.get(plugin_id, f"plugin {plugin_id} joins group {runner}")
        for plugin_id in new_ids
        if plugin_id not in old_ids
    ]
    return "; ".join(causes) if causes else None
