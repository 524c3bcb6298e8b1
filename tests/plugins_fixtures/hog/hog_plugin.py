"""Uses resources on request: memory in steps, CPU, descriptors; reports its rlimits."""

from __future__ import annotations

import errno
import os
import resource
import time

import isoplug

#: What grow() holds: the memory stays resident until release().
_held: list[bytes] = []


class Hog(isoplug.Plugin):
    @isoplug.method
    def grow(self, megabytes: int, step: int = 8) -> int:
        """Allocate and touch ``megabytes`` MiB in steps of ``step`` MiB, a little apart (so
        that the host's RSS checks see it rise); return the MiB held."""
        for _ in range(0, megabytes, step):
            _held.append(b"\x01" * (step * 1024 * 1024))
            time.sleep(0.005)
        return sum(len(chunk) for chunk in _held) // (1024 * 1024)

    @isoplug.method
    def hold(self, megabytes: int, seconds: float) -> int:
        """Allocate and touch ``megabytes`` MiB, hold them ``seconds``, let go; return the pid
        (a call in flight while the RSS is high)."""
        block = b"\x01" * (megabytes * 1024 * 1024)
        time.sleep(seconds)
        del block
        return os.getpid()

    @isoplug.method
    def release(self) -> None:
        _held.clear()

    @isoplug.method
    def allocate(self, size: int, catch: bool = True) -> str:
        """One allocation of ``size`` bytes: "ok", or (``catch``) the MemoryError it raised."""
        try:
            block = bytearray(size)
        except MemoryError as exc:
            if not catch:
                raise
            return f"MemoryError: {exc}"
        del block
        return "ok"

    @isoplug.method
    def spin(self) -> None:
        """Burn CPU until the runner is stopped."""
        while True:
            pass

    @isoplug.method
    def open_until_refused(self, path: str, most: int = 100_000) -> dict[str, int | str]:
        """Open ``path`` until an open fails (or ``most`` succeed); close them all; say how
        many opened and why the next failed."""
        opened: list[int] = []
        error = ""
        try:
            while len(opened) < most:
                opened.append(os.open(path, os.O_RDONLY))
        except OSError as exc:
            error = errno.errorcode.get(exc.errno or 0, str(exc))
        finally:
            for fd in opened:
                os.close(fd)
        return {"opened": len(opened), "error": error}

    @isoplug.method
    def rlimits(self) -> dict[str, list[int]]:
        names = ("RLIMIT_AS", "RLIMIT_CPU", "RLIMIT_NOFILE", "RLIMIT_NPROC")
        return {name: list(resource.getrlimit(getattr(resource, name))) for name in names}

    @isoplug.method
    async def leave_group(self, pgid: int) -> int:
        """Move the runner into the process group ``pgid`` (the host's, say), as a plugin that
        wants to escape the host's kill of its group would; return its group now."""
        os.setpgid(0, pgid)
        return os.getpgid(0)

    @isoplug.method
    async def block(self, seconds: float) -> None:
        """Block the runner's event loop (the host finds it hung)."""
        time.sleep(seconds)

    @isoplug.method
    def ping(self) -> int:
        return os.getpid()
