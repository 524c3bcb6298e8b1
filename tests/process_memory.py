"""What the tests read of another process: its parent and children, its memory, its signal
mask."""

from __future__ import annotations

import os


def _stat(pid: int) -> list[str]:
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().rpartition(")")[2].split()


def parent_of(pid: int) -> int:
    return int(_stat(pid)[1])


def children_of(pid: int) -> list[int]:
    """The processes whose parent ``pid`` is now."""
    children = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if parent_of(int(entry)) == pid:
                    children.append(int(entry))
            except OSError:
                continue  # gone meanwhile
    return children


def blocked_signals(pid: int) -> set[int]:
    """The signals blocked in the main thread of process ``pid`` (``SigBlk`` of its status)."""
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        line = next(line for line in status if line.startswith("SigBlk:"))
    mask = int(line.split()[1], 16)
    return {number for number in range(1, 65) if mask & (1 << (number - 1))}


def group_and_session_of(pid: int) -> tuple[int, int]:
    fields = _stat(pid)
    return int(fields[2]), int(fields[3])


def memory_holds(pid: int, needles: list[bytes]) -> set[bytes]:
    """Which of ``needles`` the memory of process ``pid`` holds (every readable mapping, as a
    plugin reading its own ``/proc/self/mem`` would find them)."""
    found: set[bytes] = set()
    with open(f"/proc/{pid}/maps") as maps, open(f"/proc/{pid}/mem", "rb", 0) as mem:
        for line in maps:
            addresses, permissions = line.split()[:2]
            if not permissions.startswith("r"):
                continue
            start, end = (int(a, 16) for a in addresses.split("-"))
            try:
                mem.seek(start)
                data = mem.read(end - start)
            except (OSError, OverflowError, ValueError):
                continue  # [vvar] and the like
            found.update(n for n in needles if n in data)
    return found


def environment_block_holds(pid: int, needles: list[bytes]) -> set[bytes]:
    """Which of ``needles`` ``/proc/<pid>/environ`` (the block it was started with) shows."""
    with open(f"/proc/{pid}/environ", "rb") as environ:
        data = environ.read()
    return {n for n in needles if n in data}
