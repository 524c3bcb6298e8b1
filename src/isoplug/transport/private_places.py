"""A file in a private folder, as this process made them: a unix listener's socket, and the
host's isoplug link (:mod:`isoplug.host.isoplug_link`).

A host runs for weeks; a temporary-file cleaner (systemd-tmpfiles, tmpreaper, an ``rm -rf
/tmp/isoplug-*``) may delete those folders meanwhile. A listening socket stays open, and
connections already made go on, but nothing can connect any more: a path is the only way to
reach a unix socket. So its listener asks :meth:`PrivatePlace.lost` before it is needed again,
and listens anew when it is: at the same path if the folder can be made again there by this
process, else in a fresh private folder.

A name alone says nothing of who made what it names now: a folder deleted and made again under
its name (by another user, with another mode, or by us for something else) is another folder.
So a place remembers the inode, owner and mode of what it made, and neither uses nor removes
anything that no longer matches: it never reuses, nor deletes, a folder it did not make.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import os
import shutil
import stat

from isoplug.log_guard import guarded_logger
from isoplug.transport.owner_lock import let_go_owner_lock, owner_lock_path

__all__ = ["Made", "PrivatePlace", "remove_folder"]

_log = guarded_logger("isoplug.transport")


@dataclasses.dataclass(frozen=True)
class Made:
    """A file or folder as this process made it: what tells it from one made again under its
    name (an inode number alone may be reused once it is deleted; with its owner and mode it
    tells a stranger's apart)."""

    path: str
    device: int
    inode: int
    owner: int
    mode: int

    @classmethod
    def at(cls, path: str) -> Made:
        """What is at ``path`` now (just made by us; a link itself, not what it points to).
        Raises :class:`OSError`."""
        info = os.lstat(path)
        return cls(path, info.st_dev, info.st_ino, info.st_uid, info.st_mode)

    def change(self) -> str | None:
        """What became of it: ``"deleted"``, ``"deleted and made again by someone else
        (...)"``, or None while it is still the one made."""
        try:
            info = os.lstat(self.path)
        except FileNotFoundError:
            return "deleted"
        except OSError as exc:  # a folder above it made unreadable: out of our reach as well
            return f"out of reach ({exc.strerror})"
        if (info.st_dev, info.st_ino, info.st_uid, info.st_mode) == (
            self.device,
            self.inode,
            self.owner,
            self.mode,
        ):
            return None
        return (
            f"deleted and made again by someone else (owner uid {info.st_uid}, "
            f"mode {stat.filemode(info.st_mode)})"
        )


@dataclasses.dataclass(frozen=True)
class PrivatePlace:
    """A file (a listening unix socket, a link), and the private folder made for it (None: a
    path the caller gave, whose folder is not ours)."""

    file: Made
    folder: Made | None

    @property
    def path(self) -> str:
        return self.file.path

    @classmethod
    def made(cls, path: str, folder: str | None) -> PrivatePlace:
        """The place of the file just made at ``path`` (a socket just bound, say), in the
        private ``folder`` made for it. Raises :class:`OSError`."""
        return cls(Made.at(path), None if folder is None else Made.at(folder))

    def lost(self) -> str | None:
        """Why the file can no longer be reached at its path (its folder or itself deleted, or
        replaced), in words such as "its folder /tmp/isoplug-... was deleted"; None while it
        can."""
        if self.folder is not None:
            change = self.folder.change()
            if change is not None:
                return f"its folder {self.folder.path} was {change}"
        change = self.file.change()
        if change is not None:
            return f"{self.file.path} was {change}"
        return None

    def remove(self, *, reported: bool = False) -> None:
        """Remove the file and the private folder, each only while it is the one made. One
        gone already (a temporary-file cleaner) is said at DEBUG; one made again by someone
        else is left alone, with a WARNING, unless ``reported`` (its loss was said already)."""
        change = self.file.change()
        if change is None:
            try:
                os.unlink(self.file.path)
            except FileNotFoundError:
                change = "deleted"  # just now
        if change is not None and self.folder is None:
            _left(self.file, change, reported)
        if self.folder is None:
            return
        change = self.folder.change()
        if change is not None:
            # Ours no longer: the lock held is on a file deleted with it.
            let_go_owner_lock(self.folder.path)
            _left(self.folder, change, reported)
            return
        try:
            remove_folder(self.folder.path)
        except FileNotFoundError:
            _left(self.folder, "deleted", reported)  # just now
        except OSError as exc:
            _log.warning("could not remove %s: %s", self.folder.path, exc)


def remove_folder(path: str) -> None:
    """Remove the private folder ``path``, then let go of its owner lock
    (:mod:`isoplug.transport.owner_lock`): held until the folder is gone, so that no cleaner
    removes it meanwhile. Emptied of its socket already, as a rule, and of its lock file here,
    so with ``unlink`` and ``rmdir``, which take no descriptor (a process out of them, closing
    what it opened, must still leave nothing behind); ``rmtree`` for what someone put there."""
    try:
        with contextlib.suppress(FileNotFoundError):  # never made, or a cleaner deleted it
            os.unlink(owner_lock_path(path))
        try:
            os.rmdir(path)
        except OSError as exc:
            if exc.errno != errno.ENOTEMPTY:
                raise
            shutil.rmtree(path)
    finally:
        let_go_owner_lock(path)


def _left(made: Made, change: str, reported: bool) -> None:
    if change == "deleted" or reported:
        _log.debug("not removing %s: it was %s already", made.path, change)
    else:
        _log.warning(
            "left %s alone: it is not the one this process made, which was %s", made.path, change
        )
