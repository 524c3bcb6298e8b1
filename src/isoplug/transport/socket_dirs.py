"""Private directories for unix sockets (and the host's isoplug link for runners with an
interpreter of their own, :mod:`isoplug.host.isoplug_link`), named after their owner so that
leftovers can be found.

A listener removes its directory when it closes, but a process killed with SIGKILL closes
nothing. Each directory's name therefore says which process made it: its pid, its start time
(clock ticks after boot, from ``/proc/<pid>/stat``: a pid alone may have been reused) and its pid
namespace (a pid means nothing in another one)::

    $TMPDIR/isoplug-<pid>-<start time>-<pid namespace>-<random>

:func:`remove_stale_socket_dirs` (the host calls it when it starts) removes the directories of
this user whose owner is dead. A directory whose owner cannot be judged (another pid
namespace, no ``/proc``, an unknown name) is left alone.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import stat
import tempfile

from isoplug.log_guard import guarded_logger

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


def _owner_is_dead(pid: int, start: int, namespace: int) -> bool:
    if namespace != _namespace():
        return False  # its pids are not ours to look up
    now = _start_time(pid)
    if now is not None:
        return now != start  # the pid was reused: the owner is gone
    return not os.path.exists(f"/proc/{pid}")


def remove_stale_socket_dirs(places: tuple[str, ...] | None = None) -> list[str]:
    """Remove this user's socket directories whose owner process is dead, in ``places``
    (default: the temporary directory and ``/tmp``, where they are made); return them."""
    if places is None:
        places = tuple(dict.fromkeys([tempfile.gettempdir(), "/tmp"]))
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
            if not _owner_is_dead(pid, start, namespace):
                continue
            try:
                shutil.rmtree(entry.path)
            except OSError as exc:
                _log.warning("could not remove %s, left by a dead process: %s", entry.path, exc)
                continue
            removed.append(entry.path)
    return removed
