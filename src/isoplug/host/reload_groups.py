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
  someone asked for.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

from isoplug.host.manifest import Manifest, ManifestError
from isoplug.host.registry import RunnerPlan, plan_runners

__all__ = ["plan_keeping_members", "problem_prefix", "replacement_cause"]


def plan_keeping_members(
    manifests: Iterable[Manifest], running: Mapping[str, Manifest]
) -> tuple[list[RunnerPlan], list[str], dict[str, Path]]:
    """:func:`plan_runners` of ``manifests`` (the plugins folder as it now is), but a plugin
    of ``running`` (plugin id -> the manifest it runs on) that its new manifest would get
    skipped for its group is planned on the manifest it runs on. Returns the plans, the
    problems (each kept plugin's as found with its new manifest) and the kept plugins (id ->
    their ``plugin.toml``)."""
    current = {manifest.id: manifest for manifest in manifests}
    kept: dict[str, Path] = {}
    kept_problems: list[str] = []
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
            return plans, [*kept_problems, *problems], kept
        for plugin_id in back:
            where = problem_prefix(current[plugin_id].path)
            kept_problems.extend(problem for problem in problems if problem.startswith(where))
            current[plugin_id] = running[plugin_id]
            kept[plugin_id] = running[plugin_id].path


def problem_prefix(manifest: Path) -> str:
    """How discovery's problems with ``manifest`` start: as a ManifestError of that path
    does (sanitized)."""
    return str(ManifestError(manifest, None, "-")).removesuffix("-")


def replacement_cause(old: RunnerPlan, new: RunnerPlan, left: Mapping[str, str]) -> str | None:
    """Why runner ``old`` is replaced by ``new`` when its members changed (None: they did
    not; only their manifests did). ``left``: why a plugin that is no longer found left, by
    id ("plugin b's folder was removed")."""
    old_ids = [manifest.id for manifest in old.manifests]
    new_ids = [manifest.id for manifest in new.manifests]
    runner = new.runner_id
    causes = [
        left.get(plugin_id, f"plugin {plugin_id} leaves group {runner}")
        for plugin_id in old_ids
        if plugin_id not in new_ids
    ]
    causes += [f"plugin {p} joins group {runner}" for p in new_ids if p not in old_ids]
    return "; ".join(causes) if causes else None
