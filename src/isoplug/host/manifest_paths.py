"""The paths a ``plugin.toml`` names, resolved and checked where the manifest is read: its
``sys_path`` folders and its ``python`` (an interpreter, a virtual environment, a name on
PATH), each relative to the plugin's folder. One that cannot be looked at (past PATH_MAX, a
loop of links, a folder on the way refusing it) is a manifest error, never a crash."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from isoplug.host.manifest_types import ManifestError

__all__ = ["folder_of", "interpreter"]


def folder_of(path: Path, directory: Path, field: str, value: str) -> Path:
    """``value`` (a ``sys_path`` entry), resolved against the plugin's ``directory``: a folder
    the host may reach, or a :class:`ManifestError` on ``field`` of the manifest ``path``."""
    try:
        folder = (directory / value).resolve()
        is_folder = folder.is_dir()
    except (OSError, RuntimeError) as exc:
        raise ManifestError(path, field, _unusable(value, exc)) from None
    if not is_folder:
        raise ManifestError(path, field, f"{value!r} is not a folder ({folder})")
    return folder


def _unusable(value: str, error: OSError | RuntimeError) -> str:
    """Why the path ``value`` cannot be looked at: past PATH_MAX, a loop of links (a
    RuntimeError from ``Path.resolve`` on Python 3.11), a folder on the way refusing it."""
    why = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
    return f"{value!r} cannot be looked at: {why}; give a path the host may reach"


def interpreter(path: Path, directory: Path, value: str) -> Path:
    """``python``: an interpreter, or a virtual environment's folder (its ``bin/python``),
    relative to the plugin's folder; a bare name that is not there is looked up on PATH
    (``python3.12``)."""
    try:
        return _find_interpreter(path, directory, value)
    except (OSError, RuntimeError) as exc:
        raise ManifestError(path, "python", _unusable(value, exc)) from None


def _find_interpreter(path: Path, directory: Path, value: str) -> Path:
    bare = os.sep not in value and "/" not in value
    if bare and not (directory / value).exists():
        found = shutil.which(value)
        if found is None:
            raise ManifestError(path, "python", f"{value!r} is not on PATH")
        return Path(found)
    candidate = directory / value
    if candidate.is_dir():
        for inside in ("bin/python", "Scripts/python.exe"):
            if (candidate / inside).is_file():
                return (candidate / inside).absolute()
        raise ManifestError(
            path, "python", f"{value!r} is a folder but not a virtual environment (no bin/python)"
        )
    if not (candidate.is_file() and os.access(candidate, os.X_OK)):
        raise ManifestError(path, "python", f"{value!r} is not an executable file ({candidate})")
    # Not resolved: a virtual environment's python is a link that must keep its own path.
    return candidate.absolute()
