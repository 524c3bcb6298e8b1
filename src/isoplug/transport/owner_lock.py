"""The lock that says a private folder's owner is alive, in whatever pid namespace it runs.

A folder's name says which process made it (:mod:`isoplug.transport.socket_dirs`), but a pid
means nothing in another pid namespace: a host in a container restarted over a persistent or
shared ``/tmp`` (a docker volume, a Kubernetes ``emptyDir`` shared by sidecars) finds the
killed host's folders under a namespace of the past, and could never tell whether their owner
lives. So the owner holds an exclusive ``flock`` on the file :data:`LOCK_NAME` in each folder it
made, for as long as the folder is in use. The kernel releases it when the owner dies, however
it dies, and ``flock`` works across pid namespaces (on one kernel): a cleaner granted the lock
knows the owner is dead (:func:`taken_owner_lock`); refused, that it lives.

The lock file appears under its name already locked (made under a temporary name, locked,
then renamed), so a cleaner never finds it free while its owner lives. Its descriptor is
close-on-exec, so neither the zygote nor a spawned runner holds it; a forked child (an
``os.fork()`` of the application's, a ``multiprocessing`` worker) closes its copy at once, or
it would keep a dead host's folders from their cleaner for as long as it lives. The child
closes, never unlocks: ``LOCK_UN`` would release the lock its parent holds (the open file is
shared).

A process holds one descriptor per folder (a host: one for each of its two listeners, and one
for the isoplug link when a plugin names its own interpreter: never one per runner).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import stat
import threading
from collections.abc import Iterator

__all__ = [
    "LOCK_NAME",
    "hold_owner_lock",
    "let_go_owner_lock",
    "owner_lock_path",
    "taken_owner_lock",
]

#: The lock file in each private folder (those made by older versions of isoplug have none).
LOCK_NAME = "owner.lock"
_MAKING_NAME = LOCK_NAME + ".new"

_guard = threading.Lock()
#: folder path -> the descriptor this process holds its lock through.
_held: dict[str, int] = {}


def owner_lock_path(folder: str) -> str:
    """Where the lock of ``folder`` is."""
    return os.path.join(folder, LOCK_NAME)


def hold_owner_lock(folder: str) -> None:
    """Make the lock file of ``folder`` (a private folder this process just made) and hold its
    lock until :func:`let_go_owner_lock`; a lock this process held on a folder of that path
    before (deleted since, and made again) is let go. Raises :class:`OSError` (out of
    descriptors, say), nothing made then."""
    making = os.path.join(folder, _MAKING_NAME)
    fd = os.open(making, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    try:
        # Never refused: the file is new, and no cleaner looks under this name.
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.rename(making, owner_lock_path(folder))
    except BaseException:
        os.close(fd)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(making)
        raise
    with _guard:
        before = _held.get(folder)
        _held[folder] = fd
    if before is not None:
        os.close(before)


def let_go_owner_lock(folder: str) -> None:
    """Close the descriptor holding the lock of ``folder`` (once the folder is removed, or is
    no longer ours); nothing when this process holds none."""
    with _guard:
        fd = _held.pop(folder, None)
    if fd is not None:
        os.close(fd)


@contextlib.contextmanager
def taken_owner_lock(folder: str) -> Iterator[bool | None]:
    """For a cleaner: try to take the lock of ``folder`` (another process's) without waiting.
    Gives True when taken (its owner is dead: the lock is held until the block ends, so
    remove the folder inside it), False when its owner holds it (alive), None when the folder
    has no lock file (made by an older isoplug, or its owner is making it now). Raises
    :class:`OSError` when the lock file cannot be opened (a link, out of descriptors)."""
    try:
        # O_NONBLOCK: a FIFO put under the name must not hang the host's start.
        fd = os.open(
            owner_lock_path(folder), os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK
        )
    except FileNotFoundError:
        yield None
        return
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "the lock file is not a regular file")
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)


def _close_inherited() -> None:
    global _guard  # noqa: PLW0603 (the child's own, once per fork)
    # In the child's only thread, right after the fork: the guard is not taken but replaced,
    # since another thread of the parent may have held it in the moment of the fork.
    _guard = threading.Lock()
    inherited = list(_held.values())
    _held.clear()
    for fd in inherited:
        os.close(fd)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_close_inherited)
