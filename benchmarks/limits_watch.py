"""The cost of the host's RSS watch (``[limits]`` memory / recycle_rss): CPU per check.

The host reads a limited runner's ``/proc/<pid>/stat`` every 100 ms
(:func:`isoplug.host.limits.read_usage`). In the same run, against a live Python process of
~60 MiB, this measures the CPU time per read of the ways to learn a process's RSS:

- ``stat``: what isoplug reads (RSS and CPU time at once);
- ``statm``: the RSS alone (smaller file, no CPU time);
- ``smaps_rollup``: proportional and swapped sizes too (the kernel walks the page tables);
- ``psutil``: ``Process(pid).memory_info()``, where psutil is installed (not a dependency).

Then the whole watch: ``--runners`` processes watched by asyncio tasks as the host runs them
(one read each per 100 ms) for ``--seconds``, against the same tasks that only sleep: the
difference in the host's CPU time is the watch's cost, printed as % of one core.

Run: ``python benchmarks/limits_watch.py [--rounds N] [--runners N] [--seconds S]``.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

from isoplug.host.limits import FAST_INTERVAL, read_usage

CHILD = "x = b'1' * (60 * 1024 * 1024); import time; time.sleep(3600)"


def per_call(function: Callable[[], object], count: int) -> float:
    """CPU seconds per call of ``function`` (process time, over ``count`` calls)."""
    began = time.process_time()
    for _ in range(count):
        function()
    return (time.process_time() - began) / count


def readers(pid: int) -> dict[str, Callable[[], object]]:
    def read(path: str) -> Callable[[], object]:
        def reader() -> object:
            with open(path, "rb") as file:
                return file.read()

        return reader

    found: dict[str, Callable[[], object]] = {
        "stat (isoplug)": lambda: read_usage(pid),
        "statm": read(f"/proc/{pid}/statm"),
        "smaps_rollup": read(f"/proc/{pid}/smaps_rollup"),
    }
    try:
        import psutil  # type: ignore[import-untyped]
    except ImportError:
        return found
    process = psutil.Process(pid)
    found["psutil memory_info"] = process.memory_info
    return found


async def watch_cpu(pids: list[int], seconds: float, read: bool) -> float:
    """Host CPU seconds spent by one task per pid checking (or only sleeping) every
    FAST_INTERVAL for ``seconds``."""

    async def watch(pid: int) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            if read:
                read_usage(pid)
            await asyncio.sleep(FAST_INTERVAL)

    began = time.process_time()
    await asyncio.gather(*(watch(pid) for pid in pids))
    return time.process_time() - began


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--runners", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=5.0)
    options = parser.parse_args()
    children = [
        subprocess.Popen([sys.executable, "-c", CHILD]) for _ in range(max(1, options.runners))
    ]
    try:
        time.sleep(1.0)  # the children have allocated their memory
        pid = children[0].pid
        print(f"per read, CPU time, {options.rounds} rounds of {options.calls} (median [range]):")
        results: dict[str, list[float]] = {}
        for _ in range(options.rounds):
            for name, function in readers(pid).items():
                results.setdefault(name, []).append(per_call(function, options.calls))
        base = statistics.median(results["stat (isoplug)"])
        for name, values in results.items():
            median = statistics.median(values)
            print(
                f"  {name:20s} {median * 1e6:7.1f} us [{min(values) * 1e6:.1f}-"
                f"{max(values) * 1e6:.1f}]  x{median / base:.2f} of stat"
            )
        pids = [child.pid for child in children]
        extra: list[float] = []
        for _ in range(options.rounds):
            idle = asyncio.run(watch_cpu(pids, options.seconds, read=False))
            busy = asyncio.run(watch_cpu(pids, options.seconds, read=True))
            extra.append((busy - idle) / options.seconds)
        share = statistics.median(extra)
        print(
            f"the watch of {len(pids)} runners every {FAST_INTERVAL * 1000:.0f} ms, beyond the "
            f"tasks' own wake-ups: {share * 100:.3f} % of a core (median; range "
            f"{min(extra) * 100:.3f}-{max(extra) * 100:.3f} %), "
            f"{share * 100 / len(pids):.4f} % per runner"
        )
    finally:
        for child in children:
            child.kill()
            child.wait()


if __name__ == "__main__":
    main()
