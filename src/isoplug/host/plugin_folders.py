"""The folders of a plugins folder that hold a ``plugin.toml``, and those the host may not
read: a plugin could be in them, so they are told (and skipped), never taken for folders
without a plugin, nor allowed to stop the others.

Only the plugins folder itself being unusable (missing, not a folder, unreadable) ends a
discovery, raising the built-in error that says so.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from isoplug.host.access_denied import LIST_FOLDER, denied, is_denied
from isoplug.host.manifest import MANIFEST_NAME, ManifestError
from isoplug.wire.sanitize import clean_path

__all__ = ["manifest_may_exist", "plugin_folder_entries"]

#: What ``os.stat`` says of a path that is not there to use: missing, a file on the way, a
#: loop of links. ``Path.exists()`` is False for these; the folder is no plugin's.
_ABSENT = (errno.ENOENT, errno.ENOTDIR, errno.ELOOP)
#: A path quoted in a plugins folder's error.
_MAX_PATH_CHARS = 1024


def plugin_folder_entries(plugins_dir: Path) -> list[tuple[Path, ManifestError | None]]:
    """The folders of ``plugins_dir`` that hold a ``plugin.toml``, in name order, each with
    None; and each one this process may not read, with the problem to report (a
    :class:`ManifestError` of its ``plugin.toml``, as any plugin skipped is named). Folders
    without a ``plugin.toml``, dangling links and loops of links are left out."""
    _check_plugins_dir(plugins_dir)
    try:
        names = sorted(os.listdir(plugins_dir))
    except PermissionError as exc:
        raise _unreadable_plugins_dir(plugins_dir, exc) from None
    entries: list[tuple[Path, ManifestError | None]] = []
    for name in names:
        entry = plugins_dir / name
        try:
            is_folder = stat.S_ISDIR(os.stat(entry).st_mode)
        except OSError as exc:
            if exc.errno in _ABSENT:
                continue
            try:
                os.lstat(entry)
            except PermissionError:
                # No name in it can be looked at: the plugins folder refuses its search.
                raise _unreadable_plugins_dir(plugins_dir, exc) from None
            # A link to a place this process may not reach.
            entries.append((entry, _unreadable(entry, exc)))
            continue
        if not is_folder:
            continue
        try:
            os.stat(entry / MANIFEST_NAME)
        except OSError as exc:
            if exc.errno not in _ABSENT:
                entries.append((entry, _unreadable(entry, exc)))
            continue
        if not os.access(entry, os.R_OK | os.X_OK, effective_ids=_EFFECTIVE):
            # Its plugin.toml can be read, but the runner could not list the folder to
            # import the plugin's module ("No module named ...", which would not say why).
            refused = PermissionError(errno.EACCES, os.strerror(errno.EACCES))
            entries.append((entry, _unreadable(entry, refused)))
            continue
        entries.append((entry, None))
    return entries


def manifest_may_exist(path: Path) -> bool:
    """Whether the ``plugin.toml`` at ``path`` may be there: it is, or its folder refuses a
    look (then that folder's problem is reported, and a plugin running from it keeps
    running as it was)."""
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except OSError as exc:
        return exc.errno not in _ABSENT


#: Whether ``os.access`` can check the effective ids, which open() is checked against.
_EFFECTIVE = os.access in os.supports_effective_ids


def _check_plugins_dir(plugins_dir: Path) -> None:
    try:
        info = os.stat(plugins_dir)
    except PermissionError as exc:
        raise _unreadable_plugins_dir(plugins_dir, exc) from None
    except OSError as exc:
        if exc.errno in _ABSENT:
            raise FileNotFoundError(f"plugins directory {plugins_dir} does not exist") from None
        raise  # out of descriptors, an I/O error: the system's, said as such by the caller
    if not stat.S_ISDIR(info.st_mode):
        raise NotADirectoryError(f"plugins directory {plugins_dir} is not a directory")


def _unreadable_plugins_dir(plugins_dir: Path, error: OSError) -> PermissionError:
    """The error that ends a discovery of ``plugins_dir``, saying why and what to change."""
    why = denied(plugins_dir, LIST_FOLDER) if is_denied(error) else error.strerror
    return PermissionError(
        f"plugins directory {clean_path(plugins_dir, _MAX_PATH_CHARS)} cannot be read: {why}"
    )


def _unreadable(folder: Path, error: OSError) -> ManifestError:
    """A plugin folder this process may not read, as the problem of its ``plugin.toml``."""
    if is_denied(error):
        why = denied(folder, LIST_FOLDER)
        fix = "; or move the folder out of the plugins folder"
    else:
        why, fix = error.strerror or str(error), ""
    return ManifestError(folder / MANIFEST_NAME, None, f"its folder cannot be read: {why}{fix}")
