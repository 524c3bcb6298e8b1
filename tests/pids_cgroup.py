"""A cgroup limiting its processes' tasks (``pids.max``, as docker's ``--pids-limit`` and
systemd's ``TasksMax=`` set it), for tests of a runner the kernel refuses threads.

A process moved in keeps the threads it has; past ``pids.max`` no new thread or process of
its may start. Moving a running process in, with a limit at or under what it holds already,
is how a test makes "no thread left" happen at a moment of its choosing, whatever the
machine's load. Needs root and a writable ``pids`` controller (cgroup v1's hierarchy, or v2's
with ``pids`` enabled): :func:`pids_cgroup_or_skip` says so when there is none.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

_V1 = Path("/sys/fs/cgroup/pids")
_V2 = Path("/sys/fs/cgroup")


class PidsCgroup:
    """One cgroup of the ``pids`` controller, made for a test."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        #: Where each process moved in came from (pid -> its cgroup folder).
        self._origins: dict[int, Path] = {}

    def move_in(self, pid: int) -> None:
        """Move process ``pid`` (all its threads) in."""
        self._origins.setdefault(pid, _folder_of(pid))
        (self.folder / "cgroup.procs").write_text(f"{pid}\n")

    def move_out(self, pid: int) -> None:
        """Move ``pid`` back where it came from (gone already: nothing to do)."""
        origin = self._origins.pop(pid, None)
        if origin is not None and Path(f"/proc/{pid}").exists():
            (origin / "cgroup.procs").write_text(f"{pid}\n")

    def move_all_out(self) -> None:
        for pid in list(self._origins):
            self.move_out(pid)

    @property
    def in_use(self) -> int:
        return int((self.folder / "pids.current").read_text())

    def limit(self, tasks: int) -> None:
        (self.folder / "pids.max").write_text(f"{tasks}\n")


@contextmanager
def pids_cgroup_or_skip() -> Iterator[PidsCgroup]:
    """A fresh pids cgroup, removed at the end (with whatever is still in it moved back)."""
    parent = _writable_hierarchy()
    if parent is None:
        pytest.skip("needs root and a writable pids cgroup controller (cgroup v1 or v2)")
    folder = parent / f"isoplug-test-{uuid.uuid4().hex[:12]}"
    folder.mkdir()
    cgroup = PidsCgroup(folder)
    try:
        yield cgroup
    finally:
        cgroup.move_all_out()
        # Processes started in it since (a runner forked by a zygote moved in): out to the
        # top, so that the folder can go.
        for started in (folder / "cgroup.procs").read_text().split():
            (parent / "cgroup.procs").write_text(f"{started}\n")
        folder.rmdir()


def _writable_hierarchy() -> Path | None:
    if os.geteuid() != 0:
        return None
    if (_V1 / "cgroup.procs").exists():
        return _V1 if os.access(_V1, os.W_OK) else None
    controllers = _V2 / "cgroup.subtree_control"
    if controllers.exists() and "pids" in controllers.read_text().split():
        return _V2
    return None


def _folder_of(pid: int) -> Path:
    """The cgroup folder of ``pid`` in the hierarchy these tests use."""
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if (_V1 / "cgroup.procs").exists() and "pids" in controllers.split(","):
            return _V1 / path.lstrip("/")
        if not (_V1 / "cgroup.procs").exists() and controllers == "":
            return _V2 / path.lstrip("/")
    raise LookupError(f"process {pid} is in no pids cgroup")
