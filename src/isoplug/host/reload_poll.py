"""Folders hot reload reads for changes itself, where watchfiles cannot watch them: a path
that is not UTF-8 (a folder above the plugins folder named in latin-1, or a file a plugin
writes as ``caf\\xe9.txt``). watchfiles takes only paths that are UTF-8 text, and a change
to a file whose name is not ends its watch for good (``Unable to decode path``); Python reads
any name (``os.fsdecode``'s surrogate escapes), so these folders are compared with how they
were, now and then.

A read costs a ``stat`` per file (about 5 us): the folders of one plugin that writes 60,000
files beside its code, read every 0.5 s, cost half a core for as long as the host ran. So a
read looks at :data:`MAX_POLLED_ENTRIES` files and folders at most (and remembers no more),
and the next read waits :data:`POLL_COST_SHARE` times as long as the last one took, and
:data:`POLL_MS` at least: reads take 2 % of a core at most, however large the folders."""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "MAX_POLLED_ENTRIES",
    "POLL_COST_SHARE",
    "POLL_MS",
    "FolderPoll",
    "is_utf8_path",
]

#: The shortest wait between two reads of the folders that cannot be watched.
POLL_MS = 500
#: The most files and folders one read looks at, and remembers: about 26 ms of a core.
MAX_POLLED_ENTRIES = 5_000
#: The wait after a read is this many times as long as the read took (at least POLL_MS).
POLL_COST_SHARE = 50

#: A file's state as a poll compares it: (mtime_ns, size, inode, mode).
_State = tuple[int, int, int, int]


def is_utf8_path(path: object) -> bool:
    """Whether watchfiles can take ``path``: its name is UTF-8 text (no escaped bytes)."""
    try:
        str(path).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


@dataclass
class _Reading:
    """What one read found: each path's state, the folders whose every entry it looked at,
    and the folder where it stopped at the cap (None: it read everything)."""

    seen: dict[str, _State] = field(default_factory=dict)
    complete: set[str] = field(default_factory=set)
    capped_in: str | None = None

    def reached(self, path: str) -> bool:
        """Whether this read looked at every entry of ``path``'s folder."""
        return self.capped_in is None or os.path.dirname(path) in self.complete


class FolderPoll:
    """The changes under ``deep`` (every folder in them) and ``shallow`` (their own entries
    only) since the last :meth:`changes`, as watchfiles' batches give them (``(Change,
    path)`` pairs, passed through ``watch_filter``). Links are not followed (a linked
    plugin's real folder is a root of its own). ``changed_since``: the wall time (ns) since
    which every file changed counts as changed at the first :meth:`changes` (the changes a
    failed watch could no longer hand over). ``capped``: told the folder where a read
    stopped at :data:`MAX_POLLED_ENTRIES`."""

    def __init__(
        self,
        deep: Iterable[str],
        watch_filter: Any,
        changed_since: int | None = None,
        *,
        shallow: Iterable[str] = (),
        capped: Callable[[str], None] | None = None,
    ) -> None:
        import watchfiles

        self._change = watchfiles.Change
        self._targets = (*((root, True) for root in deep), *((root, False) for root in shallow))
        self._filter = watch_filter
        self._capped = capped
        self._ignored_dirs = frozenset(getattr(watch_filter, "ignore_dirs", ()) or ())
        self._next_read_at = 0.0
        self._last = self._read()
        self._pending: set[tuple[object, str]] = set()
        if changed_since is not None:
            self._pending = {
                (self._change.modified, path)
                for path, state in self._last.seen.items()
                if state[0] >= changed_since and self._filter(self._change.modified, path)
            }

    @property
    def roots(self) -> tuple[str, ...]:
        return tuple(root for root, _ in self._targets)

    def due(self) -> bool:
        """Whether the wait after the last read is over."""
        return time.monotonic() >= self._next_read_at

    def changes(self) -> set[tuple[object, str]]:
        now = self._read()
        last = self._last
        Change = self._change
        found = self._pending
        self._pending = set()
        for path, state in now.seen.items():
            before = last.seen.get(path)
            # Past the cap, a file the last read did not reach is not new: only unseen.
            if before != state and (before is not None or last.reached(path)):
                found.add((Change.added if before is None else Change.modified, path))
        found.update(
            (Change.deleted, path)
            for path in last.seen.keys() - now.seen.keys()
            if now.reached(path)
        )
        self._last = now
        return {(change, path) for change, path in found if self._filter(change, path)}

    def _read(self) -> _Reading:
        #: The wall time since which the last read saw every change.
        self.read_since_ns = time.time_ns()
        started = time.monotonic()
        reading = _Reading()
        for root, deep in self._targets:
            if not self._read_root(root, deep, reading):
                break
        ended = time.monotonic()
        self._next_read_at = ended + max(POLL_MS / 1000, POLL_COST_SHARE * (ended - started))
        if reading.capped_in is not None and self._capped is not None:
            self._capped(reading.capped_in)
        return reading

    def _read_root(self, root: str, deep: bool, reading: _Reading) -> bool:
        """Read ``root`` into ``reading``; False once the cap is reached."""
        # By descriptors (fwalk): a folder past PATH_MAX is read too. A folder this process
        # may not read is left out, as watchfiles leaves it: discovery tells it as a
        # problem, and a new watch looks inside once it may be read.
        # Left at the cap, the walk's descriptors close with it as this returns.
        for folder, folders, files, descriptor in os.fwalk(root):
            folders[:] = [name for name in folders if name not in self._ignored_dirs]
            names = [*folders, *files]
            if not deep:
                folders[:] = []
            room = MAX_POLLED_ENTRIES - len(reading.seen)
            self._read_entries(folder, names[:room], descriptor, reading.seen)
            if len(names) > room:
                reading.capped_in = folder
                return False
            reading.complete.add(folder)
        return True

    @staticmethod
    def _read_entries(
        folder: str, names: list[str], descriptor: int, seen: dict[str, _State]
    ) -> None:
        for name in names:
            try:
                info = os.stat(name, dir_fd=descriptor, follow_symlinks=False)
            except FileNotFoundError:
                continue  # removed between the listing and this look: gone
            if stat.S_ISDIR(info.st_mode):
                # A folder's own time changes with every entry made in it: its entries say
                # what changed.
                seen[os.path.join(folder, name)] = (0, 0, info.st_ino, info.st_mode)
                continue
            seen[os.path.join(folder, name)] = (
                info.st_mtime_ns,
                info.st_size,
                info.st_ino,
                info.st_mode,
            )
