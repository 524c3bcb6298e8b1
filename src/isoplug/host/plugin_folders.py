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

from isoplug.errors import FolderMissing, FolderUnreadable, NotAFolder
from isoplug.host.access_denied import LIST_FOLDER, denied, is_denied
from isoplug.host.manifest import MANIFEST_NAME, ManifestError
from isoplug.wire.sanitize import clean_path

__all__ = ["folder_may_exist", "manifest_may_exist", "plugin_folder_entries"]

#: What ``os.stat`` says of a path that is not there to use: missing, a file on the way, a
#: loop of links. ``Path.exists()`` is False for these; the folder is no plugin's.
_ABSENT = (errno.ENOENT, errno.ENOTDIR, errno.ELOOP)
#: A path quoted in a plugins folder's error.
_MAX_PATH_CHARS = 1024
#: A filesystem's own folder (a plugins folder that is a mount point has it, root's alone):
#: never a plugin's, so never reported for refusing a look.
_FILESYSTEM_FOLDERS = frozenset({"lost+found"})


def plugin_folder_entries(plugins_dir: Path) -> list[tuple[Path, ManifestError | None]]:
    """The folders of ``plugins_dir`` that hold a ``plugin.toml``, in name order, each with
    None; and each one this process may not read, with the problem to report (a
    :class:`ManifestError` of its ``plugin.toml``, as any plugin skipped is named). Folders
    without a ``plugin.toml``, dangling links, loops of links and ``lost+found`` are left
    out."""
    _check_plugins_dir(plugins_dir)
    try:
        names = sorted(os.listdir(plugins_dir))
    except PermissionError as exc:
        raise _unreadable_plugins_dir(plugins_dir, exc) from None
    entries: list[tuple[Path, ManifestError | None]] = []
    for name in names:
        if name in _FILESYSTEM_FOLDERS:
            continue
        entry = plugins_dir / name
        try:
            is_folder = stat.S_ISDIR(os.stat(entry).st_mode)
        except OSError as exc:
            if exc.errno in _ABSENT:
                continue
            if exc.errno == errno.ENAMETOOLONG:
                too_long = _too_long(plugins_dir, name)
                if too_long is not None:
                    entries.append((entry, too_long))
                continue
            try:
                os.lstat(entry)
            except PermissionError:
                # No name in it can be looked at: the plugins folder refuses its search.
                raise _unreadable_plugins_dir(plugins_dir, exc) from None
            except OSError as looked:
                # The entry itself cannot be looked at (an I/O error): it may hold a plugin.
                entries.append((entry, _unreadable(entry, looked)))
                continue
            # A link to a place this process may not reach.
            entries.append((entry, _unreadable(entry, exc)))
            continue
        if not is_folder:
            continue
        try:
            os.stat(entry / MANIFEST_NAME)
        except OSError as exc:
            if exc.errno == errno.ENAMETOOLONG:
                problem = _too_long(plugins_dir, name)
            else:
                problem = None if exc.errno in _ABSENT else _unreadable(entry, exc)
            if problem is not None:
                entries.append((entry, problem))
            continue
        if not os.access(entry, os.R_OK | os.X_OK, effective_ids=_EFFECTIVE):
            # Its plugin.toml can be read, but the runner could not list the folder to
            # import the plugin's module ("No module named ...", which would not say why).
            refused = PermissionError(errno.EACCES, os.strerror(errno.EACCES))
            entries.append((entry, _unreadable(entry, refused)))
            continue
        entries.append((entry, None))
    return entries


def _too_long(plugins_dir: Path, name: str) -> ManifestError | None:
    """The problem of the entry ``name`` of ``plugins_dir`` whose path passes the system's
    limit (PATH_MAX), when it is a folder holding a ``plugin.toml`` (None: it holds none, or
    is not there). Looked at by its name in the plugins folder (``dir_fd``), which has no
    such limit: a runner could not import from it, nor the host read it by its path."""
    entry = plugins_dir / name
    try:
        folder = os.open(plugins_dir, os.O_RDONLY | os.O_DIRECTORY)
    except OSError as exc:
        return _unreadable(entry, exc)
    try:
        os.stat(os.path.join(name, MANIFEST_NAME), dir_fd=folder)
    except OSError as exc:
        if exc.errno in _ABSENT:
            return None
        if exc.errno != errno.ENAMETOOLONG:  # a link whose target passes the limit
            return _unreadable(entry, exc)
    finally:
        os.close(folder)
    size = len(os.fsencode(entry))
    limit = _path_max(plugins_dir)
    problem = (
        f"its folder cannot be read: its path is {size} bytes long, more than the system "
        f"takes ({limit} bytes, PATH_MAX), so neither the host nor a runner can open a file "
        "in it; move the plugins folder to a shorter path, or give this folder (or a link "
        "to it) a shorter name"
    )
    return ManifestError(entry / MANIFEST_NAME, None, problem)


def _path_max(folder: Path) -> int:
    try:
        return os.pathconf(folder, "PC_PATH_MAX")
    except (OSError, ValueError):
        return 4096  # Linux's


def manifest_may_exist(path: Path) -> bool:
    """Whether the ``plugin.toml`` at ``path`` may be there: it is, or its folder refuses a
    look (then that folder's problem is reported, and a plugin running from it keeps
    running as it was)."""
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except OSError as exc:
        return exc.errno not in _ABSENT


def folder_may_exist(path: Path) -> bool:
    """Whether the folder at ``path`` may be there: it is, or it cannot be looked at by its
    path (past PATH_MAX, refused): ``Path.is_dir`` would raise for some of those."""
    try:
        return stat.S_ISDIR(os.stat(path).st_mode)
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
            raise FolderMissing(
                f"plugins directory {clean_path(plugins_dir, _MAX_PATH_CHARS)} does not exist"
            ) from None
        raise  # out of descriptors, an I/O error: the system's, said as such by the caller
    if not stat.S_ISDIR(info.st_mode):
        raise NotAFolder(
            f"plugins directory {clean_path(plugins_dir, _MAX_PATH_CHARS)} is not a directory"
        )


def _unreadable_plugins_dir(plugins_dir: Path, error: OSError) -> FolderUnreadable:
    """The error that ends a discovery of ``plugins_dir``, saying why and what to change."""
    why = denied(plugins_dir, LIST_FOLDER) if is_denied(error) else error.strerror
    return FolderUnreadable(
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
