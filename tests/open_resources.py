"""What a host or a listener may leave open in this process: the private directories of its
unix sockets, the listening sockets themselves, its threads."""

from __future__ import annotations

import asyncio
import fcntl
import glob
import os
import tempfile
import threading
from collections.abc import Coroutine, Set
from typing import Any

import pytest


def socket_dirs() -> set[str]:
    """The private directories of this process's unix listeners."""
    return set(glob.glob(os.path.join(tempfile.gettempdir(), f"isoplug-{os.getpid()}-*")))


#: The lock file a private folder's owner holds (docs/operations.md names it).
OWNER_LOCK = "owner.lock"


def owner_lock_is_held(folder: str) -> bool:
    """Whether a process holds the owner lock of ``folder`` (one of isoplug's private
    folders): tried from another open file, as a cleaner does."""
    fd = os.open(os.path.join(folder, OWNER_LOCK), os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def listening_unix_paths() -> set[str]:
    """The paths of the listening unix sockets that a descriptor of this process holds (a
    socket whose file was removed included: the kernel keeps the path it was bound to)."""
    inodes: set[str] = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            link = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue  # the listing's own descriptor, closed since
        if link.startswith("socket:["):
            inodes.add(link.removeprefix("socket:[").removesuffix("]"))
    paths: set[str] = set()
    with open("/proc/net/unix") as table:
        next(table)  # "Num RefCount Protocol Flags Type St Inode Path"
        for line in table:
            fields = line.split()
            # Flags 0x10000 (__SO_ACCEPTCON): listen() was called on it.
            if len(fields) == 8 and fields[6] in inodes and int(fields[3], 16) & 0x10000:
                paths.add(fields[7])
    return paths


def isoplug_threads_since(before: Set[threading.Thread]) -> list[str]:
    """The names of isoplug's threads alive now that were not in ``before``."""
    return [
        t.name for t in threading.enumerate() if t not in before and t.name.startswith("isoplug")
    ]


async def cancelled_once_its_socket_dir_appears(starting: Coroutine[Any, Any, object]) -> str:
    """Run ``starting`` (a listener's start) in a task, cancel it the moment a new socket
    directory of this process appears, check that the cancellation reaches it; return that
    directory. The cancel lands at the first wait after the directory is made: asyncio's
    server start yields once, after its server took the bound socket."""
    before = socket_dirs()
    task = asyncio.create_task(starting)
    while not socket_dirs() - before:
        await asyncio.sleep(0)
    [made] = socket_dirs() - before
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    return made
