"""What hot reload watches with the kernel's notifications, and what it reads for changes
itself, where a name is not UTF-8 (see :mod:`isoplug.host.reload_poll`).

Each folder is watched as a whole (one watchfiles ``RustNotify``, inotify, for all of them)
until a change to a name that is not UTF-8 ends that watch. The plugins folder is then split:
its own entries are watched apart (not recursive), each folder in it on its own path of the
recursive watch, and only the folder that holds the name (one plugin's) is read for changes,
bounded. A name that is not UTF-8 among the plugins folder's own entries gets its entries read
too (a few names). A linked plugin's real folder (a root of its own) is read as a whole.

Two watches, not one per plugin folder: each is an inotify instance, and a user has 128 of
them by default (``fs.inotify.max_user_instances``), shared with every other program.
"""

from __future__ import annotations

import os
import re
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from isoplug.host.reload_poll import POLL_MS, FolderPoll, is_utf8_path
from isoplug.log_guard import guarded_logger
from isoplug.wire.sanitize import clean_path

__all__ = ["Batch", "WatchLayout", "decoded_rust_path"]

_log = guarded_logger("isoplug.host")

#: One batch: (watchfiles.Change, path) pairs.
Batch = set[tuple[object, str]]

#: watchfiles groups the changes of this many milliseconds into one batch: an editor's save
#: (write, rename, chmod) is one batch, and a save still reaches the runner quickly.
DEBOUNCE_MS = 50
#: How often a watch is looked at for changes, and for whether to stop, in milliseconds.
STEP_MS = 10
#: How long a watch alone waits for changes before its round ends (the polls are looked at
#: between rounds): woken less often, an idle host costs less. Two watches take one step each
#: in turn, so that neither waits for the other.
_LONE_WATCH_MS = 100
#: How far back, before the last batch a failed watch handed over, a poll's first read
#: counts a file as changed: what the watch saw in its last moments, and lost with its end.
_CATCH_UP_NS = 1_000_000_000
#: Paths named in the DEBUG record of what a poll found.
_SHOWN_CHANGES = 10
_MAX_PATH_CHARS = 1024

#: Says folders are read for changes: (the folders, why).
SayPolled = Callable[[list[str], str], None]


