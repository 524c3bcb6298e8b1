"""The folder a runner with an interpreter of its own imports isoplug from: isoplug alone.

A runner imports the host's copy of isoplug, so that host and runner speak the same protocol.
The host's own interpreter finds it where the host did: the folder isoplug is imported from
goes on the runner's ``PYTHONPATH`` (a source checkout's ``src``, or the host's
``site-packages`` for a normal install, which that interpreter has anyway). A plugin's own
interpreter (``python`` in its manifest) must not get that folder: for a normal install it is
the host's whole ``site-packages``, and on ``PYTHONPATH`` it would come before the plugin's
own ``site-packages``, so that the host's packages (msgspec built for another Python, any
library the plugin's environment pins otherwise) would shadow the plugin's.

Such a runner gets, instead, a private folder holding a single link, ``isoplug``, to the
package the host imported: made once per host process (``0700``, in the temporary folder),
removed at its exit; made afresh when a temporary-file cleaner deleted it
(:func:`renew_if_lost`, asked before each runner's start). Its other imports (msgspec included)
come from its own interpreter.
"""

from __future__ import annotations

import atexit
import os
import threading
from pathlib import Path

from isoplug.errors import NoTemporaryFolder
from isoplug.log_guard import guarded_logger
from isoplug.transport.owner_lock import hold_owner_lock
from isoplug.transport.private_places import PrivatePlace, remove_folder
from isoplug.transport.socket_dirs import owner_prefix
from isoplug.transport.temp_places import make_private_folder
from isoplug.wire.sanitize import clean_path

__all__ = ["host_package_root", "isoplug_only_folder", "made_link", "renew_if_lost"]

_log = guarded_logger("isoplug.host")

_lock = threading.Lock()
#: pid -> the folder runners of that process import isoplug from (a forked child makes its
#: own); a folder it made is in ``_places`` too, as made.
_made: dict[int, str] = {}
_places: dict[int, PrivatePlace] = {}
#: Whether this process (or the one it was forked from) removes its folder at its exit.
_removed_at_exit = False


def host_package_root() -> str:
    """The folder the host imports isoplug from (``site-packages``, or a checkout's ``src``)."""
    return str(_package().parent)


def isoplug_only_folder() -> str:
    """A folder whose only entry is a link named ``isoplug`` to the host's isoplug package;
    made at the first call of this process. Where links cannot be made (Windows without the
    privilege), the host's package root, as before (with a warning, once)."""
    with _lock:
        return _folder()


def made_link() -> list[str]:
    """The folder and link this process made (none yet, or none could be made: ``[]``)."""
    with _lock:
        place = _places.get(os.getpid())
    if place is None or place.folder is None:
        return []
    return [place.folder.path, place.path]


def renew_if_lost() -> tuple[str, str] | None:
    """When the folder this process made was deleted (or its link), by a temporary-file
    cleaner say, make it again: at the same path where this process can (the folder's name
    still free, or the folder still ours), so that the runners running import from it again
    (an import made late, a module not imported yet); else a fresh one, for the runners started
    from now on. Return what was lost (see
    :meth:`~isoplug.transport.private_places.PrivatePlace.lost`) and the folder now; None
    while it is whole, or none was made."""
    with _lock:
        place = _places.get(os.getpid())
        if place is None:
            return None
        lost = place.lost()
        if lost is None:
            return None
        again = _made_again(place)
        if again is not None:
            _places[os.getpid()] = again
            return lost, _made[os.getpid()]
        del _made[os.getpid()], _places[os.getpid()]
        place.remove(reported=True)
        return lost, _folder()


def _made_again(lost: PrivatePlace) -> PrivatePlace | None:
    """The link made again at ``lost``'s path, its folder too if it was deleted (made by us
    now, 0700: ``mkdir`` fails if someone made it first); None where it cannot be."""
    folder = lost.folder
    assert folder is not None
    change = folder.change()
    if change not in (None, "deleted"):
        return None  # someone else's folder under the name now
    try:
        if change == "deleted":
            os.mkdir(folder.path, 0o700)
    except OSError:
        return None
    try:
        if change == "deleted":
            hold_owner_lock(folder.path)
        os.symlink(_package(), lost.path, target_is_directory=True)
        return PrivatePlace.made(lost.path, folder.path)
    except OSError as exc:
        if change == "deleted":  # made just now, for the link alone
            _remove_made_now(folder.path, exc)
        return None


def _folder() -> str:
    """:func:`isoplug_only_folder`, under its lock."""
    global _removed_at_exit  # noqa: PLW0603 (once per process, whichever host asks first)
    made = _made.get(os.getpid())
    if made is not None:
        return made
    try:
        # Named and locked as the socket folders are, after this process: one a kill -9 left
        # behind is removed by the next host's start (isoplug.transport.socket_dirs).
        folder = make_private_folder(owner_prefix())
    except NoTemporaryFolder as exc:
        return _fall_back(str(exc))  # names each temporary folder tried, and why not
    except OSError as exc:
        return _fall_back(f"no temporary folder: {exc}")
    link = os.path.join(folder, "isoplug")
    try:
        hold_owner_lock(folder)
        os.symlink(_package(), link, target_is_directory=True)
        place = PrivatePlace.made(link, folder)
    except OSError as exc:
        _remove_made_now(folder, exc)
        return _fall_back(f"no link could be made: {exc}")
    if not _removed_at_exit:
        atexit.register(_remove)
        _removed_at_exit = True
    _made[os.getpid()] = folder
    _places[os.getpid()] = place
    return folder


#: A path quoted in a record (the operator's, but a record quotes no path raw).
_MAX_PATH_CHARS = 1024


def _package() -> Path:
    # isoplug/host/isoplug_link.py -> isoplug
    return Path(__file__).resolve().parents[1]


def _fall_back(why: str) -> str:
    root = host_package_root()
    _log.warning(
        "runners with an interpreter of their own import isoplug from %s, which comes before "
        "their own packages (%s)",
        clean_path(root, _MAX_PATH_CHARS),
        why,
    )
    _made[os.getpid()] = root
    return root


def _remove_made_now(folder: str, why: OSError) -> None:
    """Remove ``folder``, made just now for the link that could not be made (``why``)."""
    try:
        remove_folder(folder)
    except OSError as exc:
        _log.warning(
            "could not remove %s, made for the isoplug link that could not be made (%s): %s",
            clean_path(folder, _MAX_PATH_CHARS),
            clean_path(why, _MAX_PATH_CHARS),
            clean_path(exc, _MAX_PATH_CHARS),
        )


def _remove() -> None:
    # A forked child (the zygote's runners) made none: the folder is its parent's.
    place = _places.pop(os.getpid(), None)
    if place is not None:
        # Deleted already (a temporary-file cleaner): said at DEBUG, no more.
        place.remove()
