"""Where a changed path is, for hot reload: in which plugin's folder (through links too),
whether it is a plugin's code, and how a reload record quotes it."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from isoplug.host.registry import RunnerPlan
from isoplug.wire.sanitize import clean_path

__all__ = ["code_change", "in_any", "in_plan", "real_folder", "relative_to_folder", "shown_path"]


#: A path (or several) quoted in a reload record: a plugin names the files in its folder.
_MAX_PATH_CHARS = 1024


def shown_path(path: object) -> str:
    """A path as a reload record quotes it: through the sanitizer, as every text a plugin
    may have chosen (a file name holding ESC or a newline) is."""
    return clean_path(path, _MAX_PATH_CHARS)


def real_folder(directory: Path) -> Path:
    return directory.resolve()


def code_change(changed: Iterable[Path], *plans: RunnerPlan) -> Path | None:
    """The first of ``changed`` that is code of ``plans``' plugins (by their ``reload_on``)."""
    manifests = [manifest for plan in plans for manifest in plan.manifests]
    for path in changed:
        for manifest in manifests:
            inside = relative_to_folder(path, manifest.directory)
            if inside is not None and any(inside.match(p) for p in manifest.reload_on):
                return path
    return None


def in_plan(path: Path, plan: RunnerPlan) -> bool:
    return any(
        relative_to_folder(path, manifest.directory) is not None for manifest in plan.manifests
    )


def in_any(path: Path, plans: Iterable[RunnerPlan]) -> bool:
    return any(in_plan(path, plan) for plan in plans)


def relative_to_folder(path: Path, directory: Path) -> Path | None:
    """``path`` relative to the plugin folder ``directory`` (None: not in it).

    The folder may be a link (isoplug run PLUGIN_DIR links it into a scratch folder, a user
    links one into the plugins folder): a change is reported under whichever of the paths was
    watched, as an absolute path: through the link, also when ``directory`` is relative (the
    host makes its own absolute) or the plugins folder's own path holds a link, or under its
    target.
    """
    path = Path(os.path.abspath(path))
    link = Path(os.path.abspath(directory))
    for candidate in {link, link.parent.resolve() / link.name, directory.resolve()}:
        if path == candidate:
            return Path()
        if candidate in path.parents:
            return path.relative_to(candidate)
    return None