class WatchLayout:
    """The watches and the poll of ``roots``; :meth:`round` gives the changes of one step.
    ``plugins_dir``: the root that holds plugin folders, which is split when one of them
    holds a name that is not UTF-8. ``said_capped``: told a folder where a poll stops at its
    cap. Its watches are made by :meth:`start` and ended by :meth:`close`."""

    def __init__(
        self,
        roots: Sequence[str],
        plugins_dir: str | None,
        watch_filter: Any,
        say_polled: SayPolled,
        said_capped: Callable[[str], None],
    ) -> None:
        self._filter = watch_filter
        self._plugins_dir = plugins_dir
        self._say_polled = say_polled
        self._said_capped = said_capped
        #: Watched recursively, as a whole.
        self._whole = [root for root in roots if is_utf8_path(root)]
        #: Read for changes, every folder in them.
        self._deep_polled = [root for root in roots if not is_utf8_path(root)]
        if self._deep_polled:
            say_polled(self._deep_polled, "its path is not UTF-8 text")
        #: Whether the plugins folder is split, and its own entries read (not watched).
        self._split = False
        self._top_polled = False
        #: The plugins folder's folders, each watched recursively, once it is split.
        self._entries: list[str] = []
        self._notifiers: list[Any] = []
        #: Watches replaced by ones of other folders, looked at once more for what they
        #: hold, then closed.
        self._retiring: list[Any] = []
        self._options: tuple[bool, bool] = (False, False)
        self._poll: FolderPoll | None = None
        if self._deep_polled:
            self._poll = self._new_poll(None)
        #: The wall time of the last round that ended well: a failed watch lost what came
        #: after it.
        self._watched_since = time.time_ns()

    @property
    def polled(self) -> tuple[str, ...]:
        """The folders read for changes (not watched) now."""
        return self._poll.roots if self._poll else ()

    def start(self, *, skip_unreadable: bool, force_polling: bool) -> None:
        """Make the watches (raises what watchfiles raises: a folder it may not read, the
        system's limit of watches)."""
        self._options = (skip_unreadable, force_polling)
        self._notifiers = self._new_notifiers()

    def close(self) -> None:
        for notifier in (*self._notifiers, *self._retiring):
            notifier.close()
        self._notifiers, self._retiring = [], []

    def round(self, stop: threading.Event) -> Batch | None:
        """The changes of one step of each watch, and of a poll when one is due; None once
        ``stop`` is set."""
        import watchfiles
        from watchfiles._rust_notify import WatchfilesRustInternalError

        changes: Batch = set()
        watches = (*self._notifiers, *self._retiring)
        # A change found is grouped with what follows it for DEBOUNCE_MS.
        timeout_ms = _LONE_WATCH_MS if len(watches) == 1 else 1
        for notifier in watches:
            try:
                raw = notifier.watch(DEBOUNCE_MS, STEP_MS, timeout_ms, stop)
            except WatchfilesRustInternalError as error:
                undecodable = _undecodable_path(error)
                if undecodable is None:
                    raise
                return changes | self._poll_instead(undecodable)
            if raw == "stop":
                return None
            if isinstance(raw, set):
                for change, path in raw:
                    if self._filter(watchfiles.Change(change), path):
                        changes.add((watchfiles.Change(change), path))
        for notifier in self._retiring:
            notifier.close()
        self._retiring = []
        if not self._notifiers and stop.wait(_LONE_WATCH_MS / 1000):
            return None
        self._watched_since = time.time_ns()
        if self._poll is not None and self._poll.due():
            polled = self._poll.changes()
            if polled:
                _log.debug(
                    "reload: read for changes (not watched): %s",
                    shown_paths(sorted(path for _, path in polled)),
                )
            changes |= polled
        if self._split and any(_parent(path) == self._plugins_dir for _, path in changes):
            changes |= self._follow_entries()
        return changes

    def _poll_instead(self, undecodable: str) -> Batch:
        """Read the folder holding ``undecodable`` instead of watching it, and watch the
        rest again: the changes the failed watch lost, as well as can be told."""
        plugins_dir = self._plugins_dir
        path = decoded_rust_path(undecodable)
        moved: list[str] = []
        top_level = False
        root = next((r for r in self._whole if _inside(path, r)), None)
        if root is not None and root == plugins_dir:
            self._whole.remove(root)
            self._split = True
            self._entries = self._folders_in(root)
        elif root is not None:
            self._whole.remove(root)
            moved.append(root)
        if self._split and plugins_dir is not None and _inside(path, plugins_dir):
            entry = os.path.join(plugins_dir, os.path.relpath(path, plugins_dir).split(os.sep)[0])
            if entry == path or entry not in self._entries:
                # The plugins folder's own entry: its watch meets the name with each change.
                self._top_polled = top_level = True
            if entry in self._entries:
                self._entries.remove(entry)
                moved.append(entry)
        if not moved and not top_level:
            # Not found where it was looked for (a name watchfiles showed otherwise): every
            # folder is read, bounded, rather than one watched in vain.
            moved = [*self._whole, *self._entries]
            self._whole, self._entries = [], []
        self._deep_polled += moved
        since = self._watched_since - _CATCH_UP_NS
        if self._poll is not None:
            # The folders read before: since that poll's last read.
            since = min(since, self._poll.read_since_ns)
        # The failed watch is over (watchfiles keeps the error), and what it saw since its
        # last step is lost: read again what it watched, from then on.
        lost = [*self._whole, *self._entries]
        self.close()
        self._notifiers = self._new_notifiers()
        self._poll = self._new_poll(since)
        assert self._poll is not None
        # Said once it is so: .polled names the folder by then.
        self._say_polled(moved or [plugins_dir or path], f"{undecodable} is not UTF-8 text")
        # Bounded as the polls are (this is one read, and the poll's cap is said by them).
        return self._poll.changes() | FolderPoll(lost, self._filter, since).changes()

    def _follow_entries(self) -> Batch:
        """A folder made in the split plugins folder is watched too (its files made before
        its watch are read now, as changed); one removed is no longer."""
        assert self._plugins_dir is not None
        now = [e for e in self._folders_in(self._plugins_dir) if e not in self._deep_polled]
        if now == self._entries:
            return set()
        made = [entry for entry in now if entry not in self._entries]
        self._entries = now
        # The new watch first: the old one, looked at once more, holds what came before it.
        self._retiring += self._notifiers
        self._notifiers = self._new_notifiers()
        return FolderPoll(made, self._filter, 0).changes() if made else set()

    def _folders_in(self, plugins_dir: str) -> list[str]:
        """The folders in ``plugins_dir`` (links to folders too), named in UTF-8; one that is
        not is read for changes, and so are the plugins folder's own entries."""
        folders = []
        with os.scandir(plugins_dir) as entries:
            for entry in entries:
                if not entry.is_dir() or entry.name in self._ignored_dirs():
                    continue
                if is_utf8_path(entry.path):
                    folders.append(entry.path)
                elif entry.path not in self._deep_polled:
                    self._say_polled([entry.path], "its name is not UTF-8 text")
                    self._deep_polled.append(entry.path)
                    self._top_polled = True
        return sorted(folders)

    def _ignored_dirs(self) -> frozenset[str]:
        return frozenset(getattr(self._filter, "ignore_dirs", ()) or ())

    def _new_notifiers(self) -> list[Any]:
        from watchfiles._rust_notify import RustNotify

        skip_unreadable, force_polling = self._options
        notifiers = []
        recursive = [*self._whole, *self._entries]
        if recursive:
            notifiers.append(
                RustNotify(recursive, False, force_polling, POLL_MS, True, skip_unreadable)
            )
        if self._split and not self._top_polled:
            assert self._plugins_dir is not None
            notifiers.append(
                RustNotify(
                    [self._plugins_dir], False, force_polling, POLL_MS, False, skip_unreadable
                )
            )
        return notifiers

    def _new_poll(self, changed_since: int | None) -> FolderPoll | None:
        shallow = [self._plugins_dir] if self._top_polled and self._plugins_dir else []
        if not self._deep_polled and not shallow:
            return None
        return FolderPoll(
            self._deep_polled,
            self._filter,
            changed_since,
            shallow=shallow,
            capped=self._said_capped,
        )


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def _parent(path: str) -> str:
    return os.path.dirname(path)


