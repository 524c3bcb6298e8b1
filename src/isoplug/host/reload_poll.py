"""Folders hot reload reads for changes itself, where watchfiles cannot watch them: a path
that is not UTF-8 (a folder above the plugins folder named in latin-1, or a file a plugin
writes as ``caf\\xe9.txt``). watchfiles takes only paths that are UTF-8 text, and a change
to a file whose name is not ends its watch for good (``Unable to decode path``); Python reads
any name (``os.fsdecode``'s surrogate escapes), so these folders are compared with how they
were, every :data:`POLL_MS`."""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Iterable
from typing import Any

__all__ = ["POLL_MS", "FolderPoll", "is_utf8_path"]

#: How often the folders are read for changes where they cannot be watched.
POLL_MS = 500

#: A file's state as a poll compares it: (mtime_ns, size, inode, mode).
_State = tuple[int, int, int, int]


def is_utf8_path(path: object) -> bool:
    """Whether watchfiles can take ``path``: its name is UTF-8 text (no escaped bytes)."""
    try:
        str(path).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


class FolderPoll:
    """The changes under ``roots`` since the last :meth:`changes`, as watchfiles' batches
    give them (``(Change, path)`` pairs, passed through ``watch_filter``). Links are not
    followed (a linked plugin's real folder is a root of its own). ``changed_since``: the
    wall time (ns) since which every file changed counts as changed at the first
    :meth:`changes` (the changes a failed watch could no longer hand over)."""

    def __init__(
        self, roots: Iterable[str], watch_filter: Any, changed_since: int | None = None
    ) -> None:
        import watchfiles

        self._change = watchfiles.Change
        self._roots = tuple(roots)
        self._filter = watch_filter
        self._ignored_dirs = frozenset(getattr(watch_filter, "ignore_dirs", ()) or ())
        self._seen = self._read()
        self._pending: set[tuple[object, str]] = set()
        if changed_since is not None:
            self._pending = {
                (self._change.modified, path)
                for path, state in self._seen.items()
                if state[0] >= changed_since and self._filter(self._change.modified, path)
            }

    def due(self) -> bool:
        """Whether POLL_MS passed since the last read."""
        return time.monotonic() - self._read_at >= POLL_MS / 1000

    def changes(self) -> set[tuple[object, str]]:
        now = self._read()
        Change = self._change
        found = self._pending
        self._pending = set()
        for path, state in now.items():
            before = self._seen.get(path)
            if before != state:
                found.add((Change.added if before is None else Change.modified, path))
        found.update((Change.deleted, path) for path in self._seen.keys() - now.keys())
        self._seen = now
        return {(change, path) for change, path in found if self._filter(change, path)}

    def _read(self) -> dict[str, _State]:
        self._read_at = time.monotonic()
        seen: dict[str, _State] = {}
        for root in self._roots:
            # By descriptors (fwalk): a folder past PATH_MAX is read too. A folder this
            # process may not read is left out, as watchfiles leaves it: discovery tells it
            # as a problem, and a new watch looks inside once it may be read.
            for folder, folders, files, descriptor in os.fwalk(root):
                folders[:] = [name for name in folders if name not in self._ignored_dirs]
                for name in (*folders, *files):
                    try:
                        info = os.stat(name, dir_fd=descriptor, follow_symlinks=False)
                    except FileNotFoundError:
                        continue  # removed between the listing and this look: gone
                    if stat.S_ISDIR(info.st_mode):
                        # A folder's own time changes with every entry made in it: its
                        # entries say what changed.
                        seen[os.path.join(folder, name)] = (0, 0, info.st_ino, info.st_mode)
                        continue
                    seen[os.path.join(folder, name)] = (
                        info.st_mtime_ns,
                        info.st_size,
                        info.st_ino,
                        info.st_mode,
                    )
        return seen
