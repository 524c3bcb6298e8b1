"""A file or folder this process may not use, said as an operator needs it: which user the
process runs as, which folder on the way (or the file itself) refuses it, that one's mode and
owner, and the ``chmod`` that would let it in.

An operator runs the host as a service user (``nobody``, a systemd ``DynamicUser=``, a
container's) over plugins checked out as another: a bare ``Permission denied`` names neither
the user nor the folder to change, and the folder to change is often not the one named (a
parent without search permission refuses everything below it).
"""

from __future__ import annotations

import dataclasses
import errno
import os
import pwd
import shlex
import stat
from pathlib import Path

from isoplug.wire.sanitize import clean_path

__all__ = ["LIST_FOLDER", "READ_FILE", "WRITE_FOLDER", "Access", "denied", "is_denied"]

#: A path quoted in these texts: a plugins folder is a few levels deep, seldom more.
_MAX_PATH_CHARS = 1024


@dataclasses.dataclass(frozen=True)
class Access:
    """What a process wants of a path: the ``os.access`` mode, and the words and ``chmod``
    letters that say it."""

    mode: int
    words: str
    letters: str


#: A folder whose files are listed and opened: a plugins folder, a plugin's folder.
LIST_FOLDER = Access(os.R_OK | os.X_OK, "read and search", "rx")
#: A file that is read: a ``plugin.toml``, a ``--config`` file.
READ_FILE = Access(os.R_OK, "read", "r")
#: A folder something is made in: ``isoplug new``'s.
WRITE_FOLDER = Access(os.W_OK | os.X_OK, "write and search", "wx")
#: What every folder on the way to a path must grant.
_SEARCH = Access(os.X_OK, "search", "x")


def is_denied(error: BaseException) -> bool:
    """Whether ``error`` is the system refusing this process a path (not the path missing)."""
    return isinstance(error, OSError) and error.errno in (errno.EACCES, errno.EPERM)


def denied(path: Path, wanted: Access, *, instead: str = "") -> str:
    """Why ``path`` is refused to this process when it wants ``wanted`` of it, and
    the fix: ``"Permission denied: isoplug runs as user nobody (uid 65534), and /srv/p
    (mode 0700, owner root) does not grant it search permission; give that user search
    permission there (chmod o+x /srv/p), or run isoplug as a user who has it"``;
    ``instead``: the other way out, when there is a better one than another user. Sanitized
    (a folder's name may hold anything)."""
    path = Path(os.path.abspath(path))
    refusal = _first_refusal(path, wanted)
    if refusal is None:
        # The modes let it in, yet the kernel refused: not something chmod changes.
        text = (
            f"Permission denied: isoplug runs as {_whoami()}, whom the modes of {path} and its "
            "folders let in; a security module (SELinux, AppArmor) or the mount refuses it"
        )
        return clean_path(text, _MAX_PATH_CHARS * 3)
    blocking, needed = refusal
    info = _look(blocking)
    owner = "its mode unknown" if info is None else _mode_and_owner(info)
    # The bits of the class the kernel checks this process against: the owner's, the
    # group's or the others'.
    fix = f"chmod {_class_of(info)}+{needed.letters} {shlex.quote(str(blocking))}"
    text = (
        f"Permission denied: isoplug runs as {_whoami()}, and {blocking} ({owner}) does not "
        f"grant it {needed.words} permission; give that user {needed.words} permission "
        f"there ({fix}), or {instead or 'run isoplug as a user who has it'}"
    )
    return clean_path(text, _MAX_PATH_CHARS * 3)


def _first_refusal(path: Path, wanted: Access) -> tuple[Path, Access] | None:
    """The first folder on the way to ``path`` that this process may not search, else
    ``path`` itself if it refuses ``wanted``; and what it refuses (None: nothing does).
    ``os.access`` asks the kernel, which knows the process's groups and the paths' ACLs."""
    for folder in reversed(path.parents):
        if not _may(folder, _SEARCH):
            return folder, _SEARCH
    return None if _may(path, wanted) else (path, wanted)


def _may(path: Path, access: Access) -> bool:
    # The effective ids, which are the ones the kernel checks an open() against (os.access
    # checks the real ones unless told).
    effective = os.access in os.supports_effective_ids
    return os.access(path, access.mode, effective_ids=effective)


def _whoami() -> str:
    uid = os.geteuid()
    return f"user {_user_name(uid)} (uid {uid})"


def _user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        # A container's or DynamicUser's uid without a passwd entry: the number says it.
        return str(uid)


def _look(path: Path) -> os.stat_result | None:
    try:
        return os.lstat(path)
    except OSError:
        return None  # its own folder refuses a look: the rest is said all the same


def _mode_and_owner(info: os.stat_result) -> str:
    return f"mode {stat.S_IMODE(info.st_mode):04o}, owner {_user_name(info.st_uid)}"


def _class_of(info: os.stat_result | None) -> str:
    """``chmod``'s letter for the bits that apply to this process on a path of ``info``."""
    if info is None:
        return "o"
    if info.st_uid == os.geteuid():
        return "u"
    if info.st_gid == os.getegid() or info.st_gid in os.getgroups():
        return "g"
    return "o"