def shown_paths(paths: Sequence[str]) -> str:
    """The first of ``paths``, each through clean_path, and how many more."""
    shown = ", ".join(clean_path(path, _MAX_PATH_CHARS) for path in paths[:_SHOWN_CHANGES])
    more = len(paths) - _SHOWN_CHANGES
    return f"{shown} and {more} more" if more > 0 else shown


#: watchfiles' words for a changed path that is not UTF-8 (its Rust ``{:?}`` of the path).
_UNDECODABLE = re.compile(r'Unable to decode path "(?P<path>.*)" to string')
#: The escapes of Rust's ``{:?}`` of a path: bytes that are not UTF-8, then a character's.
_RUST_ESCAPE = re.compile(
    r"\\(?:x(?P<byte>[0-9A-Fa-f]{2})|u\{(?P<char>[0-9A-Fa-f]{1,6})\}|(?P<plain>[0tnr'\"\\]))"
)
_PLAIN_ESCAPES = {"0": b"\0", "t": b"\t", "n": b"\n", "r": b"\r", "'": b"'", '"': b'"'}


def _undecodable_path(error: Exception) -> str | None:
    """The path (as watchfiles shows it: ``caf\\xE9.txt``) whose change ended the watch
    ``error`` ended, when that is why it ended."""
    found = _UNDECODABLE.search(str(error))
    return found["path"] if found else None


def decoded_rust_path(shown: str) -> str:
    """The path Rust's ``{:?}`` showed as ``shown``, as Python names it (``os.fsdecode``)."""
    raw = bytearray()
    done = 0
    for escape in _RUST_ESCAPE.finditer(shown):
        raw += os.fsencode(shown[done : escape.start()])
        if escape["byte"]:
            raw.append(int(escape["byte"], 16))
        elif escape["char"]:
            raw += chr(int(escape["char"], 16)).encode("utf-8", "surrogatepass")
        else:
            raw += _PLAIN_ESCAPES.get(escape["plain"], b"\\")
        done = escape.end()
    raw += os.fsencode(shown[done:])
    return os.fsdecode(bytes(raw))
