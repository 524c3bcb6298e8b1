"""``isoplug`` run by a user whom a folder's mode refuses, as an operator's service user is.

Root is refused nothing, so a test running as root runs the command as ``nobody`` (uid and
gid 65534), with an interpreter that user may run (a venv's often lives under ``/root``, mode
0700) importing this checkout's isoplug and the venv's packages; a test running as another
user runs it as itself, where a mode of 0 refuses the owner too. Either way the folders the
command is to reach must be reachable by that user: :func:`reachable_folder` makes one.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import shutil
import site
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.processes import ROOT, SOURCES

#: ``nobody`` on most Linux systems, with or without a passwd entry.
NOBODY = 65534


@dataclasses.dataclass(frozen=True)
class OtherUser:
    """How to start a process as the user a folder's mode refuses."""

    python: str
    uid: int | None
    env: dict[str, str]

    def popen_options(self) -> dict[str, Any]:
        """``user=`` / ``group=`` / ``extra_groups=`` for ``subprocess`` and asyncio's
        ``create_subprocess_exec``: none when the test's own user is refused already."""
        if self.uid is None:
            return {}
        return {"user": self.uid, "group": self.uid, "extra_groups": []}


def other_user() -> OtherUser:
    """The user to run as, or skip the test saying why none can be had."""
    found = _find_other_user()
    if isinstance(found, str):
        pytest.skip(found)
    return found


@functools.cache
def _find_other_user() -> OtherUser | str:
    if not sys.platform.startswith("linux"):
        return "permissions as tested here are Linux's"
    # This checkout's isoplug and tests, then the venv's packages (msgspec, uvloop...): a
    # .pth of the venv's is not read from PYTHONPATH, so they are listed, not the venv.
    path = [str(SOURCES), str(ROOT), *site.getsitepackages()]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(path), NO_COLOR="1")
    env.pop("VIRTUAL_ENV", None)
    if os.geteuid() != 0:
        return OtherUser(sys.executable, None, env)
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    candidates = [
        sys.executable,
        getattr(sys, "_base_executable", sys.executable),
        shutil.which(version, path="/usr/local/bin:/usr/bin:/bin"),
    ]
    tried: list[str] = []
    for candidate in dict.fromkeys(filter(None, candidates)):
        user = OtherUser(candidate, NOBODY, env)
        try:
            probe = subprocess.run(
                [candidate, "-c", "import isoplug.cli, msgspec"],
                env=env,
                cwd="/",
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
                **user.popen_options(),
            )
        except OSError as exc:
            # Under a folder that user may not enter (a venv's python under /root).
            tried.append(f"{candidate}: {exc.strerror}")
            continue
        if probe.returncode == 0:
            return user
        tried.append(f"{candidate}: {(probe.stderr.strip().splitlines() or ['?'])[-1]}")
    return (
        f"running as root, and no {version} that uid {NOBODY} may run with this checkout's "
        f"isoplug ({'; '.join(tried)})"
    )


@contextmanager
def reachable_folder(user: OtherUser) -> Iterator[Path]:
    """A fresh folder ``user`` may enter and write in (pytest's ``tmp_path`` lies under a
    folder of mode 0700), removed afterwards, whatever modes the test left in it."""
    base = Path(tempfile.mkdtemp(prefix="other-user-", dir=_shared_temp(user)))
    base.chmod(0o777)
    try:
        yield base
    finally:
        for folder, folders, _ in os.walk(base):
            for name in folders:
                (Path(folder) / name).chmod(0o755)
        shutil.rmtree(base)


def _shared_temp(user: OtherUser) -> str:
    """A temporary folder ``user`` may reach: the usual one (``/tmp`` is), else ``/tmp``."""
    usual = tempfile.gettempdir()
    if user.uid is None or _reaches(user, usual):
        return usual
    return "/tmp"


def _reaches(user: OtherUser, folder: str) -> bool:
    probe = subprocess.run(
        [user.python, "-c", "import os, sys; os.listdir(sys.argv[1])", folder],
        env=user.env,
        cwd="/",
        capture_output=True,
        timeout=60,
        check=False,
        **user.popen_options(),
    )
    return probe.returncode == 0
