"""What several benchmarks share. They run as scripts (``python benchmarks/x.py``), so this
directory is ``sys.path[0]`` and ``import _helpers`` finds this module."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import Awaitable
from typing import TypeVar

__all__ = [
    "PACER_PLUGIN_CODE",
    "PACER_PLUGIN_TOML",
    "loop_stalls_during",
    "machine_line",
    "percentile",
]

T = TypeVar("T")


def machine_line(run: str) -> str:
    """The first line of a benchmark's report: the machine, its load now, Python; then ``run``,
    what was run."""
    return (
        f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}, Python "
        f"{sys.version.split()[0]}; {run}"
    )


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


#: A plugin logging numbered records at a steady rate (or at full speed), for the benchmarks
#: that drive runners' logging through a host.
PACER_PLUGIN_TOML = 'id = "pacer"\nversion = "0.1"\nentry = "pacer_plugin:Pacer"\n'
PACER_PLUGIN_CODE = '''\
"""Logs numbered records at a steady rate, from a worker thread (its loop stays free)."""

import asyncio
import logging
import time

import isoplug

log = logging.getLogger("bench")


def paced(count: int, rate: float) -> None:
    if not rate:  # full speed
        for index in range(count):
            log.info("value %s", index)
        return
    interval = 1.0 / rate
    began = time.perf_counter()
    for index in range(count):
        delay = began + index * interval - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        log.info("value %s", index)


class Pacer(isoplug.Plugin):
    @isoplug.method
    async def paced(self, count: int, rate: float) -> None:
        await asyncio.to_thread(paced, count, rate)
'''
