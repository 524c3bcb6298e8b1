"""Where isoplug's private folders go (its sockets' folders, the isoplug link, the CLI's
scratch folder): the temporary folder the user chose, else the next one that can take a
folder, said once; never the working directory.

Python's :func:`tempfile.gettempdir` quietly skips a candidate it cannot write in (a ``/tmp``
out of space or inodes) and ends at the working directory: a project folder, where sockets do
not belong, where a dead host's folders are never looked for, and which it then keeps for the
whole process. So isoplug walks the candidates itself, each time (a full ``/tmp`` freed later
is used again), says where it went instead and why, and when none can take a folder raises
:class:`~isoplug.errors.NoTemporaryFolder` naming each one's reason and the fix.
:func:`temporary_places` is also where a starting host looks for a dead one's folders
(:func:`~isoplug.transport.socket_dirs.remove_stale_socket_dirs`).
"""

from __future__ import annotations

import errno
import os
import tempfile
import threading
from collections.abc import Callable

from isoplug.errors import NoTemporaryFolder
from isoplug.log_guard import guarded_logger

__all__ = ["MAX_UNIX_PATH", "make_private_folder", "temporary_places"]

_log = guarded_logger("isoplug.transport")

#: sun_path holds 108 bytes on Linux (104 on macOS); stay below both. Bytes, not characters:
#: a character outside ASCII takes 2 to 4 of them.
MAX_UNIX_PATH = 100
#: Python's own candidates after the environment's (tempfile._candidate_tempdir_list), less
#: the working directory it ends with.
_SYSTEM_PLACES = ("/tmp", "/var/tmp", "/usr/tmp")
_ENVIRONMENT_NAMES = ("TMPDIR", "TEMP", "TMP")

_said_lock = threading.Lock()
#: The moves said already (the places refused, and the one taken): once each per process.
_said: set[tuple[tuple[str, ...], str]] = set()


def temporary_places() -> list[str]:
    """The folders isoplug may make its private folders in, the preferred first:
    ``tempfile.tempdir`` when the application set it, ``$TMPDIR`` (``$TEMP``, ``$TMP``),
    then ``/tmp``, ``/var/tmp``, ``/usr/tmp``."""
    named = [value for name in _ENVIRONMENT_NAMES if (value := os.environ.get(name))]
    places = [*named, *_SYSTEM_PLACES]
    chosen = tempfile.tempdir
    # gettempdir() caches the working directory when it found nothing else: Python's last
    # resort then, not anyone's choice.
    if chosen is not None and (chosen in named or not _is_working_directory(chosen)):
        places.insert(0, chosen)
    return list(dict.fromkeys(os.path.abspath(place) for place in places))


def _is_working_directory(path: str) -> bool:
    try:
        return os.path.samefile(path, os.getcwd())
    except OSError:
        return False


def make_private_folder(
    prefix: str,
    *,
    socket_name: str | None = None,
    fill: Callable[[str], None] | None = None,
) -> str:
    """A new folder only this user can enter (mode 0700, made so in one call by
    :func:`tempfile.mkdtemp`), named ``prefix`` and a random part, in the first of
    :func:`temporary_places` that takes it, and where a socket ``socket_name`` inside it has a
    path short enough to bind. ``fill`` makes what the folder is for (an owner lock, a
    socket); an :class:`OSError` from it, which removed the folder, refuses that place too: a
    place out of inodes still takes a folder freed by a cleaner, but no file in it. A WARNING
    says once where it went instead of the preferred place, and why. Raises
    :class:`~isoplug.errors.NoTemporaryFolder` when none took it."""
    refused: list[tuple[str, str, int | None]] = []
    for place in temporary_places():
        try:
            folder = tempfile.mkdtemp(prefix=prefix, dir=place)
        except OSError as exc:
            if exc.errno in _THIS_PROCESS_SHORT:
                raise
            refused.append((place, exc.strerror or type(exc).__name__, exc.errno))
            continue
        # sun_path counts bytes: a CJK folder's 44 characters are 100+ of them.
        socket_path = os.fsencode(os.path.join(folder, socket_name or ""))
        if socket_name is not None and len(socket_path) > MAX_UNIX_PATH:
            os.rmdir(folder)
            refused.append((place, f"a socket path there passes {MAX_UNIX_PATH} bytes", None))
            continue
        if fill is not None:
            try:
                fill(folder)
            except OSError as exc:
                if exc.errno in _THIS_PROCESS_SHORT:
                    raise
                refused.append((place, exc.strerror or type(exc).__name__, exc.errno))
                continue
        if refused:
            _say_moved(refused, place)
        return folder
    raise NoTemporaryFolder([(place, why) for place, why, _ in refused], _first_errno(refused))


#: What no other place would change: the process (or the system) is out of descriptors or
#: memory, said as such by the caller (isoplug.host.shortage), not as a temporary folder's.
_THIS_PROCESS_SHORT = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOMEM})


def _first_errno(refused: list[tuple[str, str, int | None]]) -> int | None:
    # The preferred place's reason is the one to fix; a later one (no /usr/tmp) tells little.
    return next((number for _, _, number in refused if number is not None), None)


def _say_moved(refused: list[tuple[str, str, int | None]], taken: str) -> None:
    key = (tuple(place for place, _, _ in refused), taken)
    with _said_lock:
        if key in _said:
            return
        _said.add(key)
    preferred, _, number = refused[0]
    if number in (errno.ENOSPC, errno.EDQUOT):
        fix = "free room there, or set TMPDIR to a writable folder with room"
    elif number is None:  # too deep for a socket's path
        fix = "set TMPDIR to a folder with a shorter path"
    else:
        fix = "make it a folder this user can write in, or set TMPDIR to one"
    _log.warning(
        "isoplug's private folders (its sockets) are made in %s: %s; a dead host's are "
        "looked for there too (to keep them in %s: %s)",
        taken,
        "; ".join(f"{place}: {why}" for place, why, _ in refused),
        preferred,
        fix,
    )
