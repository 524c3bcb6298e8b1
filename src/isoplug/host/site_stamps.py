"""Whether the site-packages folders a zygote's interpreter was set up from changed since.

A spawned runner's interpreter reads its site-packages folders at its start: the ``.pth``
files there extend ``sys.path`` (``pip install -e``, editable finders, ``.pth`` of other
tools), and every library it imports comes from them as they are now. A forked runner is a
copy of its zygote: it has the zygote's ``sys.path``, built when the zygote started, and the
zygote's copy of every library the zygote imported (msgspec, uvloop, ssl...). So the host
stamps those folders before it starts a zygote (:meth:`SiteStamp.take`), and before each fork
asks whether they changed since (:meth:`SiteStamp.changed`, a few ``stat`` calls: each folder,
each ``.pth`` file in it); if they did, the zygote is replaced (see :mod:`isoplug.host.zygote`).
Adding, removing or renaming an entry of a folder (an installed, upgraded or removed package, a
new ``.pth`` file) changes the folder's times; rewriting a ``.pth`` file in place changes its
own.

A file system's times have a granularity (a kernel tick; 2 s on FAT): a change within the same
tick as an earlier one, right after the stamp was taken, leaves the times as they were. So a
stamp holding a time that close to its own is *racy* (as Git's index is): it reports a change
once that granularity has passed, and the zygote is replaced once more, from folders that have
been still since.

isoplug and msgspec themselves may come from elsewhere (``PYTHONPATH``, a container's folder):
the folders they are imported from, and the folder each sits in, are stamped too, so that a
copy replaced there reaches forked runners as it reaches spawned ones.
"""

from __future__ import annotations

import dataclasses
import os
import site
import sys
import sysconfig
import time
import types
from collections.abc import Mapping

__all__ = ["SiteStamp", "library_folders", "site_folders"]

#: The coarsest granularity of a file system's times taken into account (FAT's).
RACY_NS = 2_000_000_000

#: What identifies a file's version: its inode, size, and change and modification times.
_FileStamp = tuple[int, int, int, int]


def site_folders(environment: Mapping[str, str]) -> tuple[str, ...]:
    """The site-packages folders an interpreter of this host's (``sys.executable``) started
    with ``environment`` reads: the installation's or the virtual environment's, and the
    user's (``~/.local/lib/pythonX.Y/site-packages``) where it may be enabled."""
    folders = list(site.getsitepackages())
    # The host's own -s or -S says nothing of a zygote's, which starts without them; a
    # virtual environment that hides the system's packages disables the user's in both.
    enabled = site.ENABLE_USER_SITE or (
        sys.flags.no_user_site and site.ENABLE_USER_SITE is not None
    )
    if enabled and not environment.get("PYTHONNOUSERSITE"):
        home = environment.get("HOME") or os.path.expanduser("~")
        base = environment.get("PYTHONUSERBASE") or os.path.join(home, ".local")
        scheme = f"{os.name}_user"
        for kind in ("purelib", "platlib"):
            folder = sysconfig.get_path(kind, scheme, vars={"userbase": base})
            if folder not in folders:
                folders.append(folder)
    for folder in library_folders():
        if folder not in folders:
            folders.append(folder)
    return tuple(folders)


def library_folders() -> tuple[str, ...]:
    """The folders isoplug and msgspec are imported from (each package's own and the one it
    sits in, as a zygote imports them): wherever that is, site-packages or not."""
    import msgspec

    # isoplug's own folder, from this module's place in it: the host may not import the
    # package above it.
    isoplug_folder = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    folders = [isoplug_folder, os.path.dirname(isoplug_folder)]
    msgspec_folder = _package_folder(msgspec)
    if msgspec_folder is not None:
        folders += [msgspec_folder, os.path.dirname(msgspec_folder)]
    return tuple(folders)


def _package_folder(module: types.ModuleType) -> str | None:
    path = getattr(module, "__file__", None)
    return None if path is None else os.path.dirname(os.path.abspath(path))


@dataclasses.dataclass(frozen=True)
class SiteStamp:
    """The times of some site-packages folders and of their ``.pth`` files, at one moment."""

    #: Each folder's stamp (None: it did not exist), then each ``.pth`` file's.
    files: dict[str, _FileStamp | None]
    #: When it was taken (``time.time_ns()``).
    taken: int
    #: Whether a time in it was too close to ``taken`` to tell a later change (see the
    #: module's docstring).
    racy: bool

    @classmethod
    def take(cls, folders: tuple[str, ...]) -> SiteStamp:
        """Stamp ``folders`` now (before an interpreter reads them)."""
        taken = time.time_ns()
        files: dict[str, _FileStamp | None] = {}
        for folder in folders:
            files[folder] = _stamp(folder)
        for folder in folders:
            if files[folder] is None:
                continue
            try:
                names = os.listdir(folder)
            except OSError:
                continue  # gone meanwhile: its stamp differs by the next check
            for name in names:
                if name.endswith(".pth"):
                    path = os.path.join(folder, name)
                    files[path] = _stamp(path)
        racy = any(s is not None and s[3] > taken - RACY_NS for s in files.values())
        return cls(files, taken, racy)

    def changed(self) -> str | None:
        """What changed since the stamp was taken (a folder or a ``.pth`` file); None if
        nothing did."""
        for path, stamp in self.files.items():
            if _stamp(path) != stamp:
                kind = "file" if path.endswith(".pth") else "folder"
                return f"{kind} {path} changed"
        if self.racy and time.time_ns() > self.taken + RACY_NS:
            return (
                f"within {RACY_NS / 1e9:g} s before it started, too close to tell a later "
                "change by the times"
            )
        return None


def _stamp(path: str) -> _FileStamp | None:
    try:
        found = os.stat(path)
    except OSError:
        return None
    return (found.st_ino, found.st_size, found.st_ctime_ns, found.st_mtime_ns)
