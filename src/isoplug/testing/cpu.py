"""A busy CPU, to test what a plugin (or a host) does when the machine is short of CPU."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator

__all__ = ["busy_cpu"]

_HOG = (
    "import os, sys\n"
    "os.sched_setaffinity(0, {int(sys.argv[1])})\n"
    "print(flush=True)\n"
    "while True:\n"
    "    pass\n"
)


@contextlib.contextmanager
def busy_cpu(cpu: int | None = None) -> Iterator[int]:
    """Keep one CPU busy, with a process at this process's priority pinned to it, until the
    block ends; yields the CPU's number (by default the highest this process may use).

    A thread moved there with ``os.sched_setaffinity(0, {cpu})`` gets half of it, or about
    1.5 % when it runs at nice 19 as runners do by default (``SupervisorConfig.runner_nice``):
    the starvation a runner meets on a busy machine, on demand. Linux only."""
    if cpu is None:
        cpu = max(os.sched_getaffinity(0))
    hog = subprocess.Popen(
        [sys.executable, "-c", _HOG, str(cpu)], stdout=subprocess.PIPE, stdin=subprocess.DEVNULL
    )
    try:
        assert hog.stdout is not None
        if not hog.stdout.readline():
            raise RuntimeError(f"the process meant to keep CPU {cpu} busy exited ({hog.wait()})")
        yield cpu
    finally:
        hog.kill()
        hog.wait()
        if hog.stdout is not None:
            hog.stdout.close()
