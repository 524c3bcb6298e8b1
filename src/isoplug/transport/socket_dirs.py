"""Private directories for unix sockets (and the host's isoplug link for runners with an
interpreter of their own, :mod:`isoplug.host.isoplug_link`), named after their owner so that
leftovers can be found.

A listener removes its directory when it closes, but a process killed with SIGKILL closes
nothing. Each directory's name therefore says which process made it: its pid, its start time
(clock ticks after boot, from ``/proc/<pid>/stat``: a pid alone may have been reused) and its pid
namespace (a pid means nothing in another one)::

    $TMPDIR/isoplug-<pid>-<start time>-<pid namespace>-<random>

(or in ``/tmp``, ``/var/tmp``, where ``$TMPDIR`` could not take it:
:mod:`isoplug.transport.temp_places`),
and its owner holds the lock of the file ``owner.lock`` inside it for as long as it uses it
(:mod:`isoplug.transport.owner_lock`), which the kernel releases when the owner dies.

:func:`remove_stale_socket_dirs` (the host calls it when it starts) removes the directories of
this user whose owner is dead: one of this pid namespace when its pid is dead (or names another
process now) and its lock, if it has one, is free; one of another namespace (a container
restarted over a shared ``/tmp``) when its lock is free, taken then, and held while it is
removed. One whose lock is held is never removed. One without a lock file (made by an older
isoplug) is judged by its pid alone, and left alone in another namespace; so is one whose owner
cannot be judged at all (no ``/proc``, an unknown name).
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import stat

from isoplug.log_guard import guarded_logger
from isoplug.transport.owner_lock import taken_owner_lock
from isoplug.transport.temp_places import temporary_places

__all__ = ["owner_prefix", "remove_stale_socket_dirs"]

_log = guarded_logger("isoplug.transport")

_NAME = re.compile(r"isoplug-(\d+)-(\d+)-(\d+)-[A-Za-z0-9_]+")


@functools.cache
def _namespace() -> int:
    try:
        link = os.readlink("/proc/self/ns/pid")  # "pid:[4026531836]"
        return int(link[link.index("[") + 1 : -1])
    except (OSError, ValueError):
        return 0


def _start_time(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat_file:
            fields = stat_file.read().rpartition(b")")[2].split()
        return int(fields[19])
    except (OSError, IndexError, ValueError):
        return None


def owner_prefix() -> str:
    """``tempfile.mkdtemp``'s prefix for a directory this process owns. Where the owner cannot
    be told later (no ``/proc``), the plain ``isoplug-``, which :func:`remove_stale_socket_dirs`
    never touches."""
    pid = os.getpid()
    start = _start_time(pid)
    namespace = _namespace()
    if start is None or not namespace:
        return "isoplug-"
    return f"isoplug-{pid}-{start}-{namespace}-"


def _pid_is_dead(pid: int, start: int) -> bool:
    now = _start_time(pid)
    if now is not None:
        return now != start  # the pid was reused: the owner is gone
    return not os.path.exists(f"/proc/{pid}")


def remove_stale_socket_dirs(places: tuple[str, ...] | None = None) -> list[str]:
    """Remove this user's socket directories whose owner process is dead, in ``places``
    (default: every temporary folder they may be made in, a full ``/tmp``'s ``/var/tmp`` too:
    :func:`~isoplug.transport.temp_places.temporary_places`); return them."""
    if places is None:
        places = tuple(temporary_places())
    removed: list[str] = []
    uid = os.getuid()
    for place in places:
        try:
            entries = list(os.scandir(place))
        except OSError:
            continue
        for entry in entries:
            match = _NAME.fullmatch(entry.name)
            if match is None:
                continue
            try:
                info = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            if not stat.S_ISDIR(info.st_mode) or info.st_uid != uid:
                continue
            pid, start, namespace = (int(group) for group in match.groups())
            ours = namespace == _namespace()
            if ours and not _pid_is_dead(pid, start):
                continue
            if _removed_if_unlocked(entry.path, judged_by_pid=ours):
                removed.append(entry.path)
    return removed


def _removed_if_unlocked(folder: str, *, judged_by_pid: bool) -> bool:
    """Remove ``folder`` unless its owner holds its lock; one without a lock file only when
    ``judged_by_pid`` (its owner's pid, of this namespace, is dead). Whether it was removed."""
    try:
        with taken_owner_lock(folder) as taken:
            if taken is False or (taken is None and not judged_by_pid):
                return False
            return _removed(folder)
    except OSError as exc:
        _log.warning(
            "left %s alone: its owner lock could not be tried, so whether its owner lives is "
            "unknown (%s); remove it by hand once no isoplug process of this user runs",
            folder,
            _why(exc),
        )
        return False


def _removed(folder: str) -> bool:
    """Remove ``folder``, whose owner is dead (its lock held by this process meanwhile)."""
    try:
        shutil.rmtree(folder)
    except FileNotFoundError:
        return False  # removed meanwhile: by another host starting at the same time
    except OSError as exc:
        _log.warning("could not remove %s, left by a dead process: %s", folder, _why(exc))
        return False
    return True


def _why(error: OSError) -> str:
    # The system's words alone, not the error's text: that quotes the name of what failed
    # inside the folder, which anyone of this user may have put there. The folder's own path
    # is safe to quote: the temporary folder's, and a name the cleaner matched.
    return error.strerror or type(error).__name__
