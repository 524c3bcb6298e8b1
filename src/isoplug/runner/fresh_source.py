"""A runner imports its plugins' code as it is on disk, never an older ``__pycache__`` file.

Python trusts a timestamp-based ``.pyc`` when its header matches the source's modification
time in whole seconds and its size. Two saves of the same size within one second (``V = 2``,
then ``V = 3``, the second after a runner had compiled the first) leave a ``.pyc`` that
matches the newer source, and every later start runs the older code: after a hot reload, a
``host.restart()``, a crash's restart, with hot reload on or off.

So for the folders of a runner's plugins (and every other folder on its ``sys.path`` but the
interpreter's own libraries) source files are loaded by :class:`FreshSourceLoader`, which
trusts a timestamp-based ``.pyc`` only when the ``.pyc`` was written in a later second than
the source's last change. Any later save then falls in a later second than the one in the
header, which Python's own check catches. A ``.pyc`` written within the second of its source's
change (the one case a same-second save can fool) is ignored: the module is compiled from
source, and its ``.pyc`` written again, trusted from then on once written a second later.

This costs one ``stat`` of the ``.pyc`` per module imported from those folders, not a read
and a hash of every source (a checked-hash ``.pyc``, which is trusted as Python trusts it).
The interpreter's own folders (standard library, site-packages) keep Python's loader: pip
compiles a package within the second it writes it, and a read-only site-packages would have
its modules compiled again at every start.
"""

from __future__ import annotations

import os
import site
import sys
import sysconfig
import weakref
from collections.abc import Iterable
from importlib.abc import PathEntryFinder
from importlib.machinery import (
    BYTECODE_SUFFIXES,
    EXTENSION_SUFFIXES,
    SOURCE_SUFFIXES,
    ExtensionFileLoader,
    FileFinder,
    SourceFileLoader,
    SourcelessFileLoader,
)
from importlib.util import cache_from_source
from typing import Any

__all__ = ["FreshSourceLoader", "load_fresh_source"]

#: Bytes 4-8 of a ``.pyc`` (PEP 552): 0 for a timestamp-based one.
_FLAGS = slice(4, 8)
_TIMESTAMP_BASED = b"\0\0\0\0"
_NS = 1_000_000_000


class FreshSourceLoader(SourceFileLoader):
    """A :class:`~importlib.machinery.SourceFileLoader` that ignores a timestamp-based
    ``.pyc`` written within the second of its source's last change (see the module's
    docstring)."""

    _source_second: int | None = None

    def path_stats(self, path: str) -> dict[str, Any]:
        # get_code stats the source right before it reads the .pyc: remember when it changed.
        info = os.stat(path)
        self._source_second = info.st_mtime_ns // _NS
        return {"mtime": info.st_mtime, "size": info.st_size}

    def get_data(self, path: str) -> bytes:
        data = super().get_data(path)
        if (
            self._source_second is not None
            and data[_FLAGS] == _TIMESTAMP_BASED
            and path == _bytecode_of(self.path)
            and os.stat(path).st_mtime_ns // _NS <= self._source_second
        ):
            # get_code takes an OSError here as "no .pyc": it compiles the source, and
            # writes the .pyc again.
            raise OSError(f"{path} was written within the second its source last changed")
        return data


def _bytecode_of(source: str) -> str | None:
    try:
        return cache_from_source(source)
    except NotImplementedError:  # sys.implementation.cache_tag is None: no .pyc at all
        return None


def load_fresh_source(folders: Iterable[str]) -> None:
    """From now on, import source files with :class:`FreshSourceLoader` from ``folders`` and
    every other ``sys.path`` folder but the interpreter's own libraries. Safe to call again
    (a group loads each of its plugins): the first call installs the hook, later ones add
    their folders."""
    hook = next((h for h in sys.path_hooks if isinstance(h, _FreshSourceHook)), None)
    if hook is None:
        hook = _FreshSourceHook()
        sys.path_hooks.insert(0, hook)
    hook.always.update(os.path.abspath(folder) for folder in folders)
    # A finder made before (in the zygote, or for an earlier plugin of a group) for a folder
    # the hook now takes would go on with Python's loader.
    for entry, finder in list(sys.path_importer_cache.items()):
        if hook.takes(entry) and finder not in hook.made:
            del sys.path_importer_cache[entry]


class _FreshSourceHook:
    """A ``sys.path_hooks`` entry: a :class:`~importlib.machinery.FileFinder` loading source
    with :class:`FreshSourceLoader`, for every folder it takes (others go on to the next
    hook, Python's own)."""

    def __init__(self) -> None:
        #: Folders taken wherever they are (the plugins' own, even inside a venv).
        self.always: set[str] = set()
        self._own = _interpreter_folders()
        self.made: weakref.WeakSet[object] = weakref.WeakSet()
        self._finder = FileFinder.path_hook(
            (ExtensionFileLoader, EXTENSION_SUFFIXES),
            (FreshSourceLoader, SOURCE_SUFFIXES),
            (SourcelessFileLoader, BYTECODE_SUFFIXES),
        )

    def takes(self, entry: object) -> bool:
        if not isinstance(entry, str) or not entry:
            return False
        folder = os.path.abspath(entry)
        if folder in self.always:
            return True
        inside = os.path.join(folder, "")
        return not any(inside.startswith(own) for own in self._own) and os.path.isdir(folder)

    def __call__(self, entry: str) -> PathEntryFinder:
        if not self.takes(entry):
            raise ImportError("not a folder whose sources are loaded fresh", path=entry)
        finder = self._finder(entry)
        self.made.add(finder)
        return finder


def _interpreter_folders() -> tuple[str, ...]:
    """The interpreter's own library folders (standard library, site-packages), each ending
    in a separator."""
    paths = sysconfig.get_paths()
    folders = [paths[name] for name in ("stdlib", "platstdlib", "purelib", "platlib")]
    folders += site.getsitepackages() if hasattr(site, "getsitepackages") else []
    if site.ENABLE_USER_SITE and (user := site.getusersitepackages()):
        folders.append(user)
    return tuple({os.path.join(os.path.abspath(f), "") for f in folders})
