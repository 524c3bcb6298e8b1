"""Keeps its runner busy in every way a plugin can, and starts processes that try to outlive it.

The tests that kill a host (or restart a runner) check that none of this survives.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time

import isoplug

#: A child that sleeps for an hour: what a plugin's helper process looks like. Its stdio is
#: not the runner's pipes, so that the host needs no wait for them to end.
_SLEEPER = [sys.executable, "-c", "import time; time.sleep(3600)"]
_QUIET = {"stdin": subprocess.DEVNULL, "stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
#: Kept, so that no "subprocess still running" warning is raised when they are collected.
_CHILDREN: list[subprocess.Popen[bytes]] = []


def _start(**options: object) -> int:
    child = subprocess.Popen(_SLEEPER, **_QUIET, **options)  # type: ignore[call-overload]
    _CHILDREN.append(child)
    return int(child.pid)


class Escaper(isoplug.Plugin):
    @isoplug.method
    def spin(self) -> None:
        """Busy in a sync method (a worker thread running Python code), for an hour."""
        print("escaper: spinning", flush=True)
        deadline = time.monotonic() + 3600
        while time.monotonic() < deadline:
            pass

    @isoplug.method
    async def block(self) -> None:
        """Blocks the runner's event loop for an hour."""
        print("escaper: blocking", flush=True)
        time.sleep(3600)

    @isoplug.method
    async def orphan_and_block(self) -> None:
        """Clears the runner's parent-death signal (Linux), then blocks its event loop for an
        hour: only the lifeline can end the runner now (neither the kernel at its parent's
        death, nor the end of its connections, which its blocked loop never sees)."""
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(1, 0, 0, 0, 0) != 0:  # PR_SET_PDEATHSIG, no signal
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG, 0) failed")
        print("escaper: orphaned, blocking", flush=True)
        time.sleep(3600)

    @isoplug.method
    def hold_gil(self) -> None:
        """Holds the GIL in native code: no other Python thread of the runner runs."""
        print("escaper: holding the GIL", flush=True)
        # Out of the process before the GIL is taken: the log thread could not send it after.
        for handler in logging.getLogger().handlers:
            handler.flush()
        sum(range(10**13))  # one C loop over ints: never releases the GIL

    @isoplug.method
    def fork_child(self) -> int:
        """A child in the runner's process group."""
        return _start()

    @isoplug.method
    def setsid_child(self) -> int:
        """A child that starts a session of its own: the process group no longer holds it."""
        return _start(start_new_session=True)

    @isoplug.method
    def daemon(self) -> int:
        """A double-forked daemon in a session of its own, re-parented away from the runner
        at once; it keeps the environment (so the runner's tag)."""
        read, write = os.pipe()
        middle = os.fork()
        if middle == 0:
            os.setsid()
            null = os.open(os.devnull, os.O_RDWR)
            for fd in (0, 1, 2):
                os.dup2(null, fd)
            grandchild = os.fork()
            if grandchild == 0:
                os.close(read)
                os.write(write, str(os.getpid()).encode())
                os.close(write)
                time.sleep(3600)
                os._exit(0)
            os._exit(0)
        os.close(write)
        os.waitpid(middle, 0)
        with os.fdopen(read, "rb") as pipe:
            return int(pipe.read())

    @isoplug.method
    def vanisher(self) -> int:
        """A double-forked process in a session of its own, with no environment at all (no
        tag), re-parented away from the runner at once: nothing the kernel keeps ties it to
        the runner. It holds the runner's stdout pipe (fd 1), so the host sees it there."""
        read, write = os.pipe()
        middle = os.fork()
        if middle == 0:
            os.setsid()
            grandchild = os.fork()
            if grandchild == 0:
                os.close(read)
                os.write(write, str(os.getpid()).encode())
                os.close(write)
                os.execve(sys.executable, [sys.executable, *_SLEEPER[1:]], {})
            os._exit(0)
        os.close(write)
        os.waitpid(middle, 0)
        with os.fdopen(read, "rb") as pipe:
            return int(pipe.read())

    @isoplug.method
    def hidden_child(self) -> int:
        """A child in a session of its own that drops the environment (no tag): found only by
        having been seen under the runner."""
        return _start(start_new_session=True, env={"PATH": os.environ.get("PATH", "")})

    @isoplug.method
    def eat(self) -> int:
        """Takes memory, 20 MiB at a time, up to 1 GiB: past a cgroup's limit, the kernel's
        out-of-memory killer ends the runner."""
        print("escaper: eating", flush=True)
        meals = [b"x" * (20 << 20) for _ in range(50)]
        return len(meals)
