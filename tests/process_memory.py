"""What the tests of forked runners read of another process: its parent, its memory."""

from __future__ import annotations


def _stat(pid: int) -> list[str]:
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().rpartition(")")[2].split()


def parent_of(pid: int) -> int:
    return int(_stat(pid)[1])


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
