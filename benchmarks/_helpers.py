"""What several benchmarks share. They run as scripts (``python benchmarks/x.py``), so this
directory is ``sys.path[0]`` and ``import _helpers`` finds this module."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from typing import TypeVar

__all__ = ["loop_stalls_during", "percentile"]

T = TypeVar("T")


def percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


async def loop_stalls_during(work: Awaitable[T]) -> tuple[list[float], T]:
    """How late a 1 ms sleep on this loop wakes, sampled for as long as ``work`` runs; and what
    ``work`` returned."""
    stalls: list[float] = []
    running = asyncio.ensure_future(work)
    while not running.done():
        began = time.perf_counter()
        await asyncio.sleep(0.001)
        stalls.append(time.perf_counter() - began - 0.001)
    return stalls, await running
