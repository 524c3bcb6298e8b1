"""A dead process's private folders go at the next host's start whatever pid namespace it lived
in (their owner lock is free), never while their owner lives (its lock is held): a container's
host restarted over a shared ``/tmp`` finds the killed one's under a namespace of the past."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from isoplug import Host
from isoplug.testing import watching
from isoplug.transport.socket_dirs import owner_prefix, remove_stale_socket_dirs
from tests.open_resources import OWNER_LOCK, owner_lock_is_held
from tests.plugins_fixtures import FAST, process_alive
from tests.test_host_lifetime import end_host_and_app_child, read_until, start_host

pytestmark = pytest.mark.skipif(
    not os.path.isdir("/proc/self/ns"), reason="pid namespaces and /proc (Linux)"
)

#: Holds the lock of each file named, then says "held" and waits for its stdin to end.
HOLDER = (
    "import fcntl, os, sys\n"
    "fds = [os.open(path, os.O_RDONLY) for path in sys.argv[1:]]\n"
    "for fd in fds:\n"
    "    fcntl.flock(fd, fcntl.LOCK_EX)\n"
    "print('held', flush=True)\n"
    "sys.stdin.read()\n"
)


def dead_owners_folder(place: Path, *, other_namespace: bool, lock: bool) -> Path:
    """A folder made in ``place`` under the name a process now dead gave it (of this pid
    namespace or of another), with a free lock file or without one (an older isoplug's)."""
    _, start, namespace = (int(part) for part in owner_prefix().split("-")[1:4])
    dead = subprocess.Popen([sys.executable, "-c", ""])
    dead.wait()
    prefix = f"isoplug-{dead.pid}-{start}-{namespace + other_namespace}-"
    folder = Path(tempfile.mkdtemp(prefix=prefix, dir=place))
    if lock:
        (folder / OWNER_LOCK).touch()
    return folder


def in_another_namespace(folder: str) -> str:
    """Rename ``folder`` (an isoplug folder) as a process of another pid namespace would have
    named it, as a container restarted over the same ``/tmp`` sees it; its new path."""
    pid, start, namespace, rest = os.path.basename(folder).removeprefix("isoplug-").split("-", 3)
    renamed = os.path.join(
        os.path.dirname(folder), f"isoplug-{pid}-{start}-{int(namespace) + 1}-{rest}"
    )
    os.rename(folder, renamed)
    return renamed


def test_a_folder_of_another_namespace_goes_when_its_lock_is_free(tmp_path: Path) -> None:
    """Its pid means nothing here, but a free lock says its owner is dead: removed. One made
    by an older isoplug (no lock file) is still left alone there."""
    unlocked = dead_owners_folder(tmp_path, other_namespace=True, lock=True)
    older = dead_owners_folder(tmp_path, other_namespace=True, lock=False)
    assert remove_stale_socket_dirs((str(tmp_path),)) == [str(unlocked)]
    assert [p.name for p in tmp_path.iterdir()] == [older.name]


def test_a_folder_whose_lock_a_live_process_holds_is_kept(tmp_path: Path) -> None:
    """Held, its lock keeps a folder of another namespace, and one of this namespace whose pid
    is dead (a cross-check: never removed while its lock is held); once the holder ended,
    both go."""
    elsewhere = dead_owners_folder(tmp_path, other_namespace=True, lock=True)
    here = dead_owners_folder(tmp_path, other_namespace=False, lock=True)
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(elsewhere / OWNER_LOCK), str(here / OWNER_LOCK)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        assert remove_stale_socket_dirs((str(tmp_path),)) == []
        assert elsewhere.is_dir() and here.is_dir()
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(timeout=60)
        assert holder.stdout is not None
        holder.stdout.close()
    assert sorted(remove_stale_socket_dirs((str(tmp_path),))) == sorted([str(elsewhere), str(here)])
    assert list(tmp_path.iterdir()) == []


def test_a_lock_file_that_cannot_be_tried_leaves_its_folder_and_says_why(tmp_path: Path) -> None:
    """An ``owner.lock`` that is a link or a FIFO (put there by hand): whether the owner lives
    is unknown, so the folder is kept, and a WARNING names it and the fix; nothing hangs."""
    linked = dead_owners_folder(tmp_path, other_namespace=True, lock=False)
    fifo = dead_owners_folder(tmp_path, other_namespace=True, lock=False)
    (tmp_path / "elsewhere").touch()
    (linked / OWNER_LOCK).symlink_to(tmp_path / "elsewhere")
    os.mkfifo(fifo / OWNER_LOCK)
    with watching("isoplug.transport") as records:
        assert remove_stale_socket_dirs((str(tmp_path),)) == []
    assert linked.is_dir() and fifo.is_dir()
    said = sorted(r.getMessage() for r in records.select(text="owner lock could not be tried"))
    why = {linked: "Too many levels of symbolic links", fifo: "the lock file is not a regular file"}
    assert said == sorted(
        f"left {folder} alone: its owner lock could not be tried, so whether its owner lives "
        f"is unknown ({reason}); remove it by hand once no isoplug process of this user runs"
        for folder, reason in why.items()
    )


@pytest.mark.parametrize("app_child", [None, "--fork-child"])
async def test_a_killed_hosts_folders_go_at_the_next_start_from_another_namespace(
    tmp_path: Path, private_temp: str, monkeypatch: pytest.MonkeyPatch, app_child: str | None
) -> None:
    """A host holds the lock of each of its folders: renamed to another namespace while it
    lives, they are kept. Killed with SIGKILL (the container's restart), the next host removes
    them; also when the application forked a child that outlives the host (it holds no copy
    of the locks)."""
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    host = await start_host(*filter(None, [app_child]), str(plugins), TMPDIR=private_temp)
    lines: list[str] = []
    forked = None
    try:
        async with asyncio.timeout(40):
            await read_until(host, lines, "^ready")
        output = "".join(lines)
        if app_child is not None:
            forked = int(re.findall(r"^app-child (\d+)$", output, re.M)[0])
        folders = re.findall(r"^socket-dir (.+)$", output, re.M)
        assert len(folders) == 2 and all(f.startswith(private_temp + os.sep) for f in folders)
        assert all(owner_lock_is_held(folder) for folder in folders)
        renamed = [in_another_namespace(folder) for folder in folders]
        assert remove_stale_socket_dirs((private_temp,)) == []
        host.kill()
        await host.communicate()
        assert forked is None or process_alive(forked)
        assert all(os.path.isdir(folder) for folder in renamed)
        monkeypatch.setattr(tempfile, "tempdir", private_temp)
        async with Host(tmp_path / "plugins", config=FAST):
            assert [folder for folder in renamed if os.path.exists(folder)] == []
    finally:
        await end_host_and_app_child(host, forked)
